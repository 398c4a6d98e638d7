"""Publisher confirms of one channel: sequence numbers, pending confirms, coalescing.

Rules of this module (reference 2.6; RabbitMQ ``rabbit_confirms`` and
``rabbit_channel:send_confirms_and_nacks/1``, ``coalesce_and_send/4``):
- After confirm.select every basic.publish takes the next sequence number, starting at 1,
  routable or not.
- A publish is confirmed once every queue it was routed to has accepted it (``insert`` then
  ``settle`` per queue); an unroutable publish is confirmed at once (``confirm``). A queue
  deleted while holding a publish confirms it, not nacks it (``remove_queue``, as
  ``rabbit_channel:handle_eol/2``). ``reject`` records a basic.nack (queue refused it).
- Confirms accumulate and go out on ``flush()``: the channel flushes at the end of each batch
  of received data, so a burst of publishes costs one basic.ack(multiple=true). RabbitMQ's
  own batching is incidental (a burst of unroutable publishes gets one single ack each, one
  to a classic queue a few multiple acks: oracle); clients must accept any valid grouping,
  and ours is the cheapest.
- ``flush()`` coalesces exactly as ``coalesce_and_send`` does:
  * one confirm alone → basic.ack(tag, multiple=false);
  * otherwise sort; cutoff = min(smallest still-unconfirmed seqno, or last+1 if none; every
    nacked seqno); the confirmed seqnos below the cutoff become one ack(last, multiple=true),
    the others single acks;
  * nacks the same way with the roles swapped (and no single-element special case).
  Acks are emitted before nacks.
- A publish whose message went to the durable log waits for the log instead
  (``wait_for_disk(seq, token)``, the token of its record): ``on_disk(committed)``
  confirms every waiting seqno whose token is committed, oldest first. Tokens grow with
  seqnos, so the waiting ones are a FIFO and a commit's confirms cost a few list
  operations each, no per-publish set or callback. They count as unconfirmed for the
  coalescing as any pending seqno does.
- No I/O here: ``flush`` returns ``ConfirmFrame`` values the channel encodes.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Hashable, Iterable
from typing import NamedTuple


class ConfirmFrame(NamedTuple):
    """basic.ack (``ack=True``) or basic.nack with ``delivery_tag`` and ``multiple``."""

    ack: bool
    delivery_tag: int
    multiple: bool


class ConfirmTracker:
    __slots__ = ("_confirmed", "_on_disk", "_pending", "_rejected", "disk_watched", "next_seq")

    def __init__(self) -> None:
        self.next_seq = 1
        # seqno -> queues that have not accepted it yet (insertion order = seqno order).
        self._pending: dict[int, set[Hashable]] = {}
        # (log token, seqno) of the publishes waiting for the durable log, in order.
        self._on_disk: deque[tuple[int, int]] = deque()
        # Set by the channel while it has a commit callback registered for them.
        self.disk_watched = False
        self._confirmed: list[int] = []
        self._rejected: list[int] = []

    # -- recording -------------------------------------------------------------------------

    def take_seq(self) -> int:
        seq = self.next_seq
        self.next_seq = seq + 1
        return seq

    def confirm(self, seq: int) -> None:
        """Confirm ``seq`` now (unroutable, or every queue accepted it synchronously)."""
        self._confirmed.append(seq)

    def insert(self, seq: int, queues: Iterable[Hashable]) -> None:
        """``seq`` waits for each of ``queues`` to ``settle`` it (none → confirmed now)."""
        waiting = set(queues)
        if waiting:
            self._pending[seq] = waiting
        else:
            self._confirmed.append(seq)

    def settle(self, seqs: Iterable[int], queue: Hashable) -> None:
        """``queue`` has accepted ``seqs`` (e.g. after its fsync)."""
        pending = self._pending
        for seq in seqs:
            waiting = pending.get(seq)
            if waiting is None:
                continue
            waiting.discard(queue)
            if not waiting:
                del pending[seq]
                self._confirmed.append(seq)

    def wait_for_disk(self, seq: int, token: int) -> None:
        """``seq`` is confirmed once the durable log has committed ``token``."""
        self._on_disk.append((token, seq))

    def on_disk(self, committed: int) -> bool:
        """The log committed every token up to ``committed``: confirm what waited for
        them. Returns whether publishes still wait for the log."""
        waiting = self._on_disk
        confirmed = self._confirmed
        while waiting and waiting[0][0] <= committed:
            confirmed.append(waiting.popleft()[1])
        return bool(waiting)

    def reject(self, seq: int) -> None:
        """Nack ``seq`` (a queue refused it); a pending seq stops waiting for the others."""
        self._pending.pop(seq, None)
        self._rejected.append(seq)

    def remove_queue(self, queue: Hashable) -> None:
        """``queue`` is gone: what waited only on it is confirmed (rabbit_channel:handle_eol)."""
        for seq in [s for s, waiting in self._pending.items() if queue in waiting]:
            self.settle((seq,), queue)

    # -- output ----------------------------------------------------------------------------

    @property
    def has_output(self) -> bool:
        return bool(self._confirmed or self._rejected)

    @property
    def unconfirmed_count(self) -> int:
        return len(self._pending) + len(self._on_disk)

    def flush(self) -> list[ConfirmFrame]:
        """Take the accumulated confirms and nacks as frames, coalesced (module rules)."""
        confirmed, rejected = self._confirmed, self._rejected
        if not confirmed and not rejected:
            return []
        self._confirmed, self._rejected = [], []
        smallest_pending = next(iter(self._pending), None)
        if self._on_disk:
            first = self._on_disk[0][1]
            if smallest_pending is None or first < smallest_pending:
                smallest_pending = first
        frames: list[ConfirmFrame] = []
        if len(confirmed) == 1:
            # send_confirms([MsgSeqNo], ...) -> a plain single ack.
            frames.append(ConfirmFrame(True, confirmed[0], False))
        elif confirmed:
            _coalesce(True, confirmed, rejected, smallest_pending, frames)
        if rejected:
            _coalesce(False, rejected, confirmed, smallest_pending, frames)
        return frames

    def clear(self) -> None:
        """Channel gone: nothing more will be sent (RabbitMQ drops sends while closing)."""
        self._pending.clear()
        self._on_disk.clear()
        self._confirmed.clear()
        self._rejected.clear()


def _coalesce(
    ack: bool,
    seqs: list[int],
    negative: list[int],
    smallest_pending: int | None,
    out: list[ConfirmFrame],
) -> None:
    ordered = sorted(set(seqs))
    cutoff = ordered[-1] + 1 if smallest_pending is None else smallest_pending
    if negative:
        cutoff = min(cutoff, min(negative))
    below = [s for s in ordered if s < cutoff]
    if below:
        out.append(ConfirmFrame(ack, below[-1], True))
    out.extend(ConfirmFrame(ack, s, False) for s in ordered[len(below) :])
