"""Generation parameters and their merge order.

Parameters merge lowest to highest: config ``defaults`` < provider
``parameters`` < role ``parameters`` < the task's own ``parameters``.  A field
left as ``None`` does not override a lower layer.
"""

from __future__ import annotations

from typing import Annotated, Final

import msgspec
from msgspec import Meta, Struct

from workers._errors import InvalidValueError

PARAMETER_NAMES: Final = ("temperature", "top_p", "max_tokens", "stop", "seed")


class Parameters(Struct, frozen=True, kw_only=True, forbid_unknown_fields=True, omit_defaults=True):
    """Known generation parameters; ``None`` means "not set at this layer".

    Built from JSON or YAML, msgspec checks every field; built in Python,
    ``__post_init__`` checks the same ranges and raises
    :class:`~workers._errors.InvalidValueError` naming the field, so
    ``Parameters(temperature=9)`` is refused as a tasks file line would be.
    """

    temperature: Annotated[float, Meta(ge=0, le=2)] | None = None
    top_p: Annotated[float, Meta(ge=0, le=1)] | None = None
    max_tokens: Annotated[int, Meta(ge=1)] | None = None
    #: A single string is a list of one (``"stop": "###"``); a tuple once built.
    stop: tuple[str, ...] | str | None = None
    seed: int | None = None

    def __post_init__(self) -> None:
        if type(self.stop) is str:
            msgspec.structs.force_setattr(self, "stop", (self.stop,))
        if not _well_formed(self):
            _check(self)

    def over(self, lower: Parameters) -> Parameters:
        """These parameters laid over ``lower``: fields set here win."""
        if lower is EMPTY:
            return self
        if self is EMPTY:
            return lower
        return Parameters(
            temperature=lower.temperature if self.temperature is None else self.temperature,
            top_p=lower.top_p if self.top_p is None else self.top_p,
            max_tokens=lower.max_tokens if self.max_tokens is None else self.max_tokens,
            stop=lower.stop if self.stop is None else self.stop,
            seed=lower.seed if self.seed is None else self.seed,
        )

    def as_dict(self) -> dict[str, object]:
        """Only the fields that are set, for display and logs."""
        return msgspec.to_builtins(self)  # type: ignore[no-any-return]


def _well_formed(p: Parameters) -> bool:
    """The fast path: every field already has its type and range (always so after msgspec)."""
    t = p.temperature
    if t is not None and not (type(t) is float and 0 <= t <= 2):
        return False
    t = p.top_p
    if t is not None and not (type(t) is float and 0 <= t <= 1):
        return False
    n = p.max_tokens
    if n is not None and not (type(n) is int and n >= 1):
        return False
    if p.seed is not None and type(p.seed) is not int:
        return False
    stop = p.stop
    return stop is None or (type(stop) is tuple and all(type(s) is str for s in stop))


def _check(p: Parameters) -> None:
    """Validate ``p`` as msgspec would, normalising what it accepts (``1`` for ``1.0``)."""
    raw = {name: getattr(p, name) for name in PARAMETER_NAMES if getattr(p, name) is not None}
    try:
        checked = msgspec.convert(raw, Parameters)
    except msgspec.ValidationError as exc:
        raise InvalidValueError.from_validation(str(exc)) from None
    for name in PARAMETER_NAMES:
        msgspec.structs.force_setattr(p, name, getattr(checked, name))


EMPTY: Final = Parameters()
