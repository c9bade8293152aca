"""What server and client share above the transport: message (de)serialization with compression, and
the status carried in trailers. Pure functions; raise RpcError with the status the spec names."""

from __future__ import annotations

import base64
import zlib
from typing import TypeVar

from google.protobuf.message import DecodeError, Message

from ._compression import DecompressedTooLarge, compress, decompress, is_supported
from ._framing import encode_message
from ._metadata import Headers, decode_b64, percent_decode, percent_encode
from ._status import RpcError, StatusCode

M = TypeVar("M", bound=Message)


def serialize(message: Message, encoding: str | None, max_size: int) -> bytes:
    """The framed message; `encoding` None or "identity" sends it uncompressed."""
    body = message.SerializeToString()
    if len(body) > max_size:
        raise RpcError(
            StatusCode.RESOURCE_EXHAUSTED, f"sent message larger than max ({len(body)} vs. {max_size})"
        )
    if encoding is None or encoding == "identity":
        return encode_message(body)
    return encode_message(compress(encoding, body), compressed=True)


def deserialize(
    compressed: bool, body: bytes, encoding: str | None, message_type: type[M], max_size: int
) -> M:
    if compressed:
        if encoding is None or encoding == "identity":
            raise RpcError(StatusCode.INTERNAL, "compressed message received without a grpc-encoding")
        if not is_supported(encoding):  # a server checks before; a client learns it from the response
            raise RpcError(
                StatusCode.INTERNAL, f"received a message compressed with unsupported {encoding!r}"
            )
        try:
            body = decompress(encoding, body, max_size)
        except DecompressedTooLarge:
            raise RpcError(
                StatusCode.RESOURCE_EXHAUSTED, f"decompressed message larger than max ({max_size})"
            ) from None
        except zlib.error as exc:
            raise RpcError(StatusCode.INTERNAL, f"could not decompress {encoding} message: {exc}") from None
    try:
        return message_type.FromString(body)
    except DecodeError as exc:
        raise RpcError(
            StatusCode.INTERNAL, f"could not parse {message_type.DESCRIPTOR.full_name}: {exc}"
        ) from None


def status_headers(code: StatusCode, message: str, details: bytes | None) -> Headers:
    headers = [(b"grpc-status", b"%d" % code)]
    if message:
        headers.append((b"grpc-message", percent_encode(message)))
    if details is not None:
        headers.append((b"grpc-status-details-bin", base64.b64encode(details).rstrip(b"=")))
    return headers


def status_from_trailers(trailers: dict[bytes, bytes]) -> tuple[StatusCode, str, bytes | None]:
    raw_code = trailers.get(b"grpc-status")
    if raw_code is None:
        return StatusCode.UNKNOWN, "server ended the call without a grpc-status", None
    try:
        code = StatusCode(int(raw_code))
    except ValueError:
        code = StatusCode.UNKNOWN
    message = percent_decode(trailers.get(b"grpc-message", b""))
    raw_details = trailers.get(b"grpc-status-details-bin")
    details = None
    if raw_details is not None:
        try:
            details = decode_b64(raw_details)
        except ValueError:
            details = None
    return code, message, details
