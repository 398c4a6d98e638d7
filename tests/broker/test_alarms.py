"""The resource alarm state machine, fed made-up measurements."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from amqpd.broker.alarms import DISK, MEMORY, Alarms


def test_memory_alarm_goes_on_above_the_limit_and_off_below_it() -> None:
    alarms = Alarms(memory_limit=1000, disk_free_limit=50)
    assert alarms.reason is None
    assert not alarms.update(memory_used=1000, disk_free=100)  # at the limit: not above
    assert alarms.update(memory_used=1001)
    assert alarms.active == {MEMORY}
    assert alarms.reason == "low on memory"
    assert not alarms.update(memory_used=1000)  # rabbit clears only below the limit
    assert alarms.update(memory_used=999)
    assert alarms.reason is None


def test_disk_alarm_and_both_together() -> None:
    alarms = Alarms(memory_limit=1000, disk_free_limit=50)
    assert not alarms.update(disk_free=50)  # at the limit: enough
    assert alarms.update(disk_free=49)
    assert alarms.reason == "low on disk"  # rabbit_reader:blocked_by_message/1
    assert alarms.update(memory_used=2000)
    assert alarms.active == {MEMORY, DISK}
    assert alarms.reason == "low on memory & disk"
    assert alarms.update(disk_free=10_000)
    assert alarms.reason == "low on memory"


def test_an_unknown_measurement_keeps_the_state_and_no_limit_means_no_alarm() -> None:
    alarms = Alarms(memory_limit=None, disk_free_limit=None)
    assert not alarms.update(memory_used=10**12, disk_free=0)
    alarms = Alarms(memory_limit=10, disk_free_limit=10)
    alarms.update(memory_used=11, disk_free=1)
    assert not alarms.update()  # could not measure: nothing changes
    assert alarms.active == {MEMORY, DISK}


@given(st.lists(st.tuples(st.integers(0, 20), st.integers(0, 20)), max_size=30))
def test_the_state_depends_on_the_last_measurement_only(steps: list[tuple[int, int]]) -> None:
    alarms = Alarms(memory_limit=10, disk_free_limit=10)
    for memory_used, disk_free in steps:
        before = alarms.active
        changed = alarms.update(memory_used=memory_used, disk_free=disk_free)
        assert changed == (alarms.active != before)
        assert (DISK in alarms.active) == (disk_free < 10)
        if memory_used != 10:
            assert (MEMORY in alarms.active) == (memory_used > 10)
