"""Stream queues in the broker: declaration, offsets, credit, retention (amqpd.broker.stream).

Expected behaviour is RabbitMQ 3.13's (rabbit_stream_queue, osiris_log); texts checked on the
oracle where the interop tests (interop/test_pika_streams.py) say so."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from amqpd.broker.message import Message
from amqpd.broker.queue import QueuedMessage
from amqpd.broker.stream import (
    CHUNK_HEADER_SIZE,
    RECORD_HEADER_SIZE,
    OffsetSpec,
    Retention,
    StreamCrash,
    StreamFilter,
    StreamLog,
    StreamQueue,
    filter_spec,
    max_age_ms,
    parse_offset_arg,
)
from amqpd.broker.vhost import VirtualHost
from amqpd.errors import AMQPError, PreconditionFailed
from amqpd.protocol.fieldtable import Int64, Timestamp
from amqpd.protocol.properties import BasicProperties

STREAM = {"x-queue-type": "stream"}
RES = "queue 's' in vhost '/'"


class Clock:
    """A settable wall clock (seconds)."""

    def __init__(self, t: float = 1_000_000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


class Reader:
    """A stream consumer with explicit credit (None: unlimited)."""
    no_ack = False  # a manual-ack consumer (queue.Consumer)

    def __init__(self, tag: str = "c", credit: int | None = None) -> None:
        self.tag = tag
        self.exclusive = False
        self.priority = 0
        self.credit = credit
        self.got: list[QueuedMessage] = []
        self.cancelled = 0

    def ready(self) -> bool:
        return self.credit is None or self.credit > 0

    def deliver(self, queue: Any, entry: QueuedMessage) -> None:
        self.got.append(entry)
        if self.credit is not None:
            self.credit -= 1

    def cancelled_by_server(self, queue: Any) -> None:
        self.cancelled += 1

    def offsets(self) -> list[int]:
        return [int(e.message.headers()["x-stream-offset"]) for e in self.got]  # type: ignore[call-overload]

    def bodies(self) -> list[bytes]:
        return [e.message.body for e in self.got]


def message(body: bytes = b"m", headers: dict[str, Any] | None = None) -> Message:
    props = BasicProperties(headers=headers)
    return Message("", "s", props.encode(), body, props)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def vh(clock: Clock) -> VirtualHost:
    return VirtualHost("/", wall_clock=clock)


def stream(vh: VirtualHost, **args: Any) -> StreamQueue:
    q = vh.declare_queue("s", durable=True, arguments={**STREAM, **args})
    assert isinstance(q, StreamQueue)
    return q


def publish(q: StreamQueue, n: int, start: int = 0, size: int = 1) -> None:
    for i in range(start, start + n):
        q.enqueue(message(b"%d" % i + b"." * (size - len(b"%d" % i))))


def read(q: StreamQueue, spec: OffsetSpec, credit: int | None = None) -> Reader:
    r = Reader(credit=credit)
    q.add_reader(r, spec)
    q.dispatch()
    return r


# -- declaration ---------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("kw", "prop"),
    [
        ({"durable": False}, "non-durable"),
        ({"durable": True, "exclusive": True}, "exclusive-owner"),
        ({"durable": True, "auto_delete": True}, "auto-delete"),
    ],
)
def test_stream_properties(vh: VirtualHost, kw: dict[str, bool], prop: str) -> None:
    with pytest.raises(PreconditionFailed) as info:
        vh.declare_queue("s", arguments=STREAM, owner=object(), **kw)  # type: ignore[arg-type]
    assert info.value.detail == f"invalid property '{prop}' for {RES}"


@pytest.mark.parametrize(
    ("args", "detail"),
    [
        ({"x-max-age": "7X"}, f"invalid arg 'x-max-age' for {RES}: invalid_max_age"),
        ({"x-max-age": 5}, f"invalid arg 'x-max-age' for {RES}: {{unacceptable_type,signedint}}"),
        (
            {"x-max-priority": 5},
            f"invalid arg 'x-max-priority' for {RES} of queue type rabbit_stream_queue",
        ),
        (
            {"x-message-ttl": 5},
            f"invalid arg 'x-message-ttl' for {RES} of queue type rabbit_stream_queue",
        ),
        (
            {"x-max-length": 10},
            f"invalid arg 'x-max-length' for {RES} of queue type rabbit_stream_queue",
        ),
        (
            {"x-stream-max-segment-size-bytes": 3_000_000_001},
            "Exceeded max value for x-stream-max-segment-size-bytes",
        ),
        (
            {"x-stream-filter-size-bytes": 15},
            "Invalid value for  x-stream-filter-size-bytes",
        ),
        (
            {"x-max-length-bytes": -1},
            f"invalid arg 'x-max-length-bytes' for {RES}: {{value_negative,-1}}",
        ),
    ],
)
def test_stream_argument_errors(vh: VirtualHost, args: dict[str, Any], detail: str) -> None:
    with pytest.raises(PreconditionFailed) as info:
        stream(vh, **args)
    assert info.value.detail == detail
    assert "s" not in vh.queues


def test_server_named_stream(vh: VirtualHost) -> None:
    with pytest.raises(PreconditionFailed) as info:
        vh.declare_queue("", durable=True, arguments=STREAM)
    assert info.value.detail == "Cannot declare a server-named queue for type rabbit_stream_queue"


def test_valid_arguments_and_redeclare(vh: VirtualHost) -> None:
    q = stream(vh, **{"x-max-age": "7D", "x-stream-max-segment-size-bytes": 1000})
    assert q.log.retention == Retention(max_segment_size=1000, max_age_ms=7 * 86_400_000)
    assert stream(vh, **{"x-max-age": "7D", "x-stream-max-segment-size-bytes": 1000}) is q
    with pytest.raises(PreconditionFailed):
        stream(vh, **{"x-max-age": "8D", "x-stream-max-segment-size-bytes": 1000})


def test_counts_purge_get_delete(vh: VirtualHost) -> None:
    q = stream(vh)
    publish(q, 3)
    r = read(q, OffsetSpec("first"))
    # rabbit_stream_queue:stat/1: the log's message count and 0 consumers.
    assert (q.message_count, q.consumer_count, q.unacked_count) == (3, 0, 0)
    assert q.consumers == (r,)
    with pytest.raises(AMQPError) as info:
        q.get()
    assert (info.value.reply_code, info.value.hard) == (540, True)
    assert info.value.detail == f"basic.get not supported by stream queues {RES}"
    with pytest.raises(AMQPError) as info:
        vh.purge_queue("s")
    assert info.value.detail == f"queue.purge not supported by stream queues {RES}"
    # delete ignores if-unused / if-empty and reports 0; consumers are cancelled.
    assert vh.delete_queue("s", if_unused=True, if_empty=True) == 0
    assert r.cancelled == 1 and "s" not in vh.queues


# -- offsets -------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        (OffsetSpec("first"), [0, 1, 2, 3, 4]),
        (OffsetSpec("last"), [4]),
        (OffsetSpec("next"), []),
        (OffsetSpec("offset", 3), [3, 4]),
        (OffsetSpec("offset", 100), []),
        (OffsetSpec("offset", -1), [0, 1, 2, 3, 4]),
        (OffsetSpec("timestamp", 0), [0, 1, 2, 3, 4]),
    ],
)
def test_start_positions(vh: VirtualHost, spec: OffsetSpec, expected: list[int]) -> None:
    q = stream(vh)
    publish(q, 5)
    assert read(q, spec).offsets() == expected


def test_reader_at_the_end_waits_for_new_messages(vh: VirtualHost) -> None:
    q = stream(vh)
    publish(q, 2)
    nxt, far = read(q, OffsetSpec("next")), read(q, OffsetSpec("offset", 4))
    publish(q, 4, start=2)
    assert nxt.offsets() == [2, 3, 4, 5]
    assert far.offsets() == [4, 5]  # waits for offset 4 exactly (oracle: 100 → nothing yet)


def test_last_on_an_empty_stream_is_next(vh: VirtualHost) -> None:
    q = stream(vh)
    r = read(q, OffsetSpec("last"))
    publish(q, 1)
    assert r.offsets() == [0]


def test_timestamps_and_intervals(vh: VirtualHost, clock: Clock) -> None:
    q = stream(vh)
    publish(q, 2)  # at t0
    clock.t += 3600
    publish(q, 2, start=2)  # an hour later
    t0 = int(1_000_000.0)
    at = parse_offset_arg(Timestamp(t0 + 1), RES, lambda: int(clock.t * 1000))
    assert at == OffsetSpec("timestamp", (t0 + 1) * 1000)
    assert read(q, at).offsets() == [2, 3]
    half = parse_offset_arg("30m", RES, lambda: int(clock.t * 1000))
    assert read(q, half).offsets() == [2, 3]
    assert read(q, parse_offset_arg("2h", RES, lambda: int(clock.t * 1000))).offsets() == [
        0,
        1,
        2,
        3,
    ]
    assert read(q, OffsetSpec("timestamp", int(clock.t * 1000) + 1)).offsets() == []


def test_parse_offset_arg() -> None:
    def now() -> int:
        return 10_000_000

    assert parse_offset_arg(None, RES, now) == OffsetSpec("next")
    for word in ("first", "last", "next"):
        assert parse_offset_arg(word, RES, now) == OffsetSpec(word)
        assert parse_offset_arg(word.encode(), RES, now) == OffsetSpec(word)
    assert parse_offset_arg(Int64(7), RES, now) == OffsetSpec("offset", 7)
    assert parse_offset_arg("1h", RES, now) == OffsetSpec("timestamp", 10_000_000 - 3_600_000)
    assert parse_offset_arg(True, RES, now) == OffsetSpec("invalid")
    assert parse_offset_arg(1.5, RES, now) == OffsetSpec("invalid")
    with pytest.raises(PreconditionFailed) as info:
        parse_offset_arg("3", RES, now)  # oracle
    assert info.value.detail == (
        f"invalid arg 'x-stream-offset' for {RES}: "
        '{invalid_stream_offset_arg,{longstr,<<"3">>}}'
    )
    with pytest.raises(PreconditionFailed):
        parse_offset_arg("0h", RES, now)
    with pytest.raises(StreamCrash) as crash:
        parse_offset_arg("bogus", RES, now)  # oracle: the channel crashes
    assert (crash.value.reply_code, crash.value.reply_text) == (541, "INTERNAL_ERROR")


def test_max_age_units() -> None:
    assert [max_age_ms(f"2{u}") for u in "YMDhms"] == [
        2 * 365 * 86_400_000,
        2 * 30 * 86_400_000,
        2 * 86_400_000,
        7_200_000,
        120_000,
        2000,
    ]
    assert max_age_ms("7X") is None and max_age_ms("0D") is None


def test_offset_header_sorted_and_replacing(vh: VirtualHost) -> None:
    q = stream(vh)
    q.enqueue(message(b"a", {"zz": 1, "aa": 2, "x-stream-offset": "fake"}))
    (entry,) = read(q, OffsetSpec("first")).got
    headers = entry.message.headers()
    assert list(headers.items()) == [("aa", 2), ("x-stream-offset", 0), ("zz", 1)]
    assert type(headers["x-stream-offset"]) is Int64
    assert entry.redelivered is False
    # The log keeps the message as published.
    assert q.log.entry(0).message.headers()["x-stream-offset"] == "fake"  # type: ignore[union-attr]


# -- credit --------------------------------------------------------------------------------------
def test_independent_readers_with_credit(vh: VirtualHost) -> None:
    q = stream(vh)
    publish(q, 5)
    a, b = read(q, OffsetSpec("first"), credit=2), read(q, OffsetSpec("offset", 3), credit=5)
    assert (a.offsets(), b.offsets()) == ([0, 1], [3, 4])
    a.credit = 1  # an ack gave one back
    q.ack(a.got[0])
    q.dispatch()
    assert a.offsets() == [0, 1, 2]
    assert q.message_count == 5  # acks delete nothing
    q.requeue(a.got)  # channel close: nothing goes back
    q.remove_consumer(a)
    publish(q, 1, start=5)
    assert (a.offsets(), b.offsets()) == ([0, 1, 2], [3, 4, 5])


# -- retention -----------------------------------------------------------------------------------
ENTRY = CHUNK_HEADER_SIZE + RECORD_HEADER_SIZE + 2 + 48  # empty properties (2 bytes) + 48-byte body
TRACKING = CHUNK_HEADER_SIZE + RECORD_HEADER_SIZE  # the snapshot chunk starting a later segment


def test_segments_roll_and_max_bytes_drops_whole_old_segments(vh: VirtualHost) -> None:
    # A 300-byte segment takes 3 messages (8 + 3 * 102 >= 300); the next segment opens at
    # once with a tracking chunk that takes an offset (oracle: offsets 2, 5, 8 skipped).
    q = stream(vh, **{"x-stream-max-segment-size-bytes": 300, "x-max-length-bytes": 700})
    publish(q, 3, size=48)
    seg0, seg1 = 8 + 3 * ENTRY, 8 + TRACKING + 3 * ENTRY
    assert (q.log.segment_count, q.log.first_offset) == (2, 0)
    assert q.log.bytes == seg0 + 8 + TRACKING
    assert read(q, OffsetSpec("first")).offsets() == [0, 1, 2]
    publish(q, 3, start=3, size=48)  # fills segment 1: 3 segments, over 700 bytes
    assert (q.log.segment_count, q.log.first_offset) == (2, 3)
    assert q.log.bytes == seg1 + 8 + TRACKING
    publish(q, 1, start=6, size=48)
    r = read(q, OffsetSpec("first"))
    assert (r.offsets(), r.bodies()[0][:1]) == ([4, 5, 6, 8], b"3")
    assert q.message_count == 6  # offsets retained, the tracking chunks included
    assert read(q, OffsetSpec("last")).offsets() == [8]


def test_the_active_segment_is_never_dropped(vh: VirtualHost) -> None:
    q = stream(vh, **{"x-stream-max-segment-size-bytes": 0, "x-max-length-bytes": 1})
    publish(q, 5)
    # Every message fills its segment: messages at 0, 2, 4, 6, 8; each fill drops the old
    # segment, so only the new one, with just its tracking chunk, stays (oracle).
    assert (q.log.segment_count, q.log.first_offset, len(q.log)) == (1, 9, 1)
    first, last = read(q, OffsetSpec("first")), read(q, OffsetSpec("last"))
    assert (first.offsets(), last.offsets()) == ([], [])
    publish(q, 1, start=5)
    assert first.offsets() == last.offsets() == [10]


def test_last_is_the_last_message_not_the_tracking_chunk(vh: VirtualHost) -> None:
    q = stream(vh, **{"x-stream-max-segment-size-bytes": 300})
    publish(q, 3, size=48)  # segment 0 full; segment 1 holds only a tracking chunk
    assert q.log.next_offset == 4
    assert read(q, OffsetSpec("last")).offsets() == [2]


def test_max_age_is_evaluated_on_roll_over_only(vh: VirtualHost, clock: Clock) -> None:
    q = stream(vh, **{"x-stream-max-segment-size-bytes": 300, "x-max-age": "60s"})
    publish(q, 3, size=48)  # segment 0 full
    clock.t += 61
    assert q.log.first_offset == 0  # no timer: nothing happens until a write rolls over
    publish(q, 3, start=3, size=48)  # rolls: segment 0 (last chunk 61 s old) goes
    assert q.log.first_offset == 3
    clock.t += 30
    publish(q, 1, start=6, size=48)  # rolls again; segment 1 is 30 s old: kept
    assert (q.log.first_offset, q.log.segment_count) == (3, 2)


def test_a_lagging_reader_skips_what_retention_dropped(vh: VirtualHost) -> None:
    q = stream(vh, **{"x-stream-max-segment-size-bytes": 300, "x-max-length-bytes": 700})
    publish(q, 3, size=48)
    r = read(q, OffsetSpec("first"), credit=0)
    publish(q, 6, start=3, size=48)  # segments 0 and 1 go
    assert q.log.first_offset == 7
    r.credit = None
    q.dispatch()
    assert r.offsets() == [8, 9, 10]


@settings(max_examples=60, deadline=None)
@given(
    segment=st.integers(0, 600),
    max_bytes=st.one_of(st.none(), st.integers(0, 2000)),
    sizes=st.lists(st.integers(0, 120), max_size=40),
    starts=st.lists(st.integers(-3, 45), min_size=1, max_size=4),
    credits=st.lists(st.integers(0, 3), max_size=30),
)
def test_readers_read_the_retained_suffix_in_order(
    segment: int, max_bytes: int | None, sizes: list[int], starts: list[int], credits: list[int]
) -> None:
    log = StreamLog(Retention(max_segment_size=segment, max_bytes=max_bytes))
    for i, n in enumerate(sizes):
        log.append(message(b"x" * n), i)
    # Retention: only whole old segments go, the newest data always stays.
    # Retention drops whole old segments: what stays is contiguous up to the newest chunk.
    assert all(log.entry(o) is not None for o in range(log.first_offset, log.next_offset))
    assert log.next_offset >= len(sizes)
    q = StreamQueue("s", wall_clock=lambda: 0.0)
    q.log = log
    readers = [Reader(f"r{i}", credit=0) for i in range(len(starts))]
    for r, start in zip(readers, starts, strict=True):
        q.add_reader(r, OffsetSpec("offset", start))
    for i, c in enumerate(credits):  # credit arrives in bits, as acks come back
        readers[i % len(readers)].credit = c
        q.dispatch()
    for r in readers:
        r.credit = None
    q.dispatch()
    for r, start in zip(readers, starts, strict=True):
        expected = range(max(start, log.first_offset), log.next_offset)
        assert r.offsets() == [o for o in expected if log.entry(o).message is not None]  # type: ignore[union-attr]


# -- filtering (3.13) ----------------------------------------------------------------------------
def test_filter_spec() -> None:
    assert filter_spec({}) is None
    assert filter_spec({"x-stream-filter": 5}) is None
    assert filter_spec({"x-stream-filter": "ca"}) == StreamFilter(frozenset({"ca"}))
    both = filter_spec({"x-stream-filter": ["ca", 1, "ny"], "x-stream-match-unfiltered": True})
    assert both == StreamFilter(frozenset({"ca", "ny"}), True)
    assert filter_spec({"x-stream-filter": "ca", "x-stream-match-unfiltered": 1}) == StreamFilter(
        frozenset({"ca"})
    )


def test_filtered_readers(vh: VirtualHost) -> None:
    q = stream(vh)
    for i, value in enumerate(["ca", "ny", None, "ca", 7]):
        headers = None if value is None else {"x-stream-filter-value": value}
        q.enqueue(message(b"%d" % i, headers))
    ca = Reader(credit=None)
    q.add_reader(ca, OffsetSpec("first"), filter=StreamFilter(frozenset({"ca"})))
    loose = Reader(credit=None)
    q.add_reader(loose, OffsetSpec("first"), filter=StreamFilter(frozenset({"ny"}), True))
    q.dispatch()
    assert ca.offsets() == [0, 3]
    assert loose.offsets() == [1, 2, 4]  # a non-string value counts as none


# -- a stateful model ----------------------------------------------------------------------------
class StreamMachine(RuleBasedStateMachine):
    """Publishes, readers at random starts, credit in bits, the clock moving: the log stays
    whole-segment consistent and every reader reads the retained messages in order."""

    def __init__(self) -> None:
        super().__init__()
        self.clock = Clock()
        self.q = StreamQueue(
            "s",
            arguments={
                **STREAM,
                "x-stream-max-segment-size-bytes": 400,
                "x-max-length-bytes": 1200,
                "x-max-age": "60s",
            },
            wall_clock=self.clock,
        )
        self.readers: list[tuple[Reader, int]] = []

    @rule(size=st.integers(0, 300))
    def publish(self, size: int) -> None:
        self.q.enqueue(message(b"x" * size))

    @rule(seconds=st.integers(0, 40))
    def time_passes(self, seconds: int) -> None:
        self.clock.t += seconds

    @rule(start=st.integers(-2, 40), credit=st.integers(0, 3))
    def add_reader(self, start: int, credit: int) -> None:
        r = Reader(f"r{len(self.readers)}", credit=credit)
        self.q.add_reader(r, OffsetSpec("offset", start))
        self.q.dispatch()
        self.readers.append((r, max(start, self.q.log.first_offset)))

    @rule(data=st.data(), credit=st.integers(1, 3))
    def ack(self, data: st.DataObject, credit: int) -> None:
        if not self.readers:
            return
        r, _ = data.draw(st.sampled_from(self.readers))
        r.credit = (r.credit or 0) + credit
        self.q.dispatch()

    @invariant()
    def log_is_whole(self) -> None:
        log = self.q.log
        segments = log._segments
        assert log.bytes == sum(s.size for s in segments)
        assert log.first_offset == (segments[0].first_offset if segments[0].entries else 0)
        offsets = [e.offset for s in segments for e in s.entries]
        assert offsets == list(range(log.first_offset, log.next_offset))

    @invariant()
    def readers_read_in_order(self) -> None:
        log = self.q.log
        for r, start in self.readers:
            got = r.offsets()
            assert got == sorted(set(got))
            assert all(o >= start for o in got)
            for a, b in zip([start - 1, *got], got, strict=False):
                # Whatever a reader skipped was a tracking chunk or is gone by retention.
                for o in range(a + 1, b):
                    entry = log.entry(o)
                    assert entry is None or entry.message is None
            position = self.q.position_of(r)
            assert position is not None
            if r.credit:
                assert position >= log.next_offset  # with credit left it is at the end


TestStreamMachine = StreamMachine.TestCase
TestStreamMachine.settings = settings(max_examples=40, stateful_step_count=40, deadline=None)
