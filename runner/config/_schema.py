"""Check plain config data against the config Structs, reporting every problem.

msgspec stops at the first mistake; a user fixing a config wants them all.
:class:`Checker` walks the data alongside ``msgspec.inspect`` type info of the
Structs in ``runner.config._model``, so field names, types and ranges come
from the Structs themselves, never from a second list kept by hand.  While it
walks it also normalises what the file may write more loosely than the
Structs hold: durations (``"500ms"``, ``"2m"``) become seconds, a single
string where a list of strings is expected becomes a one-item list, and key
strings become :class:`~workers._secrets.Secret`.  The result converts with
``msgspec.convert`` without further errors.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from typing import Final

import msgspec.inspect as mi

from runner._errors import ERROR_CODES, Problem
from runner._words import closest
from runner.config._model import (
    ClusterConfig,
    Config,
    CooldownConfig,
    ProviderConfig,
    RetryConfig,
    WorkerConfig,
)
from runner.config._yaml import Path, Positions, format_path
from workers._parameters import Parameters
from workers._secrets import Secret

#: Float fields that are durations: a number of seconds or "500ms", "30s", "2m", "1h", "7d".
DURATIONS: Final[frozenset[tuple[type, str]]] = frozenset(
    {
        (ProviderConfig, "timeout"),
        (ProviderConfig, "retry_after"),
        (RetryConfig, "initial_delay"),
        (RetryConfig, "max_delay"),
        (RetryConfig, "jitter"),
        (RetryConfig, "max_retry_after"),
        (CooldownConfig, "seconds"),
        (Config, "grace_period"),
        (WorkerConfig, "retention"),
        (ClusterConfig, "lease"),
    }
)

#: String-list fields whose items must come from a fixed set: what an item is, and the set.
CHOICES: Final[Mapping[tuple[type, str], tuple[str, tuple[str, ...]]]] = {
    (ProviderConfig, "failure_codes"): ("error code", ERROR_CODES),
}

#: Struct fields that are not written in the file.
HIDDEN: Final[frozenset[tuple[type, str]]] = frozenset({(Config, "source")})

#: What an unknown key is called in a struct's messages.
NOUNS: Final[Mapping[type, str]] = {Parameters: "parameter"}

#: What a value of a fixed-choice field is called in its "unknown ..." message.
LABELS: Final[Mapping[tuple[type, str], str]] = {(ProviderConfig, "type"): "provider type"}

_UNITS: Final[Mapping[str, float]] = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_DURATION = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*(ms|s|m|h|d)?\s*$")
DURATION_HELP: Final = "use seconds (30, 0.5) or a number with ms, s, m, h or d (500ms, 30s, 2m)"


class Invalid:
    """Marks a value that failed its check (its problems are already reported)."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "INVALID"


INVALID: Final = Invalid()


def parse_duration(value: str) -> float | None:
    """Seconds for ``"500ms"``, ``"30s"``, ``"2m"``, ``"1h"``, ``"7d"`` or ``"30"``; else None."""
    match = _DURATION.match(value)
    if match is None:
        return None
    return float(match.group(1)) * _UNITS[match.group(2) or "s"]


def close_match(word: str, candidates: list[str] | tuple[str, ...]) -> str | None:
    """The candidate ``word`` was most likely meant to be, if any is close (``runner._words``)."""
    return closest(word, candidates)


def suggest(word: str, candidates: list[str] | tuple[str, ...]) -> str:
    """A hint: the close match if there is one, else every candidate."""
    match = close_match(word, candidates)
    if match is not None:
        return f"did you mean '{match}'?"
    return "known: " + ", ".join(candidates) if candidates else "none are defined"


def describe(value: object) -> str:
    """What kind of value this is, in words a YAML writer knows."""
    if value is None:
        return "nothing (null)"
    if isinstance(value, bool):
        return "true/false"
    if isinstance(value, int):
        return "a whole number"
    if isinstance(value, float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    return f"a {type(value).__name__}"


def _limits(t: mi.IntType | mi.FloatType) -> tuple[str, Callable[[float], bool]] | None:
    """The range a number must fall in, in words, and a test for it."""

    def n(x: float) -> str:
        return f"{x:g}"

    lo, lo_open = (t.gt, True) if t.gt is not None else (t.ge, False)
    hi, hi_open = (t.lt, True) if t.lt is not None else (t.le, False)
    if lo is None and hi is None:
        return None

    def ok(x: float) -> bool:
        if lo is not None and (x <= lo if lo_open else x < lo):
            return False
        return not (hi is not None and (x >= hi if hi_open else x > hi))

    if lo is not None and hi is not None and not lo_open and not hi_open:
        return f"between {n(lo)} and {n(hi)}", ok
    parts = []
    if lo is not None:
        parts.append(f"greater than {n(lo)}" if lo_open else f"at least {n(lo)}")
    if hi is not None:
        parts.append(f"less than {n(hi)}" if hi_open else f"at most {n(hi)}")
    return " and ".join(parts), ok


class Checker:
    """Walks data against type info, collecting problems and normalising values.

    ``remap`` turns the path being checked into the path as written in the
    file (they differ for the single-provider form, which is checked as the
    multi-provider form it stands for).  ``expanded`` maps a written path to
    the environment variables its string used: such values are never quoted
    in a message, and key secrets remember their variable.
    """

    def __init__(
        self,
        source: str,
        positions: Positions,
        *,
        expanded: Mapping[Path, tuple[str, ...]] | None = None,
        remap: Callable[[Path], Path] | None = None,
        skip: frozenset[Path] = frozenset(),
    ) -> None:
        self.source = source
        self.positions = positions
        self.expanded = expanded or {}
        # Written paths already reported (an unset variable): not checked again.
        self.skip = skip
        self.remap = remap or (lambda p: p)
        self.problems: list[Problem] = []

    def report(
        self, path: Path, message: str, hint: str | None = None, *, key: bool = False
    ) -> None:
        """Record a problem at ``path`` (at its key when ``key``, else at its value)."""
        written = self.remap(path)
        mark = self.positions.at(written, key=key)
        line, column = (None, None) if mark is None else mark
        self.problems.append(
            Problem(
                format_path(written),
                message,
                hint=hint,
                file=self.source,
                line=line,
                column=column,
            )
        )

    def variables(self, path: Path) -> tuple[str, ...]:
        """The environment variables the value at ``path`` came from (none: written as is)."""
        written = self.remap(path)
        found = self.expanded.get(written)
        if found is None and written:
            # A string checked as a one-item list (`stop: ${STOP}`) is item 0 of its path.
            found = self.expanded.get(written[:-1])
        return found or ()

    def named(self, path: Path, value: object, *, quote: bool = True) -> str:
        """``value`` for a message: quoted, or, if it came from ``${VAR}``, the variable.

        A value from the environment may be a secret, so it is never printed.
        """
        variables = self.variables(path)
        if variables:
            return "(the value of " + ", ".join(f"${{{v}}}" for v in variables) + ")"
        return f"'{value}'" if quote else str(value)

    def _shown(self, path: Path, value: object) -> str:
        """``value`` in a message, unless it came from the environment (it may be a secret)."""
        kind = describe(value)
        variables = self.variables(path)
        if variables:
            return f"{kind} from " + ", ".join(f"${{{v}}}" for v in variables)
        if isinstance(value, bool):
            return "true" if value else "false"
        if isinstance(value, int | float):
            return repr(value)
        if isinstance(value, str) and len(value) <= 40:
            return f"{kind} ({value!r})"
        return kind

    # -- the walk ---------------------------------------------------------------

    def check(
        self, value: object, t: mi.Type, path: Path, owner: tuple[type, str] | None
    ) -> object:
        """``value`` normalised for ``t``, or :data:`INVALID` after reporting why."""
        if self.skip and self.remap(path) in self.skip:
            return INVALID
        if isinstance(t, mi.UnionType):
            return self._union(value, t, path, owner)
        if isinstance(t, mi.StructType):
            return self.struct(value, t, path)
        if isinstance(t, mi.IntType | mi.FloatType):
            return self._number(value, t, path, owner)
        if isinstance(t, mi.StrType):
            return self._expect(value, str, "a string", path, hint="quote it")
        if isinstance(t, mi.BoolType):
            return self._expect(value, bool, "true or false", path)
        if isinstance(t, mi.LiteralType):
            return self._literal(value, t, path, owner)
        if isinstance(t, mi.VarTupleType | mi.ListType):
            return self._list(value, t.item_type, path, owner)
        if isinstance(t, mi.DictType):
            return self._dict(value, t, path, owner)
        if isinstance(t, mi.CustomType) and t.cls is Secret:
            return self._secret(value, path)
        if isinstance(t, mi.NoneType):
            return self._expect(value, type(None), "nothing (null)", path)
        return value

    def struct(self, value: object, t: mi.StructType, path: Path) -> object:
        """Check a mapping against a Struct's fields; unknown keys get a close match."""
        fields = {f.encode_name: f for f in t.fields if (t.cls, f.name) not in HIDDEN}
        if not isinstance(value, dict):
            self.report(
                path,
                f"expected a mapping, got {self._shown(path, value)}",
                "fields: " + ", ".join(fields),
            )
            return INVALID
        noun = NOUNS.get(t.cls, "field")
        out: dict[str, object] = {}
        failed = False
        for key, item in value.items():
            child = (*path, key)
            field = fields.get(key)
            if field is None:
                self.report(child, f"unknown {noun} '{key}'", suggest(key, list(fields)), key=True)
                failed = True
                continue
            checked = self.check(item, field.type, child, (t.cls, field.name))
            if checked is INVALID:
                failed = True
            else:
                out[key] = checked
        for name, field in fields.items():
            if field.required and name not in value:
                self.report(path, f"missing required {noun} '{name}'", f"add '{name}:'")
                failed = True
        return INVALID if failed else out

    def _union(
        self, value: object, t: mi.UnionType, path: Path, owner: tuple[type, str] | None
    ) -> object:
        options = [u for u in t.types if not isinstance(u, mi.NoneType)]
        if value is None and len(options) < len(t.types):
            return None
        if len(options) == 1:
            return self.check(value, options[0], path, owner)
        # Several non-null options (none in today's model): the first that fits wins.
        first: list[Problem] | None = None
        for option in options:
            trial = Checker(
                self.source,
                self.positions,
                expanded=self.expanded,
                remap=self.remap,
                skip=self.skip,
            )
            checked = trial.check(value, option, path, owner)
            if checked is not INVALID:
                return checked
            first = trial.problems if first is None else first
        self.problems.extend(first or [])
        return INVALID

    def _expect(
        self, value: object, kind: type, words: str, path: Path, hint: str | None = None
    ) -> object:
        if isinstance(value, kind) and not (kind is not bool and isinstance(value, bool)):
            return value
        self.report(path, f"expected {words}, got {self._shown(path, value)}", hint)
        return INVALID

    def _number(
        self,
        value: object,
        t: mi.IntType | mi.FloatType,
        path: Path,
        owner: tuple[type, str] | None,
    ) -> object:
        is_int = isinstance(t, mi.IntType)
        duration = owner in DURATIONS
        number: float | None = None
        if isinstance(value, bool):
            number = None
        elif isinstance(value, int) or (isinstance(value, float) and not is_int):
            number = value
        elif isinstance(value, str) and duration:
            number = parse_duration(value)
            if number is None:
                self.report(path, f"not a duration: {self._shown(path, value)}", DURATION_HELP)
                return INVALID
        elif isinstance(value, str) and self.remap(path) in self.expanded:
            # `${VAR}` always expands to text; a number written there is meant as one.
            try:
                number = int(value) if is_int else float(value)
            except ValueError:
                number = None
        if number is None or (isinstance(number, float) and not math.isfinite(number)):
            words = "a whole number" if is_int else "a number"
            hint = DURATION_HELP if duration else None
            self.report(path, f"expected {words}, got {self._shown(path, value)}", hint)
            return INVALID
        limits = _limits(t)
        if limits is not None and not limits[1](number):
            variables = self.variables(path)
            if len(variables) == 1 and isinstance(value, str):
                # It read as a number (or a duration), so it is no secret, and
                # the value is what the user needs to see: RUNNER_CONCURRENCY=0.
                self.report(path, f"{variables[0]}={value.strip()} must be {limits[0]}")
            else:
                self.report(path, f"must be {limits[0]}, got {self._shown(path, value)}")
            return INVALID
        return float(number) if not is_int else number

    def _literal(
        self, value: object, t: mi.LiteralType, path: Path, owner: tuple[type, str] | None
    ) -> object:
        if value in t.values and not isinstance(value, bool):
            return value
        choices = [str(v) for v in t.values]
        label = LABELS.get(owner) if owner is not None else None
        if label is not None and isinstance(value, str):
            message = f"unknown {label} {self.named(path, value)}; known: {', '.join(choices)}"
        else:
            allowed = choices[0] if len(choices) == 1 else f"one of {', '.join(choices)}"
            message = f"must be {allowed}; got {self._shown(path, value)}"
        match = close_match(value, choices) if isinstance(value, str) else None
        self.report(path, message, f"did you mean '{match}'?" if match else None)
        return INVALID

    def _list(
        self, value: object, item: mi.Type, path: Path, owner: tuple[type, str] | None
    ) -> object:
        if isinstance(value, str) and isinstance(item, mi.StrType):
            value = [value]  # `stop: "###"` means a list of one
        if not isinstance(value, list):
            self.report(path, f"expected a list, got {self._shown(path, value)}")
            return INVALID
        choices = CHOICES.get(owner) if owner is not None else None
        out: list[object] = []
        for i, entry in enumerate(value):
            checked = self.check(entry, item, (*path, i), None)
            if checked is not INVALID and choices is not None and checked not in choices[1]:
                self.report(
                    (*path, i),
                    f"unknown {choices[0]} {self.named((*path, i), checked)}",
                    suggest(str(checked), choices[1]),
                )
                checked = INVALID
            out.append(checked)
        return INVALID if INVALID in out else out

    def _dict(
        self, value: object, t: mi.DictType, path: Path, owner: tuple[type, str] | None
    ) -> object:
        if not isinstance(value, dict):
            self.report(path, f"expected a mapping, got {self._shown(path, value)}")
            return INVALID
        out = {k: self.check(v, t.value_type, (*path, k), None) for k, v in value.items()}
        return INVALID if INVALID in out.values() else out

    def _secret(self, value: object, path: Path) -> object:
        if not isinstance(value, str):
            self.report(path, f"expected a string, got {describe(value)}", "quote it")
            return INVALID
        if not value:
            return None
        variables = self.expanded.get(self.remap(path), ())
        return Secret(value, source=variables[0] if variables else None)
