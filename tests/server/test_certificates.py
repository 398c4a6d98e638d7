"""The EXTERNAL user name of a client certificate (amqpd.server.certificates).

Expected strings are what RabbitMQ's rabbit_cert_info:format_rdn_sequence/1 and
escape_rdn_value/1 produce (RDNs most specific first, RabbitMQ's short type names, dotted
OIDs for the others, RFC 4514 escapes with \\XX for bytes below 32 and from 126 on).
"""

from __future__ import annotations

import datetime

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID, ObjectIdentifier

from amqpd.server.certificates import distinguished_name, escape_rdn_value, login_name

_KEY = ec.generate_private_key(ec.SECP256R1())


def _der(subject: x509.Name) -> bytes:
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "ca")]))
        .public_key(_KEY.public_key())
        .serial_number(1)
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=1))
        .sign(_KEY, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.DER)


def _name(*pairs: tuple[ObjectIdentifier, str]) -> x509.Name:
    return x509.Name([x509.NameAttribute(oid, value) for oid, value in pairs])


def test_the_default_is_the_subject_most_specific_first() -> None:
    # openssl req -subj "/C=GB/O=client/OU=ops/CN=guest"
    subject = _name(
        (NameOID.COUNTRY_NAME, "GB"),
        (NameOID.ORGANIZATION_NAME, "client"),
        (NameOID.ORGANIZATIONAL_UNIT_NAME, "ops"),
        (NameOID.COMMON_NAME, "guest"),
    )
    assert login_name(_der(subject)) == "CN=guest,OU=ops,O=client,C=GB"
    assert login_name(_der(subject), "common_name") == "guest"


def test_rabbitmq_short_names_and_dotted_oids_for_the_rest() -> None:
    subject = _name(
        (NameOID.DOMAIN_COMPONENT, "com"),
        (NameOID.DOMAIN_COMPONENT, "example"),
        (NameOID.USER_ID, "u1"),
        (NameOID.EMAIL_ADDRESS, "a@example.com"),
        (NameOID.LOCALITY_NAME, "London"),
        (NameOID.STATE_OR_PROVINCE_NAME, "England"),
        (NameOID.SURNAME, "Smith"),
        (NameOID.GIVEN_NAME, "Ann"),
        (NameOID.SERIAL_NUMBER, "42"),
        (NameOID.TITLE, "Dr"),
        (NameOID.STREET_ADDRESS, "1 Road"),
        (NameOID.BUSINESS_CATEGORY, "shop"),  # OpenSSL names it; RabbitMQ does not
    )
    assert distinguished_name(subject) == (
        "2.5.4.15=shop,STREET=1 Road,TITLE=Dr,SERIALNUMBER=42,GIVENNAME=Ann,SN=Smith,"
        "ST=England,L=London,EMAILADDRESS=a@example.com,UID=u1,DC=example,DC=com"
    )


@pytest.mark.parametrize("uid_first", [False, True])
def test_a_multi_valued_rdn_is_joined_with_plus_in_its_der_order(uid_first: bool) -> None:
    # A SET in DER is sorted, so both orders of building it read back alike (as
    # public_key:pkix_decode_cert hands them to RabbitMQ).
    attributes = [
        x509.NameAttribute(NameOID.COMMON_NAME, "guest"),
        x509.NameAttribute(NameOID.USER_ID, "7"),
    ]
    if uid_first:
        attributes.reverse()
    organization = x509.NameAttribute(NameOID.ORGANIZATION_NAME, "o")
    subject = x509.Name(
        [
            x509.RelativeDistinguishedName([organization]),
            x509.RelativeDistinguishedName(attributes),
        ]
    )
    assert login_name(_der(subject)) == "CN=guest+UID=7,O=o"


@pytest.mark.parametrize(
    ("value", "escaped"),
    [
        ("plain", "plain"),
        (" lead", "\\ lead"),
        ("#hash", "\\#hash"),
        ("trail ", "trail\\ "),
        (" ", "\\ "),
        ("a#b c", "a#b c"),  # only a leading # and a trailing space
        ('q"+,;<>\\', 'q\\"\\+\\,\\;\\<\\>\\\\'),
        ("a=b", "a=b"),  # RabbitMQ does not escape =
        ("t~", "t\\7E"),  # from 126 on: hex
        ("tab\tx", "tab\\09x"),
        ("é", "\\C3\\A9"),  # each UTF-8 byte
    ],
)
def test_values_are_escaped_as_rabbitmq_does(value: str, escaped: str) -> None:
    assert escape_rdn_value(value) == escaped


def test_common_name_joins_several_and_none_without_one() -> None:
    two = _name((NameOID.COMMON_NAME, "a"), (NameOID.COMMON_NAME, "b,c"))
    assert login_name(_der(two), "common_name") == "a,b,c"  # unescaped, as RabbitMQ
    none = _name((NameOID.ORGANIZATION_NAME, "o"))
    assert login_name(_der(none), "common_name") is None
    assert login_name(_der(none)) == "O=o"
