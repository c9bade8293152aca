"""Message compression codecs and `grpc-encoding` negotiation (sans-I/O)."""

from __future__ import annotations

import functools
import zlib

# name -> zlib wbits: gzip is RFC 1952, "deflate" in gRPC is the zlib format of RFC 1950.
_WBITS = {"gzip": 31, "deflate": 15}
SUPPORTED = ("identity", *_WBITS)
ACCEPT_ENCODING = ",".join(SUPPORTED).encode()


class DecompressedTooLarge(Exception):
    pass


def is_supported(name: str) -> bool:
    return name in SUPPORTED


def compress(name: str, data: bytes) -> bytes:
    compressor = zlib.compressobj(wbits=_WBITS[name])
    return compressor.compress(data) + compressor.flush()


def decompress(name: str, data: bytes | memoryview, max_size: int) -> bytes:
    """Raises DecompressedTooLarge past max_size without inflating more than that; zlib.error if corrupt."""
    decompressor = zlib.decompressobj(wbits=_WBITS[name])
    result = decompressor.decompress(data, max_size + 1)
    if len(result) > max_size:
        raise DecompressedTooLarge(len(result))
    if not decompressor.eof:
        raise zlib.error("truncated compressed message")
    return result


@functools.lru_cache(maxsize=64)  # a peer sends the same few values on every call
def parse_accept_encoding(value: bytes) -> frozenset[str]:
    return frozenset(name.strip() for name in value.decode("ascii", "replace").split(","))
