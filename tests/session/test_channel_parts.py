"""The channel's pure parts: unacked tracking, confirm coalescing, qos limiter, tx buffer,
publish checks. Expected values come from RabbitMQ's source or the oracle (see each module)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from amqpd.errors import PreconditionFailed
from amqpd.session.confirms import ConfirmFrame, ConfirmTracker
from amqpd.session.limiter import Limiter
from amqpd.session.publish_checks import check_size, check_user_id, parse_expiration
from amqpd.session.tx import TxBuffer
from amqpd.session.unacked import Unacked, UnackedTracker

# -- unacked -------------------------------------------------------------------------------


def _tracker(*tags: int) -> UnackedTracker:
    t = UnackedTracker()
    for tag in tags:
        t.add(Unacked(tag, None, None, None))
    return t


def _tags(records: list[Unacked]) -> list[int]:
    return [r.tag for r in records]


def test_single_ack_takes_only_that_tag() -> None:
    t = _tracker(1, 2, 3)
    assert _tags(t.collect(2, False)) == [2]
    assert _tags(list(t)) == [1, 3]


def test_multiple_ack_takes_everything_up_to_the_tag() -> None:
    t = _tracker(1, 2, 3, 4)
    assert _tags(t.collect(3, True)) == [1, 2, 3]
    assert _tags(list(t)) == [4]


def test_multiple_ack_skips_already_acked_tags_below() -> None:
    # Oracle: ack(2), then ack(3, multiple) is fine.
    t = _tracker(1, 2, 3)
    t.collect(2, False)
    assert _tags(t.collect(3, True)) == [1, 3]


def test_multiple_ack_of_an_acked_tag_is_unknown() -> None:
    # Oracle: ack(2), then ack(2, multiple) -> 406 "unknown delivery tag 2".
    t = _tracker(1, 2, 3)
    t.collect(2, False)
    with pytest.raises(PreconditionFailed, match="unknown delivery tag 2"):
        t.collect(2, True)
    assert _tags(list(t)) == [1, 3]


def test_tag_zero_multiple_takes_all_even_none() -> None:
    t = _tracker(5, 6)
    assert _tags(t.collect(0, True)) == [5, 6]
    assert t.collect(0, True) == []


def test_tag_zero_single_is_unknown() -> None:
    with pytest.raises(PreconditionFailed) as exc:
        _tracker(1).collect(0, False)
    assert exc.value.reply_text == "PRECONDITION_FAILED - unknown delivery tag 0"


def test_restore_keeps_ascending_order() -> None:
    t = _tracker(1, 2, 3, 4)
    taken = t.collect(1, False) + t.collect(3, False)
    t.restore(taken)
    assert _tags(list(t)) == [1, 2, 3, 4]
    assert _tags(t.collect(2, True)) == [1, 2]


class UnackedMachine(RuleBasedStateMachine):
    """The tracker against a plain sorted-set model of RabbitMQ's collect_acks."""

    def __init__(self) -> None:
        super().__init__()
        self.tracker = UnackedTracker()
        self.model: set[int] = set()
        self.next_tag = 1

    @rule(n=st.integers(1, 4))
    def deliver(self, n: int) -> None:
        for _ in range(n):
            self.tracker.add(Unacked(self.next_tag, None, None, None))
            self.model.add(self.next_tag)
            self.next_tag += 1

    @rule(data=st.data(), multiple=st.booleans())
    def ack(self, data: st.DataObject, multiple: bool) -> None:
        tag = data.draw(st.integers(0, self.next_tag + 1))
        if multiple and tag == 0:
            expected = sorted(self.model)
        elif tag in self.model:
            expected = sorted(t for t in self.model if t <= tag) if multiple else [tag]
        else:
            with pytest.raises(PreconditionFailed, match=f"unknown delivery tag {tag}$"):
                self.tracker.collect(tag, multiple)
            return
        assert _tags(self.tracker.collect(tag, multiple)) == expected
        self.model -= set(expected)

    @precondition(lambda self: self.model)
    @rule(data=st.data())
    def ack_outstanding(self, data: st.DataObject) -> None:
        tag = data.draw(st.sampled_from(sorted(self.model)))
        assert _tags(self.tracker.collect(tag, False)) == [tag]
        self.model.discard(tag)

    @rule()
    def recover(self) -> None:
        assert _tags(self.tracker.pop_all()) == sorted(self.model)
        self.model.clear()

    @invariant()
    def same_outstanding(self) -> None:
        assert _tags(list(self.tracker)) == sorted(self.model)
        assert len(self.tracker) == len(self.model)


TestUnackedMachine = UnackedMachine.TestCase


# -- confirms ------------------------------------------------------------------------------


def test_seq_numbers_start_at_one() -> None:
    c = ConfirmTracker()
    assert [c.take_seq() for _ in range(3)] == [1, 2, 3]


def test_one_confirm_is_a_single_ack() -> None:
    c = ConfirmTracker()
    c.confirm(c.take_seq())
    assert c.flush() == [ConfirmFrame(True, 1, False)]
    assert c.flush() == []


def test_a_batch_coalesces_into_one_multiple_ack() -> None:
    c = ConfirmTracker()
    for _ in range(5):
        c.confirm(c.take_seq())
    assert c.flush() == [ConfirmFrame(True, 5, True)]


def test_confirms_above_a_pending_seq_go_single() -> None:
    c = ConfirmTracker()
    c.confirm(c.take_seq())  # 1
    c.insert(c.take_seq(), ["q"])  # 2 pending
    c.confirm(c.take_seq())  # 3
    c.confirm(c.take_seq())  # 4
    assert c.flush() == [
        ConfirmFrame(True, 1, True),
        ConfirmFrame(True, 3, False),
        ConfirmFrame(True, 4, False),
    ]
    c.settle([2], "q")
    assert c.flush() == [ConfirmFrame(True, 2, False)]


def test_nack_cuts_the_multiple_ack() -> None:
    c = ConfirmTracker()
    for _ in range(2):
        c.confirm(c.take_seq())  # 1, 2
    c.reject(c.take_seq())  # 3
    c.confirm(c.take_seq())  # 4
    assert c.flush() == [
        ConfirmFrame(True, 2, True),
        ConfirmFrame(True, 4, False),
        ConfirmFrame(False, 3, False),
    ]


def test_a_lone_nack_is_multiple_as_rabbitmq_sends_it() -> None:
    # send_nacks has no single-element clause: coalesce_and_send gives nack(N, multiple).
    c = ConfirmTracker()
    c.reject(c.take_seq())
    assert c.flush() == [ConfirmFrame(False, 1, True)]


def test_settle_waits_for_every_queue() -> None:
    c = ConfirmTracker()
    seq = c.take_seq()
    c.insert(seq, ["a", "b"])
    c.settle([seq], "a")
    assert c.flush() == []
    c.settle([seq], "b")
    assert c.flush() == [ConfirmFrame(True, 1, False)]


def test_deleted_queue_confirms_what_waited_on_it() -> None:
    c = ConfirmTracker()
    c.insert(c.take_seq(), ["a"])
    c.insert(c.take_seq(), ["a", "b"])
    c.remove_queue("a")
    assert c.flush() == [ConfirmFrame(True, 1, False)]
    assert c.unconfirmed_count == 1


def test_disk_waits_confirm_in_token_order_and_coalesce() -> None:
    c = ConfirmTracker()
    for token in (10, 10, 11, 12):  # seqs 1..4; two publishes may share a token
        c.wait_for_disk(c.take_seq(), token)
    assert c.unconfirmed_count == 4 and c.flush() == []
    assert c.on_disk(11)  # 4 still waits
    assert c.flush() == [ConfirmFrame(True, 3, True)]
    assert not c.on_disk(12)
    assert c.flush() == [ConfirmFrame(True, 4, False)]
    assert c.unconfirmed_count == 0


def test_a_disk_wait_cuts_the_multiple_ack_of_later_confirms() -> None:
    # A transient publish after a durable one is confirmed first, alone: the durable one
    # is still unconfirmed, so no multiple ack may cover it (coalesce_and_send's cutoff).
    c = ConfirmTracker()
    c.confirm(c.take_seq())  # 1
    c.wait_for_disk(c.take_seq(), 5)  # 2
    c.confirm(c.take_seq())  # 3
    c.confirm(c.take_seq())  # 4
    assert c.flush() == [
        ConfirmFrame(True, 1, True),
        ConfirmFrame(True, 3, False),
        ConfirmFrame(True, 4, False),
    ]
    c.on_disk(5)
    assert c.flush() == [ConfirmFrame(True, 2, False)]


def test_the_smallest_unconfirmed_of_either_kind_is_the_cutoff() -> None:
    c = ConfirmTracker()
    c.insert(c.take_seq(), ["q"])  # 1 waits for a queue
    c.wait_for_disk(c.take_seq(), 7)  # 2 waits for the log
    c.confirm(c.take_seq())  # 3
    c.on_disk(7)
    assert c.flush() == [ConfirmFrame(True, 2, False), ConfirmFrame(True, 3, False)]
    c.settle([1], "q")
    assert c.flush() == [ConfirmFrame(True, 1, False)]


def test_clear_drops_the_disk_waits() -> None:
    c = ConfirmTracker()
    c.wait_for_disk(c.take_seq(), 1)
    c.clear()
    assert not c.on_disk(1) and c.flush() == [] and c.unconfirmed_count == 0


# -- limiter -------------------------------------------------------------------------------


def test_global_limit_counts_sent_and_settled() -> None:
    lim = Limiter()
    lim.qos(2, True, 0)
    assert lim.can_send()
    lim.sent()
    lim.sent()
    assert not lim.can_send()
    assert lim.settled(1) is True
    assert lim.can_send()


def test_global_limit_starts_from_current_unacked() -> None:
    lim = Limiter()
    lim.qos(3, True, 3)
    assert not lim.can_send()
    lim.qos(4, True, 99)  # already active: volume kept
    assert lim.can_send()


def test_consumer_qos_unlimits_the_global_limit() -> None:
    # Oracle: qos(2, global) then qos(5) -> a new consumer receives 5.
    lim = Limiter()
    lim.qos(2, True, 0)
    lim.qos(5, False, 0)
    assert lim.consumer_prefetch == 5
    assert not lim.active
    for _ in range(10):
        lim.sent()
    assert lim.can_send()


def test_global_then_consumer_both_apply() -> None:
    lim = Limiter()
    lim.qos(3, False, 0)
    lim.qos(2, True, 0)
    assert lim.consumer_prefetch == 3
    assert lim.global_limit == 2


# -- tx ------------------------------------------------------------------------------------


def test_tx_take_and_rollback() -> None:
    tx = TxBuffer()
    r1, r2 = Unacked(1, None, None, None), Unacked(2, None, None, None)
    tx.add_publish("m", ["q"], False)
    tx.add_settlement("ack", [r1])
    tx.add_settlement("requeue", [])
    tx.add_settlement("discard", [r2])
    assert tx.rollback() == [r1, r2]
    assert tx.take() == ([], [])


# -- publish checks ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "detail"),
    [
        ("abc", "invalid expiration 'abc': no_integer"),
        (" 5", "invalid expiration ' 5': no_integer"),
        ("", "invalid expiration '': no_integer"),
        ("12abc", "invalid expiration '12abc': {leftover_string,\"abc\"}"),
        ("1.5", "invalid expiration '1.5': {leftover_string,\".5\"}"),
        ("-1", "invalid expiration '-1': {value_negative,-1}"),
        ("315360000001", "invalid expiration '315360000001': {value_too_large,315360000001}"),
    ],
)
def test_bad_expiration_texts(value: str, detail: str) -> None:
    with pytest.raises(PreconditionFailed) as exc:
        parse_expiration(value)
    assert exc.value.detail == detail


@pytest.mark.parametrize(
    ("value", "ms"), [("+5", 5), ("-0", 0), ("007", 7), ("315360000000", 315360000000)]
)
def test_good_expirations(value: str, ms: int) -> None:
    assert parse_expiration(value) == ms


@given(st.integers(0, 315360000000))
def test_every_valid_expiration_parses(ms: int) -> None:
    assert parse_expiration(str(ms)) == ms


def test_size_and_user_id_texts() -> None:
    check_size(10, 10)
    with pytest.raises(PreconditionFailed) as exc:
        check_size(11, 10)
    assert exc.value.detail == "message size 11 is larger than configured max size 10"
    with pytest.raises(PreconditionFailed) as exc:
        check_user_id("bob", "guest")
    assert exc.value.detail == "user_id property set to 'bob' but authenticated user was 'guest'"
    check_user_id("guest", "guest")
    check_user_id(None, "guest")


@given(
    st.lists(
        st.tuples(
            st.sampled_from(["confirm", "pending", "reject", "settle", "flush"]), st.integers()
        ),
        max_size=60,
    )
)
def test_coalesced_confirms_never_misreport(ops: list[tuple[str, int]]) -> None:
    """A client applying the frames (multiple = everything outstanding up to the tag) sees
    each publish resolved exactly as the tracker resolved it, and never too early."""
    c = ConfirmTracker()
    truth: dict[int, bool] = {}  # seq -> acked (True) / nacked (False), once resolved
    pending: list[int] = []
    client: dict[int, bool] = {}  # what the client believes, once told
    issued: list[int] = []

    def apply(frames: list[ConfirmFrame]) -> None:
        for frame in frames:
            if frame.multiple:
                covered = [s for s in issued if s <= frame.delivery_tag and s not in client]
            else:
                covered = [frame.delivery_tag]
            for s in covered:
                assert s in truth, f"{frame} covers unresolved {s}"
                assert truth[s] == frame.ack, f"{frame} misreports {s}"
                assert s not in client or frame.multiple
                client[s] = frame.ack

    for op, n in ops:
        if op == "flush":
            apply(c.flush())
            continue
        if op == "settle":
            if pending:
                seq = pending.pop(n % len(pending))
                c.settle([seq], "q")
                truth[seq] = True
            continue
        seq = c.take_seq()
        issued.append(seq)
        if op == "confirm":
            c.confirm(seq)
            truth[seq] = True
        elif op == "reject":
            c.reject(seq)
            truth[seq] = False
        else:
            c.insert(seq, ["q"])
            pending.append(seq)
    for seq in pending:
        c.settle([seq], "q")
        truth[seq] = True
    apply(c.flush())
    assert client == truth
