"""Finding, reading and validating the config file.

The pipeline, each step in its own module so each can be read alone:

1. ``_config_yaml``: YAML text -> plain values plus the position of each
   (syntax errors and repeated keys stop here);
2. ``_config_env``: ``${VAR}`` / ``${VAR:-default}`` expansion;
3. here: the single-provider form is rewritten into the multi-provider form
   it stands for (problems keep the paths the user wrote);
4. ``_config_schema``: every field's name, type and range, checked against
   the Structs, with durations, secrets and loose lists normalised;
5. here: cross references (provider ids, role chains, workflows);
6. ``msgspec.convert`` into :class:`~runner.config._model.Config`.

Every problem from steps 2-5 is collected and raised together as one
:class:`~runner._errors.ConfigError`, sorted by position in the file.
"""

from __future__ import annotations

import importlib.resources
import os
from collections.abc import Callable, Mapping
from typing import Final, NamedTuple, cast
from urllib.parse import urlsplit

import msgspec
import msgspec.inspect as mi

from runner._errors import ConfigError, Problem
from runner.config._env import expand
from runner.config._model import ClusterConfig, Config, MetricsConfig, ProviderConfig
from runner.config._schema import Checker, close_match, describe, suggest
from runner.config._yaml import Path, Positions, format_path, parse_yaml
from workers._secrets import Secret
from workers._settings import KEY_VARIABLES, official_host

BUNDLED: Final = "<bundled>"
BUNDLED_NOTICE: Final = (
    "no config given: using the bundled simulated config (config/local.yaml); "
    "pass --config or set RUNNER_CONFIG"
)
MIGRATION_DOC: Final = "docs/migration.md"
EXTENSION_PREFIX: Final = "x-"

_CONFIG_INFO: Final = cast(mi.StructType, mi.type_info(Config))
_PROVIDER_INFO: Final = cast(mi.StructType, mi.type_info(ProviderConfig))
_METRICS_INFO: Final = cast(mi.StructType, mi.type_info(MetricsConfig))
_CLUSTER_INFO: Final = cast(mi.StructType, mi.type_info(ClusterConfig))

#: Top-level keys of the single-provider form that describe its one provider.
_SINGLE_PROVIDER_KEYS: Final = frozenset(
    f.encode_name for f in _PROVIDER_INFO.fields if f.name not in ("id", "type")
)
#: Hosted provider types, which need a model name (simulated ones do not).
_EXAMPLE_MODELS: Final = {
    "openai": "gpt-4o",
    "anthropic": "claude-sonnet-4-6",
    "google": "gemini-2.5-flash",
}
#: Top-level keys that only the multi-provider form has.
_MULTI_ONLY_KEYS: Final = ("providers", "roles", "default_provider")
#: Top-level keys the single-provider form shares with the multi-provider form.
_SHARED_KEYS: Final = frozenset(
    f.encode_name for f in _CONFIG_INFO.fields if f.name not in (*_MULTI_ONLY_KEYS, "source")
)


class Loaded(NamedTuple):
    """A config plus what ``config check`` shows about how it was written."""

    config: Config
    #: True for the old single-provider form (``provider: openai`` at the top).
    single_provider: bool
    #: Provider id -> the environment variable its ``api_key`` names, if any.
    key_variables: Mapping[str, str | None]


def load_config(
    path: str | os.PathLike[str], *, environ: Mapping[str, str] | None = None
) -> Config:
    """Read and validate the config at ``path``; raise ConfigError with every problem."""
    return _load_path(os.fspath(path), environ).config


def load_config_text(
    text: str, *, source: str = "<memory>", environ: Mapping[str, str] | None = None
) -> Config:
    """Validate config ``text``; ``source`` names it in problems and in ``Config.source``."""
    return _load_text(text, source, environ).config


def discover_config(
    path: str | None,
    *,
    environ: Mapping[str, str] | None = None,
    notice: Callable[[str], None] | None = None,
) -> Config:
    """The config from ``path``, else ``$RUNNER_CONFIG``, else ``./runner.yaml``, else bundled.

    Falling back to the bundled simulated config calls ``notice`` with
    :data:`BUNDLED_NOTICE`, so nobody mistakes it for their own: the command
    line prints it, the Python API logs it as a warning.
    """
    return discover(path, environ=environ, notice=notice).config


def discover(
    path: str | None,
    *,
    environ: Mapping[str, str] | None = None,
    notice: Callable[[str], None] | None = None,
) -> Loaded:
    """:func:`discover_config`, keeping what ``config check`` displays."""
    env = os.environ if environ is None else environ
    text, source = _locate(path, env, notice)
    return _load_text(text, source, env)


def discover_metrics(
    path: str | None,
    *,
    environ: Mapping[str, str] | None = None,
    notice: Callable[[str], None] | None = None,
) -> tuple[str, MetricsConfig]:
    """The discovered config's source and its ``metrics:`` section, reading nothing else.

    Reading metrics needs no provider keys: a file whose other sections are
    incomplete (``${OPENAI_API_KEY}`` unset, a provider not written yet) still
    names its metrics store.  Problems in ``metrics:`` itself are reported as
    for a whole config.
    """
    source, metrics, _ = discover_stores(path, environ=environ, notice=notice)
    return source, metrics


def discover_stores(
    path: str | None,
    *,
    environ: Mapping[str, str] | None = None,
    notice: Callable[[str], None] | None = None,
) -> tuple[str, MetricsConfig, ClusterConfig]:
    """:func:`discover_metrics`, with the ``cluster:`` section too (where a cluster keeps them).

    Only these two sections are expanded and checked, so no provider key is needed.
    """
    env = os.environ if environ is None else environ
    text, source = _locate(path, env, notice)
    document = parse_yaml(text, source)
    data = document.data
    sections: dict[str, object] = {}
    for name in ("metrics", "cluster"):
        section = data.get(name) if isinstance(data, dict) else None
        if section is not None:
            sections[name] = section
    if not sections:
        return source, MetricsConfig(), ClusterConfig()
    # Only these subtrees are expanded: a variable elsewhere may well be unset.
    expanded = expand(sections, env, source=source, positions=document.positions)
    checker = Checker(source, document.positions, expanded=expanded.variables, skip=expanded.broken)
    tree = cast(dict[str, object], expanded.data)
    checked: dict[str, object] = {}
    for name, info in (("metrics", _METRICS_INFO), ("cluster", _CLUSTER_INFO)):
        if name in tree:
            checked[name] = checker.check(tree[name], info, (name,), None)
    _check_cluster(tree, checker)
    problems = [*expanded.problems, *checker.problems]
    if problems or not all(isinstance(v, dict) for v in checked.values()):
        problems.sort(key=lambda p: (p.line is None, p.line or 0, p.column or 0))
        raise ConfigError(problems or [Problem("metrics", "not valid", file=source)])
    metrics = msgspec.convert(checked.get("metrics", {}), MetricsConfig)
    cluster = msgspec.convert(checked.get("cluster", {}), ClusterConfig)
    return source, metrics, cluster


def _locate(
    path: str | None, env: Mapping[str, str], notice: Callable[[str], None] | None
) -> tuple[str, str]:
    """The text of the config to use, and its source (a path or ``<bundled>``)."""
    if path:
        return _read(path), path
    from_env = env.get("RUNNER_CONFIG")
    if from_env:
        return _read(from_env, hint="it was named by $RUNNER_CONFIG"), from_env
    if os.path.isfile("runner.yaml"):
        return _read("runner.yaml"), "runner.yaml"
    if notice is not None:
        notice(BUNDLED_NOTICE)
    return bundled_text(), BUNDLED


def bundled_text() -> str:
    """The bundled simulated config (a copy of ``config/local.yaml``)."""
    return importlib.resources.files("runner").joinpath("data", "local.yaml").read_text("utf-8")


def _load_path(path: str, environ: Mapping[str, str] | None) -> Loaded:
    return _load_text(_read(path), path, environ)


def _read(path: str, hint: str | None = None) -> str:
    try:
        with open(path, encoding="utf-8") as f:
            return f.read()
    except FileNotFoundError:
        reason = "no such file"
    except IsADirectoryError:
        reason = "this is a directory, not a file"
    except PermissionError:
        reason = "permission denied"
    except UnicodeDecodeError:
        reason = "not UTF-8 text"
    except OSError as exc:
        reason = exc.strerror or "cannot be read"
    hint = hint or "check the path, or pass --config PATH / set RUNNER_CONFIG"
    raise ConfigError([Problem("", f"cannot read the config: {reason}", hint=hint, file=path)])


def _load_text(text: str, source: str, environ: Mapping[str, str] | None) -> Loaded:
    env = os.environ if environ is None else environ
    document = parse_yaml(text, source)
    data = document.data
    if data is None:
        raise ConfigError(
            [
                Problem(
                    "",
                    "the file is empty",
                    hint="a config needs at least providers: and default_provider: "
                    "(see config/local.yaml)",
                    file=source,
                )
            ]
        )
    if not isinstance(data, dict):
        line, column = document.positions.at(()) or (None, None)
        kind = describe(data)
        raise ConfigError(
            [
                Problem(
                    "",
                    f"the config must be a mapping of fields, got {kind}",
                    hint="start with 'version: 1', then 'providers:', 'roles:', ...",
                    file=source,
                    line=line,
                    column=column,
                )
            ]
        )
    # Top-level `x-` keys are free for YAML anchors to share (as in compose files).
    data = {k: v for k, v in data.items() if not k.startswith(EXTENSION_PREFIX)}
    single = "provider" in data

    def is_key(path: Path) -> bool:
        # A provider's key may name a variable that is not set: that provider
        # is left out, but the rest of the file still loads.
        if single:
            return path == ("api_key",)
        return len(path) == 3 and path[0] == "providers" and path[2] == "api_key"

    expanded = expand(data, env, source=source, positions=document.positions, optional=is_key)
    problems = [*document.problems, *expanded.problems]
    # Expansion only replaces strings, so the top level is still a mapping.
    form = _Form.of(cast(dict[str, object], expanded.data), source, document.positions, problems)
    checker = Checker(
        source,
        document.positions,
        expanded=expanded.variables,
        remap=form.remap,
        skip=expanded.broken,
    )
    checked = checker.struct(form.data, _CONFIG_INFO, ())
    _check_references(form.data, checker)
    _check_cluster(form.data, checker)
    problems.extend(checker.problems)
    if problems or not isinstance(checked, dict):
        problems.sort(key=lambda p: (p.line is None, p.line or 0, p.column or 0))
        raise ConfigError(problems or [Problem("", "not a valid config", file=source)])
    try:
        config = msgspec.convert({**checked, "source": source}, Config, dec_hook=_keep_secret)
    except msgspec.ValidationError as exc:  # a gap in the checker; still no traceback
        raise ConfigError([Problem("", str(exc), file=source)]) from None
    key_variables: dict[str, str | None] = {}
    providers: list[ProviderConfig] = []
    entries = cast(list[dict[str, object]], form.data["providers"])
    for i, provider in enumerate(config.providers):
        written = form.remap(("providers", i, "api_key"))
        named = expanded.variables.get(written, ())
        provider, variable = _resolve_key(
            provider,
            given="api_key" in entries[i],
            unset=expanded.unset.get(written),
            named=named,
            env=env,
        )
        key_variables[provider.id] = variable
        providers.append(provider)
    config = msgspec.structs.replace(config, providers=tuple(providers))
    return Loaded(config, form.single, key_variables)


def _resolve_key(
    provider: ProviderConfig,
    *,
    given: bool,
    unset: str | None,
    named: tuple[str, ...],
    env: Mapping[str, str],
) -> tuple[ProviderConfig, str | None]:
    """The provider with its key settled, and the variable the key comes from.

    A key whose variable is not set becomes an empty Secret naming it (see
    ``workers._settings.missing_key``).  A hosted provider with no ``api_key``
    takes its type's usual variable (``OPENAI_API_KEY``, ...), as the official
    SDKs do, but only when it talks to the official host: a key from the
    environment is never sent to a ``base_url`` the user chose.
    """
    if unset is not None:
        return msgspec.structs.replace(provider, api_key=Secret("", source=unset)), unset
    variable = named[0] if named else None
    if provider.api_key is not None or not official_host(provider):
        return provider, variable
    if given:  # written but empty (`${VAR:-}`): the official API still needs a key
        missing = Secret("", source=variable)
        return msgspec.structs.replace(provider, api_key=missing), variable
    candidates = KEY_VARIABLES[provider.type]
    for name in candidates:
        value = env.get(name)
        if value:
            return msgspec.structs.replace(provider, api_key=Secret(value, source=name)), name
    wanted = " or ".join(candidates)
    return msgspec.structs.replace(provider, api_key=Secret("", source=wanted)), wanted


def _keep_secret(t: type, value: object) -> object:
    if t is Secret and isinstance(value, Secret):
        return value
    raise NotImplementedError


class _Form(NamedTuple):
    """The data in multi-provider shape, and how its paths map to the file's."""

    data: dict[str, object]
    single: bool

    @staticmethod
    def of(
        data: dict[str, object],
        source: str,
        positions: Positions,
        problems: list[Problem],
    ) -> _Form:
        """Recognise the form; report mixing the two, and keys neither form knows."""
        if "provider" not in data:
            return _Form(data, single=False)
        mixed = [k for k in _MULTI_ONLY_KEYS if k in data]
        single_keys = ["provider", *(k for k in data if k in _SINGLE_PROVIDER_KEYS)]
        if mixed:
            problems.append(
                _problem_at(
                    positions,
                    source,
                    ("provider",),
                    "the single-provider form (provider:, model:, api_key:) cannot be mixed "
                    f"with {', '.join(k + ':' for k in mixed)}",
                    f"move the provider into providers: (see {MIGRATION_DOC})",
                )
            )
            return _Form({k: v for k, v in data.items() if k not in single_keys}, single=False)
        allowed = sorted({"provider", *_SINGLE_PROVIDER_KEYS, *_SHARED_KEYS})
        problems.extend(
            _problem_at(positions, source, (k,), f"unknown field '{k}'", suggest(k, allowed))
            for k in data
            if k not in allowed
        )
        provider_type = data["provider"]
        provider_id = provider_type if isinstance(provider_type, str) else "provider"
        provider = {"id": provider_id, "type": provider_type}
        provider.update({k: data[k] for k in single_keys[1:]})
        rest = {k: v for k, v in data.items() if k in _SHARED_KEYS}
        return _Form(
            {**rest, "providers": [provider], "default_provider": provider_id}, single=True
        )

    def remap(self, path: Path) -> Path:
        """The path as written in the file (they differ only in the single form)."""
        if not self.single:
            return path
        if path[:1] == ("default_provider",):
            return ("provider",)
        if path[:2] != ("providers", 0):
            return path
        if path[2:3] in (("id",), ("type",)):
            return ("provider",)
        return path[2:]


def _problem_at(
    positions: Positions, source: str, path: Path, message: str, hint: str | None = None
) -> Problem:
    mark = positions.at(path, key=True)
    line, column = (None, None) if mark is None else mark
    return Problem(format_path(path), message, hint=hint, file=source, line=line, column=column)


def _check_references(data: Mapping[str, object], checker: Checker) -> None:
    """Provider ids unique and known wherever named; chains and workflows sound."""
    providers = data.get("providers")
    ids: dict[str, Path] = {}
    if isinstance(providers, list):
        if not providers:
            checker.report(("providers",), "no providers defined", "add at least one provider")
        for i, entry in enumerate(providers):
            pid = entry.get("id") if isinstance(entry, dict) else None
            if not isinstance(pid, str):
                continue
            if pid in ids:
                first = checker.positions.at(checker.remap(ids[pid]))
                at = f" (first at {format_path(ids[pid])}, line {first[0]})" if first else ""
                shown = checker.named(("providers", i, "id"), pid)
                checker.report(
                    ("providers", i, "id"),
                    f"duplicate provider id {shown}{at}",
                    "give each provider its own id",
                )
            else:
                ids[pid] = ("providers", i, "id")
            kind = entry.get("type")
            if kind in _EXAMPLE_MODELS and "model" not in entry:
                shown = checker.named(("providers", i, "type"), kind, quote=False)
                checker.report(
                    ("providers", i),
                    f"provider type {shown} needs a model",
                    f"add model:, for example model: {_EXAMPLE_MODELS[kind]}",
                )
    # Without a readable providers list every reference would look unknown.
    if not ids:
        return
    # Ids from the environment are named by their variable here too.
    known = ", ".join(checker.named(path, pid, quote=False) for pid, path in ids.items())

    def reference(value: object, path: Path) -> None:
        if isinstance(value, str) and value not in ids:
            match = close_match(value, list(ids))
            checker.report(
                path,
                f"unknown provider {checker.named(path, value)}; known: {known}",
                None if match is None else f"did you mean {checker.named(ids[match], match)}?",
            )

    reference(data.get("default_provider"), ("default_provider",))
    roles = data.get("roles")
    for role, spec in roles.items() if isinstance(roles, dict) else ():
        if isinstance(spec, dict):
            _check_chain(role, spec, checker, reference)
    _check_workflows(data.get("workflows"), checker)


def _check_cluster(data: Mapping[str, object], checker: Checker) -> None:
    """``cluster.database``, when given, is a PostgreSQL URL.

    The value is never quoted: it usually comes from the environment and
    carries a password.
    """
    cluster = data.get("cluster")
    database = cluster.get("database") if isinstance(cluster, dict) else None
    if (
        isinstance(database, str)
        and database
        and urlsplit(database).scheme
        not in (
            "postgresql",
            "postgres",
        )
    ):
        checker.report(
            ("cluster", "database"),
            "not a PostgreSQL URL",
            "write postgresql://user:password@host:5432/database, or leave it empty"
            " for one machine",
        )


def _check_chain(
    role: str,
    spec: Mapping[str, object],
    checker: Checker,
    reference: Callable[[object, Path], None],
) -> None:
    """The role's providers exist, and none appears twice (primary included)."""
    chain: list[tuple[object, Path]] = [(spec.get("provider"), ("roles", role, "provider"))]
    fallbacks = spec.get("fallbacks")
    if isinstance(fallbacks, list):
        chain += [(f, ("roles", role, "fallbacks", i)) for i, f in enumerate(fallbacks)]
    seen: dict[str, Path] = {}
    for pid, path in chain:
        reference(pid, path)
        if not isinstance(pid, str):
            continue
        if pid in seen:
            checker.report(
                path,
                f"provider {checker.named(path, pid)} is already in this role's chain"
                f" (at {format_path(seen[pid])})",
                "a chain tries each provider once: remove the repeat",
            )
        else:
            seen[pid] = path


def _check_workflows(workflows: object, checker: Checker) -> None:
    for name, spec in workflows.items() if isinstance(workflows, dict) else ():
        stages = spec.get("stages") if isinstance(spec, dict) else None
        if not isinstance(stages, list):
            continue
        if not stages:
            checker.report(("workflows", name, "stages"), "a workflow needs at least one stage")
        seen: dict[str, int] = {}
        for i, stage in enumerate(stages):
            stage_name = stage.get("name") if isinstance(stage, dict) else None
            if not isinstance(stage_name, str):
                continue
            if stage_name in seen:
                path = ("workflows", name, "stages", i, "name")
                checker.report(
                    path,
                    f"duplicate stage name {checker.named(path, stage_name)}"
                    f" (first at stages[{seen[stage_name]}])",
                    "give each stage of a workflow its own name",
                )
            else:
                seen[stage_name] = i
