"""Password hashes: RabbitMQ's formats verify hashes the oracle exported; scrypt round-trips."""

from __future__ import annotations

import base64
import hashlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from amqpd.broker.passwords import (
    MD5,
    SCRYPT,
    SHA256,
    SHA512,
    PasswordHash,
    hash_password,
    parse_hash,
    verify_password,
)
from amqpd.broker.users import User, UserTable

# From `rabbitmqctl export_definitions` on the RabbitMQ 3.10.8 oracle (3.10 has no
# `rabbitmqctl hash_password`): users guest/guest and cfgu/secret1.
ORACLE_GUEST = "cu7Jv11osgRN5SWsBYQOG5xXinU0MXela0ifLA8FHGc3XKeE"
ORACLE_CFGU = "IGcbVXn7PZB16dZuhNfgL/OUUQynxVaI+i2/VjAHybPqjTZR"


def test_hashes_exported_by_rabbitmq_verify_unchanged():
    assert parse_hash(ORACLE_GUEST).verify("guest")
    assert parse_hash(ORACLE_CFGU, SHA256).verify("secret1")
    assert not parse_hash(ORACLE_CFGU).verify("secret2")
    assert not parse_hash(ORACLE_GUEST).verify("")


@pytest.mark.parametrize(("algorithm", "digest"), [(SHA512, hashlib.sha512), (MD5, hashlib.md5)])
def test_other_rabbitmq_algorithms_use_the_same_layout(algorithm, digest):
    salt = b"\x01\x02\x03\x04"
    value = base64.b64encode(salt + digest(salt + "pw".encode()).digest()).decode()
    assert parse_hash(value, algorithm).verify("pw")
    assert not parse_hash(value, algorithm).verify("pW")


@settings(max_examples=25, deadline=None)
@given(password=st.text(max_size=40), algorithm=st.sampled_from([SHA256, SHA512, MD5]))
def test_rabbitmq_formats_round_trip(password, algorithm):
    made = hash_password(password, algorithm)
    assert parse_hash(made.value, algorithm) == made
    assert made.verify(password)
    assert not made.verify(password + "x")


@settings(max_examples=10, deadline=None)
@given(password=st.text(max_size=30))
def test_scrypt_round_trips_and_is_self_describing(password):
    made = hash_password(password, SCRYPT, scrypt_log_n=4)
    assert made.value.startswith("$scrypt$ln=4,r=8,p=1$")
    assert parse_hash(made.value) == made  # the algorithm is read off the string
    assert made.verify(password)
    assert not made.verify(password + "x")


def test_new_hashes_are_salted():
    assert hash_password("same", SHA256) != hash_password("same", SHA256)
    assert hash_password("same", SCRYPT, scrypt_log_n=4) != hash_password(
        "same", SCRYPT, scrypt_log_n=4
    )


def test_default_is_scrypt_with_a_strong_cost():
    assert hash_password("x").value.startswith("$scrypt$ln=15,r=8,p=1$")


@pytest.mark.parametrize(
    ("value", "algorithm", "message"),
    [
        ("not base64!", SHA256, "not valid base64"),
        ("AAAA", SHA256, "is 36 bytes of base64, this is 3"),
        (ORACLE_GUEST, SHA512, "is 68 bytes"),
        (ORACLE_GUEST, "bcrypt", "unknown hashing algorithm 'bcrypt'"),
        ("$scrypt$ln=15$AAAAAAAAAAA$AAAAAAAAAAAAAAAAAAAAAA", None, "needs the parameters"),
        ("$scrypt$ln=99,r=8,p=1$AAAAAAAAAAA$AAAAAAAAAAAAAAAAAAAAAA", None, "ln must be in"),
        ("$scrypt$ln=4,r=8,p=1$AA$AAAAAAAAAAAAAAAAAAAAAA", None, "too short"),
        ("$scrypt$x", None, "looks like"),
    ],
)
def test_malformed_hashes_are_refused(value, algorithm, message):
    with pytest.raises(ValueError, match=message):
        parse_hash(value, algorithm)


def test_unparseable_stored_hash_matches_nothing():
    assert not verify_password(PasswordHash(SCRYPT, "$scrypt$broken"), "")
    assert not verify_password(PasswordHash(SHA256, "!!"), "")
    assert not verify_password(PasswordHash("unknown", ORACLE_GUEST), "guest")


def test_user_table_keeps_no_cleartext():
    table = UserTable()
    table.add(User("u"), "hunter2")
    stored = table.password_hash("u")
    assert stored is not None and "hunter2" not in stored.value
    assert table.authenticate("u", "hunter2") is not None
    assert table.authenticate("u", "nope") is None
    assert table.authenticate("ghost", "hunter2") is None
    table.add(User("nologin"), None)
    assert table.authenticate("nologin", "") is None
