"""The sign-in throttle's moving window, timed by a clock the test turns."""

from limits import RateLimitItemPerSecond
from limits.strategies import MovingWindowRateLimiter

from app import clocked_window
from app.clocked_window import ClockedMemoryStorage


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_window_holds_its_limit_until_the_oldest_entry_is_older_than_the_window():
    clock = Clock()
    limiter = MovingWindowRateLimiter(ClockedMemoryStorage(clock))
    three_per_minute = RateLimitItemPerSecond(3, 60)
    for _ in range(3):
        assert limiter.hit(three_per_minute, "ann")
        clock.now += 10  # entries at 1000, 1010, 1020
    assert not limiter.hit(three_per_minute, "ann")
    assert limiter.hit(three_per_minute, "bob")  # keys are apart
    clock.now = 1060  # the first entry is exactly a window old: it still counts
    assert not limiter.hit(three_per_minute, "ann")
    clock.now = 1060.5
    assert limiter.hit(three_per_minute, "ann")
    reset, remaining = limiter.get_window_stats(three_per_minute, "ann")
    assert remaining == 0 and reset == 1010 + 60


def test_many_keys_are_pruned_of_those_whose_window_has_passed(monkeypatch):
    monkeypatch.setattr(clocked_window, "MAX_KEYS", 5)
    clock = Clock()
    storage = ClockedMemoryStorage(clock)
    limiter = MovingWindowRateLimiter(storage)
    per_minute = RateLimitItemPerSecond(2, 60)
    for key in "abcde":
        limiter.hit(per_minute, key)
    clock.now += 30
    limiter.hit(per_minute, "f")  # six keys, none expired: all kept
    assert len(storage.events) == 6
    clock.now += 45  # a–e are 75 s old, f is 45 s old
    limiter.hit(per_minute, "g")
    assert [key.split("/")[1] for key in sorted(storage.events)] == ["f", "g"]
