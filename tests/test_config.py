"""The config file: the example parses and documents every key; every mistake's message."""

from __future__ import annotations

import re
import textwrap
import tomllib
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from amqpd import passwords_cli
from amqpd.bootstrap import build_broker
from amqpd.broker.passwords import SHA256, hash_password, parse_hash
from amqpd.cli import main
from amqpd.config import SCHEMA, ConfigError, load_config, parse_config
from amqpd.server import DEFAULT_LISTEN
from amqpd.session.config import ConnectionConfig

EXAMPLE = Path(__file__).parent.parent / "conf" / "amqpd.toml"
GUEST_HASH = hash_password("guest", SHA256).value


def _parse(text: str, path: Path = Path("conf.toml")):
    return parse_config(tomllib.loads(textwrap.dedent(text)), path)


def test_example_parses_and_is_the_default_broker():
    config = load_config(EXAMPLE)
    assert config.listeners == DEFAULT_LISTEN
    defaults = ConnectionConfig()
    assert config.connection.frame_max == defaults.frame_max
    assert config.connection.channel_max == defaults.channel_max
    assert config.connection.heartbeat == defaults.heartbeat
    assert config.connection.max_message_size == defaults.max_message_size
    assert config.connection.auth_mechanisms == defaults.auth_mechanisms
    assert config.max_connections is None
    broker = build_broker(config)
    assert set(broker.vhosts) == {"/"}
    guest = broker.authenticate("guest", "guest")
    assert guest is not None and guest.loopback_only and guest.tags == ("administrator",)
    assert broker.permissions.get("guest", "/") is not None
    assert len(broker.policies) == 1


def test_example_documents_every_key():
    text = EXAMPLE.read_text()
    for section, keys in SCHEMA.items():
        header = section.split(".")[0].removesuffix("[]")
        assert re.search(rf"^(# )?\[+{header}[.\]]", text, re.M), f"{header} undocumented"
        for key in keys:
            assert re.search(rf"^#? ?{key} = ", text, re.M), f"{section}.{key} undocumented"


def test_no_config_means_rabbitmq_defaults():
    broker = build_broker(None)
    assert set(broker.vhosts) == {"/"}
    assert broker.authenticate("guest", "guest") is not None


def test_users_vhosts_permissions_and_limits_are_built():
    config = _parse(
        f"""
        [limits]
        max_connections = 5
        channel_max = 10
        [auth]
        loopback_users = []
        [vhosts."/"]
        [vhosts.prod]
        max_queues = 3
        max_connections = 2
        [users.alice]
        password_hash = "{GUEST_HASH}"
        tags = ["monitoring"]
        [users.bob]
        [[permissions]]
        user = "alice"
        vhost = "prod"
        configure = "^a-"
        write = ".*"
        read = ""
        [[topic_permissions]]
        user = "alice"
        vhost = "prod"
        exchange = "amq.topic"
        write = "^a\\\\."
        read = ".*"
        """
    )
    assert config.connection.channel_max == 10
    broker = build_broker(config)
    assert set(broker.vhosts) == {"/", "prod"}
    assert broker.vhosts["prod"].limits.max_queues == 3
    assert broker.max_connections == 5
    alice = broker.authenticate("alice", "guest")
    assert alice is not None and not alice.loopback_only and alice.tags == ("monitoring",)
    assert broker.authenticate("guest", "guest") is None  # [users] replaces the default
    assert broker.authenticate("bob", "") is None  # no hash: no password login
    perm = broker.permissions.get("alice", "prod")
    assert perm is not None and perm.configure == "^a-" and perm.read == ""
    assert broker.permissions.topic("alice", "prod", "amq.topic") is not None


def test_vhosts_section_without_slash_removes_it():
    broker = build_broker(
        _parse(
            '[vhosts.only]\n[[permissions]]\nuser = "guest"\n'
            'vhost = "only"\nconfigure = ".*"\nwrite = ".*"\nread = ".*"\n'
        )
    )
    assert set(broker.vhosts) == {"only"}
    assert broker.permissions.get("guest", "only") is not None


def test_loopback_users_empty_lifts_guests_restriction():
    guest = build_broker(_parse("[auth]\nloopback_users = []\n")).authenticate("guest", "guest")
    assert guest is not None and not guest.loopback_only


def test_relative_data_dir_is_relative_to_the_config_file():
    config = _parse('[storage]\ndata_dir = "data"\n', Path("/etc/amqpd/amqpd.toml"))
    assert config.storage.data_dir == Path("/etc/amqpd/data")


ERRORS = [
    (
        "bogus = 1",
        "bogus: unknown section (known: listeners, tls, limits, storage, logging, "
        "auth, vhosts, users, permissions, topic_permissions, policies, reload)",
    ),
    (
        "[limits]\nframe_maxx = 1",
        "limits.frame_maxx: unknown key (known: frame_max, "
        "channel_max, heartbeat, max_message_size, max_connections, handshake_timeout)",
    ),
    ("limits = 3", "limits: must be a table, not an integer"),
    ("[limits]\nframe_max = 100", "limits.frame_max: must be between 4096 and 2147483647, not 100"),
    ('[limits]\nheartbeat = "60"', "limits.heartbeat: must be an integer, not a string"),
    ("[limits]\nchannel_max = 70000", "limits.channel_max: must be between 1 and 65535, not 70000"),
    (
        "[limits]\nmax_message_size = true",
        "limits.max_message_size: must be an integer, not a boolean",
    ),
    ("[limits]\nmax_connections = -2", "limits.max_connections: must be at least -1, not -2"),
    (
        "[limits]\nhandshake_timeout = 0",
        "limits.handshake_timeout: must be between 0.1 and 3600, not 0",
    ),
    ('[listeners]\namqp = "x"', "listeners.amqp: must be a list of strings"),
    ("[listeners]\namqp = []", "listeners.amqp: must list at least one address"),
    (
        '[listeners]\namqp = ["host"]',
        "listeners.amqp: bad listen address 'host': expected HOST:PORT",
    ),
    ('[logging]\nformat = "xml"', "logging.format: must be one of console, json, not 'xml'"),
    (
        '[logging]\nlevel = "loud"',
        "logging.level: must be one of debug, info, warning, error, not 'loud'",
    ),
    (
        "[storage]\nmemory_high_watermark = 2",
        "storage.memory_high_watermark: must be between 0 and 1, not 2",
    ),
    ("[storage]\ndata_dir = 1", "storage.data_dir: must be a string, not an integer"),
    (
        '[auth]\nmechanisms = ["CRAM-MD5"]',
        "auth.mechanisms: unknown mechanism 'CRAM-MD5' (AMQPLAIN, EXTERNAL, PLAIN)",
    ),
    ("[auth]\nmechanisms = []", "auth.mechanisms: must list at least one mechanism"),
    ('[vhosts."/"]\nmax_queues = "1"', 'vhosts."/".max_queues: must be an integer, not a string'),
    ("vhosts = 1", "vhosts: must be a table, not an integer"),
    (
        '[users.alice]\npassword_hash = "AAAA"',
        "users.alice.password_hash: a "
        "rabbit_password_hashing_sha256 hash is 36 bytes of base64, this is 3",
    ),
    ('[users.alice]\npassword_hash = "!!"', "users.alice.password_hash: not valid base64"),
    (
        '[users.alice]\nhashing_algorithm = "sha1"',
        "users.alice.hashing_algorithm: must be "
        "one of rabbit_password_hashing_sha256, rabbit_password_hashing_sha512, "
        "rabbit_password_hashing_md5, scrypt, not 'sha1'",
    ),
    ('[users.alice]\ntags = "admin"', "users.alice.tags: must be a list of strings"),
    (
        '[users.alice]\npassword = "x"',
        "users.alice.password: unknown key (known: password_hash, hashing_algorithm, tags, "
        "max_connections, max_channels)",
    ),
    ('[users."a.b"]\ntags = 1', 'users."a.b".tags: must be a list of strings'),
    ("[users.bob]\nmax_channels = -5", "users.bob.max_channels: must be at least -1, not -5"),
    (
        "permissions = 1",
        "permissions: must be an array of tables ([[permissions]]), not an integer",
    ),
    ('[[permissions]]\nvhost = "/"', "permissions[0].user: is required"),
    ('[[permissions]]\nuser = "nobody"', "permissions[0].user: no user 'nobody' is defined"),
    (
        '[[permissions]]\nuser = "guest"\nvhost = "v"',
        "permissions[0].vhost: no vhost 'v' is defined",
    ),
    (
        '[[permissions]]\nuser = "guest"\nconfigure = "("\nwrite = ""\nread = ""',
        "permissions[0].configure: invalid regular expression '(': missing ), unterminated "
        "subpattern at position 0",
    ),
    ('[[permissions]]\nuser = "guest"\nconfigure = ".*"', "permissions[0].write: is required"),
    (
        '[[topic_permissions]]\nuser = "guest"\nwrite = ".*"\nread = ".*"',
        "topic_permissions[0].exchange: is required",
    ),
    ('[[policies]]\nname = "p"\npattern = ".*"', "policies[0].definition: is required"),
    (
        '[[policies]]\nname = "p"\npattern = ".*"\ndefinition = 1',
        "policies[0].definition: must be a table, not an integer",
    ),
    (
        '[[policies]]\nname = "p"\npattern = ".*"\napply_to = "queue"\ndefinition = {}',
        "policies[0].apply_to: must be one of queues, exchanges, all, not 'queue'",
    ),
    (
        '[[policies]]\nname = "p"\npattern = ".*"\ndefinition = {}',
        "policies[0].definition: a policy definition may not be empty",
    ),
    (
        '[[policies]]\nname = "p"\npattern = ".*"\ndefinition = { "message-ttl" = -1 }',
        'policies[0].definition."message-ttl": must be a non-negative integer',
    ),
    (
        '[[policies]]\nname = "p"\npattern = ".*"\ndefinition = { "max-priority" = 3 }',
        'policies[0].definition."max-priority": is not a policy key (use the x-max-priority '
        "argument)",
    ),
    (
        '[[policies]]\nname = "p"\npattern = ".*"\ndefinition = { expires = 1 }\n'
        '[[policies]]\nname = "p"\npattern = "x"\ndefinition = { expires = 1 }',
        "policies[1].name: policy 'p' in vhost '/' is defined twice",
    ),
    (
        '[[policies]]\nname = "p"\npattern = ".*"\npriority = 1.5\ndefinition = {}',
        "policies[0].priority: must be an integer, not a number",
    ),
]


@pytest.mark.parametrize(("text", "message"), ERRORS, ids=[m.split(":")[0] for _, m in ERRORS])
def test_every_mistake_names_its_key(text, message):
    with pytest.raises(ConfigError) as info:
        _parse(text)
    assert str(info.value) == message


@given(st.integers(min_value=-(2**40), max_value=2**40))
def test_heartbeat_range(value):
    try:
        config = _parse(f"[limits]\nheartbeat = {value}\n")
    except ConfigError as exc:
        assert not 0 <= value <= 65535
        assert exc.key == "limits.heartbeat"
    else:
        assert config.connection.heartbeat == value


@given(st.dictionaries(st.text("abcdefgh_", min_size=1, max_size=8), st.integers(), max_size=3))
def test_unknown_limit_keys_never_pass(keys):
    known = set(SCHEMA["limits"])
    body = "".join(f"{k} = {v}\n" for k, v in keys.items())
    try:
        _parse("[limits]\n" + body)
    except ConfigError as exc:
        assert exc.key.startswith("limits.")
    else:
        assert set(keys) <= known


# --- the command line -----------------------------------------------------------------------


def _cli_error(capsys, tmp_path, text: str) -> str:
    path = tmp_path / "conf.toml"
    path.write_text(text)
    with pytest.raises(SystemExit) as info:
        main(["--config", str(path), "--data-dir", str(tmp_path / "data")])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.count("\n") == 1, err
    return err


def test_cli_reports_one_line_with_file_and_key(capsys, tmp_path):
    err = _cli_error(capsys, tmp_path, '[users.alice]\npassword_hash = "!!"\n')
    assert err == (
        f"amqpd: error: {tmp_path / 'conf.toml'}: users.alice.password_hash: not valid base64\n"
    )


def test_cli_toml_syntax_error_is_one_line(capsys, tmp_path):
    err = _cli_error(capsys, tmp_path, "[limits\n")
    assert err.startswith(f"amqpd: error: invalid config file {tmp_path / 'conf.toml'}: ")


def test_hash_password_reads_stdin(capsys):
    import io

    out = io.StringIO()
    code = passwords_cli.main(["--algorithm", SHA256], stdin=io.StringIO("s3cret\n"), stdout=out)
    assert code == 0
    value = out.getvalue().strip()
    assert parse_hash(value).verify("s3cret")
    out = io.StringIO()
    passwords_cli.main([], stdin=io.StringIO("s3cret"), stdout=out)
    assert out.getvalue().startswith("$scrypt$") and parse_hash(out.getvalue().strip()).verify(
        "s3cret"
    )


def test_hash_password_refuses_an_empty_password(capsys):
    import io

    with pytest.raises(SystemExit) as info:
        passwords_cli.main([], stdin=io.StringIO("\n"))
    assert info.value.code == 2
    assert "the password is empty" in capsys.readouterr().err


def test_hash_password_subcommand_dispatch(capsys, monkeypatch):
    import io

    monkeypatch.setattr("sys.stdin", io.StringIO("pw\n"))
    assert main(["hash-password", "--algorithm", SHA256]) == 0
    assert parse_hash(capsys.readouterr().out.strip()).verify("pw")
