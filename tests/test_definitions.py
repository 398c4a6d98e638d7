"""RabbitMQ definitions files: a real export of the oracle imports; export round-trips."""

from __future__ import annotations

import io
import json
from contextlib import redirect_stdout
from pathlib import Path

import pika
import pika.exceptions
import pytest

from amqpd.bootstrap import build_broker, effective_definitions
from amqpd.broker.message import Message
from amqpd.cli import main
from amqpd.config import ConfigFileError
from amqpd.definitions_export import to_rabbit_json
from amqpd.definitions_io import parse_definitions
from amqpd.pytest_plugin import start_amqpd

# `rabbitmqctl export_definitions` of the RabbitMQ 3.10.8 oracle, after creating vhost imp-v,
# user imp-user/imp-pass (tag monitoring) with permissions, a topic permission, vhost
# limits, a policy, exchanges (one with an alternate exchange, one e2e-bound), a classic and
# a quorum queue and bindings; the topology of other vhosts was filtered out.
ORACLE_EXPORT = Path(__file__).parent / "data" / "rabbitmq-3.10-definitions.json"


def test_oracle_export_imports_with_users_permissions_and_topology():
    broker = build_broker(None, ORACLE_EXPORT)
    user = broker.authenticate("imp-user", "imp-pass")  # the hash verifies unchanged
    assert user is not None and user.tags == ("monitoring",) and not user.loopback_only
    guest = broker.authenticate("guest", "guest")
    assert guest is not None and guest.loopback_only
    assert set(broker.vhosts) == {"/", "imp-v"}
    vhost = broker.vhosts["imp-v"]
    assert (vhost.limits.max_connections, vhost.limits.max_queues) == (5, 10)
    perm = broker.permissions.get("imp-user", "imp-v")
    assert perm is not None and perm.configure == "^imp-"
    assert broker.permissions.topic("imp-user", "imp-v", "amq.topic") is not None
    policy = broker.policies[("imp-v", "imp-ttl")]
    assert policy.priority == 3 and policy.apply_to == "queues"
    assert dict(policy.definition) == {"message-ttl": 60000, "max-length": 100}
    assert vhost.queues["imp-q"].arguments["x-max-length"] == 50
    assert vhost.queues["imp-q2"].queue_type == "quorum"
    routed = vhost.route("imp-x", Message("imp-x", "orders.new", b"", b""))
    assert [q.name for q in routed] == ["imp-q"]
    routed = vhost.route("imp-x", Message("imp-x", "audit.eu", b"", b""))
    assert [q.name for q in routed] == ["imp-q2"]  # through the e2e binding to imp-x2


def test_what_amqpd_does_not_read_is_listed(tmp_path):
    doc = json.loads(ORACLE_EXPORT.read_text())
    doc["global_parameters"] = [{"name": "cluster_name", "value": "rabbit@x"}]
    doc["parameters"].append(
        {"vhost": "imp-v", "component": "federation-upstream", "name": "up", "value": {}}
    )
    doc["users"][0]["limits"] = {"max-connections": 3, "max-bogus": 1}
    imported = parse_definitions(doc)
    assert imported.definitions.users[0].limits.max_connections == 3
    assert imported.unsupported == (
        "global_parameters (not read by amqpd)",
        "users[0].limits.max-bogus",
        "parameters[1] (parameter component 'federation-upstream')",
    )


def test_config_and_definitions_merge(tmp_path):
    config_path = tmp_path / "amqpd.toml"
    config_path.write_text("[auth]\nloopback_users = []\n")
    from amqpd.config import load_config

    wanted, _ = effective_definitions(load_config(config_path), ORACLE_EXPORT)
    guest = next(u for u in wanted.users if u.name == "guest")
    assert not guest.loopback_only  # the config's loopback_users applies to imported users


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        (
            {"users": [{"name": "u", "password_hash": "!!"}]},
            "users[0].password_hash: not valid base64",
        ),
        ({"users": [{"password_hash": ""}]}, "users[0].name: is required"),
        ({"users": {}}, "users: must be a list"),
        (
            {
                "permissions": [
                    {
                        "user": "guest",
                        "vhost": "nope",
                        "configure": ".*",
                        "write": ".*",
                        "read": ".*",
                    }
                ]
            },
            "permissions of user 'guest' in vhost 'nope': no such vhost",
        ),
        (
            {
                "policies": [
                    {
                        "vhost": "/",
                        "name": "p",
                        "pattern": ".*",
                        "apply-to": "queues",
                        "definition": {"bogus": 1},
                    }
                ]
            },
            "policies[0].definition.bogus: is not a recognised policy key",
        ),
        (
            {"queues": [{"vhost": "/", "name": "amq.q"}]},
            "queue 'amq.q' in vhost '/': queue name 'amq.q' contains reserved prefix 'amq.*'",
        ),
    ],
)
def test_bad_definitions_are_one_line_naming_the_entry(tmp_path, doc, message):
    path = tmp_path / "defs.json"
    path.write_text(json.dumps(doc))
    with pytest.raises(ConfigFileError) as info:
        build_broker(None, path)
    assert str(info.value) == f"{path}: {message}"


def test_cli_refuses_unusable_definitions(capsys, tmp_path):
    path = tmp_path / "defs.json"
    path.write_text("{not json")
    with pytest.raises(SystemExit) as info:
        main(["--definitions", str(path), "--data-dir", str(tmp_path / "d")])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith(f"amqpd: error: {path}: invalid JSON: ") and err.count("\n") == 1


def test_export_round_trips():
    wanted, _ = effective_definitions(None, ORACLE_EXPORT)
    again = parse_definitions(json.loads(json.dumps(to_rabbit_json(wanted)))).definitions
    assert sorted(again.users, key=lambda u: u.name) == sorted(
        (u.__class__(u.name, u.password, u.tags) for u in wanted.users), key=lambda u: u.name
    )
    assert dict(again.vhosts) == dict(wanted.vhosts)
    assert set(again.permissions) == set(wanted.permissions)
    assert set(again.topic_permissions) == set(wanted.topic_permissions)
    assert again.policies == wanted.policies


def test_export_definitions_subcommand(tmp_path):
    out = io.StringIO()
    with redirect_stdout(out):
        assert main(["export-definitions", "--definitions", str(ORACLE_EXPORT)]) == 0
    doc = json.loads(out.getvalue())
    assert {u["name"] for u in doc["users"]} == {"guest", "imp-user"}
    assert doc["parameters"] == [
        {
            "vhost": "imp-v",
            "component": "vhost-limits",
            "name": "limits",
            "value": {"max-connections": 5, "max-queues": 10},
        }
    ]


def test_the_oracles_user_logs_in_to_amqpd(tmp_path):
    server = start_amqpd(tmp_path / "data", extra_args=["--definitions", str(ORACLE_EXPORT)])
    try:
        params = pika.ConnectionParameters(
            server.host, server.port, "imp-v", pika.PlainCredentials("imp-user", "imp-pass")
        )
        conn = pika.BlockingConnection(params)
        ch = conn.channel()
        ch.queue_declare("imp-new", exclusive=True)
        with pytest.raises(pika.exceptions.ChannelClosedByBroker) as info:
            ch.queue_declare("other", exclusive=True)
        assert info.value.reply_code == 403
        conn.close()
    finally:
        assert server.stop() == 0, server.log_tail
