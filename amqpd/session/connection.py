"""One client connection, sans-I/O: handshake, heartbeats, channel lifecycle, error → Close.

Rules of this module (docs/internals.md "session/"; behaviour of RabbitMQ 3.13's
``rabbit_reader``, checked against the oracle):
- h11/h2 style: bytes in through ``receive_data(data, now)``, bytes out through
  ``data_to_send()``; time only as ``now`` arguments; ``next_deadline()``/``tick(now)`` drive
  heartbeats and timeouts. No I/O, no trio, nothing awaits.
- States follow ``rabbit_reader``'s ``connection_state``: handshake (protocol header) →
  starting (start sent) → tuning (tune sent) → opening (tune-ok seen) → running; then
  closing (we sent connection.close and wait for close-ok), silent (a failed handshake
  waiting out SILENT_CLOSE_DELAY) and closed (the server flushes and hangs up).
- ``_handle_exception`` is THE place an ``AMQPError`` becomes a connection.close, and
  ``_close_channel`` the place a soft one becomes a channel.close. What an error does depends
  on the state exactly as in ``rabbit_reader:handle_exception/3``: in opening and running a
  connection.close goes out and we wait for close-ok; earlier in the handshake the client
  gets no frame at all and the socket is closed SILENT_CLOSE_DELAY later (RabbitMQ's DoS
  brake), except a refused login with the ``authentication_failure_close`` capability,
  which gets a 403 first.
- Channels: any frame on a new channel number takes a slot (counted against channel_max,
  as RabbitMQ counts channel processes); its first command must be channel.open. channel.open,
  channel.close and channel.close-ok are handled here; every other channel method goes to
  ``Channel.handle``. After we send channel.close, only channel.close (answered) and
  channel.close-ok (frees the number) count on that channel; content frames still go
  through the assembler so framing errors are still caught (as RabbitMQ does).
- Framing: an unknown method id drops the connection without a frame (RabbitMQ's reader
  exits); an unknown frame type is a 501 that leaves the stream in sync; a frame over
  frame_max or a bad frame-end octet is a 501 after which nothing more is read.
- Output is a list of bytes joined once by ``data_to_send``. Output queued from outside our
  own ``receive_data``/``tick``/``shutdown`` (a delivery from another connection's publish)
  calls ``on_output`` once until the next drain.
"""

from __future__ import annotations

import enum
import struct
from collections.abc import Callable
from typing import Any, Protocol

import attrs
import structlog

from amqpd.errors import (
    REPLY_NAMES,
    AccessRefusedHard,
    AMQPError,
    ChannelError,
    ChannelErrorHard,
    CommandInvalid,
    ConnectionForced,
    FrameError,
    InternalError,
    NotAllowed,
    UnexpectedFrame,
)
from amqpd.protocol import methods as M
from amqpd.protocol._erl import payload_snippet
from amqpd.protocol.assembler import Command, CommandAssembler
from amqpd.protocol.constants import (
    CLASS_CONNECTION,
    FRAME_HEARTBEAT,
    FRAME_METHOD,
    FRAME_MIN_SIZE,
    PROTOCOL_HEADER,
)
from amqpd.protocol.fieldtable import FieldTable
from amqpd.protocol.frames import (
    HEARTBEAT_FRAME,
    Frame,
    FrameReader,
    Publish,
    encode_method_frame,
)
from amqpd.session import handshake
from amqpd.session.config import ConnectionConfig
from amqpd.session.heartbeat import HeartbeatMonitor

__all__ = ["Connection", "ConnectionConfig", "SessionChannel"]

log = structlog.get_logger("amqpd.session")


class SessionChannel(Protocol):
    """The Channel side of the contract (amqpd/session/channel.py)."""

    def handle(self, cmd: Command, now: float) -> None: ...

    def on_closed(self, now: float | None = None) -> None: ...

    def flush(self) -> None: ...


ChannelFactory = Callable[["Connection", int], SessionChannel]


class _State(enum.Enum):
    HANDSHAKE = "pre_init"
    STARTING = "starting"
    TUNING = "tuning"
    OPENING = "opening"
    RUNNING = "running"
    CLOSING = "closing"
    SILENT = "silent"
    CLOSED = "closed"


_METHOD_IDS = struct.Struct(">HH")
_BASIC_PUBLISH_IDS = _METHOD_IDS.pack(M.BasicPublish.CLASS_ID, M.BasicPublish.METHOD_ID)
_BASIC_ACK_IDS = _METHOD_IDS.pack(M.BasicAck.CLASS_ID, M.BasicAck.METHOD_ID)
_TAG_BITS = struct.Struct(">QB")  # basic.ack's delivery-tag and bits
_PRE_RUNNING = frozenset(
    {_State.HANDSHAKE, _State.STARTING, _State.TUNING, _State.OPENING, _State.SILENT}
)
_PUBLISH_METHODS_KEPT = 64
_STOPPING = frozenset({_State.CLOSING, _State.SILENT})


@attrs.define(slots=True)
class _Slot:
    """A channel number in use: from its first frame until it is free again."""

    assembler: CommandAssembler
    channel: SessionChannel | None = None  # set by channel.open
    closing: bool = False  # we sent channel.close and wait for close-ok


def _default_channel_factory(conn: Connection, number: int) -> SessionChannel:
    # Imported on first use: channel.py's handler modules are many and heavy, and tests of
    # the connection alone run with a stand-in factory.
    from amqpd.session.channel import Channel

    channel: SessionChannel = Channel(conn, number)
    return channel


class Connection:
    """The session side of one AMQP 0-9-1 connection (see the module docstring)."""

    def __init__(
        self,
        broker: Any,
        *,
        now: float,
        peer: str | None = None,
        config: ConnectionConfig | None = None,
        channel_factory: ChannelFactory | None = None,
        peer_certificate: str | None = None,
    ) -> None:
        self.broker = broker
        self.config = config if config is not None else ConnectionConfig()
        self.peer = peer
        #: The EXTERNAL mechanism's user name from the client's verified TLS certificate
        #: (its subject DN or CN, per ssl_cert_login_from: server/certificates.py); "" for
        #: a verified certificate that names nobody; None without one.
        self.peer_certificate = peer_certificate
        self._mechanisms = handshake.offered_mechanisms(self.config, peer_certificate is not None)
        #: Called when output is queued from outside this connection's own calls.
        self.on_output: Callable[[], None] | None = None
        # What the handshake establishes (read by channels).
        self.user: Any = None
        self.vhost: Any = None
        #: The user's permission checks in ``vhost`` (broker ``Access``), set by connection.open.
        self.access: Any = None
        self.client_properties: FieldTable = {}
        self.capabilities: FieldTable = {}
        self.auth_mechanism: str | None = None
        #: RabbitMQ reads frames of up to FRAME_MIN_SIZE until tune-ok (initial_frame_max).
        self.frame_max = FRAME_MIN_SIZE
        self.channel_max = 0
        self.heartbeat = 0
        #: Open channels (channel.open seen, not closed by either side).
        self.channels: dict[int, SessionChannel] = {}

        self._channel_factory = channel_factory or _default_channel_factory
        self._state = _State.HANDSHAKE
        self._reader = FrameReader(FRAME_MIN_SIZE)
        self._slots: dict[int, _Slot] = {}
        self._outbox: list[bytes] = []
        self._wake_pending = False
        self._in_call = 0
        self._sent = 0  # octets queued, heartbeats excluded (rabbit_heartbeat send_oct)
        self._received = 0
        self._stop_reading = False
        # Decoded basic.publish methods by their payload: a publisher repeats one exchange
        # and routing key, and the method is immutable (attrs.frozen), so one object serves.
        self._publish_methods: dict[bytes, M.Method] = {}
        self._released = False
        self._releasing = False
        self._last_now = now
        self._handshake_deadline = now + self.config.handshake_timeout
        self._close_at: float | None = None
        self._heartbeats: HeartbeatMonitor | None = None
        self._dirty: set[int] = set()
        # connection.blocked (rabbit_reader throttle): reason while a resource alarm is on.
        self._block_reason: str | None = None
        self._blocked = False
        self._log = log.bind(peer=peer)

    # ------------------------------------------------------------------ the server's API

    @property
    def closed(self) -> bool:
        """True once the server should flush ``data_to_send()`` and close the socket."""
        return self._state is _State.CLOSED

    @property
    def state(self) -> str:
        """RabbitMQ's name for the connection state (for logs and management)."""
        if self._state is _State.RUNNING and self._blocked:
            return "blocked"
        return self._state.value

    def receive_data(self, data: bytes, now: float) -> None:
        """Feed bytes from the socket; ``b""`` means the peer closed it."""
        if self._state is _State.CLOSED:
            return
        self._in_call += 1
        try:
            if not data:
                if self._state is not _State.HANDSHAKE or self._reader.buffered:
                    self._log.info("client closed the TCP connection", state=self.state)
                self._finish()
                return
            self._received += len(data)
            if self._stop_reading:
                return
            self._reader.feed(data)
            self._process(now)
        finally:
            self._flush_channels()
            self._in_call -= 1

    def data_to_send(self) -> bytes:
        """Everything queued for the peer since the last call."""
        self._wake_pending = False
        if not self._outbox:
            return b""
        data = b"".join(self._outbox)
        self._outbox.clear()
        return data

    def next_deadline(self) -> float | None:
        """When ``tick`` must next be called (None: never, unless something changes)."""
        if self._state is _State.CLOSED:
            return None
        deadlines: list[float] = []
        if self._close_at is not None:
            deadlines.append(self._close_at)
        if self._state in _PRE_RUNNING:
            deadlines.append(self._handshake_deadline)
        if self._heartbeats is not None:
            deadlines.append(self._heartbeats.next_deadline())
        return min(deadlines) if deadlines else None

    def tick(self, now: float) -> None:
        """Run the timers that are due: close timeouts, handshake timeout, heartbeats."""
        if self._state is _State.CLOSED:
            return
        self._in_call += 1
        try:
            self._tick(now)
        finally:
            self._in_call -= 1

    def shutdown(self, now: float) -> None:
        """Server shutdown: connection.close 320, then close on close-ok or after a short wait.

        During the handshake there is nobody to tell: RabbitMQ just drops those
        (``terminate/2`` → ``force``).
        """
        if self._state is _State.CLOSED:
            return
        self._in_call += 1
        try:
            deadline = now + self.config.shutdown_timeout
            if self._state is _State.RUNNING:
                self._respond_and_close(
                    ConnectionForced("broker forced connection closure with reason 'shutdown'"),
                    now,
                )
                self._close_at = deadline
            elif self._state in _STOPPING:
                assert self._close_at is not None
                self._close_at = min(self._close_at, deadline)
            else:
                self._log.info("closing connection during handshake: server shutdown")
                self._finish()
        finally:
            self._in_call -= 1

    @property
    def channel_count(self) -> int:
        """Channel numbers in use (what RabbitMQ counts against channel limits)."""
        return len(self._slots)

    def close_forced(self, reason: str, now: float) -> None:
        """An operator closed us (user or vhost deleted): connection.close 320 ``reason``.

        RabbitMQ's rabbit_networking:close_connection/2: "CONNECTION_FORCED - user 'u' is
        deleted". Called from outside ``receive_data``, so the output wakes the writer.
        """
        if self._state is not _State.RUNNING:
            if self._state in _PRE_RUNNING:
                self._finish()
            return
        self._respond_and_close(ConnectionForced(reason), now)

    def connection_lost(self) -> None:
        """The socket is gone: release every channel and this connection's exclusive queues."""
        self._state = _State.CLOSED
        self._release()

    # ------------------------------------------------------------------ the channels' API

    def send(self, data: bytes) -> None:
        """Queue pre-encoded frames for the peer."""
        if self._state is _State.CLOSED or self._releasing:
            # The socket is going away, or this is a delivery to a channel being released
            # (its on_closed() requeues it): nothing more can reach the peer.
            return
        self._outbox.append(data)
        self._sent += len(data)
        if not self._in_call and not self._wake_pending and self.on_output is not None:
            self._wake_pending = True
            self.on_output()

    def send_method(self, channel_number: int, method: M.Method) -> None:
        self.send(encode_method_frame(channel_number, method))

    def close_channel_with_error(self, number: int, err: AMQPError) -> None:
        """Turn ``err`` into channel.close (soft) or connection.close (hard) for ``number``.

        For errors found outside a received command (e.g. a timer in a channel).
        """
        slot = self._slots.get(number)
        if not err.hard and slot is not None and slot.channel is not None:
            self._close_channel(number, slot, err)
        elif err.hard:
            self._handle_exception(err, self._last_now)

    def set_blocked(self, reason: str | None) -> None:
        """A resource alarm went on (``reason``, e.g. "low on memory") or off (None).

        As in rabbit_reader's throttle: connection.blocked goes out once the client publishes
        while an alarm is on, only if it announced the ``connection.blocked`` capability;
        unblocked follows when the alarm clears, if blocked was sent.
        """
        self._block_reason = reason
        if reason is None and self._blocked:
            self._blocked = False
            if self._heartbeats is not None:
                self._heartbeats.resume_receive(self._last_now)
            if self._state is _State.RUNNING and self._wants_blocked_frames():
                self.send_method(0, M.ConnectionUnblocked())

    # ------------------------------------------------------------------ input processing

    def _process(self, now: float) -> None:
        self._last_now = now
        if self._state is _State.HANDSHAKE:
            header = self._reader.read_protocol_header()
            if header is None:
                return  # fewer than the 8 octets we judge the header by
            version = handshake.negotiate_version(header)
            if version is None:
                # Spec 4.2.2: answer with the protocol we do support, then close.
                self._log.info("client did not start with AMQP 0-9-1 header", header=header)
                self._outbox.append(PROTOCOL_HEADER)
                self._finish()
                return
            self._send_start(version)
        reader = self._reader
        while self._state is not _State.CLOSED and not self._stop_reading:
            if self._state is _State.RUNNING:
                publish = reader.peek_publish()
                if publish is not None and self._whole_publish(publish, now):
                    continue
            try:
                frame = reader.next_frame()
            except FrameError as exc:
                if _frame_consumed(exc):
                    # An unknown frame type: the stream is still in sync (rabbit_reader
                    # frame_error/5, not fatal_frame_error/5); while closing, just ignored.
                    self._handle_exception(exc, now)
                    continue
                self._fatal_frame_error(exc, now)
                return
            if frame is None:
                return
            if frame.type == FRAME_METHOD:
                payload = frame.payload
                if (
                    len(payload) == 13
                    and payload.startswith(_BASIC_ACK_IDS)
                    and self._state is _State.RUNNING
                    and self._plain_ack(frame, now)
                ):
                    continue
                if self._unknown_method(frame):
                    return
            try:
                self._handle_frame(frame, now)
            except AMQPError as exc:
                self._handle_exception(exc, now)

    def _whole_publish(self, publish: Publish, now: float) -> bool:
        """Handle a basic.publish whose frames are all buffered as one command.

        What its three frames would do one by one (``_channel_frame``, the assembler,
        ``_publish_received``), for the common case only: an open channel whose assembler
        waits for a method, a body within max_message_size, a method that decodes. False
        (nothing consumed) otherwise, and the frames take the usual path with its errors.
        Its method comes from ``_publish_methods`` when this connection published the same
        octets lately.
        """
        slot = self._slots.get(publish.channel)
        if slot is None or slot.channel is None or slot.closing:
            return False
        assembler = slot.assembler
        if not assembler.idle or len(publish.body) > assembler.max_body_size:
            return False
        method = self._publish_methods.get(publish.method)
        if method is None:
            try:
                method = M.decode_method(publish.method)
            except AMQPError:
                return False
            if len(self._publish_methods) >= _PUBLISH_METHODS_KEPT:
                self._publish_methods.clear()  # client-chosen keys: bounded, and simply so
            self._publish_methods[publish.method] = method
        self._reader.consume(publish.end)
        self._publish_received(now)
        try:
            self._channel_command(
                publish.channel, slot, Command(method, publish.properties_raw, publish.body), now
            )
        except AMQPError as exc:
            self._handle_exception(exc, now)
        return True

    def _plain_ack(self, frame: Frame, now: float) -> bool:
        """A basic.ack (a consumer sends one per message) straight to its channel.

        What ``_handle_frame`` → ``_channel_frame`` → the assembler would do, for an open
        channel waiting for a method (False otherwise, and the frame takes that path).
        """
        number = frame.channel
        slot = self._slots.get(number)
        if slot is None or slot.channel is None or slot.closing or not slot.assembler.idle:
            return False
        delivery_tag, bits = _TAG_BITS.unpack_from(frame.payload, 4)
        method = M.BasicAck(delivery_tag=delivery_tag, multiple=bool(bits & 1))
        try:
            self._channel_command(number, slot, Command(method), now)
        except AMQPError as exc:
            self._handle_exception(exc, now)
        return True

    def _unknown_method(self, frame: Frame) -> bool:
        """Drop the connection on an unknown class/method id, as RabbitMQ does.

        rabbit_command_assembler:analyze_frame/3 calls lookup_method_name/1, which exits for
        an id it does not know: the reader dies and the socket closes with no
        connection.close. It runs for every method frame on channel 0, and on other channels
        once the connection is running (before that they are unexpected frames, and while
        closing they are not looked at).
        """
        if frame.channel != 0 and self._state is not _State.RUNNING:
            return False
        payload = frame.payload
        if payload.startswith(_BASIC_PUBLISH_IDS):
            return False  # the method of most frames, checked without building a tuple
        if len(payload) < 4 or _METHOD_IDS.unpack_from(payload, 0) in M.METHODS:
            return False  # short payloads are FrameReader's business (501)
        self._log.error(
            "closing connection: unknown method id", channel=frame.channel, ids=payload[:4].hex()
        )
        self._finish()
        return True

    def _handle_frame(self, frame: Frame, now: float) -> None:
        state = self._state
        if state in _STOPPING:
            self._handle_frame_stopping(frame)
            return
        if frame.channel == 0:
            if frame.type == FRAME_HEARTBEAT:
                return  # its arrival already counted for liveness
            if frame.type != FRAME_METHOD:
                # Content frames belong on a channel (spec 4.2.6; rabbit_reader 505).
                raise UnexpectedFrame(f"type {frame.type}, {payload_snippet(frame.payload)}")
            method = M.decode_method(frame.payload)
            try:
                self._handle_method0(method, now)
            except AMQPError as exc:
                _blame(exc, method)
                raise
            return
        if state is not _State.RUNNING or frame.type == FRAME_HEARTBEAT:
            # Spec 4.2.7: heartbeats only on channel 0; no channel before connection.open-ok.
            raise UnexpectedFrame(f"type {frame.type}, {payload_snippet(frame.payload)}")
        self._channel_frame(frame, now)

    def _handle_frame_stopping(self, frame: Frame) -> None:
        """Once we are closing, only connection.close / close-ok on channel 0 matter."""
        if frame.channel != 0 or frame.type != FRAME_METHOD:
            return
        try:
            method = M.decode_method(frame.payload)
        except AMQPError as exc:
            self._log.info("ignoring undecodable method while closing", error=repr(exc))
            return
        if isinstance(method, M.ConnectionCloseOk):
            self._finish()
        elif isinstance(method, M.ConnectionClose) and self._state is _State.CLOSING:
            # Both sides closing at once: answer theirs, keep waiting for our close-ok (spec
            # connection.close: after sending it, discard everything but close and close-ok).
            self.send_method(0, M.ConnectionCloseOk())

    # ------------------------------------------------------------------ channel 0

    def _handle_method0(self, method: M.Method, now: float) -> None:
        state = self._state
        if state is _State.STARTING and isinstance(method, M.ConnectionStartOk):
            self._start_ok(method, now)
        elif state is _State.TUNING and isinstance(method, M.ConnectionTuneOk):
            self._tune_ok(method, now)
        elif state is _State.OPENING and isinstance(method, M.ConnectionOpen):
            self._open(method)
        elif state is _State.RUNNING and isinstance(method, M.ConnectionClose):
            self._client_close(method)
        elif state is _State.RUNNING and isinstance(method, M.ConnectionUpdateSecret):
            # RabbitMQ re-checks the new secret with the auth backends; ours never expire.
            self._log.debug("client updated its secret", reason=method.reason)
            self.send_method(0, M.ConnectionUpdateSecretOk())
        else:
            raise ChannelErrorHard(f"unexpected method in connection state {self.state}")

    def _send_start(self, version: tuple[int, int]) -> None:
        # 0-9 and 0-9-1 clients both get version 0-9, 0-8 clients 8-0 (rabbit_reader).
        start = M.ConnectionStart(
            version_major=version[0],
            version_minor=version[1],
            server_properties=self.config.server_properties(capabilities=version == (0, 9)),
            mechanisms=" ".join(self._mechanisms).encode("ascii"),
            locales=b"en_US",
        )
        self.send_method(0, start)
        self._state = _State.STARTING

    def _start_ok(self, method: M.ConnectionStartOk, now: float) -> None:
        self.client_properties = method.client_properties
        caps = method.client_properties.get("capabilities")
        self.capabilities = caps if isinstance(caps, dict) else {}
        mechanism = method.mechanism
        handshake.check_mechanism(mechanism, self.config, self._mechanisms)
        self.auth_mechanism = mechanism
        user = None
        if mechanism == "EXTERNAL":
            # rabbit_auth_mechanism_ssl: the response is ignored; the certificate names the
            # user, who must exist (no password is checked).
            assert self.peer_certificate is not None  # EXTERNAL is only offered then
            if not self.peer_certificate:
                # A certificate that names nobody (common_name without a CN): offered, then
                # refused, as rabbit_auth_mechanism_ssl's {refused, none, "no name found"}.
                self._auth_fail(mechanism, "no name found", now)
                return
            creds = handshake.Credentials(self.peer_certificate, None)
            user = self.broker.authenticate_external(creds.username)
        else:
            creds = handshake.parse_response(mechanism, method.response)
        if creds.password is not None:
            user = self.broker.authenticate(creds.username, creds.password)
        if user is None:
            self._auth_fail(mechanism, f"user '{creds.username}' - invalid credentials", now)
            return
        if getattr(user, "loopback_only", False) and not handshake.is_loopback(self.peer):
            self._auth_fail(
                mechanism, f"user '{creds.username}' can only connect via localhost", now
            )
            return
        self.user = user
        config = self.config
        self.send_method(
            0,
            M.ConnectionTune(
                channel_max=config.channel_max,
                frame_max=config.frame_max,
                heartbeat=config.heartbeat,
            ),
        )
        self._state = _State.TUNING

    def _auth_fail(self, mechanism: str, detail: str, now: float) -> None:
        # rabbit_reader:auth_fail/5: the real reason goes to the log only.
        self._log.warning("login refused", mechanism=mechanism, reason=detail)
        if self.capabilities.get("authentication_failure_close") is True:
            err = AccessRefusedHard(
                f"Login was refused using authentication mechanism {mechanism}. "
                "For details see the broker logfile."
            )
            self.send_method(0, M.ConnectionClose(err.reply_code, _reply_text(err), 0, 0))
        self._silent_close(now)

    def _tune_ok(self, method: M.ConnectionTuneOk, now: float) -> None:
        handshake.check_tune_ok(self.config, method.channel_max, method.frame_max)
        self.channel_max = method.channel_max
        self.frame_max = method.frame_max
        self._reader.frame_max = method.frame_max
        # The client's tune-ok heartbeat is the one used (rabbit_reader), 0 = none.
        self.heartbeat = method.heartbeat
        if method.heartbeat:
            self._heartbeats = HeartbeatMonitor(method.heartbeat, now)
        self._state = _State.OPENING

    def _open(self, method: M.ConnectionOpen) -> None:
        name = method.virtual_host
        # 530 for a missing vhost, a connection limit or no permissions on it.
        self.vhost, self.access = self.broker.open_connection(self, self.user, name)
        self.send_method(0, M.ConnectionOpenOk())
        self._state = _State.RUNNING
        self._log.info("connection open", user=getattr(self.user, "name", None), vhost=name)

    def _client_close(self, method: M.ConnectionClose) -> None:
        self._log.info(
            "client closed the connection", reply_code=method.reply_code, text=method.reply_text
        )
        self._release()
        self.send_method(0, M.ConnectionCloseOk())
        self._finish()

    # ------------------------------------------------------------------ channels

    def _channel_frame(self, frame: Frame, now: float) -> None:
        number = frame.channel
        slot = self._slots.get(number)
        if slot is None:
            # rabbit_reader:create_channel/2 counts channels, whatever their numbers.
            if self.channel_max and len(self._slots) >= self.channel_max:
                raise NotAllowed(
                    f"number of channels opened ({len(self._slots)}) has reached the "
                    f"negotiated channel_max ({self.channel_max})"
                )
            # Then the user's max-channels over all its connections (create_channel/2).
            self.broker.check_channel_open(self, self.user.name)
            slot = _Slot(CommandAssembler(self.config.max_message_size))
            self._slots[number] = slot
        try:
            cmd = slot.assembler.feed(frame)
        except ChannelError as exc:  # e.g. 406 message too large
            if slot.closing:
                return
            if slot.channel is None:
                raise ChannelErrorHard(
                    "expected 'channel.open'", class_id=exc.class_id, method_id=exc.method_id
                ) from None
            self._close_channel(number, slot, exc)
            return
        if frame.type != FRAME_METHOD:
            self._publish_received(now)
        if cmd is not None:
            self._channel_command(number, slot, cmd, now)

    def _channel_command(self, number: int, slot: _Slot, cmd: Command, now: float) -> None:
        method = cmd.method
        if slot.closing:
            # rabbit_channel in state closing: answer close, finish on close-ok, drop the rest.
            if isinstance(method, M.ChannelClose):
                self.send_method(number, M.ChannelCloseOk())
            elif isinstance(method, M.ChannelCloseOk):
                del self._slots[number]
            return
        channel = slot.channel
        if channel is None:
            if not isinstance(method, M.ChannelOpen):
                raise _blame(ChannelErrorHard("expected 'channel.open'"), method)
            channel = self._channel_factory(self, number)
            slot.channel = channel
            self.channels[number] = channel
            self.send_method(number, M.ChannelOpenOk())
            return
        if isinstance(method, M.ChannelOpen):
            raise _blame(ChannelErrorHard("second 'channel.open' seen"), method)
        if isinstance(method, M.ChannelClose):
            del self._slots[number]
            del self.channels[number]
            self._channel_closed(channel)
            self.send_method(number, M.ChannelCloseOk())
            return
        if method.CLASS_ID == CLASS_CONNECTION or isinstance(
            method, (M.ChannelOpenOk, M.ChannelCloseOk)
        ):
            # rabbit_channel's catch-all clause.
            raise _blame(CommandInvalid("unimplemented method"), method)
        self._dirty.add(number)
        try:
            channel.handle(cmd, now)
        except AMQPError as exc:
            _blame(exc, method)
            if exc.hard:
                raise
            if self.channels.get(number) is channel:
                self._close_channel(number, slot, exc)
        except Exception as exc:
            # A bug in the channel: RabbitMQ's channel process would crash, and its reader
            # answer 541 for the whole connection.
            self._log.error("channel crashed", channel=number, exc_info=exc)
            raise _blame(InternalError(f"channel {number} crashed"), method) from exc

    def _close_channel(self, number: int, slot: _Slot, err: AMQPError) -> None:
        """THE place a soft error becomes channel.close (spec 1.2; rabbit_channel)."""
        self._log.info(
            "channel error", channel=number, reply_code=err.reply_code, text=err.reply_text
        )
        self.send_method(
            number, M.ChannelClose(err.reply_code, _reply_text(err), err.class_id, err.method_id)
        )
        slot.closing = True
        channel = self.channels.pop(number, None)
        slot.channel = None
        if channel is not None:
            self._channel_closed(channel)

    def _channel_closed(self, channel: SessionChannel) -> None:
        try:
            # The latest time this connection saw: the requeue it causes must not judge
            # message expiry by the channel's last command, which may be long ago.
            channel.on_closed(self._last_now)
        except Exception as exc:  # releasing must go on for the other channels
            self._log.error("channel on_closed() raised", exc_info=exc)

    def _flush_channels(self) -> None:
        # Channel.flush sends confirms coalesced per received chunk.
        if not self._dirty:
            return
        dirty, self._dirty = self._dirty, set()
        for number in sorted(dirty):
            channel = self.channels.get(number)
            if channel is not None:
                try:
                    channel.flush()
                except Exception as exc:
                    self._log.error("channel flush() raised", channel=number, exc_info=exc)

    # ------------------------------------------------------------------ errors and closing

    def _handle_exception(self, err: AMQPError, now: float) -> None:
        """THE place a (hard) ``AMQPError`` becomes connection.close or a silent close."""
        state = self._state
        if state in _STOPPING or state is _State.CLOSED:
            self._log.info("error while closing", error=repr(err))
            return
        if not err.hard:
            # A soft error outside any open channel can only be a protocol slip: hard 504.
            err = ChannelErrorHard(err.detail, class_id=err.class_id, method_id=err.method_id)
        if state in (_State.RUNNING, _State.OPENING):
            self._respond_and_close(err, now)
        else:
            # starting / tuning: no frame; hang up after SILENT_CLOSE_DELAY.
            self._log.warning("handshake failed", state=state.value, error=err.reply_text)
            self._silent_close(now)

    def _respond_and_close(self, err: AMQPError, now: float) -> None:
        self._log.warning(
            "closing connection on error",
            reply_code=err.reply_code,
            text=err.reply_text,
            class_id=err.class_id,
            method_id=err.method_id,
        )
        self._release()
        self.send_method(
            0, M.ConnectionClose(err.reply_code, _reply_text(err), err.class_id, err.method_id)
        )
        self._state = _State.CLOSING
        # rabbit_reader:close_connection/1: wait for close-ok at most the heartbeat timeout
        # when that is shorter than CLOSING_TIMEOUT.
        timeout = self.config.closing_timeout
        if 0 < self.heartbeat < timeout:
            timeout = float(self.heartbeat)
        self._close_at = now + timeout

    def _fatal_frame_error(self, err: FrameError, now: float) -> None:
        # The stream is out of sync: report, read nothing more, hang up SILENT_CLOSE_DELAY
        # later (rabbit_reader:fatal_frame_error/5).
        self._stop_reading = True
        self._handle_exception(err, now)
        if self._state is not _State.CLOSED:
            self._close_at = now + self.config.silent_close_delay

    def _silent_close(self, now: float) -> None:
        self._state = _State.SILENT
        self._close_at = now + self.config.silent_close_delay

    def _finish(self) -> None:
        self._state = _State.CLOSED
        self._release()

    def _release(self) -> None:
        """Close every channel and drop our exclusive queues; idempotent."""
        if self._released:
            return
        self._released = True
        self._releasing = True
        try:
            channels = list(self.channels.values())
            self.channels.clear()
            self._slots.clear()
            for channel in channels:
                self._channel_closed(channel)
            if self.vhost is not None:
                try:
                    self.vhost.connection_closed(self)
                except Exception as exc:
                    self._log.error("vhost.connection_closed() raised", exc_info=exc)
                self.broker.close_connection(self)
        finally:
            self._releasing = False

    # ------------------------------------------------------------------ timers

    def _tick(self, now: float) -> None:
        self._last_now = now
        if self._close_at is not None and now >= self._close_at:
            self._log.info("closing connection: close timeout", state=self.state)
            self._finish()
            return
        if self._state in _PRE_RUNNING and now >= self._handshake_deadline:
            self._log.warning("closing connection: handshake timeout", state=self.state)
            self._finish()
            return
        monitor = self._heartbeats
        if monitor is None:
            return
        check = monitor.check(now, self._sent, self._received)
        if check.timed_out and self._state not in _STOPPING:
            self._log.warning(
                "closing connection: missed heartbeats from client", timeout=monitor.timeout
            )
            self._finish()
            return
        if check.send_heartbeat:
            self._outbox.append(HEARTBEAT_FRAME)

    # ------------------------------------------------------------------ flow control

    def _wants_blocked_frames(self) -> bool:
        return self.capabilities.get("connection.blocked") is True

    def _publish_received(self, now: float) -> None:
        # rabbit_reader:publish_received/1 → maybe_block/1.
        if self._block_reason is None or self._blocked:
            return
        self._blocked = True
        if self._heartbeats is not None:
            self._heartbeats.pause_receive()
        if self._wants_blocked_frames():
            self.send_method(0, M.ConnectionBlocked(reason=self._block_reason))


def _reply_text(err: AMQPError) -> str:
    """The close frame's reply-text: ``"CODE_NAME - detail"``, cut as RabbitMQ cuts it.

    reply-text is a shortstr (spec 4.2.5.3); rabbit_binary_generator:
    amqp_exception_explanation/2 keeps 252 octets and appends "..." when it is longer, and
    sends the bare name when there is no explanation (a crashed channel: "INTERNAL_ERROR").
    """
    if not err.detail:
        return REPLY_NAMES[err.reply_code]
    text = f"{REPLY_NAMES[err.reply_code]} - {err.detail}"
    raw = text.encode("utf-8")
    if len(raw) <= 255:
        return text
    return raw[:252].decode("utf-8", "ignore") + "..."


def _frame_consumed(err: FrameError) -> bool:
    """Whether FrameReader consumed the bad frame, leaving the stream in sync.

    True for an unknown frame type (or one too short for its type): FrameReader reads the
    whole frame, end octet included, before judging it. Frame too large and a bad frame-end
    octet leave the stream out of sync.
    """
    return err.detail.endswith(": unknown_frame")


def _blame(err: AMQPError, method: M.Method) -> AMQPError:
    """Name ``method`` as the cause when the raiser did not (rabbit_channel/rabbit_reader)."""
    if err.class_id == 0 and err.method_id == 0:
        err.class_id = method.CLASS_ID
        err.method_id = method.METHOD_ID
    return err
