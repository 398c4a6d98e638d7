"""Exchange-to-exchange routing over random graphs (cycles, alternate exchanges) against a
breadth-first reference of RabbitMQ's rule (rabbit_exchange:route1/3): every exchange is
visited at most once per publish, each queue receives one copy, and an exchange's AE is
followed only when that exchange's own bindings matched nothing."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from amqpd.broker.message import Message
from amqpd.broker.vhost import VirtualHost

N_X = 5
N_Q = 4

graphs = st.fixed_dictionaries(
    {
        "e2e": st.lists(st.tuples(st.integers(0, N_X - 1), st.integers(0, N_X - 1)), max_size=8),
        "q": st.lists(st.tuples(st.integers(0, N_X - 1), st.integers(0, N_Q - 1)), max_size=6),
        "ae": st.lists(st.one_of(st.none(), st.integers(0, N_X)), min_size=N_X, max_size=N_X),
        "start": st.integers(0, N_X - 1),
    }
)


def reference(graph: dict) -> set[str]:  # type: ignore[type-arg]
    e2e = graph["e2e"]
    qb = graph["q"]
    seen = {graph["start"]}
    todo = [graph["start"]]
    queues: set[str] = set()
    while todo:
        x = todo.pop()
        dest_x = {d for s, d in e2e if s == x}
        dest_q = {q for s, q in qb if s == x}
        queues |= {f"q{q}" for q in dest_q}
        nxt = dest_x
        if not dest_x and not dest_q:
            ae = graph["ae"][x]
            nxt = {ae} if ae is not None and ae < N_X else set()  # N_X: a missing AE
        for n in nxt - seen:
            seen.add(n)
            todo.append(n)
    return queues


@settings(max_examples=300, deadline=None)
@given(graph=graphs)
def test_route_matches_reference(graph: dict) -> None:  # type: ignore[type-arg]
    v = VirtualHost()
    for i in range(N_X):
        ae = graph["ae"][i]
        args = {} if ae is None else {"alternate-exchange": f"x{ae}"}
        v.declare_exchange(f"x{i}", "fanout", arguments=args)
    for i in range(N_Q):
        v.declare_queue(f"q{i}")
    for s, d in graph["e2e"]:
        v.bind_exchange(f"x{d}", f"x{s}", "")
    for s, q in graph["q"]:
        v.bind_queue(f"q{q}", f"x{s}", "")
    routed = v.route(f"x{graph['start']}", Message("", "", b"", b""))
    assert len(routed) == len({q.name for q in routed})  # one copy per queue
    assert {q.name for q in routed} == reference(graph)
