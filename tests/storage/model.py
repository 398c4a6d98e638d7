"""A plain model of what the durable log should recover: queues with ordered message ids.

Shared by the crash-point test and the state-machine test. An op is one DurableLog call;
``state(ops)`` is what replaying exactly those ops must give.
"""

from __future__ import annotations

from typing import Any

from amqpd.storage.disklog import DiskDurableLog

Op = tuple[Any, ...]
State = dict[str, tuple[list[int], frozenset[int]]]  # queue -> (ids in order, delivered ids)


def apply_op(log: DiskDurableLog, op: Op) -> None:
    kind = op[0]
    if kind == "declare":
        log.queue_declared("/", op[1], auto_delete=False, arguments={})
    elif kind == "delete":
        log.queue_deleted("/", op[1])
    elif kind == "publish":
        msg_id = log.message_published("/", op[2], "", "", b"\x00\x00", b"m%d" % op[1])
        assert msg_id == op[1], "ids are handed out in order"
    elif kind == "deliver":
        log.messages_delivered("/", op[1], [op[2]])
    elif kind == "remove":
        log.messages_removed("/", op[1], [op[2]])
    else:
        raise AssertionError(op)


def state(ops: list[Op]) -> State:
    queues: dict[str, list[int]] = {}
    delivered: dict[str, set[int]] = {}
    for op in ops:
        kind = op[0]
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
    out: State = {}
    for (_, name), queue in log.catalog.queues.items():
        ids = list(queue.messages)
        marked = frozenset(i for i in ids if name in log.catalog.messages[i].delivered)
        out[name] = (ids, marked)
    return out


def matching_prefix(ops: list[Op], committed: int, got: State) -> int | None:
    """The k >= committed with state(ops[:k]) == got, if any: the log is a prefix."""
    for k in range(committed, len(ops) + 1):
        if state(ops[:k]) == got:
            return k
    return None
