"""Secrets that cannot leak by accident.

A :class:`Secret` prints as ``'***'`` in every repr, str and format; the value
is reachable only through :meth:`Secret.reveal`, which the HTTP adapters call
when they build a header.  :func:`scrub` removes known secret values from any
text that came back from a provider before it is logged or stored.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Final

REDACTED: Final = "***"


class Secret:
    """A credential whose value never appears in a repr, str or format."""

    __slots__ = ("_value", "source")

    def __init__(self, value: str, source: str | None = None) -> None:
        self._value = value
        #: The environment variable the value came from, for messages.
        self.source = source

    def reveal(self) -> str:
        """The value itself: only for building a request."""
        return self._value

    def __bool__(self) -> bool:
        return bool(self._value)

    def __repr__(self) -> str:
        src = f", source={self.source!r}" if self.source else ""
        return f"Secret({REDACTED!r}{src})"

    def __str__(self) -> str:
        return REDACTED

    def __format__(self, spec: str) -> str:
        return REDACTED

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)

    def __reduce__(self) -> str | tuple[object, ...]:
        raise TypeError("a Secret cannot be pickled")


def scrub(text: str, secrets: Iterable[Secret | str | None]) -> str:
    """Return ``text`` with every non-trivial secret value replaced by ``***``.

    Providers sometimes echo part of a key ("Incorrect API key provided:
    sk-abc***"); a key's prefix of 8 or more characters is removed as well.
    """
    for secret in secrets:
        if secret is None:
            continue
        value = secret.reveal() if isinstance(secret, Secret) else secret
        if len(value) < 4:
            continue
        text = text.replace(value, REDACTED)
        if len(value) >= 12:
            text = text.replace(value[: len(value) // 2], REDACTED)
    return text
