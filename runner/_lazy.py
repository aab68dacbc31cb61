"""Exports loaded on first use (PEP 562), for the packages' ``__init__`` modules.

A package lists its public names and the modules that define them; the
module-level ``__getattr__``/``__dir__`` made here import a module only when
one of its names is first read, then keep the value in the package's globals
so later reads are plain attribute lookups.  This is what keeps
``python -m runner metrics summary`` from importing the dispatcher.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping, MutableMapping
from typing import Any


def lazy_exports(
    package: str, exports: Mapping[str, str], namespace: MutableMapping[str, Any]
) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """``__getattr__`` and ``__dir__`` for ``package``, whose globals are ``namespace``."""

    def __getattr__(name: str) -> Any:
        module = exports.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(module), name)
        namespace[name] = value
        return value

    def __dir__() -> list[str]:
        return sorted({*namespace, *exports})

    return __getattr__, __dir__
