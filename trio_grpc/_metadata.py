"""Metadata on the wire: custom headers, `-bin` values and `grpc-message` percent-encoding (sans-I/O).

Metadata is a sequence of (key, value) pairs; a key ending in `-bin` carries bytes (base64 on the wire),
any other key an ASCII string. Keys are case-insensitive and go out lowercase. Headers that belong to
the protocol (pseudo-headers, `content-type`, `te`, `grpc-*`, connection-specific ones) are refused on
the way out and left out of what handlers and callers see on the way in.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Iterable, Sequence

MetadataValue = str | bytes
Metadata = Sequence[tuple[str, MetadataValue]]
Headers = list[tuple[bytes, bytes]]

_VALID_KEY = re.compile(rb"^[0-9a-z_.\-]+$")
_VALID_ASCII_VALUE = re.compile(rb"^[\x20-\x7e]*$")
_CONNECTION_HEADERS = frozenset(
    {
        b"content-type",
        b"te",
        b"connection",
        b"keep-alive",
        b"proxy-connection",
        b"transfer-encoding",
        b"upgrade",
        b"host",
    }
)


class MetadataError(ValueError):
    """A metadata key or value that gRPC cannot carry."""


def _is_reserved(key: bytes) -> bool:
    return key.startswith((b":", b"grpc-")) or key in _CONNECTION_HEADERS


def encode_metadata(metadata: Metadata | None) -> Headers:
    """Metadata as header pairs; raises MetadataError for keys or values gRPC cannot carry."""
    headers: Headers = []
    if not metadata:
        return headers
    for key, value in metadata:
        raw_key = key.encode("ascii", "replace").lower()  # bytes.lower(): no non-ASCII letter folds into a-z
        if not _VALID_KEY.fullmatch(raw_key):
            raise MetadataError(f"invalid metadata key {key!r}: only 0-9 a-z _ - . are allowed")
        if _is_reserved(raw_key):
            raise MetadataError(f"metadata key {key!r} is reserved for the protocol")
        if raw_key.endswith(b"-bin"):
            if not isinstance(value, bytes | bytearray | memoryview):
                raise MetadataError(f"value of binary metadata key {key!r} must be bytes")
            headers.append((raw_key, base64.b64encode(value).rstrip(b"=")))
        else:
            if not isinstance(value, str):
                raise MetadataError(f"value of metadata key {key!r} must be str (use a -bin key for bytes)")
            raw_value = value.encode("ascii", "replace")
            if not value.isascii() or not _VALID_ASCII_VALUE.fullmatch(raw_value):
                raise MetadataError(f"value of metadata key {key!r} must be printable ASCII")
            headers.append((raw_key, raw_value))
    return headers


def header_list_size(headers: Iterable[tuple[bytes, bytes]]) -> int:
    """The size SETTINGS_MAX_HEADER_LIST_SIZE limits: names and values, plus 32 per field (RFC 9113 6.5.2)."""
    return sum(32 + len(name) + len(value) for name, value in headers)


def decode_b64(value: bytes) -> bytes:
    """Base64 as gRPC sends it: padded or not, standard alphabet. Raises binascii.Error."""
    return base64.b64decode(value + b"=" * (-len(value) % 4), validate=True)


def decode_metadata(headers: Iterable[tuple[bytes, bytes]]) -> tuple[tuple[str, MetadataValue], ...]:
    """The custom metadata among received headers; undecodable `-bin` values are dropped (as grpcio does).

    So are keys and ASCII values that encode_metadata would refuse: what a handler receives it may echo back.
    """
    result: list[tuple[str, MetadataValue]] = []
    for key, value in headers:
        if _is_reserved(key) or not _VALID_KEY.fullmatch(key):
            continue
        if key.endswith(b"-bin"):
            # Several values of one key may arrive joined with commas (the spec's "Custom-Metadata").
            try:
                values = [decode_b64(part.strip()) for part in value.split(b",")]
            except (binascii.Error, ValueError):
                continue
            name = key.decode("ascii")
            result.extend((name, item) for item in values)
        elif _VALID_ASCII_VALUE.fullmatch(value):
            result.append((key.decode("ascii"), value.decode("ascii")))
    return tuple(result)


# grpc-message: UTF-8, then every byte outside printable ASCII, and '%' itself, as %XX.
_PERCENT_SAFE = frozenset(range(0x20, 0x7F)) - {ord("%")}


def percent_encode(message: str) -> bytes:
    raw = message.encode("utf-8")
    if all(b in _PERCENT_SAFE for b in raw):
        return raw
    return b"".join(bytes((b,)) if b in _PERCENT_SAFE else b"%%%02X" % b for b in raw)


_PERCENT_ESCAPE = re.compile(rb"%([0-9A-Fa-f]{2})")


def percent_decode(raw: bytes) -> str:
    """Lenient, as the spec asks: a malformed escape is kept as it is, invalid UTF-8 replaced."""
    decoded = _PERCENT_ESCAPE.sub(lambda m: bytes((int(m.group(1), 16),)), raw)
    return decoded.decode("utf-8", "replace")
