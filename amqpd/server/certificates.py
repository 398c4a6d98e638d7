"""The EXTERNAL (x509) user name a verified client certificate gives, as RabbitMQ forms it.

Rules of this module (rabbitmq_auth_mechanism_ssl ``rabbit_ssl:peer_cert_auth_name/2`` and
``rabbit_cert_info``; https://www.rabbitmq.com/docs/ssl, "ssl_cert_login_from"):
- ``distinguished_name`` (RabbitMQ's default): the certificate subject as an RFC 4514
  string, RabbitMQ's way (``format_rdn_sequence/1``): the RDNs in REVERSE certificate order
  joined by ``,`` (a certificate made with ``/O=client/CN=guest`` gives
  ``CN=guest,O=client``), the attributes of a multi-valued RDN joined by ``+``, each as
  ``TYPE=value`` with RabbitMQ's short names (CN, O, OU, L, ST, C, DC, UID, EMAILADDRESS,
  SN, GIVENNAME, ...), a type RabbitMQ has no name for as its dotted OID.
- Values are escaped as ``escape_rdn_value/1`` does, byte by byte over the UTF-8 text: a
  leading space or ``#`` and a trailing space get a backslash, so do ``" + , ; < > \\``; a
  byte below 32 or from 126 on (``~``, DEL, every byte of a non-ASCII character) becomes
  ``\\XX``, two upper-case hex digits.
- ``common_name``: the CN values joined by ``,`` (RabbitMQ's "vaguely DN-like" join when a
  subject has several), unescaped; None when there is no CN (the login then fails).
- Only a certificate the TLS handshake verified is read (the server's ``verify_peer``).
"""

from __future__ import annotations

from cryptography import x509

LOGIN_FROM = ("distinguished_name", "common_name")

# rabbit_cert_info:format_rdn/1, by dotted OID.
_SHORT_NAMES = {
    "2.5.4.4": "SN",
    "2.5.4.42": "GIVENNAME",
    "2.5.4.43": "INITIALS",
    "2.5.4.44": "GENERATIONQUALIFIER",
    "2.5.4.3": "CN",
    "2.5.4.7": "L",
    "2.5.4.8": "ST",
    "2.5.4.10": "O",
    "2.5.4.11": "OU",
    "2.5.4.12": "TITLE",
    "2.5.4.6": "C",
    "2.5.4.5": "SERIALNUMBER",
    "2.5.4.65": "PSEUDONYM",
    "0.9.2342.19200300.100.1.25": "DC",
    "1.2.840.113549.1.9.1": "EMAILADDRESS",
    "2.5.4.9": "STREET",
    "0.9.2342.19200300.100.1.1": "UID",
}
_ESCAPED = frozenset(b'"+,;<>\\')


def escape_rdn_value(value: str) -> str:
    """rabbit_cert_info:escape_rdn_value/1 over the UTF-8 bytes of ``value``."""
    data = value.encode("utf-8")
    out: list[str] = []
    last = len(data) - 1
    for i, byte in enumerate(data):
        char = chr(byte)
        if i == 0 and char in " #":
            out.append("\\" + char)
        elif i == last and char == " ":
            out.append("\\ ")
        elif byte in _ESCAPED:
            out.append("\\" + char)
        elif byte < 32 or byte >= 126:
            out.append(f"\\{byte:02X}")
        else:
            out.append(char)
    return "".join(out)


def _value_text(value: str | bytes) -> str:
    if isinstance(value, str):
        return value
    # A value of a type that is not a string (a BIT STRING): Erlang would print the term;
    # the byte list is what it holds.
    return "<<" + ",".join(str(b) for b in value) + ">>"


def distinguished_name(subject: x509.Name) -> str:
    """The subject as RabbitMQ's ``peer_cert_subject`` string."""
    rdns = []
    for rdn in reversed(subject.rdns):
        parts = []
        for attribute in rdn:
            oid = attribute.oid.dotted_string
            value = escape_rdn_value(_value_text(attribute.value))
            parts.append(f"{_SHORT_NAMES.get(oid, oid)}={value}")
        rdns.append("+".join(parts))
    return ",".join(rdns)


def login_name(der: bytes, login_from: str = "distinguished_name") -> str | None:
    """The EXTERNAL user name of the DER certificate ``der`` (None: the certificate names
    none, e.g. no CN under ``common_name``)."""
    cert = x509.load_der_x509_certificate(der)
    if login_from == "common_name":
        names = cert.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)
        return ",".join(_value_text(n.value) for n in names) if names else None
    return distinguished_name(cert.subject)
