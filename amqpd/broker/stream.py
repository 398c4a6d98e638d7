"""Stream queues (``x-queue-type: stream``): an append-only log read by independent consumers.

Rules of this module (RabbitMQ 3.13 ``rabbit_stream_queue.erl`` over the osiris log,
``osiris_log.erl``; docs "Streams"; checked on the oracle where a test says so):
- The log: every message gets the next offset (from 0) and its publish time in wall-clock
  milliseconds (the osiris chunk timestamp). amqpd writes one message per chunk, so
  "last" means the last message (RabbitMQ's chunks batch what arrives together; the
  oracle, publishing one at a time, shows the same).
- Segments (``osiris_log:write_chunk/6``): a segment starts with an 8-byte header and takes
  chunks (48-byte chunk header + 4-byte record header + the record) until its size reaches
  ``x-stream-max-segment-size-bytes`` (default 500000000). Then the next segment opens at
  once, starting with the writer's tracking snapshot chunk, which takes an offset but holds
  no message (never delivered; counted in the message count as RabbitMQ counts it), and
  retention is evaluated. The record size amqpd counts is the message's raw properties
  plus its body (RabbitMQ stores an encoding of the whole message, a few hundred bytes
  more; the rules are the same). Oracle: 2 messages per segment give messages at offsets
  0, 1, 3, 4, 6, 7, ...
- Retention (``osiris_log:evaluate_retention0/2``), per whole segment, never the active
  (newest) one: first ``x-max-length-bytes`` (drop the oldest segment while the total size
  exceeds it), then ``x-max-age`` (drop the oldest segment while its LAST chunk is older
  than now minus the age). It is evaluated when a segment fills and when a policy change
  sets new limits (``osiris_log:update_retention/2`` evaluates at once); RabbitMQ has no
  retention timer, so an idle stream keeps its data. A stream can be left with no message
  (only the new segment's tracking chunk) when a full segment alone exceeds the limit.
- Policies (``update_stream_conf/2``): keys ``max-length-bytes``, ``max-age`` and
  ``stream-max-segment-size-bytes``; when both a policy and an ``x-`` argument set one,
  the POLICY wins (``policy_precedence/2``, not the minimum classic queues take). A
  policy change re-applies the byte and age limits to the running stream; the segment
  size is fixed when the stream is created (3.13, rabbitmq-server#10498; 3.10 applied a
  changed one at the stream's next restart). The classic-queue keys (message-ttl,
  expires, max-length, overflow, dead-lettering) never apply to a stream.
- Consumers (``StreamReader``): each has its own read position and its own credit (the
  consumer's ``ready()``: basic.qos prefetch); a consumer at the end waits for new
  messages. Acks only give credit back; nothing is ever removed by a consumer, requeued or
  redelivered. Deliveries carry header ``x-stream-offset`` (long), the headers table
  sorted by key as RabbitMQ re-encodes it (oracle; 3.13 ``mc_amqpl:protocol_state``
  usorts).
- Start positions (``parse_offset_arg``/``osiris:init_reader``): absent or "next" = the
  next offset; "first" = the first retained one; "last" = the last message; an integer N =
  offset N exactly (below the log's start: from the start; beyond its end: the consumer
  waits until offset N is written, as rabbit_stream_queue skips offsets below its
  start_offset); a timestamp (seconds) = the first message published at or after it; an
  interval ("30m", "7D": ``x-max-age`` syntax) = the same from now minus the interval.
- Filtering (3.13): ``x-stream-filter`` consumers get the messages whose
  ``x-stream-filter-value`` header matches (``StreamFilter``).
- The segment storage is behind ``SegmentStore``: in memory without a data directory, else
  segment files (stream_disk.py), reopened with the same offsets, timestamps, segment
  layout and segment size at restart; deleting the stream deletes its segments.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Hashable, Iterable, Mapping
from typing import Any, Protocol

import attrs

from amqpd import errors
from amqpd.broker.arguments import erlang_term, is_int, is_longstr, type_name
from amqpd.broker.message import Message
from amqpd.broker.policies import Policy
from amqpd.broker.queue import Consumer, Queue, QueuedMessage, QueueStatistics
from amqpd.errors import InternalError, PreconditionFailed

# osiris_log: ?LOG_HEADER_SIZE, the chunk header of make_chunk/6, a simple record header.
LOG_HEADER_SIZE = 8
CHUNK_HEADER_SIZE = 48
RECORD_HEADER_SIZE = 4
# rabbit_stream_queue / osiris defaults; rabbit.hrl ?MAX_STREAM_MAX_SEGMENT_SIZE.
DEFAULT_MAX_SEGMENT_SIZE = 500_000_000
MAX_STREAM_MAX_SEGMENT_SIZE = 3_000_000_000

# rabbit_amqqueue:unit_value_in_ms/1
_UNIT_MS = {
    "Y": 365 * 86_400_000,
    "M": 30 * 86_400_000,
    "D": 86_400_000,
    "h": 3_600_000,
    "m": 60_000,
    "s": 1000,
}


class StreamCrash(InternalError):
    """What a client sees when RabbitMQ's channel process crashes: 541 "INTERNAL_ERROR".

    The close carries no explanation (``detail`` is empty); ``why`` says what crashed.
    """

    def __init__(self, why: str) -> None:
        super().__init__("")
        self.why = why

    @property
    def reply_text(self) -> str:
        return "INTERNAL_ERROR"


def _text(value: object) -> str:
    return value.decode("utf-8", errors="replace") if isinstance(value, bytes) else str(value)


def max_age_ms(value: object) -> int | None:
    """rabbit_amqqueue:check_max_age/1: "<digits><Y|M|D|h|m|s>" in ms; None when invalid.

    Raises ``StreamCrash`` when the text does not start with a digit: RabbitMQ's
    ``list_to_integer("")`` crashes there (oracle: x-stream-offset "bogus" → 541).
    """
    text = _text(value)
    digits = len(text) - len(text.lstrip("0123456789"))
    if digits == 0:
        raise StreamCrash(f"check_max_age({text!r}): badarg")
    amount = int(text[:digits])
    unit = _UNIT_MS.get(text[digits:])
    if amount <= 0 or unit is None:
        return None
    return amount * unit


# -- declaration -------------------------------------------------------------------------------
def check_declare(arguments: Mapping[str, Any]) -> None:
    """rabbit_stream_queue:declare/2 checks after the durable/exclusive/auto-delete ones."""
    size = arguments.get("x-stream-max-segment-size-bytes")
    if size is not None and is_int(size) and int(size) > MAX_STREAM_MAX_SEGMENT_SIZE:
        raise PreconditionFailed("Exceeded max value for x-stream-max-segment-size-bytes")
    bloom = arguments.get("x-stream-filter-size-bytes")
    if bloom is not None and is_int(bloom) and not 16 <= int(bloom) <= 255:
        # The double space is RabbitMQ's (rabbit_stream_queue:check_filter_size/1).
        raise PreconditionFailed("Invalid value for  x-stream-filter-size-bytes")


@attrs.frozen(slots=True)
class Retention:
    """A stream's retention settings (rabbit_stream_queue:update_stream_conf/2)."""

    max_segment_size: int = DEFAULT_MAX_SEGMENT_SIZE
    max_bytes: int | None = None
    max_age_ms: int | None = None

    @classmethod
    def from_arguments(
        cls, arguments: Mapping[str, Any], policy: Policy | None = None
    ) -> Retention:
        """The retention a stream declared with ``arguments`` runs with under ``policy``.

        Per key, the policy's value when it sets one, else the argument's
        (``policy_precedence/2``, rabbitmq-server#3087: unlike a classic queue's limits,
        which take the lower of the two, so a policy can lengthen a stream's retention).
        """
        definition: Mapping[str, Any] = policy.definition if policy is not None else {}

        def pick(key: str, wanted: Callable[[object], bool]) -> Any:
            value = definition.get(key)
            if value is not None and wanted(value):
                return value
            value = arguments.get("x-" + key)
            return value if value is not None and wanted(value) else None

        size = pick("stream-max-segment-size-bytes", is_int)
        max_bytes = pick("max-length-bytes", is_int)
        age = pick("max-age", is_longstr)
        return cls(
            max_segment_size=int(size) if size is not None else DEFAULT_MAX_SEGMENT_SIZE,
            max_bytes=int(max_bytes) if max_bytes is not None else None,
            max_age_ms=max_age_ms(age) if age is not None else None,
        )


# -- consume arguments -------------------------------------------------------------------------
@attrs.frozen(slots=True)
class OffsetSpec:
    """Where a consumer starts: kind "next" | "first" | "last" | "offset" | "timestamp"."""

    kind: str
    value: int = 0  # the offset, or the timestamp in ms


def parse_offset_arg(value: object, resource: str, wall_ms: Callable[[], int]) -> OffsetSpec:
    """The ``x-stream-offset`` consume argument, checked as RabbitMQ 3.13 checks it.

    rabbit_amqqueue:check_consume_arguments runs rabbit_stream_queue:parse_offset_arg/1:
    a string that is neither first/last/next nor a valid interval → 406
    ``{invalid_stream_offset_arg,...}`` (oracle, "3"); one not starting with a digit crashes
    the channel (541, oracle "bogus"). A value of any other type passes the check and makes
    osiris crash when the reader starts: ``OffsetSpec("invalid")`` (541 after the qos
    checks, oracle: a bool).
    """
    if value is None:
        return OffsetSpec("next")
    if isinstance(value, str | bytes) and _text(value) in ("first", "last", "next"):
        return OffsetSpec(_text(value))
    if type_name(value) == "timestamp":
        return OffsetSpec("timestamp", int(value) * 1000)  # type: ignore[call-overload]
    if is_longstr(value):
        interval = max_age_ms(value)
        if interval is None:
            raise PreconditionFailed(
                f"invalid arg 'x-stream-offset' for {resource}: "
                f"{{invalid_stream_offset_arg,{{{type_name(value)},{erlang_term(value)}}}}}"
            )
        return OffsetSpec("timestamp", wall_ms() - interval)
    if is_int(value):
        return OffsetSpec("offset", int(value))  # type: ignore[call-overload]
    return OffsetSpec("invalid")


@attrs.frozen(slots=True)
class StreamFilter:
    """A consumer's ``x-stream-filter`` (3.13 stream filtering, docs "Filtering").

    RabbitMQ filters per chunk with a Bloom filter of the chunk's ``x-stream-filter-value``
    headers, so a consumer may get a few non-matching messages; amqpd's chunks hold one
    message each, so it filters exactly: a message with a filter value is delivered when
    the value is one of ``values``, one without when ``match_unfiltered``.
    """

    values: frozenset[str]
    match_unfiltered: bool = False

    def accepts(self, entry: StreamEntry) -> bool:
        value = entry.filter_value
        return self.match_unfiltered if value is None else value in self.values


def filter_spec(arguments: Mapping[str, Any]) -> StreamFilter | None:
    """rabbit_stream_queue:filter_spec/1: a longstr or an array of them (other elements and
    other types: no filter); ``x-stream-match-unfiltered`` counts only as a bool."""
    raw = arguments.get("x-stream-filter")
    if isinstance(raw, list):
        values = frozenset(_text(v) for v in raw if is_longstr(v))
    elif is_longstr(raw):
        values = frozenset((_text(raw),))
    else:
        return None
    return StreamFilter(values, arguments.get("x-stream-match-unfiltered") is True)


# -- the log -----------------------------------------------------------------------------------
class StreamEntry:
    """One chunk of the log: a message, or (``message`` None) a tracking snapshot.

    ``offset`` is its offset, ``timestamp`` its write time (wall-clock ms).
    """

    __slots__ = ("_delivered", "_filter_value", "message", "offset", "size", "timestamp")

    def __init__(self, offset: int, timestamp: int, message: Message | None) -> None:
        self.offset = offset
        self.timestamp = timestamp
        self.message = message
        self.size = CHUNK_HEADER_SIZE + RECORD_HEADER_SIZE
        if message is not None:
            self.size += len(message.properties_raw) + len(message.body)
        self._delivered: QueuedMessage | None = None
        self._filter_value: str | bool | None = False  # False: not looked at yet

    @property
    def filter_value(self) -> str | None:
        """The message's ``x-stream-filter-value`` header, when a string (3.13 reads only
        utf8 values: ``mc:x_header``)."""
        value = self._filter_value
        if value is False:
            message = self.message
            value = None
            if message is not None and b"x-stream-filter-value" in message.properties_raw:
                raw = message.headers().get("x-stream-filter-value")
                value = _text(raw) if is_longstr(raw) else None
            self._filter_value = value
        return value  # type: ignore[return-value]

    def delivery(self) -> QueuedMessage:
        """What consumers get: the message with ``x-stream-offset`` in its headers.

        rabbit_stream_queue adds the header on read; RabbitMQ's table comes out sorted by
        key and the offset replaces a header of that name (oracle). Built once per entry.
        """
        delivered = self._delivered
        if delivered is None:
            from amqpd.protocol.fieldtable import Int64

            message = self.message
            assert message is not None
            headers: dict[str, Any] = dict(message.headers())
            headers["x-stream-offset"] = Int64(self.offset)
            props = attrs.evolve(message.properties, headers=dict(sorted(headers.items())))
            delivered = QueuedMessage(message.with_properties(props), self.offset)
            self._delivered = delivered
        return delivered


class Segment:
    """One segment of the log: consecutive entries, their byte size, their time span.

    The in-memory segment keeps its entries; a disk-backed one (stream_disk.py) writes each
    chunk to its file and reads entries back by index, so the queue logic only uses
    ``append``, ``get``, ``timestamp_at``, ``len()``, ``first_offset``, ``last_timestamp``,
    ``size`` and ``last_message``.
    """

    __slots__ = ("_first", "entries", "last_message", "size")

    def __init__(self, first_offset: int = 0) -> None:
        self._first = first_offset
        self.entries: list[StreamEntry] = []
        self.size = LOG_HEADER_SIZE
        self.last_message = -1  # offset of the newest message in it (-1: none)

    def append(self, entry: StreamEntry) -> None:
        self.entries.append(entry)
        self.size += entry.size
        if entry.message is not None:
            self.last_message = entry.offset

    def __len__(self) -> int:
        return len(self.entries)

    def get(self, index: int) -> StreamEntry:
        return self.entries[index]

    def timestamp_at(self, index: int) -> int:
        return self.entries[index].timestamp

    @property
    def first_offset(self) -> int:
        return self._first

    @property
    def last_timestamp(self) -> int:
        return self.entries[-1].timestamp


class SegmentStore(Protocol):
    """Where segments live: memory (``MemorySegments``) or files (stream_disk.py)."""

    def recovered(self) -> list[Segment]:
        """The segments found at open, oldest first (empty for a new stream)."""
        ...

    def open_segment(self, first_offset: int) -> Segment:
        """A new, empty segment to append to, whose first entry gets ``first_offset``."""
        ...

    def delete_segment(self, segment: Segment) -> None:
        """Retention dropped ``segment`` (it is never read again)."""
        ...

    def destroy(self) -> None:
        """The stream was deleted: drop every segment (and its files)."""
        ...

    def kept_segment_size(self, size: int) -> int:
        """The segment size the stream was created with: the one kept for a reopened
        stream, else ``size``, kept from now on (a policy may have chosen it)."""
        ...


class MemorySegments:
    """The ``SegmentStore`` of streams without a data directory."""

    def recovered(self) -> list[Segment]:
        return []

    def kept_segment_size(self, size: int) -> int:
        return size  # a stream in memory is never reopened

    def open_segment(self, first_offset: int) -> Segment:
        return Segment(first_offset)

    def delete_segment(self, segment: Segment) -> None:
        segment.entries.clear()

    def destroy(self) -> None:
        pass


class StreamLog:
    """The offsets, segments and retention of one stream (see the module rules)."""

    def __init__(self, retention: Retention, store: SegmentStore | None = None) -> None:
        self.retention = retention
        self._store: SegmentStore = store if store is not None else MemorySegments()
        self._retention_due: int | None = None  # a roll-over's time, until evaluated
        segments = self._store.recovered()
        if not segments:
            segments = [self._store.open_segment(0)]
        # Reopened from disk: the same offsets, segments and retained bytes as before.
        self._segments: list[Segment] = segments
        self._firsts: list[int] = [s.first_offset for s in segments]  # for bisect
        self._last_message = max(s.last_message for s in segments)  # -1: none
        self.first_offset = segments[0].first_offset
        self.next_offset = segments[-1].first_offset + len(segments[-1])
        self.bytes = sum(s.size for s in segments)
        if len(segments[-1]) and segments[-1].size >= retention.max_segment_size:
            # Stopped between filling a segment and opening the next: open it now.
            self._roll(segments[-1].last_timestamp)
            self.run_retention()

    def __len__(self) -> int:
        return self.next_offset - self.first_offset

    @property
    def segment_count(self) -> int:
        return len(self._segments)

    def append(self, message: Message, timestamp: int, *, defer: bool = False) -> StreamEntry:
        """Write ``message``; with ``defer`` a retention run it causes waits for
        ``run_retention()`` (the queue first hands the message to the waiting readers, as
        osiris notifies readers before its retention process deletes anything)."""
        entry = StreamEntry(self.next_offset, timestamp, message)
        self._write(entry)
        self._last_message = entry.offset
        if self._segments[-1].size >= self.retention.max_segment_size:
            # The segment is full: the next one opens at once, starting with the writer's
            # tracking snapshot chunk (an offset of its own), and retention is evaluated
            # (osiris_log:open_new_segment/1; oracle: with 600-byte messages filling a
            # segment each, offsets 0, 3, 6, 9 are messages and a stream whose only full
            # segment exceeds x-max-length-bytes is left with no message at all).
            self._roll(timestamp)
            if not defer:
                self.run_retention()
        return entry

    def _roll(self, timestamp: int) -> None:
        self._segments.append(self._store.open_segment(self.next_offset))
        self._firsts.append(self.next_offset)
        self.bytes += LOG_HEADER_SIZE
        self._write(StreamEntry(self.next_offset, timestamp, None))
        self._retention_due = timestamp

    @property
    def store(self) -> SegmentStore:
        return self._store

    def destroy(self) -> None:
        """The stream was deleted: its segments go (files included)."""
        self._store.destroy()

    def update_retention(self, retention: Retention, now_ms: int) -> None:
        """New limits (a policy changed): evaluated at once against ``now_ms``, as
        ``osiris_log:update_retention/2`` triggers an evaluation without waiting for the
        next roll-over. The segment size stays: a stream keeps the one it was created with
        (rabbitmq-server#10498), so only the byte and age limits change."""
        self.retention = attrs.evolve(retention, max_segment_size=self.retention.max_segment_size)
        self._retention_due = None
        self._evaluate_retention(now_ms)

    def run_retention(self) -> None:
        """Apply the retention evaluation the last segment roll-over asked for, if any."""
        due = self._retention_due
        if due is not None:
            self._retention_due = None
            self._evaluate_retention(due)

    def _write(self, entry: StreamEntry) -> None:
        self._segments[-1].append(entry)
        self.bytes += entry.size
        self.next_offset += 1

    def _evaluate_retention(self, now_ms: int) -> None:
        segments = self._segments
        max_bytes = self.retention.max_bytes
        if max_bytes is not None:
            while len(segments) > 1 and self.bytes > max_bytes:
                self._drop_oldest()
        age = self.retention.max_age_ms
        if age is not None:
            while len(segments) > 1 and segments[0].last_timestamp < now_ms - age:
                self._drop_oldest()

    def _drop_oldest(self) -> None:
        segment = self._segments.pop(0)
        self._firsts.pop(0)
        self.bytes -= segment.size
        self.first_offset = self._segments[0].first_offset
        self._store.delete_segment(segment)

    def entry(self, offset: int) -> StreamEntry | None:
        """The entry at ``offset`` if it is retained (O(log segments))."""
        if not self.first_offset <= offset < self.next_offset:
            return None
        index = bisect.bisect_right(self._firsts, offset) - 1
        return self._segments[index].get(offset - self._firsts[index])

    def offset_for_timestamp(self, timestamp: int) -> int:
        """osiris timestamp_idx_scan: the first offset published at or after ``timestamp``."""
        for segment in self._segments:
            if len(segment) and segment.last_timestamp >= timestamp:
                for index in range(len(segment)):
                    if segment.timestamp_at(index) >= timestamp:
                        return segment.first_offset + index
        return self.next_offset

    def start_of(self, spec: OffsetSpec) -> int:
        """The offset a reader with ``spec`` starts at (may lie beyond the end)."""
        if spec.kind == "first":
            return self.first_offset
        if spec.kind == "last":
            # osiris "last": the last user chunk (not a tracking chunk after it), if retained.
            last = self._last_message
            return last if last >= self.first_offset else self.next_offset
        if spec.kind == "offset":
            return max(spec.value, self.first_offset)
        if spec.kind == "timestamp":
            return self.offset_for_timestamp(spec.value)
        return self.next_offset


# -- the queue ---------------------------------------------------------------------------------
class StreamReader:
    """One consumer's read position and its filter (None: every message)."""

    __slots__ = ("consumer", "filter", "position")

    def __init__(self, consumer: Consumer, position: int, filter: StreamFilter | None) -> None:
        self.consumer = consumer
        self.position = position
        self.filter = filter


class StreamQueue(Queue):
    """A ``Queue`` whose messages are a ``StreamLog``; the vhost creates it for streams.

    Everything a classic queue does with ready/unacked messages is replaced: the log keeps
    the messages, each reader has a position, settlements only return credit.
    """

    def __init__(
        self,
        name: str,
        *,
        vhost: str = "/",
        arguments: Mapping[str, Any] | None = None,
        now: float = 0.0,
        wall_clock: Callable[[], float],
        store: SegmentStore | None = None,
        durable: bool = True,
        exclusive_owner: Hashable | None = None,
        auto_delete: bool = False,
        queue_type: str = "stream",
        policy: Policy | None = None,
    ) -> None:
        # The vhost has refused non-durable, exclusive and auto-delete streams already.
        assert durable and exclusive_owner is None and not auto_delete
        assert queue_type == "stream"
        super().__init__(
            name,
            vhost=vhost,
            durable=True,
            arguments=arguments,
            queue_type="stream",
            now=now,
            # The classic-queue policy keys (TTL, expires, length limits, DLX) never apply
            # to a stream: the base queue runs without the policy, retention reads it.
            policy=None,
        )
        self.policy = policy
        self.wall_clock = wall_clock
        retention = Retention.from_arguments(self.arguments, policy)
        if store is not None:
            # A reopened stream keeps the segment size it was created with, whatever the
            # policy says now (RabbitMQ keeps it in the stream's coordinator state).
            kept = store.kept_segment_size(retention.max_segment_size)
            retention = attrs.evolve(retention, max_segment_size=kept)
        self.log = StreamLog(retention, store)
        self._readers: dict[int, StreamReader] = {}  # id(consumer) -> reader, in order
        self._stream_delivered = 0

    def wall_ms(self) -> int:
        return int(self.wall_clock() * 1000)

    def apply_policy(self, policy: Policy | None, now: float | None = None) -> None:
        """The policy changed: its max-length-bytes and max-age apply to the running
        stream at once (rabbit_stream_queue:policy_changed/1 → the coordinator's
        update_retention); the segment size stays the one the stream was created with.
        The classic-queue keys never apply to a stream, so the base queue's
        re-application is skipped entirely."""
        self.policy = policy
        if self.deleted:
            return
        self._clock(now)
        self.log.update_retention(Retention.from_arguments(self.arguments, policy), self.wall_ms())

    # -- introspection ----------------------------------------------------------------------
    @property
    def message_count(self) -> int:
        # rabbit_stream_queue:stat/1 reads the "messages" metric: the retained offsets,
        # tracking chunks included (docs "UI Metric Accuracy"). RabbitMQ's metric lags by
        # its emission interval (a declare right after publishing says 0); amqpd reports
        # the settled value.
        return len(self.log)

    @property
    def unacked_count(self) -> int:
        return 0

    @property
    def consumer_count(self) -> int:
        # rabbit_stream_queue:stat/1 answers {ok, Messages, 0}: declare-ok says 0 consumers.
        return 0

    @property
    def consumers(self) -> tuple[Consumer, ...]:
        return tuple(r.consumer for r in self._readers.values())

    def position_of(self, consumer: Consumer) -> int | None:
        reader = self._readers.get(id(consumer))
        return None if reader is None else reader.position

    def statistics(self) -> QueueStatistics:
        return QueueStatistics(
            name=self.name,
            durable=True,
            exclusive=False,
            auto_delete=False,
            messages_ready=len(self.log),
            messages_unacknowledged=0,
            consumers=len(self._readers),
            published=self._published,
            delivered=self._stream_delivered,
            acked=self._acked,
            messages_ready_bytes=self.log.bytes,
            dropped=0,
            rejected=0,
        )

    # -- messages ---------------------------------------------------------------------------
    def enqueue(
        self, message: Message, now: float | None = None, *, redelivered: bool = False
    ) -> bool:
        # ``redelivered`` is for messages restored into classic queues; a stream's messages
        # are not in the durable log (they reopen from its segment files), never set here.
        if self.deleted:
            return True
        self._clock(now)
        self.log.append(message, self.wall_ms(), defer=True)
        self._published += 1
        self.dispatch()
        self.log.run_retention()
        return True

    def get(self, now: float | None = None) -> QueuedMessage | None:
        raise errors.NotImplemented(f"basic.get not supported by stream queues {self.resource()}")

    def purge(self) -> int:
        raise errors.NotImplemented(f"queue.purge not supported by stream queues {self.resource()}")

    def ack(self, entry: QueuedMessage) -> None:
        """An ack gives credit back (the consumer's business); the log keeps the message."""
        self._acked += 1

    def requeue(self, entries: Iterable[QueuedMessage], now: float | None = None) -> None:
        """Channel close: streams requeue nothing (each reader keeps its own position)."""

    def discard(self, entry: QueuedMessage, now: float | None = None) -> None:
        """Nothing to drop or dead-letter: the session refuses nack/reject beforehand."""

    # -- consumers --------------------------------------------------------------------------
    def add_consumer(self, consumer: Consumer, now: float | None = None) -> None:
        self.add_reader(consumer, OffsetSpec("next"), now)

    def add_reader(
        self,
        consumer: Consumer,
        spec: OffsetSpec,
        now: float | None = None,
        filter: StreamFilter | None = None,
    ) -> None:
        """basic.consume: a reader starting where ``spec`` says (the channel dispatches)."""
        self._clock(now)
        self._readers[id(consumer)] = StreamReader(consumer, self.log.start_of(spec), filter)
        self._had_consumer = True

    def remove_consumer(self, consumer: Consumer, now: float | None = None) -> None:
        self._clock(now)
        self._readers.pop(id(consumer), None)

    def dispatch(self, now: float | None = None) -> None:
        """Every reader with credit reads on until it has none or reaches the end."""
        if not self._readers:
            return
        self._clock(now)
        log = self.log
        for reader in list(self._readers.values()):
            consumer = reader.consumer
            while reader.position < log.next_offset and consumer.ready():
                if reader.position < log.first_offset:
                    reader.position = log.first_offset  # retention passed it by
                entry = log.entry(reader.position)
                assert entry is not None
                reader.position += 1
                if entry.message is None:
                    continue  # tracking chunks are not for AMQP consumers
                if reader.filter is not None and not reader.filter.accepts(entry):
                    continue
                self._stream_delivered += 1
                consumer.deliver(self, entry.delivery())
                if id(consumer) not in self._readers:
                    break

    def delete(self) -> int:
        """queue.delete: consumers are cancelled; delete-ok reports 0 (rabbit_stream_queue)."""
        if self.deleted:
            return 0
        self.deleted = True
        self.log.destroy()
        readers = list(self._readers.values())
        self._readers.clear()
        for reader in readers:
            reader.consumer.cancelled_by_server(self)
        return 0

    def __repr__(self) -> str:
        log = self.log
        return f"<StreamQueue {self.name!r} offsets={log.first_offset}..{log.next_offset}>"
