"""'Did you mean ...?': the one rule for when a name is close enough to suggest.

A suggestion that is not a likely typo misleads more than it helps
(``stream`` is not a misspelt ``system``), so a name is suggested only when
it is a few keystrokes away (an edit distance counting a swap of two
neighbours as one, at most 1 for a name of up to 4 letters, 2 up to 8, 3
beyond) or when the word is the start of it up to a separator (``claude``
for ``claude-sonnet``).  difflib's ratio, used before, matched on shared
letters and suggested ``system`` for ``stream``.
"""

from __future__ import annotations

from collections.abc import Iterable

_SEPARATORS = "-_."


def distance(a: str, b: str) -> int:
    """Edits (insert, delete, replace, swap two neighbours) turning ``a`` into ``b``."""
    previous2: list[int] = []
    previous = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        current = [i] + [0] * len(b)
        for j, cb in enumerate(b, 1):
            cost = 0 if ca == cb else 1
            current[j] = min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + cost)
            if i > 1 and j > 1 and ca == b[j - 2] and a[i - 2] == cb:
                current[j] = min(current[j], previous2[j - 2] + 1)
        previous2, previous = previous, current
    return previous[-1]


def _allowed(word: str) -> int:
    return 1 if len(word) <= 4 else 2 if len(word) <= 8 else 3


def closest(word: str, candidates: Iterable[str]) -> str | None:
    """The candidate ``word`` was most likely meant to be, or ``None`` if none is close."""
    folded = word.casefold()
    best: tuple[int, int, str] | None = None
    for order, candidate in enumerate(candidates):
        other = candidate.casefold()
        if other == folded:
            return candidate
        d = distance(folded, other)
        if d > _allowed(word):
            prefix = (
                len(folded) >= 3 and other.startswith(folded) and other[len(folded)] in _SEPARATORS
            )
            if not prefix:
                continue
            d = _allowed(word) + 1  # after every real typo
        if best is None or (d, order) < best[:2]:
            best = (d, order, candidate)
    return None if best is None else best[2]
