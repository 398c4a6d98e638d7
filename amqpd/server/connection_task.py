"""Drive one sans-I/O session ``Connection`` over one byte stream.

Rules of this module:
- Three tasks per connection: the reader feeds ``receive_some`` results to
  ``conn.receive_data``; the writer does ONE ``send_all`` of everything ``data_to_send()``
  returns per wake-up (so output queued while a send is in flight goes out as one batch);
  the timer sleeps until ``conn.next_deadline()`` and calls ``conn.tick``.
- Every call into the connection happens in this connection's own tasks, except
  ``shutdown`` (from the server task) and the write-through below; ``on_output`` never
  does I/O, so a delivery from another connection's publish never runs our I/O inside
  their call stack.
- Write-through: output queued while some connection's reader is inside ``receive_data``
  (a reader step: a publish delivering to consumers, say, and the reader's own replies)
  is sent by that reader right after the step, with one non-blocking ``send`` per woken
  connection, instead of a wake-up of each writer first (a scheduler pass per hop:
  latency). Only on a plain socket, only when that connection's writer is idle with
  nothing left over, and never blocking or raising: whatever the socket does not take
  (all of it, on any error) is left for the writer, which sends it before anything
  newer, so the order on the wire is kept.
- A bug anywhere in the connection's code drops this connection only: it is logged with the
  connection id and peer, the peer gets connection.close 541 if the stream is still usable,
  and the socket is closed. Nothing escapes to the server's nursery.
- ``conn.connection_lost()`` is called exactly once, when the socket is gone, whatever the
  reason (clean close included), so the session can release what it holds in one place.
- Time is ``trio.current_time()``, so tests run on ``autojump_clock``.
"""

from __future__ import annotations

import contextlib
import math
import os
from collections.abc import Awaitable, Callable
from typing import Protocol

import structlog
import trio

from amqpd.server.faults import internal_error_frame

READ_SIZE = 65536
# How long a last-resort 541 connection.close may take to send before we give up on it.
FAULT_SEND_TIMEOUT = 1.0
# How long the output queued before a close (close-ok, say) may take to reach the peer.
FINAL_FLUSH_TIMEOUT = 10.0

log = structlog.get_logger("amqpd.server")


class _ReaderStep:
    """The connections woken during the current reader step (module rules: write-through).

    trio runs one task at a time and ``receive_data`` never awaits, so "inside a step" is
    exact: any ``on_output`` while the reader has ``active`` set comes from that step.
    """

    __slots__ = ("active", "woken")

    def __init__(self) -> None:
        self.active = False
        self.woken: list[ConnectionTask] = []


_step = _ReaderStep()


class ServedConnection(Protocol):
    """What the server needs from a session ``Connection`` (docs/internals.md, session/)."""

    on_output: Callable[[], None] | None

    @property
    def closed(self) -> bool: ...

    def receive_data(self, data: bytes, now: float) -> None: ...

    def data_to_send(self) -> bytes: ...

    def next_deadline(self) -> float | None: ...

    def tick(self, now: float) -> None: ...

    def shutdown(self, now: float) -> None: ...

    def connection_lost(self) -> None: ...


class ConnectionTask:
    """The I/O side of one client connection. ``run()`` returns when the socket is closed."""

    def __init__(
        self,
        stream: trio.abc.Stream,
        conn: ServedConnection,
        *,
        conn_id: int,
        peer: str | None,
        read_size: int = READ_SIZE,
    ) -> None:
        self.stream = stream
        self.conn = conn
        self.conn_id = conn_id
        self.peer = peer
        self._read_size = read_size
        self._log = log.bind(conn=conn_id, peer=peer)
        self._output_ready = trio.Event()
        self._deadline_moved = trio.Event()
        self._timer_target: float | None = None
        self._eof = False
        self._sending = False
        self._fault: BaseException | None = None
        self._forced = False
        self._scope = trio.CancelScope()
        self._resume = trio.Event()
        self._shutting_down = False
        self._leftover = b""  # write-through output the socket did not take: sent first
        self._in_step = False  # in _step.woken
        self._fd = _socket_fd(stream)
        conn.on_output = self._on_output

    # Called from outside this connection's tasks.

    def wake(self) -> None:
        """Output was queued; the writer sends it on its next wake-up."""
        self._output_ready.set()

    def _on_output(self) -> None:
        # Inside a reader step (and on a plain socket) the reader writes it through after
        # the step; otherwise the writer is woken as usual.
        if _step.active and self._fd is not None:
            if not self._in_step:
                self._in_step = True
                _step.woken.append(self)
            return
        self._output_ready.set()

    def _write_through(self) -> None:
        """After a reader step: send what is queued now, or leave it to the writer.

        Never blocks and never raises (it runs in another connection's reader).
        """
        self._in_step = False
        fd = self._fd
        if (
            fd is None
            or self._sending
            or self._leftover
            or self.conn.closed
            or self._eof
            # Closed already (aclose): the number may belong to another socket by now.
            or _socket_fd(self.stream) != fd
        ):
            self._output_ready.set()
            return
        try:
            self._check_deadline()
            data = self.conn.data_to_send()
            if not data:
                return
            try:
                sent = os.write(fd, data)
            except BlockingIOError:
                sent = 0
            except OSError:
                sent = 0  # the writer's send_all meets the error and ends the connection
        except Exception as exc:  # a bug in the session: this connection only
            self._record_fault(exc, "write-through")
            self._scope.cancel()
            return
        if sent < len(data):
            self._leftover = data[sent:]
            self._output_ready.set()

    def set_blocked(self, reason: str | None) -> None:
        """A resource alarm (``reason``) or its end (None), for the session to apply."""
        set_blocked = getattr(self.conn, "set_blocked", None)  # test doubles may lack it
        if set_blocked is None:
            return
        set_blocked(reason)
        if reason is None:
            self._resume.set()
        self.wake()

    def shutdown(self, now: float) -> None:
        """Server shutdown: the session sends connection.close 320 and waits for close-ok."""
        self._shutting_down = True
        self._resume.set()  # a blocked connection is read again: its close-ok must get in
        try:
            self.conn.shutdown(now)
        except Exception as exc:
            self._record_fault(exc, "shutdown")
            self._scope.cancel()
            return
        self.wake()

    def force_close(self) -> None:
        """Stop at once (shutdown grace period over): the socket is closed without a flush."""
        self._forced = True
        self._scope.cancel()

    # The connection's life.

    async def run(self) -> None:
        # Every log line written while this task (or its children) runs carries the connection
        # id, including the session's own lines. trio gives each task its own context copy.
        structlog.contextvars.bind_contextvars(conn=self.conn_id)
        try:
            with self._scope:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(self._guarded, self._reader, "reader")
                    nursery.start_soon(self._guarded, self._timer, "timer")
                    await self._guarded(self._writer, "writer")
                    nursery.cancel_scope.cancel()
            # A send cut off half-way leaves a partial frame on the wire: nothing can follow it.
            if self._fault is not None and not self._sending and not self._forced:
                await self._send_fault_close()
            await self.stream.aclose()
        finally:
            # Late deliveries for a dead connection must not keep waking a finished task.
            self.conn.on_output = None
            self._connection_lost()
            # Shielded: under an outer cancel, aclose_forcefully would re-raise Cancelled.
            with trio.CancelScope(shield=True):
                await trio.aclose_forcefully(self.stream)

    async def _guarded(self, body: Callable[[], Awaitable[None]], name: str) -> None:
        """Turn the ends of a task into the end of this connection, never into an error."""
        try:
            await body()
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            # Reset by peer, or written to after it went: the connection is simply lost.
            self._scope.cancel()
        except Exception as exc:
            self._record_fault(exc, name)
            self._scope.cancel()

    async def _reader(self) -> None:
        while True:
            # A connection blocked by a resource alarm (it published during one) is not read
            # from until the alarm clears: rabbit_reader stops reading the socket too, and
            # the session has paused its heartbeat timeout meanwhile.
            while not self._shutting_down and getattr(self.conn, "state", None) == "blocked":
                self._resume = trio.Event()
                await self._resume.wait()
            # bytes() of a bytes object is the object itself; only bytearrays get copied.
            data = bytes(await self.stream.receive_some(self._read_size))
            _step.active = True
            try:
                self.conn.receive_data(data, trio.current_time())
            finally:
                _step.active = False
                woken, _step.woken = _step.woken, []
                for task in woken:
                    task._write_through()
            if data and self._fd is not None:
                # Its own replies too (the session queues them without on_output while
                # inside receive_data); the writer is woken only if something is left.
                self._write_through()
            else:
                self.wake()
            if not data:
                # AMQP has no half-close: once the peer has sent EOF we flush and hang up.
                self._eof = True
                break
            if self.conn.closed:
                break
        # Nothing more to read; the writer is flushing the last output. A peer that does not
        # read it would hold this connection open forever, so bound the flush.
        await trio.sleep(FINAL_FLUSH_TIMEOUT)
        self._log.info("peer is not reading the final output; hanging up")
        self._scope.cancel()

    async def _writer(self) -> None:
        while True:
            await self._output_ready.wait()
            self._output_ready = trio.Event()
            self._check_deadline()
            data = self.conn.data_to_send()
            if self._leftover:
                data = self._leftover + data
                self._leftover = b""
            if data:
                self._sending = True
                await self.stream.send_all(data)
                self._sending = False
            # Output queued while we were sending (a close-ok, say) still has to go out.
            if (self.conn.closed or self._eof) and not self._output_ready.is_set():
                return

    async def _timer(self) -> None:
        while True:
            self._deadline_moved = trio.Event()
            deadline = self.conn.next_deadline()
            self._timer_target = deadline
            now = trio.current_time()
            if deadline is None or now < deadline:
                with trio.move_on_at(math.inf if deadline is None else deadline):
                    await self._deadline_moved.wait()
                continue
            self.conn.tick(now)
            self.wake()
            if self.conn.closed and self._sending:
                # Timed out while the writer is stuck on a peer that stopped reading: a
                # flush would never finish, so hang up now (RabbitMQ does the same).
                self._scope.cancel()
                return
            after = self.conn.next_deadline()
            if after is not None and after <= now:
                # A connection that is still due after tick(now) would spin this loop forever.
                raise RuntimeError(f"next_deadline() {after} not after tick({now})")
            await trio.lowlevel.checkpoint()

    def _check_deadline(self) -> None:
        """Wake the timer early if the connection now wants waking sooner than it sleeps.

        A later deadline needs no wake-up: the timer wakes at the old one, sees nothing is
        due and sleeps again.
        """
        deadline = self.conn.next_deadline()
        if deadline is not None and (self._timer_target is None or deadline < self._timer_target):
            self._deadline_moved.set()

    async def _send_fault_close(self) -> None:
        with trio.move_on_after(FAULT_SEND_TIMEOUT):
            with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
                await self.stream.send_all(internal_error_frame())

    def _record_fault(self, exc: BaseException, where: str) -> None:
        if self._fault is None:
            self._fault = exc
            self._log.error("connection crashed; closing it", where=where, exc_info=exc)

    def _connection_lost(self) -> None:
        try:
            self.conn.connection_lost()
        except Exception as exc:
            self._log.error("connection_lost() raised", exc_info=exc)


def _socket_fd(stream: trio.abc.Stream) -> int | None:
    """The file descriptor of a plain TCP or Unix socket stream (None for TLS and the
    in-memory streams of tests: they always go through the writer)."""
    if isinstance(stream, trio.SocketStream):
        try:
            return stream.socket.fileno()
        except OSError:
            return None
    return None
