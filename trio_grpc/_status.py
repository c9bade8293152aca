"""Status codes and the one exception type of trio_grpc.

`RpcError` is what a client call raises when it ends with a non-OK status, and what a server handler
raises to end its call with one. Both directions carry the same four things the wire carries:
code, message (`grpc-message`), raw `grpc-status-details-bin` and trailing metadata.
"""

from __future__ import annotations

import enum

from ._metadata import Metadata


class StatusCode(enum.IntEnum):
    OK = 0
    CANCELLED = 1
    UNKNOWN = 2
    INVALID_ARGUMENT = 3
    DEADLINE_EXCEEDED = 4
    NOT_FOUND = 5
    ALREADY_EXISTS = 6
    PERMISSION_DENIED = 7
    RESOURCE_EXHAUSTED = 8
    FAILED_PRECONDITION = 9
    ABORTED = 10
    OUT_OF_RANGE = 11
    UNIMPLEMENTED = 12
    INTERNAL = 13
    UNAVAILABLE = 14
    DATA_LOSS = 15
    UNAUTHENTICATED = 16


class RpcError(Exception):
    """A call ended with a non-OK status.

    `details` is the serialized `google.rpc.Status` of `grpc-status-details-bin`, or None.
    """

    def __init__(
        self,
        code: StatusCode,
        message: str = "",
        *,
        details: bytes | None = None,
        trailing_metadata: Metadata = (),
    ) -> None:
        super().__init__(code, message)
        self.code = StatusCode(code)
        self.message = message
        self.details = details
        self.trailing_metadata = tuple(trailing_metadata)

    def __str__(self) -> str:
        return f"{self.message} ({self.code.name})" if self.message else self.code.name

    def __repr__(self) -> str:
        return f"RpcError({self.code.name}, {self.message!r})"


# The spec's mapping for responses that are not gRPC (HTTP status other than 200).
_HTTP_TO_STATUS = {
    400: StatusCode.INTERNAL,
    401: StatusCode.UNAUTHENTICATED,
    403: StatusCode.PERMISSION_DENIED,
    404: StatusCode.UNIMPLEMENTED,
    429: StatusCode.UNAVAILABLE,
    502: StatusCode.UNAVAILABLE,
    503: StatusCode.UNAVAILABLE,
    504: StatusCode.UNAVAILABLE,
}


def status_from_http(http_status: int) -> StatusCode:
    return _HTTP_TO_STATUS.get(http_status, StatusCode.UNKNOWN)


# RST_STREAM error code -> status, as grpc-go and grpc-core map them (spec: "Errors").
_RESET_TO_STATUS = {
    0x0: StatusCode.INTERNAL,  # NO_ERROR before the trailers
    0x1: StatusCode.INTERNAL,  # PROTOCOL_ERROR
    0x2: StatusCode.INTERNAL,  # INTERNAL_ERROR
    0x3: StatusCode.INTERNAL,  # FLOW_CONTROL_ERROR
    0x7: StatusCode.UNAVAILABLE,  # REFUSED_STREAM
    0x8: StatusCode.CANCELLED,  # CANCEL
    0xB: StatusCode.RESOURCE_EXHAUSTED,  # ENHANCE_YOUR_CALM
    0xC: StatusCode.PERMISSION_DENIED,  # INADEQUATE_SECURITY
}


def status_from_reset(error_code: int) -> StatusCode:
    return _RESET_TO_STATUS.get(error_code, StatusCode.INTERNAL)
