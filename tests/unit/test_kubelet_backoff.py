"""CrashLoopBackOff and image pull backoff schedules (node_agent/kubelet/backoff.py)."""

from __future__ import annotations

import pytest

from node_agent.kubelet.backoff import Backoff


class Clock:
    def __init__(self, now: float = 1000.0):
        self.now = now

    def __call__(self) -> float:
        return self.now


def crash_loop(backoff: Backoff, clock: Clock, crashes: int, runs_for: float = 0.0) -> list[float]:
    """Simulate a container that runs `runs_for` seconds then crashes, restarted as
    soon as its backoff allows; returns the wait before each restart."""
    waits = []
    for _ in range(crashes):
        clock.now += runs_for
        finished = clock.now
        wait = backoff.remaining("pod/app", finished)
        waits.append(wait)
        clock.now += wait
        assert not backoff.in_backoff_since("pod/app", finished)
        backoff.next("pod/app", finished)
    return waits


@pytest.mark.parametrize("runs_for, expected", [
    (0.0, [0, 10, 20, 40, 80, 160, 300, 300, 300]),
    (5.0, [0, 10, 20, 40, 80, 160, 300, 300, 300]),
    # Running 11 minutes between crashes resets the backoff every time.
    (660.0, [0, 0, 0, 0]),
], ids=["instant-crashes", "short-runs", "long-runs-reset"])
def test_crash_loop_back_off_doubles_from_10s_to_5m(runs_for, expected):
    clock = Clock()
    waits = crash_loop(Backoff(clock=clock), clock, len(expected), runs_for)
    assert waits == pytest.approx(expected)


def test_a_crash_after_ten_minutes_of_running_starts_over():
    clock = Clock()
    b = Backoff(clock=clock)
    crash_loop(b, clock, 5)          # backoff is now 160 s
    assert b.get("pod/app") == 160
    clock.now += 601                 # ran for 10 minutes and a second
    assert b.remaining("pod/app", clock.now) == 0
    b.next("pod/app", clock.now)
    assert b.get("pod/app") == 10


@pytest.mark.parametrize("elapsed, waiting", [(0, 10), (4, 6), (10, 0), (30, 0)],
                         ids=["at-exit", "midway", "just-over", "long-over"])
def test_remaining_counts_from_the_exit(elapsed, waiting):
    clock = Clock()
    b = Backoff(clock=clock)
    b.next("k", clock.now)           # first restart: no wait, backoff 10 s from now on
    exit_time = clock.now
    clock.now += elapsed
    assert b.remaining("k", exit_time) == pytest.approx(waiting)


def test_image_pull_backoff_counts_from_the_last_failure():
    clock = Clock()
    b = Backoff(clock=clock)
    assert b.remaining_since_update("img") == 0
    b.next("img", clock.now)         # first failure
    assert b.remaining_since_update("img") == 10
    clock.now += 10
    assert b.remaining_since_update("img") == 0
    b.next("img", clock.now)         # second failure
    assert b.remaining_since_update("img") == 20


def test_entries_survive_export_and_restore_across_agents():
    clock = Clock()
    b = Backoff(clock=clock)
    crash_loop(b, clock, 3)
    saved = b.export("pod/")
    assert saved == {"app": [40.0, clock.now]}
    again = Backoff(clock=clock)   # a restarted node agent
    again.restore("pod/", saved)
    assert again.get("pod/app") == 40
    assert again.remaining("pod/app", clock.now) == 40


def test_reset_prefix_forgets_a_pods_containers_only():
    b = Backoff()
    b.next("a/x", 0)
    b.next("a/y", 0)
    b.next("b/x", 0)
    b.reset_prefix("a/")
    assert (b.get("a/x"), b.get("a/y"), b.get("b/x")) == (0, 0, 10)


@pytest.mark.parametrize("initial, maximum", [(0, 10), (10, 5), (-1, 10)])
def test_bad_settings_are_refused(initial, maximum):
    with pytest.raises(ValueError):
        Backoff(initial, maximum)
