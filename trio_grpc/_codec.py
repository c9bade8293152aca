"""What server and client share above the transport: message (de)serialization with compression, and
the status carried in trailers. Pure functions; raise RpcError with the status the spec names."""

from __future__ import annotations

import base64
import http
import zlib
from typing import TypeVar

from google.protobuf.message import DecodeError, Message

from ._compression import DecompressedTooLarge, compress, decompress, is_supported
from ._framing import encode_message
from ._metadata import Headers, decode_b64, percent_decode, percent_encode
from ._status import RpcError, StatusCode, status_from_http

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
    compressed: bool, body: bytes | memoryview, encoding: str | None, message_type: type[M], max_size: int
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
        # protobuf parses any buffer (its stubs say bytes): a message received whole comes as a memoryview
        return message_type.FromString(body)  # type: ignore[arg-type]
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


def is_grpc_content_type(content_type: bytes) -> bool:
    """`application/grpc`, alone or with a message format (`+proto`) or parameters (`;charset=...`)."""
    return content_type == b"application/grpc" or content_type.startswith(
        (b"application/grpc+", b"application/grpc;")
    )


def non_grpc_response_error(headers: Headers) -> RpcError | None:
    """The status of response headers that do not begin a gRPC response (the spec's HTTP-to-gRPC mapping).

    None when they do: `:status` 200 with a gRPC content-type, or any response carrying a `grpc-status`
    (Trailers-Only), since the spec says a grpc-status that came must be used. Anything else, an HTML error
    page from a proxy for one, must not have its body parsed as gRPC messages.
    """
    fields = dict(headers)
    if b"grpc-status" in fields:
        return None
    raw_status = fields.get(b":status", b"")
    content_type = fields.get(b"content-type")
    if raw_status == b"200" and content_type is not None and is_grpc_content_type(content_type):
        return None
    http_status = int(raw_status) if raw_status.isdigit() else 0
    try:
        reason = f"HTTP {http_status} {http.HTTPStatus(http_status).phrase}"
    except ValueError:
        reason = f"HTTP status {raw_status.decode('ascii', 'replace')!r}"
    if content_type is None:
        described = "no content-type"
    else:
        described = f"content-type {content_type.decode('ascii', 'replace')!r}"
    return RpcError(status_from_http(http_status), f"{reason}, {described}: not a gRPC response")


def status_from_trailers(trailers: dict[bytes, bytes]) -> tuple[StatusCode, str, bytes | None]:
    """(code, message, details) from trailers; UNKNOWN when grpc-status is missing or unreadable (spec)."""
    message = percent_decode(trailers.get(b"grpc-message", b""))
    raw_code = trailers.get(b"grpc-status")
    if raw_code is None:
        return StatusCode.UNKNOWN, "server ended the call without a grpc-status", None
    try:
        code = StatusCode(int(raw_code)) if raw_code.isdigit() else None
    except ValueError:
        code = None
    if code is None:
        invalid = f"invalid grpc-status {raw_code.decode('ascii', 'replace')!r}"
        return StatusCode.UNKNOWN, f"{invalid}: {message}" if message else invalid, None
    raw_details = trailers.get(b"grpc-status-details-bin")
    details = None
    if raw_details is not None:
        try:
            details = decode_b64(raw_details)
        except ValueError:
            details = None
    return code, message, details
