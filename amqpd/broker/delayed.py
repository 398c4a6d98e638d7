"""The delayed-message exchange: the plugin's rules and a schedule of pending messages.

Rules of this module (reference 2.4; rabbitmq-delayed-message-exchange,
``rabbit_exchange_type_delayed_message.erl`` and ``rabbit_delayed_message_utils.erl``):
- An exchange of type ``x-delayed-message`` routes like the type its ``x-delayed-type``
  argument names (direct, fanout, topic, headers). The argument is required and checked
  when the exchange is created (``validate_delayed_type``), never on a redeclare: the plugin
  delegates argument equivalence to the wrapped type, which compares ``alternate-exchange``
  only.
- The ``x-delay`` header (``delay_of``) delays a message only if it is an integer of any
  width, a string holding an integer, or a float or decimal (truncated), and only if
  ``0 < x-delay <= 4294967295`` ms (Erlang's timer limit). Anything else, including a
  missing header, 0 and negative values, routes the message at once.
- A delayed message routes to nothing at publish time (the plugin's ``route/2`` returns
  ``[]``): a mandatory publish is returned at once, a confirm is sent at once and an
  alternate exchange gets a copy at once. When it is due it is routed once through its
  exchange with ``x-delay`` negated (``swap_delay_header``), so a delayed exchange further
  down an exchange-to-exchange path does not delay it again; nothing bound means dropped.
- ``DelaySchedule`` orders by (due time, arrival order): messages due at the same moment
  leave in publish order, and a message due in the past is due at once. Time is the
  caller's ``now`` (seconds, monotonic), never read here. An entry holds the message, or
  for a durable delayed exchange only its place in the durable log
  (``durability.LoggedDelayed``, docs/storage.md "Delayed messages"), with the routing keys
  as a tuple of interned strings.
- Without bucket files it is one binary heap (O(log n) to add and to take). With them
  (``attach``: a broker with a data directory) the heap holds only the entries due before
  the *horizon*; an entry due later that the codec can write (a paged-out
  ``LoggedDelayed``) is appended, unsorted, to the time bucket covering its due time
  (``BUCKET_WIDTH`` seconds on a grid; storage/delaybuckets.py), one whose record is not
  committed yet waits in its bucket in memory (``spill_paged`` writes it later), and one
  the codec keeps in memory (a transient exchange's ``Message``, a holder with no place in
  the log, or any entry once a bucket write failed) goes into the heap whatever its due
  time. A bucket is read and heapified only when ``now`` reaches its earliest entry, and
  the horizon moves to its end; one holding more than ``MAX_LOAD`` entries is first split
  into ``_SPLIT`` buckets by due time (unless all are due at one moment). So an entry is
  written and read once (plus once per split, a few times at most), costs O(log n)
  amortised, and the heap holds the entries of one bucket, not all of them.
- ``next_due`` reads no bucket (each knows its earliest due time): it may be early, never
  late, after ``drop_exchange`` (the exchange is deleted: its entries leave the heap and the
  buckets, and a bucket left empty loses its file; records of a deleted exchange still in a
  file are skipped when read, by its number, so a new exchange of the same name never gets
  them).
"""

from __future__ import annotations

import bisect
import decimal
import heapq
import itertools
import math
import re
import struct
import sys
from collections import deque
from collections.abc import Hashable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol, TypeAlias

import attrs

from amqpd.broker.arguments import is_int, type_name
from amqpd.broker.message import Message
from amqpd.errors import PreconditionFailed
from amqpd.protocol.fieldtable import Int32, Int64

if TYPE_CHECKING:
    from amqpd.broker.durability import LoggedDelayed
    from amqpd.storage.delaybuckets import DelayBuckets

EXCHANGE_TYPE = "x-delayed-message"
DELAYED_TYPE_ARG = "x-delayed-type"
DELAY_HEADER = "x-delay"
# ERL_MAX_T in the plugin: the longest delay an Erlang timer takes, in ms (about 49.7 days).
MAX_DELAY_MS = 4294967295

# Distinct routing-key tuples the schedule shares between entries (DelaySchedule.add).
_KEYS_CACHE = 4096

# Erlang's binary_to_integer/1: an optional sign and decimal digits, nothing else.
_ERLANG_INTEGER = re.compile(r"[+-]?[0-9]+")


def validate_delayed_type(arguments: Mapping[str, Any], known_types: Mapping[str, Any]) -> str:
    """The wrapped exchange type of a new ``x-delayed-message`` exchange, or a 406.

    The plugin's ``validate/1``: the argument must be a string naming an existing exchange
    type other than ``x-delayed-message`` itself; an unknown name fails as
    ``rabbit_exchange:check_type/1`` fails for any declare (406 from RabbitMQ 3.13.3).
    """
    value = arguments.get(DELAYED_TYPE_ARG)
    if isinstance(value, bytes) and type_name(value) == "longstr":
        value = value.decode("utf-8", errors="replace")
    if not isinstance(value, str):
        raise PreconditionFailed(
            "Invalid argument, 'x-delayed-type' must be an existing exchange type"
        )
    if value == EXCHANGE_TYPE:
        raise PreconditionFailed(
            "Invalid argument, 'x-delayed-message' can't be used for 'x-delayed-type'"
        )
    if value not in known_types:
        raise PreconditionFailed(f"unknown exchange type '{value}'")
    return value


def delay_of(headers: Mapping[str, Any] | None) -> int | None:
    """Milliseconds to hold a message with these headers, or None to route it now."""
    if not headers:
        return None
    delay = _header_delay(headers.get(DELAY_HEADER))
    if delay is None or not 0 < delay <= MAX_DELAY_MS:
        return None
    return delay


def _header_delay(value: object) -> int | None:
    # rabbit_delayed_message_utils:get_delay_header/1: integer types as they are, longstr
    # and shortstr through binary_to_integer, decimal/double/float truncated.
    if isinstance(value, int) and is_int(value):  # not bool, not timestamp
        return int(value)
    if isinstance(value, float):
        return int(value) if math.isfinite(value) else None
    if isinstance(value, decimal.Decimal):
        return int(value) if value.is_finite() else None
    if isinstance(value, str) and _ERLANG_INTEGER.fullmatch(value):
        return int(value)
    # A string that is not an integer makes binary_to_integer fail inside the plugin (the
    # publish crashes the channel); treating it as "no delay" is the useful reading. bytes
    # here are a longstr that is not UTF-8, or a byte array: not integers either.
    return None


def swap_delay_header(message: Message) -> Message:
    """The message as it leaves the schedule: ``x-delay`` negated (the plugin's
    ``swap_delay_header/1``, a signedint; a long where -delay does not fit in 32 bits)."""
    headers: dict[str, Any] = message.headers()
    delay = delay_of(headers)
    if delay is None:
        return message
    headers[DELAY_HEADER] = Int32(-delay) if delay <= 2**31 else Int64(-delay)
    return message.with_properties(attrs.evolve(message.properties, headers=headers))


#: What a schedule entry holds: the message, or (durable delayed exchanges) its place in
#: the durable log once the record is committed (durability.LoggedDelayed).
Held: TypeAlias = "Message | LoggedDelayed"

#: ``EntryCodec.pageable``: keep this entry in memory / in memory until it can be written
#: (its log record is not committed yet) / it can be written to a bucket now.
IN_MEMORY, NOT_YET, PAGEABLE = 0, 1, 2

# Each bucket record starts with the schedule's own fields: due, arrival, exchange number.
_HEAD = struct.Struct("<dQI")

# The bucket grid (seconds of due time per bucket) and the most entries loaded into the heap
# at once: a bucket over that is split into _SPLIT buckets by due time when its turn comes.
BUCKET_WIDTH = 600.0
MAX_LOAD = 4096
_SPLIT = 16

_Entry: TypeAlias = "tuple[float, int, Hashable, tuple[str, ...], Held]"


class EntryCodec(Protocol):
    """How a schedule writes what an entry holds (durability.DelayedCodec)."""

    def pageable(self, held: Held) -> int:
        """IN_MEMORY, NOT_YET or PAGEABLE."""
        ...

    def encode(self, routing_keys: tuple[str, ...], held: Held) -> bytes: ...

    def decode(self, data: bytes, at: int) -> tuple[tuple[str, ...], Held]: ...


class _Bucket:
    """Entries due in [lo, hi): written to bucket file ``number``, or (``resident``, by
    arrival) still in memory until their log record is committed."""

    __slots__ = ("count", "counts", "hi", "high", "lo", "low", "number", "resident", "split")

    def __init__(self, lo: float, hi: float, number: int) -> None:
        self.lo = lo
        self.hi = hi
        self.number = number
        self.count = 0
        self.counts: dict[int, int] = {}  # exchange number -> entries
        self.low = math.inf  # earliest and latest due time added (split boundaries)
        self.high = -math.inf
        self.resident: dict[int, _Entry] = {}
        self.split = False  # replaced by parts (its resident entries moved to them)

    def note(self, due: float, xid: int) -> None:
        self.count += 1
        self.counts[xid] = self.counts.get(xid, 0) + 1
        if due < self.low:
            self.low = due
        if due > self.high:
            self.high = due


class DelaySchedule:
    """Pending delayed messages, earliest first, each with the exchange that holds it and the
    routing keys it was published with (its own key plus CC and BCC keys: the BCC header is
    already gone from the message).

    In memory a binary heap; with bucket files attached (``attach``) the heap holds only
    the entries due before the *horizon* and the rest wait in time buckets on disk
    (docs/storage.md "Delayed messages").
    """

    __slots__ = (
        "_buckets",
        "_by_xid",
        "_codec",
        "_counts",
        "_heap",
        "_horizon",
        "_keys",
        "_los",
        "_max_load",
        "_next_xid",
        "_order",
        "_size",
        "_staged",
        "_store",
        "_width",
        "_xids",
    )

    def __init__(
        self,
        store: DelayBuckets | None = None,
        codec: EntryCodec | None = None,
        *,
        width: float = BUCKET_WIDTH,
        max_load: int = MAX_LOAD,
    ) -> None:
        # (due, arrival, exchange, routing keys, message): the arrival counter breaks ties,
        # so two messages due together leave in the order they came and messages never
        # compare.
        self._heap: list[_Entry] = []
        self._order = itertools.count()
        # Recent routing-key tuples, so entries with the same keys share one tuple (a
        # cache only: cleared when it grows, never needed for correctness).
        self._keys: dict[tuple[str, ...], tuple[str, ...]] = {}
        self._size = 0
        self._counts: dict[Hashable, int] = {}  # pending entries per exchange
        self._store = store
        self._codec = codec
        self._width = width
        self._max_load = max_load
        # Every entry due before the horizon is in the heap; buckets cover only times at or
        # after it (disjoint, sorted by lo; _los mirrors their lo for bisect).
        self._horizon = -math.inf
        self._buckets: list[_Bucket] = []
        self._los: list[float] = []
        # (due, arrival) of bucket entries kept resident until their record is committed,
        # in arrival (so log) order: spill_paged writes them out.
        self._staged: deque[tuple[_Bucket, int, float]] = deque()
        # Exchanges by a small number, which is what a bucket record names: an exchange
        # deleted (drop_exchange) loses its number, so its records are skipped when read.
        self._xids: dict[Hashable, int] = {}
        self._by_xid: dict[int, Hashable] = {}
        self._next_xid = itertools.count(1)

    def attach(self, store: DelayBuckets, codec: EntryCodec) -> None:
        """From now on entries due after the horizon may go to ``store``'s bucket files."""
        self._store = store
        self._codec = codec

    def __len__(self) -> int:
        return self._size

    def _shared_keys(self, routing_keys: Sequence[str]) -> tuple[str, ...]:
        # Interned: a million entries usually share a handful of routing keys.
        keys = tuple(sys.intern(k) for k in routing_keys)
        cache = self._keys
        shared = cache.get(keys)
        if shared is None:
            if len(cache) >= _KEYS_CACHE:
                cache.clear()
            cache[keys] = keys
            return keys
        return shared

    def add(
        self, due: float, exchange: Hashable, routing_keys: Sequence[str], message: Held
    ) -> bool:
        """Hold ``message`` for ``exchange`` until ``due``; True if it is now the earliest."""
        earliest = self.next_due()
        keys = self._shared_keys(routing_keys)
        entry = (due, next(self._order), exchange, keys, message)
        self._size += 1
        self._counts[exchange] = self._counts.get(exchange, 0) + 1
        if due < self._horizon or not self._to_bucket(entry):
            heapq.heappush(self._heap, entry)
        return earliest is None or due < earliest

    def _to_bucket(self, entry: _Entry) -> bool:
        """Put an entry due at or after the horizon in its bucket; False: keep it in the
        heap (no bucket files, an entry that stays in memory, or a failed write)."""
        store, codec = self._store, self._codec
        if store is None or codec is None or store.broken:
            return False
        due, order, exchange, keys, held = entry
        state = codec.pageable(held)
        if state == IN_MEMORY:
            return False
        bucket = self._bucket_for(due)
        xid = self._xid(exchange)
        if state == PAGEABLE:
            try:
                store.append(bucket.number, _HEAD.pack(due, order, xid) + codec.encode(keys, held))
            except OSError:
                if not bucket.count:
                    self._remove_bucket(bucket)
                return False
        else:
            bucket.resident[order] = entry
            self._staged.append((bucket, order, due))
        bucket.note(due, xid)
        return True

    def _xid(self, exchange: Hashable) -> int:
        xid = self._xids.get(exchange)
        if xid is None:
            xid = self._xids[exchange] = next(self._next_xid)
            self._by_xid[xid] = exchange
        return xid

    def _bucket_for(self, due: float) -> _Bucket:
        """The bucket covering ``due`` (>= the horizon); a new one on the grid, cut to the
        gap between its neighbours, if none does."""
        buckets = self._buckets
        i = bisect.bisect_right(self._los, due) - 1
        if i >= 0 and due < buckets[i].hi:
            return buckets[i]
        assert self._store is not None
        cell = math.floor(due / self._width)
        lo = min(cell * self._width, due)
        hi = max((cell + 1) * self._width, math.nextafter(due, math.inf))
        lo = max(lo, self._horizon, buckets[i].hi if i >= 0 else -math.inf)
        if i + 1 < len(buckets):
            hi = min(hi, buckets[i + 1].lo)
        bucket = _Bucket(lo, hi, self._store.new())
        buckets.insert(i + 1, bucket)
        self._los.insert(i + 1, lo)
        return bucket

    def _remove_bucket(self, bucket: _Bucket) -> None:
        i = self._buckets.index(bucket)
        del self._buckets[i]
        del self._los[i]
        assert self._store is not None
        self._store.remove(bucket.number)

    def spill_paged(self) -> None:
        """Write out the resident bucket entries whose log record is now committed (the
        vhost calls it after paging out, docs/storage.md "Delayed messages")."""
        staged, codec, store = self._staged, self._codec, self._store
        if not staged or codec is None or store is None:
            return
        while staged:
            bucket, order, due = staged[0]
            entry = bucket.resident.get(order)
            if entry is None and bucket.split:
                # Its bucket was split: the entry moved to the part covering its due time.
                i = bisect.bisect_right(self._los, due) - 1
                if i >= 0:
                    bucket = self._buckets[i]
                    entry = bucket.resident.get(order)
            if entry is None:
                staged.popleft()  # loaded into the heap, or dropped, meanwhile
                continue
            if codec.pageable(entry[4]) != PAGEABLE or store.broken:
                return  # the next ones are not committed either (log order)
            try:
                store.append(
                    bucket.number,
                    _HEAD.pack(entry[0], order, self._xids[entry[2]])
                    + codec.encode(entry[3], entry[4]),
                )
            except OSError:
                return  # it stays resident; nothing more is written
            del bucket.resident[order]
            staged.popleft()

    def _advance(self, now: float) -> None:
        """Load the buckets holding entries due by ``now`` that may come before the heap's
        first (its entries before the horizon always do): afterwards the heap's first
        entry, if due by ``now``, is the earliest of all."""
        heap, buckets = self._heap, self._buckets
        while buckets and (not heap or heap[0][0] >= self._horizon):
            bucket = buckets[0]
            if bucket.low > now or (heap and bucket.low > heap[0][0]):
                return
            if bucket.count > self._max_load and self._split(bucket):
                continue
            self._load(bucket)
            heap = self._heap

    def _load(self, bucket: _Bucket) -> None:
        """Move a bucket's entries into the heap; the horizon moves to its end."""
        assert self._store is not None and self._codec is not None
        del self._buckets[0]
        del self._los[0]
        self._horizon = bucket.hi
        by_xid, decode = self._by_xid, self._codec.decode
        loaded: list[_Entry] = []
        for data in self._store.records(bucket.number):
            due, order, xid = _HEAD.unpack_from(data)
            exchange = by_xid.get(xid)
            if exchange is None:
                continue  # its exchange was deleted (drop_exchange)
            keys, held = decode(data, _HEAD.size)
            loaded.append((due, order, exchange, self._shared_keys(keys), held))
        self._store.remove(bucket.number)
        loaded.extend(bucket.resident.values())
        bucket.resident = {}  # in the heap now: spill_paged must not find them here
        heap = self._heap
        if heap:
            for entry in loaded:
                heapq.heappush(heap, entry)
        else:
            heapq.heapify(loaded)
            self._heap = loaded

    def _split(self, bucket: _Bucket) -> bool:
        """Replace a bucket too large to load by up to _SPLIT buckets over its due times
        (each entry is copied as written, not decoded); False if its entries are all due
        at one moment, when it is loaded whole."""
        store = self._store
        assert store is not None
        if store.broken:
            return False  # nowhere to write the parts: load it whole
        step = (bucket.high - bucket.low) / _SPLIT
        bounds = [bucket.lo]
        for j in range(1, _SPLIT):
            b = bucket.low + j * step
            if max(bounds[-1], bucket.low) < b <= bucket.high:  # each part holds some
                bounds.append(b)
        if len(bounds) == 1:
            return False
        tiles = [
            _Bucket(lo, hi, store.new())
            for lo, hi in zip(bounds, [*bounds[1:], bucket.hi], strict=True)
        ]
        try:
            for data in store.records(bucket.number):
                due, _order, xid = _HEAD.unpack_from(data)
                if xid in self._by_xid:
                    tile = tiles[bisect.bisect_right(bounds, due) - 1]
                    store.append(tile.number, data)
                    tile.note(due, xid)
        except OSError:
            for tile in tiles:  # the bucket itself is untouched: load it whole
                store.remove(tile.number)
            return False
        for order, entry in bucket.resident.items():
            tile = tiles[bisect.bisect_right(bounds, entry[0]) - 1]
            tile.resident[order] = entry
            tile.note(entry[0], self._xids[entry[2]])
        bucket.resident = {}
        bucket.split = True
        store.remove(bucket.number)
        kept = [t for t in tiles if t.count]
        for t in tiles:
            if not t.count:
                store.remove(t.number)
        self._buckets[0:1] = kept
        self._los[0:1] = [t.lo for t in kept]
        return True

    def next_due(self) -> float | None:
        """The earliest due time; early (never late) after ``drop_exchange`` emptied the
        start of a bucket. Reads no bucket: buckets are loaded only when due."""
        heap = self._heap
        first = heap[0][0] if heap else None
        if first is not None and first < self._horizon:
            return first
        if self._buckets:
            low = self._buckets[0].low
            if first is None or low < first:
                return low
        return first

    def pop_due(self, now: float) -> list[tuple[Hashable, tuple[str, ...], Held]]:
        """Take every message due at ``now``, in due order (publish order among equals)."""
        heap = self._heap
        out: list[tuple[Hashable, tuple[str, ...], Held]] = []
        counts = self._counts
        while True:
            if not heap or heap[0][0] >= self._horizon:
                self._advance(now)
                heap = self._heap
            if not heap or heap[0][0] > now:
                break
            _due, _order, exchange, routing_keys, message = heapq.heappop(heap)
            out.append((exchange, routing_keys, message))
            left = counts[exchange] - 1
            if left:
                counts[exchange] = left
            else:
                del counts[exchange]
        self._size -= len(out)
        return out

    def drop_exchange(self, exchange: Hashable) -> None:
        """``exchange`` is deleted: its pending messages go, and bucket files left with
        nothing else in them."""
        dropped = self._counts.pop(exchange, 0)
        xid = self._xids.pop(exchange, None)
        if xid is not None:
            del self._by_xid[xid]
        if not dropped:
            return
        self._size -= dropped
        if any(entry[2] is exchange for entry in self._heap):
            self._heap = [entry for entry in self._heap if entry[2] is not exchange]
            heapq.heapify(self._heap)
        if xid is None:
            return
        for bucket in list(self._buckets):
            gone = bucket.counts.pop(xid, 0)
            if gone:
                bucket.count -= gone
                for order in [o for o, e in bucket.resident.items() if e[2] is exchange]:
                    del bucket.resident[order]
                if not bucket.count:
                    self._remove_bucket(bucket)

    def held(self) -> list[Held]:
        """What every entry holds, in no particular order (tests, diagnostics; reads
        the bucket files)."""
        out = [entry[4] for entry in self._heap]
        for bucket in self._buckets:
            out.extend(entry[4] for entry in bucket.resident.values())
            if self._store is not None and self._codec is not None:
                for data in self._store.records(bucket.number):
                    if _HEAD.unpack_from(data)[2] in self._by_xid:
                        out.append(self._codec.decode(data, _HEAD.size)[1])
        return out

    def count_for(self, exchange: Hashable) -> int:
        """Messages pending for one exchange (the plugin's ``messages_delayed`` info item)."""
        return self._counts.get(exchange, 0)

    @property
    def in_memory(self) -> int:
        """Entries held in memory: the heap and the resident bucket entries (tests)."""
        return len(self._heap) + sum(len(b.resident) for b in self._buckets)

    @property
    def buckets(self) -> int:
        return len(self._buckets)
