"""Stream retention set by policies (amqpd.broker.stream ``Retention``, ``apply_policy``).

RabbitMQ 3.13 rabbit_stream_queue:update_stream_conf/2: the policy keys
``max-length-bytes``, ``max-age`` and ``stream-max-segment-size-bytes`` apply to streams and
the POLICY beats the x-argument (policy_precedence/2, rabbitmq-server#3087); a policy change
re-applies the byte and age limits to the running stream at once (the coordinator's
update_retention; osiris_log:update_retention/2 evaluates retention immediately), while the
segment size stays what the stream was created with (rabbitmq-server#10498). Sizes follow
tests/broker/test_stream.py: a 300-byte segment takes three 48-byte messages.
"""

from __future__ import annotations

from typing import Any

import pytest

from amqpd.broker.broker import Broker
from amqpd.broker.message import Message
from amqpd.broker.policies import Policy, validate_definition
from amqpd.broker.stream import DEFAULT_MAX_SEGMENT_SIZE, OffsetSpec, Retention, StreamQueue
from amqpd.broker.stream_disk import SEGMENT_SIZE_FILE, DiskSegments
from amqpd.broker.vhost import VirtualHost
from amqpd.protocol.properties import BasicProperties
from amqpd.storage.fakefiles import FakeFiles
from amqpd.storage.streamdirs import FakeStreamDirs

STREAM = {"x-queue-type": "stream"}


class Clock:
    def __init__(self, t: float = 1_000_000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


class Reader:
    no_ack = False  # a manual-ack consumer (queue.Consumer)
    def __init__(self) -> None:
        self.tag = "c"
        self.exclusive = False
        self.priority = 0
        self.got: list[Any] = []

    def ready(self) -> bool:
        return True

    def deliver(self, queue: Any, entry: Any) -> None:
        self.got.append(entry)

    def cancelled_by_server(self, queue: Any) -> None:
        pass

    def offsets(self) -> list[int]:
        return [int(e.message.headers()["x-stream-offset"]) for e in self.got]


def pol(definition: dict[str, Any], name: str = "p", pattern: str = "^s$", **kw: Any) -> Policy:
    return Policy("/", name, pattern, definition, **kw)


def message(body: bytes) -> Message:
    props = BasicProperties()
    return Message("", "s", props.encode(), body, props)


def publish(q: StreamQueue, n: int, start: int = 0) -> None:
    for i in range(start, start + n):
        q.enqueue(message(b"%d" % i + b"." * (48 - len(b"%d" % i))))


def first(q: StreamQueue) -> list[int]:
    r = Reader()
    q.add_reader(r, OffsetSpec("first"))
    q.dispatch()
    q.remove_consumer(r)
    return r.offsets()


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


# -- validation (rabbit_policies:validate_policy0/2) -----------------------------------------
@pytest.mark.parametrize(
    "definition",
    [
        {"max-age": "7D"},
        {"max-age": "1s"},
        {"max-age": "10Y"},
        {"stream-max-segment-size-bytes": 0},
        {"stream-max-segment-size-bytes": 1_000_000},
        {"max-length-bytes": 0, "max-age": "30m", "stream-max-segment-size-bytes": 500},
    ],
)
def test_stream_policy_keys_are_accepted(definition: dict[str, Any]) -> None:
    assert validate_definition(definition) == []


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("max-age", "7X"),  # check_max_age: unknown unit
        ("max-age", "0D"),  # not above 0
        ("max-age", "D"),  # no digits
        ("max-age", "7"),  # no unit
        ("max-age", 7),  # not a string
        ("max-age", ""),
        ("stream-max-segment-size-bytes", -1),
        ("stream-max-segment-size-bytes", "1000"),
        ("stream-max-segment-size-bytes", True),
    ],
)
def test_bad_stream_policy_values_are_refused(key: str, value: Any) -> None:
    problems = validate_definition({key: value})
    assert [k for k, _ in problems] == [key]


# -- precedence (update_stream_conf/2 with policy_precedence/2) ------------------------------
@pytest.mark.parametrize(
    ("args", "definition", "expected"),
    [
        ({}, {}, Retention()),
        ({"x-max-length-bytes": 100}, {"max-length-bytes": 5000}, Retention(max_bytes=5000)),
        ({"x-max-length-bytes": 5000}, {"max-length-bytes": 100}, Retention(max_bytes=100)),
        ({"x-max-age": "1h"}, {"max-age": "7D"}, Retention(max_age_ms=7 * 86_400_000)),
        ({"x-max-age": "7D"}, {"max-age": "60s"}, Retention(max_age_ms=60_000)),
        (
            {"x-stream-max-segment-size-bytes": 300},
            {"stream-max-segment-size-bytes": 900},
            Retention(max_segment_size=900),
        ),
        # Each key on its own: the argument's where the policy is silent.
        (
            {"x-max-age": "1h", "x-stream-max-segment-size-bytes": 300},
            {"max-length-bytes": 700},
            Retention(max_segment_size=300, max_bytes=700, max_age_ms=3_600_000),
        ),
        # Keys streams do not read change nothing.
        (
            {"x-max-length-bytes": 10},
            {"max-length": 1, "message-ttl": 1, "expires": 1},
            Retention(max_bytes=10),
        ),
    ],
)
def test_the_policy_beats_the_argument(
    args: dict[str, Any], definition: dict[str, Any], expected: Retention
) -> None:
    policy = pol(definition) if definition else None
    assert Retention.from_arguments(args, policy) == expected


# -- at declaration --------------------------------------------------------------------------
def test_a_stream_declared_under_a_policy_takes_its_segment_size_and_limits(
    vh: VirtualHost,
) -> None:
    vh.set_policies([pol({"stream-max-segment-size-bytes": 300, "max-length-bytes": 700})])
    q = stream(vh, **{"x-max-length-bytes": 100_000})
    assert q.log.retention == Retention(max_segment_size=300, max_bytes=700)
    publish(q, 6)  # two full segments: the first goes (700 < three segments' bytes)
    assert (q.log.segment_count, q.log.first_offset) == (2, 3)
    assert first(q) == [4, 5, 6]  # offset 3 is segment 1's tracking chunk


def test_a_policy_on_another_name_does_not_apply(vh: VirtualHost) -> None:
    vh.set_policies([pol({"max-length-bytes": 1}, pattern="^other$")])
    q = stream(vh)
    assert q.log.retention == Retention()


# -- live changes (policy_changed/1) ---------------------------------------------------------
def test_a_new_max_length_bytes_policy_drops_old_segments_at_once(vh: VirtualHost) -> None:
    q = stream(vh, **{"x-stream-max-segment-size-bytes": 300})
    publish(q, 9)  # segments 0-2, 3-6, 7-10 full (3, 7: tracking chunks), 11 the new one
    assert (q.log.segment_count, q.log.first_offset) == (4, 0)
    lagging = Reader()
    q.add_reader(lagging, OffsetSpec("first"))  # positioned at 0, not yet dispatched
    vh.set_policies([pol({"max-length-bytes": 700})], now=1.0)
    # No write needed: the evaluation runs at the change, whole old segments only.
    assert (q.log.segment_count, q.log.first_offset) == (2, 7)
    q.dispatch()
    assert lagging.offsets() == [8, 9, 10]  # the reader skips what retention dropped


def test_a_policy_can_lengthen_retention_beyond_the_argument(vh: VirtualHost) -> None:
    q = stream(vh, **{"x-stream-max-segment-size-bytes": 300, "x-max-length-bytes": 700})
    vh.set_policies([pol({"max-length-bytes": 100_000})])
    publish(q, 12)
    assert q.log.first_offset == 0  # the argument alone would have dropped segments
    vh.set_policies([])  # cleared: back to the argument, applied at once
    assert q.log.retention == Retention(max_segment_size=300, max_bytes=700)
    assert (q.log.segment_count, q.log.first_offset) == (2, 11)


def test_a_new_max_age_policy_drops_segments_older_than_it_at_once(
    vh: VirtualHost, clock: Clock
) -> None:
    q = stream(vh, **{"x-stream-max-segment-size-bytes": 300})
    publish(q, 3)  # segment 0, last chunk at t
    clock.t += 40
    publish(q, 3, start=3)  # segment 1, last chunk at t + 40
    clock.t += 40
    vh.set_policies([pol({"max-age": "60s"})])  # now t + 80: segment 0 is 80 s old
    assert q.log.first_offset == 3
    assert q.log.retention.max_age_ms == 60_000
    clock.t += 1000
    # Only a change or a roll-over evaluates (no timer): an unchanged policy re-set is not
    # a change, so nothing more goes until the next write fills a segment.
    vh.set_policies([pol({"max-age": "60s"})])
    assert q.log.first_offset == 3
    publish(q, 3, start=6)
    assert q.log.first_offset == 7  # segment 1 (3-6) went at the roll-over


def test_the_segment_size_stays_what_the_stream_was_created_with(vh: VirtualHost) -> None:
    q = stream(vh, **{"x-stream-max-segment-size-bytes": 300})
    vh.set_policies([pol({"stream-max-segment-size-bytes": 100_000, "max-length-bytes": 5000})])
    assert q.log.retention == Retention(max_segment_size=300, max_bytes=5000)
    vh.set_policies([])
    assert q.log.retention == Retention(max_segment_size=300)
    fresh = vh.declare_queue("t", durable=True, arguments=STREAM)
    assert isinstance(fresh, StreamQueue)
    assert fresh.log.retention.max_segment_size == DEFAULT_MAX_SEGMENT_SIZE


def test_classic_queue_policy_keys_never_apply_to_a_stream(vh: VirtualHost) -> None:
    classic = {"expires": 1000, "message-ttl": 1, "max-length": 1, "overflow": "reject-publish"}
    vh.set_policies([pol(classic)])
    q = stream(vh)
    publish(q, 3)
    vh.set_policies([pol({**classic, "max-length": 2})], now=5.0)
    assert q.next_deadline() is None  # no expiry lease, no TTL timer
    vh.tick(10_000.0)
    assert not q.deleted and vh.queues.get("s") is q
    assert first(q) == [0, 1, 2]


def test_a_policy_change_through_the_broker_reaches_the_stream(clock: Clock) -> None:
    broker = Broker(wall_clock=clock)
    vhost = broker.vhosts["/"]
    args = {**STREAM, "x-stream-max-segment-size-bytes": 300}
    q = vhost.declare_queue("s", durable=True, arguments=args)
    assert isinstance(q, StreamQueue)
    publish(q, 9)
    broker.add_policy(pol({"max-length-bytes": 500}), now=1.0)
    assert (q.log.first_offset, q.policy and q.policy.name) == (7, "p")


# -- restart: the segment size is the stream's own ---------------------------------------------
def _reopen(dirs: FakeStreamDirs, policies: list[Policy], clock: Clock) -> StreamQueue:
    vhost = VirtualHost("/", wall_clock=clock)
    vhost.stream_dirs = dirs
    vhost.set_policies(policies)
    q = vhost.declare_queue("s", durable=True, arguments=STREAM, recovered=True)
    assert isinstance(q, StreamQueue)
    return q


def test_a_reopened_stream_keeps_the_segment_size_a_policy_gave_it(clock: Clock) -> None:
    dirs = FakeStreamDirs()
    vh = VirtualHost("/", wall_clock=clock)
    vh.stream_dirs = dirs
    vh.set_policies([pol({"stream-max-segment-size-bytes": 300})])
    q = stream(vh)
    publish(q, 4)
    files = dirs.files("/", "s")
    assert files.read(SEGMENT_SIZE_FILE) == b"300"
    # Restarted under another policy (or none): the stream still rolls at 300 bytes, and
    # the new policy's byte limit applies.
    again = _reopen(
        dirs, [pol({"stream-max-segment-size-bytes": 100_000, "max-length-bytes": 700})], clock
    )
    assert again.log.retention == Retention(max_segment_size=300, max_bytes=700)
    publish(again, 5, start=4)
    # 300-byte segments 0-2, 3-6, 7-10 (3, 7 tracking chunks), then 11: under 700 bytes
    # only the last full one and the new one stay.
    assert (again.log.segment_count, first(again)) == (2, [8, 9, 10])
    assert _reopen(dirs, [], clock).log.retention == Retention(max_segment_size=300)


@pytest.mark.parametrize("damage", [None, b"", b"3x0"])
def test_a_missing_or_damaged_segment_size_file_is_written_anew(
    clock: Clock, damage: bytes | None
) -> None:
    dirs = FakeStreamDirs()
    vh = VirtualHost("/", wall_clock=clock)
    vh.stream_dirs = dirs
    stream(vh, **{"x-stream-max-segment-size-bytes": 300})
    files = dirs.files("/", "s")
    files.remove(SEGMENT_SIZE_FILE)
    if damage is not None:
        files.write_raw(SEGMENT_SIZE_FILE, damage)
    files.write_raw(SEGMENT_SIZE_FILE + ".tmp", b"12")  # a crash while it was written
    vhost = VirtualHost("/", wall_clock=clock)
    vhost.stream_dirs = dirs
    again = vhost.declare_queue(
        "s",
        durable=True,
        arguments={**STREAM, "x-stream-max-segment-size-bytes": 300},
        recovered=True,
    )
    assert isinstance(again, StreamQueue) and again.log.retention.max_segment_size == 300
    assert files.read(SEGMENT_SIZE_FILE) == b"300"
    assert SEGMENT_SIZE_FILE + ".tmp" not in files.list()


def test_deleting_the_stream_removes_the_segment_size_file(clock: Clock) -> None:
    files = FakeFiles()
    store = DiskSegments(files)
    assert store.kept_segment_size(1234) == 1234
    assert DiskSegments(files).kept_segment_size(99) == 1234
    store.destroy()
    assert files.list() == []
