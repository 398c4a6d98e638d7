"""Exchange: a named exchange of some type, with its flags and arguments.

The routing index lives in ``impl`` (an ExchangeType); the VirtualHost owns the exchange
and is the only one that binds, unbinds and routes through it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import attrs

from amqpd.broker import delayed
from amqpd.broker.arguments import is_longstr
from amqpd.broker.exchanges import EXCHANGE_TYPES, ExchangeType


@attrs.frozen(slots=True)
class ExchangeStatistics:
    name: str
    type: str
    durable: bool
    auto_delete: bool
    internal: bool
    bindings: int


class Exchange:
    def __init__(
        self,
        name: str,
        type: str,
        *,
        vhost: str = "/",
        durable: bool = False,
        auto_delete: bool = False,
        internal: bool = False,
        arguments: Mapping[str, Any] | None = None,
    ) -> None:
        self.name = name
        self.type = type
        self.vhost = vhost
        self.durable = durable
        self.auto_delete = auto_delete
        self.internal = internal
        self.arguments: Mapping[str, Any] = dict(arguments or {})
        # An x-delayed-message exchange routes with the type its x-delayed-type names
        # (validated by the vhost before it gets here) and holds delayed messages first.
        self.delayed = type == delayed.EXCHANGE_TYPE
        routing_type = (
            delayed.validate_delayed_type(self.arguments, EXCHANGE_TYPES) if self.delayed else type
        )
        self.impl: ExchangeType = EXCHANGE_TYPES[routing_type]()
        # Arguments never change after declare, so the AE name is worked out once (routing
        # reads it on every publish). Only a longstr counts, as in rabbit_misc:r_arg/4.
        ae = self.arguments.get("alternate-exchange")
        self.alternate_exchange: str | None = (
            None
            if ae is None or not is_longstr(ae)
            else ae.decode()
            if isinstance(ae, bytes)
            else str(ae)
        )
        self.deleted = False

    def resource(self) -> str:
        return f"exchange '{self.name}' in vhost '{self.vhost}'"

    def statistics(self) -> ExchangeStatistics:
        return ExchangeStatistics(
            name=self.name,
            type=self.type,
            durable=self.durable,
            auto_delete=self.auto_delete,
            internal=self.internal,
            bindings=self.impl.binding_count(),
        )

    def __repr__(self) -> str:
        return f"<Exchange {self.name!r} {self.type}>"
