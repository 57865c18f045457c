"""Name -> entry tables for the pluggable parts: backbones, model kinds, CAM methods.

A method is one module plus one ``register`` line; the command line's choices, the
presets and the checkpoint loader all read the same table.
"""

from __future__ import annotations

from typing import Generic, TypeVar

from wsss_cli.errors import WsssError

T = TypeVar("T")


class Registry(Generic[T]):
    """Entries by name, in registration order; unknown names are one-line user errors."""

    def __init__(self, what: str, option: str):
        self.what = what
        self.option = option
        self._entries: dict[str, T] = {}

    def register(self, name: str, entry: T) -> T:
        if name in self._entries:
            raise ValueError(f"{self.what} {name!r} is registered twice")
        self._entries[name] = entry
        return entry

    def unregister(self, name: str) -> None:
        del self._entries[name]

    def get(self, name: str) -> T:
        if name not in self._entries:
            raise WsssError(f"{self.option} {name!r}: unknown {self.what}; choose one of: "
                            f"{', '.join(self._entries)}")
        return self._entries[name]

    def names(self) -> tuple[str, ...]:
        return tuple(self._entries)
