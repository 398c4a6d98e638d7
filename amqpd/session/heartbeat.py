"""Heartbeat sending and peer-liveness checks, as RabbitMQ's ``rabbit_heartbeat`` does them.

Rules of this module (spec 4.2.7; ``rabbit_heartbeat.erl``):
- Sans-I/O: the owner passes ``now`` and two counters (octets queued for the peer, not
  counting heartbeats; octets received) and asks ``next_deadline()`` when to call again.
- Sender: every ``timeout / 2`` seconds, if nothing was sent since the previous check, send
  a heartbeat. The very first check always sends one (RabbitMQ's ``StatVal0 =:= 0`` clause).
- Receiver: every ``timeout`` seconds compare the received counter with the previous check;
  the second unchanged check in a row is a timeout, so a silent peer is dropped between 2
  and 3 timeouts after its last octet ("missed heartbeats from client").
- Checks are periodic, each one period after the one before (a late tick does not shift the
  schedule, but never schedules into the past).
"""

from __future__ import annotations

import attrs


@attrs.frozen
class HeartbeatCheck:
    """What the owner must do after ``HeartbeatMonitor.check``."""

    send_heartbeat: bool = False
    timed_out: bool = False


class HeartbeatMonitor:
    """Heartbeats for one connection with a negotiated, non-zero ``timeout`` in seconds."""

    def __init__(self, timeout: int, now: float) -> None:
        if timeout <= 0:
            raise ValueError("heartbeat timeout must be positive; 0 disables heartbeats")
        self.timeout = timeout
        # RabbitMQ: TimeoutSec * 1000 div 2 milliseconds.
        self._send_period = (timeout * 1000 // 2) / 1000
        self._recv_period = float(timeout)
        self._next_send: float = now + self._send_period
        self._next_recv: float | None = now + self._recv_period
        self._sent_mark: int | None = None
        self._recv_mark: int | None = None
        self._recv_unchanged = 0

    def next_deadline(self) -> float:
        if self._next_recv is None:
            return self._next_send
        return min(self._next_send, self._next_recv)

    def pause_receive(self) -> None:
        """Stop liveness checks (RabbitMQ pauses them while the connection is blocked)."""
        self._next_recv = None

    def resume_receive(self, now: float) -> None:
        """Restart liveness checks from scratch (rabbit_heartbeat resume → ``{0, 0}``)."""
        if self._next_recv is None:
            self._next_recv = now + self._recv_period
            self._recv_mark = None
            self._recv_unchanged = 0

    def check(self, now: float, sent: int, received: int) -> HeartbeatCheck:
        send = timed_out = False
        if now >= self._next_send:
            send = self._sent_mark is None or sent == self._sent_mark
            self._sent_mark = sent
            self._next_send = self._advance(self._next_send, self._send_period, now)
        if self._next_recv is not None and now >= self._next_recv:
            if self._recv_mark is None or received != self._recv_mark:
                self._recv_unchanged = 0
            elif self._recv_unchanged < 1:
                self._recv_unchanged += 1
            else:
                timed_out = True
            self._recv_mark = received
            self._next_recv = self._advance(self._next_recv, self._recv_period, now)
        return HeartbeatCheck(send, timed_out)

    @staticmethod
    def _advance(deadline: float, period: float, now: float) -> float:
        following = deadline + period
        return following if following > now else now + period
