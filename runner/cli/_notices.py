"""What ``submit`` and ``worker`` say about providers and roles, in one place.

Both refuse to start when some role has no provider with its key left
(:func:`refuse_stranded`), and both show the runner's notices as one line
each (:func:`notice_line`).
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

from runner._errors import UsageError

if TYPE_CHECKING:
    from runner._registry import Notice
    from runner.config._model import Config


def refuse_stranded(config: Config) -> None:
    """Exit 2 (naming them) when some role has no provider with its key left.

    The providers without a key are named first, one warning line each; when
    every role still has a provider the Runner says the same as it opens.
    """
    from runner._registry import (
        disabled_message,
        disabled_providers,
        stranded_message,
        stranded_roles,
    )

    stranded = stranded_roles(config)
    if not stranded:
        return
    for pid, variable in disabled_providers(config).items():
        print(f"warning: {disabled_message(pid, variable)}", file=sys.stderr)
    raise UsageError(stranded_message(config, stranded))


def notice_line(notice: Notice) -> str:
    """``warning: ...`` (or ``note: ...`` for a provider back from its cooldown)."""
    prefix = "note" if notice.kind == "cooldown_ended" else "warning"
    return f"{prefix}: {notice.message}"
