"""Per-key exponential backoff, as the kubelet's CrashLoopBackOff and image
pull backoff (client-go's flowcontrol.Backoff):

- The first failure of a key is not delayed; it starts the key's backoff at
  `initial` (10 s).
- A failure within the current backoff of the previous one must wait it out
  (`in_backoff_since`); the next failure after that doubles it, up to
  `maximum` (5 min).
- A failure more than `reset_after` (10 min, twice the maximum) after the
  last restart starts over: a container that ran for 10 minutes is not
  punished for crashes long ago.

Times are wall-clock seconds (time.time()), so entries can be saved and
restored across a restart of the node agent. Pure apart from the clock,
which tests inject.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable

DEFAULT_INITIAL = 10.0
DEFAULT_MAXIMUM = 300.0


@dataclass
class Entry:
    backoff: float       # the current delay
    last_update: float   # when the key last restarted (wall clock)


class Backoff:
    def __init__(self, initial: float = DEFAULT_INITIAL, maximum: float = DEFAULT_MAXIMUM,
                 reset_after: float | None = None, clock: Callable[[], float] = time.time):
        if initial <= 0 or maximum < initial:
            raise ValueError("backoff needs 0 < initial <= maximum")
        self.initial = initial
        self.maximum = maximum
        self.reset_after = 2 * maximum if reset_after is None else reset_after
        self.clock = clock
        self._entries: dict[str, Entry] = {}

    def _expired(self, entry: Entry, event_time: float) -> bool:
        return event_time - entry.last_update > self.reset_after

    def get(self, key: str) -> float:
        """The key's current delay; 0 when it has none."""
        entry = self._entries.get(key)
        return entry.backoff if entry else 0.0

    def in_backoff_since(self, key: str, event_time: float) -> bool:
        """True while `key` must still wait after the failure at `event_time`."""
        return self.remaining(key, event_time) > 0

    def remaining(self, key: str, event_time: float) -> float:
        """Seconds `key` must still wait after the failure at `event_time` (0: go)."""
        entry = self._entries.get(key)
        if entry is None or self._expired(entry, event_time):
            return 0.0
        return max(0.0, event_time + entry.backoff - self.clock())

    def remaining_since_update(self, key: str) -> float:
        """Seconds until the key's backoff, counted from its last `next`, ends
        (image pulls: `next` is called at each failure)."""
        entry = self._entries.get(key)
        now = self.clock()
        if entry is None or self._expired(entry, now):
            return 0.0
        return max(0.0, entry.last_update + entry.backoff - now)

    def next(self, key: str, event_time: float) -> float:
        """Record a restart after the failure at `event_time`; returns the delay
        the key's next failure will have to wait."""
        entry = self._entries.get(key)
        if entry is None or self._expired(entry, event_time):
            entry = Entry(self.initial, 0.0)
            self._entries[key] = entry
        else:
            entry.backoff = min(entry.backoff * 2, self.maximum)
        entry.last_update = self.clock()
        return entry.backoff

    def reset(self, key: str) -> None:
        self._entries.pop(key, None)

    def reset_prefix(self, prefix: str) -> None:
        """Forget every key starting with `prefix` (a pod's, when it goes)."""
        for key in [k for k in self._entries if k.startswith(prefix)]:
            del self._entries[key]

    def gc(self) -> None:
        """Drop entries that would be reset anyway."""
        now = self.clock()
        for key in [k for k, e in self._entries.items() if self._expired(e, now)]:
            del self._entries[key]

    # --- saving across restarts ---

    def export(self, prefix: str) -> dict[str, list[float]]:
        """The entries of keys under `prefix`, as JSON-able data (keys without the prefix)."""
        return {k[len(prefix):]: [e.backoff, e.last_update]
                for k, e in self._entries.items() if k.startswith(prefix)}

    def restore(self, prefix: str, data: dict[str, list[float]]) -> None:
        for k, (backoff, last_update) in (data or {}).items():
            key = prefix + k
            if key not in self._entries:
                self._entries[key] = Entry(float(backoff), float(last_update))
