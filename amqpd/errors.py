"""Reply codes and the exception tree every layer raises.

Rules of this module:
- It imports nothing from amqpd: it is the leaf every other layer builds on.
- An error carries its AMQP reply code and whether it is a *soft* (channel) or *hard*
  (connection) error, as RabbitMQ classifies it (rabbitmq_codegen amqp-rabbitmq-0.9.1.json).
- The wire text is built the way RabbitMQ builds it: ``"<CODE_NAME> - <detail>"``, e.g.
  ``"NOT_FOUND - no queue 'q' in vhost '/'"``. Clients and users grep for these texts.
- Raising is the only thing the core does with an error. The session layer turns it into
  channel.close or connection.close in exactly one place (spec 0-9-1 section 1.2, "Exceptions").
"""

from __future__ import annotations

# Reply codes (spec constants; amqp0-9-1.xml <constant>).
REPLY_SUCCESS = 200
CONTENT_TOO_LARGE = 311
NO_ROUTE = 312
NO_CONSUMERS = 313
CONNECTION_FORCED = 320
INVALID_PATH = 402
ACCESS_REFUSED = 403
NOT_FOUND = 404
RESOURCE_LOCKED = 405
PRECONDITION_FAILED = 406
FRAME_ERROR = 501
SYNTAX_ERROR = 502
COMMAND_INVALID = 503
CHANNEL_ERROR = 504
UNEXPECTED_FRAME = 505
RESOURCE_ERROR = 506
NOT_ALLOWED = 530
NOT_IMPLEMENTED = 540
INTERNAL_ERROR = 541

REPLY_NAMES: dict[int, str] = {
    REPLY_SUCCESS: "REPLY_SUCCESS",
    CONTENT_TOO_LARGE: "CONTENT_TOO_LARGE",
    NO_ROUTE: "NO_ROUTE",
    NO_CONSUMERS: "NO_CONSUMERS",
    CONNECTION_FORCED: "CONNECTION_FORCED",
    INVALID_PATH: "INVALID_PATH",
    ACCESS_REFUSED: "ACCESS_REFUSED",
    NOT_FOUND: "NOT_FOUND",
    RESOURCE_LOCKED: "RESOURCE_LOCKED",
    PRECONDITION_FAILED: "PRECONDITION_FAILED",
    FRAME_ERROR: "FRAME_ERROR",
    SYNTAX_ERROR: "SYNTAX_ERROR",
    COMMAND_INVALID: "COMMAND_INVALID",
    CHANNEL_ERROR: "CHANNEL_ERROR",
    UNEXPECTED_FRAME: "UNEXPECTED_FRAME",
    RESOURCE_ERROR: "RESOURCE_ERROR",
    NOT_ALLOWED: "NOT_ALLOWED",
    NOT_IMPLEMENTED: "NOT_IMPLEMENTED",
    INTERNAL_ERROR: "INTERNAL_ERROR",
}


class AMQPError(Exception):
    """An error with an AMQP reply code.

    ``class_id``/``method_id`` name the method that caused it; the session fills them in
    from the method being handled when the raiser left them at 0.
    """

    reply_code: int = INTERNAL_ERROR
    hard: bool = True

    def __init__(self, detail: str, *, class_id: int = 0, method_id: int = 0) -> None:
        super().__init__(detail)
        self.detail = detail
        self.class_id = class_id
        self.method_id = method_id

    @property
    def reply_text(self) -> str:
        text = f"{REPLY_NAMES[self.reply_code]} - {self.detail}"
        # reply-text is a shortstr (spec: domain reply-text, max 255 octets).
        encoded = text.encode("utf-8")
        if len(encoded) > 255:
            text = encoded[:255].decode("utf-8", errors="ignore")
        return text

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.reply_code}, {self.detail!r})"


class ChannelError(AMQPError):
    """A soft error: closes the channel, the connection lives on."""

    hard = False


class ConnectionError(AMQPError):  # shadows a builtin: named in the spec's words
    """A hard error: closes the whole connection."""

    hard = True


# Soft errors (channel.close).
class AccessRefused(ChannelError):
    reply_code = ACCESS_REFUSED


class NotFound(ChannelError):
    reply_code = NOT_FOUND


class ResourceLocked(ChannelError):
    reply_code = RESOURCE_LOCKED


class PreconditionFailed(ChannelError):
    reply_code = PRECONDITION_FAILED


# Hard errors (connection.close).
class ConnectionForced(ConnectionError):
    reply_code = CONNECTION_FORCED


class InvalidPath(ConnectionError):
    reply_code = INVALID_PATH


class AccessRefusedHard(ConnectionError):
    """403 during the handshake (login refused): a connection error there."""

    reply_code = ACCESS_REFUSED


class FrameError(ConnectionError):
    reply_code = FRAME_ERROR


class SyntaxError(ConnectionError):  # shadows a builtin: named in the spec's words
    reply_code = SYNTAX_ERROR


class CommandInvalid(ConnectionError):
    reply_code = COMMAND_INVALID


class ChannelErrorHard(ConnectionError):
    """504 CHANNEL_ERROR: despite the name, a connection error (spec: hard-error)."""

    reply_code = CHANNEL_ERROR


class UnexpectedFrame(ConnectionError):
    reply_code = UNEXPECTED_FRAME


class ResourceError(ConnectionError):
    reply_code = RESOURCE_ERROR


class NotAllowed(ConnectionError):
    reply_code = NOT_ALLOWED


class NotImplemented(ConnectionError):  # shadows a builtin: named in the spec's words
    reply_code = NOT_IMPLEMENTED


class InternalError(ConnectionError):
    reply_code = INTERNAL_ERROR
