"""Package names loaded on first use (PEP 562), so importing a package stays cheap.

`hybridsr.protocol` and `hybridsr.sdk` use it: a local `hybridsr upscale` needs a few names
from them, not aiohttp, pydantic and msgpack. It lives in protocol, the bottom layer, so
every layer above may use it.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping, MutableMapping


def lazy_names(package: str, sources: Mapping[str, tuple[str, ...]],
               namespace: MutableMapping[str, object]
               ) -> tuple[Callable[[str], object], list[str]]:
    """A module `__getattr__` for `package` and the sorted names it serves (for `__all__`).

    `sources` maps a module (".name": inside `package`) to the names it gives; each name is
    imported on first use and kept in `namespace` (the package's `globals()`), after which it
    is a plain attribute. A name listed under two modules is a `ValueError`.
    """
    where: dict[str, str] = {}
    for module, names in sources.items():
        for name in names:
            if name in where:
                raise ValueError(f"{package}: {name!r} is listed under both "
                                 f"{where[name]!r} and {module!r}")
            where[name] = module

    def __getattr__(name: str) -> object:
        module = where.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(module, package), name)
        namespace[name] = value
        return value

    return __getattr__, sorted(where)
