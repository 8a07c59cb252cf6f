"""One generic registry for every pluggable component kind (encoders, fusions, ...)."""

from __future__ import annotations

import difflib
from typing import Callable, Generic, TypeVar

T = TypeVar("T")


class Registry(Generic[T]):
    def __init__(self, kind: str):
        self.kind = kind
        self._items: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        def deco(obj: T) -> T:
            if name in self._items:
                raise KeyError(f"{self.kind} '{name}' is registered twice")
            self._items[name] = obj
            return obj

        return deco

    def names(self) -> list[str]:
        _load_builtins()
        return sorted(self._items)

    def check(self, name: str, where: str = "") -> None:
        _load_builtins()
        if name not in self._items:
            close = difflib.get_close_matches(name, list(self._items), n=1, cutoff=0.4)
            hint = f"; did you mean '{close[0]}'?" if close else ""
            from mmfit.config import ConfigError

            raise ConfigError(
                f"{where + ': ' if where else ''}unknown {self.kind} '{name}'{hint} "
                f"(available: {', '.join(sorted(self._items))})"
            )

    def get(self, name: str) -> T:
        self.check(name)
        return self._items[name]


ENCODERS: Registry = Registry("encoder")
FUSIONS: Registry = Registry("fusion")

_loaded = False


def _load_builtins() -> None:
    # Registration sits next to each definition; importing the modules fills the registries.
    global _loaded
    if not _loaded:
        _loaded = True
        import mmfit.models.encoders  # noqa: F401
        import mmfit.models.fusion  # noqa: F401
