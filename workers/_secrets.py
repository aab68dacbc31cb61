"""Secrets that cannot leak by accident.

A :class:`Secret` prints as ``'***'`` in every repr, str and format; the value
is reachable only through :meth:`Secret.reveal`, which the HTTP adapters call
when they build a header.  :func:`scrub` removes known secret values from any
text that came back from a provider before it is logged or stored.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Final

REDACTED: Final = "***"

# The userinfo of a URL: everything before the authority's last '@' (a
# password may hold an unencoded '@'; the authority ends at / ? or #), with
# or without a scheme and '//', as a user may write a URL without them.
_USERINFO: Final = re.compile(r"^((?:[a-zA-Z][a-zA-Z0-9+.-]*:)?//)?[^/?#]*@")


class Secret:
    """A credential whose value never appears in a repr, str or format.

    An empty Secret with a ``source`` stands for a key that should have come
    from that variable but was not set (``workers._settings.missing_key``).
    """

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


def mask_url(url: str) -> str:
    """``url`` with its ``user:password@`` part shown as ``***@``, for messages and reprs."""
    return _USERINFO.sub(rf"\1{REDACTED}@", url, count=1)


#: The shortest run of a key's characters that :func:`scrub` removes wherever it appears.
MIN_RUN: Final = 8


def scrub(text: str, secrets: Iterable[Secret | str | None]) -> str:
    """Return ``text`` with every non-trivial secret value replaced by ``***``.

    Providers echo keys whole, cut ("Incorrect API key provided: sk-abc***")
    or cut by whoever trims their message, so for a key of :data:`MIN_RUN` or
    more characters *every* run of at least :data:`MIN_RUN` of its characters
    (any substring, not only prefixes) becomes ``***``; a shorter key (4 to 7
    characters) is removed where it appears whole.  Scrub before trimming:
    a trim can only shorten what is left, never bring a key back.

    Cost: one set of the key's ``MIN_RUN``-character slices, then one lookup
    per position of ``text``; it runs on error paths only.
    """
    for secret in secrets:
        if secret is None:
            continue
        value = secret.reveal() if isinstance(secret, Secret) else secret
        if len(value) < 4:
            continue
        short = len(value) < MIN_RUN
        text = text.replace(value, REDACTED) if short else _scrub_runs(text, value)
    return text


def _scrub_runs(text: str, key: str) -> str:
    """``text`` with each stretch covered by ``MIN_RUN``-slices of ``key`` made ``***``."""
    slices = {key[i : i + MIN_RUN] for i in range(len(key) - MIN_RUN + 1)}
    pieces: list[str] = []
    kept = 0  # text[kept:] has not been copied to pieces yet
    run_start = run_end = -1
    for i in range(len(text) - MIN_RUN + 1):
        if text[i : i + MIN_RUN] not in slices:
            continue
        if i > run_end:  # a new stretch: close the one before
            if run_end >= 0:
                pieces += [text[kept:run_start], REDACTED]
                kept = run_end
            run_start = i
        run_end = i + MIN_RUN
    if run_end < 0:
        return text
    pieces += [text[kept:run_start], REDACTED, text[run_end:]]
    return "".join(pieces)
