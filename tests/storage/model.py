"""A plain model of what the durable log should recover: queues with ordered message ids.

Shared by the crash-point test and the state-machine test. An op is one DurableLog call;
``state(ops)`` is what replaying exactly those ops must give; ``Linearized`` keeps the ops
in the order the log writes their records (one-message settlements wait for the commit).
``Known`` is the broker's side of the interface: it remembers each message's segment and
which queues hold it, and names only held messages in removals and delivered markers,
with their segments, as the broker does (the log keeps no per-message state of its own).
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from amqpd.storage.disklog import DiskDurableLog

Op = tuple[Any, ...]
# One-message settlements (DiskDurableLog.message_delivered / message_removed): their
# records wait until the next commit or the next record of another kind than a message.
BATCHED = {"deliver1": "deliver", "remove1": "remove"}
State = dict[str, tuple[list[int], frozenset[int]]]  # queue -> (ids in order, delivered ids)


class Known:
    """What the broker knows of the stored messages: their segments and holders."""

    def __init__(self, log: DiskDurableLog, current: State | None = None) -> None:
        self.log = log
        self.segments: dict[int, int] = {}
        self.held: dict[str, set[int]] = {}
        if current is not None:
            self.reset(log, current)

    def reset(self, log: DiskDurableLog, current: State) -> None:
        """After a reopen: the log now holds ``current`` (segments never move)."""
        self.log = log
        self.held = {q: set(ids) for q, (ids, _) in current.items()}

    def pins(self) -> dict[str, Counter[int]]:
        """Per queue, how many held messages each segment has: what the catalog counts."""
        return {q: Counter(self.segments[i] for i in ids) for q, ids in self.held.items()}


def apply_op(known: Known, op: Op) -> None:
    log = known.log
    kind = op[0]
    if kind == "declare":
        log.queue_declared("/", op[1], auto_delete=False, arguments={})
        known.held.setdefault(op[1], set())
    elif kind == "delete":
        log.queue_deleted("/", op[1])
        known.held.pop(op[1], None)
    elif kind == "publish":
        msg_id = log.message_published("/", op[2], "", "", b"\x00\x00", b"m%d" % op[1])
        assert msg_id == op[1], "ids are handed out in order"
        known.segments[msg_id] = log.last_segment
        for q in op[2]:
            if q in known.held:
                known.held[q].add(msg_id)
    elif kind in ("deliver", "remove", "deliver1", "remove1"):
        queue, msg_id = op[1], op[2]
        if msg_id not in known.held.get(queue, ()):
            return  # the broker never names a message its queue does not hold
        segment = known.segments[msg_id]
        if kind == "deliver":
            log.messages_delivered("/", queue, [msg_id], (segment,))
        elif kind == "deliver1":
            log.message_delivered("/", queue, msg_id, segment)
        elif kind == "remove":
            log.messages_removed("/", queue, [msg_id], (segment,))
            known.held[queue].discard(msg_id)
        else:
            log.message_removed("/", queue, msg_id, segment)
            known.held[queue].discard(msg_id)
    else:
        raise AssertionError(op)


class Linearized:
    """The ops in the order their records are in the log: a one-message settlement's op
    waits (``waiting``) and joins ``ops`` where the log appends its record, at a commit
    (``flush``) or before any op but a publish, grouped as the log writes them: per queue
    (in order of its first waiting op) the markers of messages not removed meanwhile,
    then the removals."""

    def __init__(self) -> None:
        self.ops: list[Op] = []
        self.waiting: list[Op] = []

    def do(self, known: Known, op: Op) -> None:
        kind = BATCHED.get(op[0], op[0])
        # A settlement of a message its queue does not hold never reaches the log.
        logged = kind not in ("deliver", "remove") or op[2] in known.held.get(op[1], ())
        if op[0] in BATCHED:
            if logged:
                self.waiting.append(op)
        else:
            if logged and kind != "publish":
                self.flush()
            self.ops.append(op)
        apply_op(known, op)

    def flush(self) -> None:
        """The log's ``prepare_commit`` (or a record of another kind) is appending them."""
        queues: dict[str, tuple[list[Op], list[Op]]] = {}
        for op in self.waiting:
            queues.setdefault(op[1], ([], []))[op[0] == "remove1"].append(op)
        for delivered, removed in queues.values():
            gone = {op[2] for op in removed}
            self.ops += [op for op in delivered if op[2] not in gone]
            self.ops += removed
        self.waiting = []

    def crashed(self, k: int) -> None:
        """Recovery found the first ``k`` ops; what waited is lost with the process."""
        self.ops = self.ops[:k]
        self.waiting = []


def state(ops: list[Op]) -> State:
    queues: dict[str, list[int]] = {}
    delivered: dict[str, set[int]] = {}
    for op in ops:
        kind = BATCHED.get(op[0], op[0])
        if kind == "declare":
            queues.setdefault(op[1], [])
            delivered.setdefault(op[1], set())
        elif kind == "delete":
            queues.pop(op[1], None)
            delivered.pop(op[1], None)
        elif kind == "publish":
            for q in op[2]:
                if q in queues:
                    queues[q].append(op[1])
        elif kind == "deliver":
            if op[1] in queues and op[2] in queues[op[1]]:
                delivered[op[1]].add(op[2])
        elif kind == "remove" and op[1] in queues and op[2] in queues[op[1]]:
            queues[op[1]].remove(op[2])
            delivered[op[1]].discard(op[2])
    return {q: (ids, frozenset(delivered[q])) for q, ids in queues.items()}


def recovered_state(log: DiskDurableLog) -> State:
    """What replay found (before ``replay_done``): the catalog's arrays."""
    out: State = {}
    for (_, name), queue in log.catalog.queues.items():
        found = list(queue.replayed or ())
        out[name] = ([i for i, *_ in found], frozenset(i for i, _, _, marked in found if marked))
        assert queue.count == len(found)
    return out


def matching_prefix(ops: list[Op], committed: int, got: State) -> int | None:
    """The k >= committed with state(ops[:k]) == got, if any: the log is a prefix."""
    for k in range(committed, len(ops) + 1):
        if state(ops[:k]) == got:
            return k
    return None
