"""Generation parameters and their merge order.

Parameters merge lowest to highest: config ``defaults`` < provider
``parameters`` < role ``parameters`` < the task's own ``parameters``.  A field
left as ``None`` does not override a lower layer.
"""

from __future__ import annotations

from typing import Annotated, Final

import msgspec
from msgspec import Meta, Struct

PARAMETER_NAMES: Final = ("temperature", "top_p", "max_tokens", "stop", "seed")


class Parameters(Struct, frozen=True, kw_only=True, forbid_unknown_fields=True, omit_defaults=True):
    """Known generation parameters; ``None`` means "not set at this layer"."""

    temperature: Annotated[float, Meta(ge=0, le=2)] | None = None
    top_p: Annotated[float, Meta(ge=0, le=1)] | None = None
    max_tokens: Annotated[int, Meta(ge=1)] | None = None
    stop: tuple[str, ...] | None = None
    seed: int | None = None

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


EMPTY: Final = Parameters()
