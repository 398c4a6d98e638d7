"""Stateful model test of the durable log: random ops, commits, crashes and restarts.

Hypothesis drives a DiskDurableLog on FakeFiles next to ``model.state``. After a crash (with
unsynced bytes lost, torn or kept, or after an injected I/O failure) the recovered state
must be the model's state after a prefix of the ops at least as long as the last finished
commit; after a clean restart, exactly the model's state. Small segments make rollover and
reclamation happen all the time; split commits (ops appended while a batch is in flight)
are what the server's persister does.
"""

from __future__ import annotations

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from amqpd.storage.disklog import DiskDurableLog
from amqpd.storage.fakefiles import FakeFiles
from amqpd.storage.log import Batch

from .model import Known, Linearized, Op, matching_prefix, recovered_state, state

QUEUES = ("a", "b", "c")
SEGMENT_SIZE = 300
TORN = st.sampled_from(["lost", "half", "kept", "one"])


def _torn(mode: str):  # type: ignore[no-untyped-def]
    return {
        "lost": None,
        "half": lambda name, n: n // 2,
        "kept": lambda name, n: n,
        "one": lambda name, n: 1,
    }[mode]


class DurableLogMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.files = FakeFiles()
        self.log = DiskDurableLog.open(self.files, segment_size=SEGMENT_SIZE)
        self.known = Known(self.log)
        self.linear = Linearized()
        self.committed = 0
        self.batch: Batch | None = None
        self.batch_at = 0

    @property
    def ops(self) -> list[Op]:
        return self.linear.ops

    def _do(self, op: Op) -> None:
        self.linear.do(self.known, op)

    def _current(self) -> dict[str, tuple[list[int], frozenset[int]]]:
        return state(self.linear.ops + self.linear.waiting)

    # -- ops --------------------------------------------------------------------------------
    @rule(queue=st.sampled_from(QUEUES))
    def declare(self, queue: str) -> None:
        if queue not in self._current():
            self._do(("declare", queue))

    @rule(queue=st.sampled_from(QUEUES))
    def delete(self, queue: str) -> None:
        if queue in self._current():
            self._do(("delete", queue))

    @rule(queues=st.lists(st.sampled_from(QUEUES), min_size=1, max_size=3, unique=True))
    def publish(self, queues: list[str]) -> None:
        self._do(("publish", self.log._next_id, tuple(queues)))

    @rule(data=st.data(), remove=st.booleans(), one=st.booleans())
    def settle(self, data: st.DataObject, remove: bool, one: bool) -> None:
        held = [(q, i) for q, (ids, _) in self._current().items() for i in ids]
        if held:
            queue, msg_id = data.draw(st.sampled_from(held))
            # ``one``: the batched one-message call, as the broker's acks use it.
            kind = "remove" if remove else "deliver"
            self._do((kind + "1" if one else kind, queue, msg_id))

    # -- commits ----------------------------------------------------------------------------
    def _finish(self) -> None:
        if self.batch is not None:
            batch, self.batch = self.batch, None
            batch.write()
            self.log.complete_commit(batch)
            self.committed = self.batch_at

    @rule()
    def commit(self) -> None:
        self._finish()
        self.linear.flush()
        self.log.commit()
        self.committed = len(self.ops)

    @precondition(lambda self: self.batch is None)
    @rule()
    def start_commit(self) -> None:
        self.linear.flush()
        self.batch = self.log.prepare_commit()
        self.batch_at = len(self.ops)

    @precondition(lambda self: self.batch is not None)
    @rule()
    def finish_commit(self) -> None:
        self._finish()

    # -- failures ---------------------------------------------------------------------------
    def _reopen_after_crash(self, torn: str) -> None:
        self.batch = None
        self.files.crash(_torn(torn))
        self.log = DiskDurableLog.open(self.files, segment_size=SEGMENT_SIZE)
        got = recovered_state(self.log)
        k = matching_prefix(self.ops, self.committed, got)
        assert k is not None, (self.committed, self.ops, got)
        self.linear.crashed(k)
        self.committed = k
        self.known.reset(self.log, got)
        self.log.replay_done()

    @rule(torn=TORN)
    def crash(self, torn: str) -> None:
        self._reopen_after_crash(torn)

    @rule(after=st.integers(1, 6), torn=TORN)
    def failing_commit(self, after: int, torn: str) -> None:
        self.files.fail_at = self.files.ops + after
        try:
            self.commit()
        except OSError:
            pass
        else:
            self.files.fail_at = None
        self._reopen_after_crash(torn)

    @rule()
    def clean_restart(self) -> None:
        self._finish()
        self.linear.flush()
        self.log.close()
        self.log = DiskDurableLog.open(self.files, segment_size=SEGMENT_SIZE)
        assert self.log.report.clean_shutdown
        assert recovered_state(self.log) == self._current()
        self.committed = len(self.ops)
        self.known.reset(self.log, self._current())
        self.log.replay_done()

    @invariant()
    def catalog_counts_exactly_the_live_messages(self) -> None:
        # Per queue, per segment: the catalog's only knowledge of messages at run time.
        pins = {q: +counts for q, counts in self.known.pins().items()}
        got = {name: dict(queue.pins) for (_, name), queue in self.log.catalog.queues.items()}
        assert got == {q: dict(c) for q, c in pins.items()}
        assert all(queue.replayed is None for queue in self.log.catalog.queues.values())

    @invariant()
    def disk_tracks_live_data(self) -> None:
        # Never more segments than live entities could need, plus the head and those
        # pinned by deletions of what they hold: a loose bound that catches leaks.
        segments = [n for n in self.files.list() if n.endswith(".seg")]
        held = sum(queue.count for queue in self.log.catalog.queues.values())
        assert len(segments) <= 4 + 2 * (held + 3)


DurableLogMachine.TestCase.settings = settings(
    max_examples=60, stateful_step_count=40, deadline=None
)
TestDurableLog = DurableLogMachine.TestCase
