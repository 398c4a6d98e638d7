"""The per-publish checks of basic.publish, with RabbitMQ's exact texts.

Each check raises 406 PRECONDITION_FAILED, worded as RabbitMQ 3.13 words it (verified on
the oracle where noted):
- ``check_size``: ``rabbit_channel:check_msg_size/3``: "message size N is larger than
  configured max size M" ("max size" when the limit is RabbitMQ's hard ceiling, 512 MiB).
- ``check_user_id``: ``rabbit_access_control:check_user_id/2``: "user_id property set to
  'x' but authenticated user was 'y'" (oracle).
- ``parse_expiration``: ``rabbit_basic:parse_expiration/1`` with Erlang's
  ``string:to_integer/1`` and ``rabbit_misc:check_expiry/1``: "invalid expiration 'abc':
  no_integer", "... '12abc': {leftover_string,\"abc\"}", "... '-1': {value_negative,-1}",
  "... '315360000001': {value_too_large,315360000001}" (oracle; the ceiling is ten years
  in ms; "+5" and "-0" are accepted).
"""

from __future__ import annotations

from amqpd.errors import PreconditionFailed

# rabbit.hrl ?MAX_MSG_SIZE: the ceiling max_message_size can be configured to.
RABBIT_MAX_MSG_SIZE = 536_870_912
# rabbit_misc:check_expiry/1: ten years in milliseconds.
MAX_EXPIRY_MS = 315_360_000_000

_ERLANG_ESCAPES = {'"': '\\"', "\\": "\\\\", "\n": "\\n", "\r": "\\r", "\t": "\\t"}


def check_size(size: int, max_size: int) -> None:
    if size > max_size:
        which = "max size" if max_size == RABBIT_MAX_MSG_SIZE else "configured max size"
        raise PreconditionFailed(f"message size {size} is larger than {which} {max_size}")


def check_user_id(user_id: str | None, username: str) -> None:
    # Only the property's presence matters; impersonator tags are a later issue.
    if user_id is not None and user_id != username:
        raise PreconditionFailed(
            f"user_id property set to '{user_id}' but authenticated user was '{username}'"
        )


def parse_expiration(expiration: str | None) -> int | None:
    """The per-message TTL in ms, or None when the property is absent."""
    if expiration is None:
        return None
    value, rest = _erlang_to_integer(expiration)
    if value is None:
        reason = "no_integer"
    elif rest:
        reason = f"{{leftover_string,{_erlang_string(rest)}}}"
    elif value > MAX_EXPIRY_MS:
        reason = f"{{value_too_large,{value}}}"
    elif value < 0:
        reason = f"{{value_negative,{value}}}"
    else:
        return value
    raise PreconditionFailed(f"invalid expiration '{expiration}': {reason}")


def _erlang_to_integer(text: str) -> tuple[int | None, str]:
    """Erlang ``string:to_integer/1``: optional sign, then at least one digit."""
    i = 1 if text[:1] in ("+", "-") else 0
    j = i
    while j < len(text) and "0" <= text[j] <= "9":
        j += 1
    if j == i:
        return None, text
    return int(text[:j]), text[j:]


def _erlang_string(text: str) -> str:
    """How ``~tp`` prints a string: double-quoted with Erlang's escapes."""
    return '"' + "".join(_ERLANG_ESCAPES.get(c, c) for c in text) + '"'
