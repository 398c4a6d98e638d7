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
from amqpd.broker.policies import Policy


@attrs.frozen(slots=True)
class ExchangeStatistics:
    name: str
    type: str
    durable: bool
    auto_delete: bool
    internal: bool
    bindings: int


class Exchange:
    # A destination that routes further (exchanges/base.py ``forwarding``); a Queue has none.
    forwards = True

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
        # reads it on every publish); a policy may supply one (apply_policy). Only a
        # longstr counts, as in rabbit_misc:r_arg/4.
        ae = self.arguments.get("alternate-exchange")
        self._argument_ae = (
            None
            if ae is None or not is_longstr(ae)
            else ae.decode()
            if isinstance(ae, bytes)
            else str(ae)
        )
        self.alternate_exchange: str | None = self._argument_ae
        self.policy: Policy | None = None
        self.deleted = False

    def apply_policy(self, policy: Policy | None) -> None:
        """The policy that applies to this exchange (None: none any more).

        Only ``alternate-exchange`` concerns an exchange here, and the argument beats the
        policy: rabbit_policy:get_arg/3 (used by rabbit_exchange's process_alternate/2)
        reads the argument first (oracle: an exchange declared with an AE keeps using it
        under a policy naming another).
        """
        self.policy = policy
        ae = policy.definition.get("alternate-exchange") if policy is not None else None
        if "alternate-exchange" in self.arguments or not isinstance(ae, str):
            self.alternate_exchange = self._argument_ae
        else:
            self.alternate_exchange = ae

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
