"""TimerHeap: the batcher's many deadlines behind one clock timer (on a FakeClock, no sleeps)."""

from __future__ import annotations

from modelserve.execution.clock import FakeClock, TimerHeap


def test_timers_fire_in_time_order_with_one_clock_timer_armed() -> None:
    clock = FakeClock(start=0.0)
    timers = TimerHeap(clock)
    fired: list[str] = []
    for when, name in ((3.0, "c"), (1.0, "a"), (2.0, "b"), (2.0, "b2")):
        timers.call_at(when, fired.append, name)
    assert clock.pending_timers == 1 and len(timers) == 4
    clock.advance(1.5)
    assert fired == ["a"]
    clock.advance(1.0)
    assert fired == ["a", "b", "b2"]  # equal times fire in the order they were set
    clock.advance(10.0)
    assert fired == ["a", "b", "b2", "c"] and len(timers) == 0 and clock.pending_timers == 0


def test_a_cancelled_timer_never_fires_and_cancelling_a_fired_one_does_nothing() -> None:
    clock = FakeClock(start=0.0)
    timers = TimerHeap(clock)
    fired: list[int] = []
    first = timers.call_at(1.0, fired.append, 1)
    second = timers.call_at(2.0, fired.append, 2)
    first.cancel()
    first.cancel()
    assert len(timers) == 1
    clock.advance(5.0)
    assert fired == [2]
    second.cancel()
    assert len(timers) == 0 and timers.cancelled == 0


def test_an_earlier_timer_rearms_the_clock() -> None:
    clock = FakeClock(start=0.0)
    timers = TimerHeap(clock)
    fired: list[str] = []
    timers.call_at(10.0, fired.append, "late")
    timers.call_at(1.0, fired.append, "early")
    clock.advance(1.0)
    assert fired == ["early"]


def test_a_timer_may_set_another_from_its_callback() -> None:
    clock = FakeClock(start=0.0)
    timers = TimerHeap(clock)
    fired: list[float] = []

    def again() -> None:
        fired.append(clock.now())
        if len(fired) < 3:
            timers.call_at(clock.now() + 1.0, again)

    timers.call_at(1.0, again)
    clock.advance(10.0)
    assert fired == [1.0, 2.0, 3.0]


def test_cancelled_timers_do_not_pile_up() -> None:
    # As in the batcher: every request sets a 30 s deadline and cancels it a moment later.
    clock = FakeClock(start=0.0)
    timers = TimerHeap(clock)
    fired: list[int] = []
    for i in range(10_000):
        timers.call_at(clock.now() + 30.0, fired.append, i).cancel()
        clock.advance(0.001)
    assert len(timers) == 0 and timers.cancelled <= 64
    kept = timers.call_at(clock.now() + 30.0, fired.append, -1)
    clock.advance(31.0)
    assert fired == [-1]
    kept.cancel()
