"""``${VAR}`` and ``${VAR:-default}`` in config strings.

Any string value may name environment variables; ``$$`` writes a literal
``$``.  A ``$`` not followed by ``{`` or ``$`` is kept as written.  A variable
that is unset and has no default is a problem that names the variable and the
place, never a value.  The expansion remembers which variables each value
used, so messages can avoid quoting what came from the environment and key
secrets can say where they came from.

Some values may name a variable that is not set (``optional`` says which:
the providers' ``api_key``): such a value becomes empty and its variable is
remembered in ``unset``, so a provider without a key can be left out, not
make the whole file invalid.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Final, NamedTuple

from runner._errors import Problem
from runner.config._yaml import Path, Positions, format_path

_TOKEN: Final = re.compile(r"\$\$|\$\{([^}]*)\}|\$\{")
_REFERENCE: Final = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*)(?::-(.*))?$", re.DOTALL)


class Expanded(NamedTuple):
    """Data with every reference replaced, and what each replaced value used."""

    data: object
    #: Written path -> the variables its string named (in order).
    variables: dict[Path, tuple[str, ...]]
    #: Written paths whose value could not be expanded (already reported).
    broken: frozenset[Path]
    problems: list[Problem]
    #: Written optional paths -> the first variable they named that is not set.
    unset: dict[Path, str]


def expand(
    data: object,
    environ: Mapping[str, str],
    *,
    source: str,
    positions: Positions,
    optional: Callable[[Path], bool] | None = None,
) -> Expanded:
    """Expand every string value in ``data`` (keys are left as written)."""
    variables: dict[Path, tuple[str, ...]] = {}
    broken: set[Path] = set()
    problems: list[Problem] = []
    unset: dict[Path, str] = {}

    def problem(path: Path, message: str, hint: str) -> None:
        mark = positions.at(path)
        line, column = (None, None) if mark is None else mark
        problems.append(
            Problem(format_path(path), message, hint=hint, file=source, line=line, column=column)
        )

    def one(text: str, path: Path) -> str:
        names: list[str] = []
        ok = True

        def replace(match: re.Match[str]) -> str:
            nonlocal ok
            written = match.group(0)
            if written == "$$":
                return "$"
            body = match.group(1)
            ref = None if body is None else _REFERENCE.match(body)
            if ref is None:
                ok = False
                problem(
                    path,
                    f"bad variable reference '{written}'"
                    if body is not None
                    else "'${' without a closing '}'",
                    "write ${NAME} or ${NAME:-default}; write $$ for a literal $",
                )
                return ""
            name, default = ref.group(1), ref.group(2)
            names.append(name)
            value = environ.get(name)
            if value is not None:
                return value
            if default is not None:
                return default
            if optional is not None and optional(path):
                unset.setdefault(path, name)
                return ""
            ok = False
            problem(
                path,
                f"environment variable {name} is not set",
                f"set {name}, or give a default: ${{{name}:-...}}",
            )
            return ""

        result = _TOKEN.sub(replace, text)
        if names:
            variables[path] = tuple(names)
        if not ok:
            broken.add(path)
        # Half a key is no key: a value naming an unset variable is empty.
        return "" if path in unset else result

    def walk(value: object, path: Path) -> object:
        if isinstance(value, str):
            return one(value, path) if "$" in value else value
        if isinstance(value, list):
            return [walk(item, (*path, i)) for i, item in enumerate(value)]
        if isinstance(value, dict):
            return {k: walk(v, (*path, k)) for k, v in value.items()}
        return value

    return Expanded(walk(data, ()), variables, frozenset(broken), problems, unset)
