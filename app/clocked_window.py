"""`limits`' moving window, kept in memory and timed by a clock the caller chooses.

`limits`' own ``MemoryStorage`` stamps its entries with ``time.time()`` and expires
them from a timer thread on the same clock, so nothing outside it can say what time
it is. The sign-in throttle (:mod:`app.login_guard`) wants one clock for all its
reckoning: ``time.monotonic`` in service (a wall-clock step must not lift or extend a
lockout) and a fake one in tests (a window passes without waiting for it). This
storage serves :class:`limits.strategies.MovingWindowRateLimiter` with the same
answers as ``MemoryStorage`` — an entry is in the window while it is younger than
the window — read from ``clock``.
"""

import threading
import time
from collections.abc import Callable

from limits.storage import MovingWindowSupport, Storage

MAX_KEYS = 10_000  # past this many keys, those with no entry left in their window go


class ClockedMemoryStorage(Storage, MovingWindowSupport):
    """Moving-window entries per key (newest first), timed by ``clock`` (seconds)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic):
        super().__init__()
        self.clock = clock
        self.events: dict[str, list[float]] = {}  # key → entry times, newest first
        self.expiries: dict[str, float] = {}  # key → its window, for pruning
        self.lock = threading.Lock()

    @property
    def base_exceptions(self) -> type[Exception]:
        return ValueError

    def acquire_entry(self, key: str, limit: int, expiry: int, amount: int = 1) -> bool:
        """Add ``amount`` entries now unless the window already holds ``limit``."""
        if amount > limit:
            return False
        with self.lock:
            now = self.clock()
            events = self.events.setdefault(key, [])
            self.expiries[key] = expiry
            if len(events) > limit - amount and events[limit - amount] >= now - expiry:
                return False
            events[:0] = [now] * amount
            del events[limit:]  # older entries can no longer decide anything
            if len(self.events) > MAX_KEYS:
                self._prune(now)
            return True

    def get_moving_window(self, key: str, limit: int, expiry: int) -> tuple[float, int]:
        """(When the oldest entry in the window was made, how many entries it holds)."""
        with self.lock:
            now = self.clock()
            inside = [t for t in self.events.get(key, []) if t >= now - expiry]
            return (inside[-1], len(inside)) if inside else (now, 0)

    def clear(self, key: str) -> None:
        with self.lock:
            self.events.pop(key, None)
            self.expiries.pop(key, None)

    def reset(self) -> int | None:
        with self.lock:
            count = len(self.events)
            self.events.clear()
            self.expiries.clear()
            return count

    def check(self) -> bool:
        return True

    def _prune(self, now: float) -> None:
        """Forget the keys whose newest entry has left its window (many keys tried)."""
        for key in [k for k, times in self.events.items()
                    if not times or times[0] < now - self.expiries[k]]:
            del self.events[key]
            del self.expiries[key]

    # The fixed- and sliding-window counters are not kept here.
    def incr(self, key: str, expiry: int, amount: int = 1) -> int:
        raise NotImplementedError("ClockedMemoryStorage keeps moving windows only")

    def get(self, key: str) -> int:
        raise NotImplementedError("ClockedMemoryStorage keeps moving windows only")

    def get_expiry(self, key: str) -> float:
        raise NotImplementedError("ClockedMemoryStorage keeps moving windows only")
