"""Package exports loaded on first use (PEP 562), so that importing a package for its light parts does not load
the heavy ones: stylising, exporting and the demo never load PyTorch Lightning."""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping


def lazy_exports(package: str, exports: Mapping[str, str]) -> Callable[[str], object]:
    """A module ``__getattr__`` for ``package`` that imports ``exports[name]`` (a module path) when ``name`` is first
    asked for and returns its attribute ``name``; other names raise AttributeError as usual."""

    def __getattr__(name: str) -> object:
        if name not in exports:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        return getattr(importlib.import_module(exports[name]), name)

    return __getattr__
