"""The gRPC interop client cases on trio_grpc, as doc/interop-test-descriptions.md ("Client") describes them.

Each case is a plain async function taking a `trio_grpc.Channel`; it returns when the case passed and raises
`InteropFailure` (or the unexpected `trio_grpc.RpcError`) when it did not. Run one against any interop server:

    python -m tests.interop.client --server_host=localhost --server_port=8080 --test_case=large_unary \
        [--use_tls=true --use_test_ca=true --ca_file=ca.pem --server_host_override=foo.test.google.fr]

`very_large_request` is grpc-java's extra case (a 10 MiB request); the `*_noprobe` cases are grpc-java's
variants of the client_compressed_* cases for servers without the CompressedRequest feature.
"""

from __future__ import annotations

import argparse
import ssl
import sys
from collections.abc import Awaitable, Callable

import trio

import trio_grpc
from tests.interop._flags import add_bool_flag
from tests.interop._proto.grpc.testing import empty_pb2, messages_pb2, test_trio_grpc

INITIAL_METADATA_KEY = "x-grpc-test-echo-initial"
TRAILING_METADATA_KEY = "x-grpc-test-echo-trailing-bin"
INITIAL_METADATA_VALUE = "test_initial_metadata_value"
TRAILING_METADATA_VALUE = b"\xab\xab\xab"
SPECIAL_STATUS_MESSAGE = "\t\ntest with whitespace\r\nand Unicode BMP \u263a and non-BMP \U0001f608\t\n"
VERY_LARGE_PAYLOAD = 10 * 1024 * 1024  # grpc-java's unaryPayloadLength()

Case = Callable[[trio_grpc.Channel], Awaitable[None]]


class InteropFailure(Exception):
    """An assertion of an interop case did not hold."""


def expect(condition: bool, message: str) -> None:
    if not condition:
        raise InteropFailure(message)


async def expect_error(
    code: trio_grpc.StatusCode, operation: Callable[[], Awaitable[object]]
) -> trio_grpc.RpcError:
    """Run `operation`, which must end with status `code`; the error for further checks."""
    try:
        await operation()
    except trio_grpc.RpcError as error:
        expect(error.code == code, f"expected {code.name}, got {error.code.name}: {error.message!r}")
        return error
    raise InteropFailure(f"expected {code.name}, the call succeeded")


def _zeros(size: int) -> messages_pb2.Payload:
    return messages_pb2.Payload(body=bytes(size))


def _check_payload(
    response: messages_pb2.SimpleResponse | messages_pb2.StreamingOutputCallResponse, size: int
) -> None:
    expect(
        response.payload.type == messages_pb2.COMPRESSABLE,
        f"expected payload type COMPRESSABLE, got {response.payload.type}",
    )
    expect(
        len(response.payload.body) == size,
        f"expected a {size}-byte payload, got {len(response.payload.body)}",
    )
    expect(response.payload.body == bytes(size), "expected a payload of zeros")


def _large_request(
    *,
    expect_compressed: messages_pb2.BoolValue | None = None,
    response_compressed: messages_pb2.BoolValue | None = None,
) -> messages_pb2.SimpleRequest:
    """The spec's usual SimpleRequest: 314159 bytes wanted back for 271828 bytes of zeros."""
    return messages_pb2.SimpleRequest(
        response_type=messages_pb2.COMPRESSABLE,
        response_size=314159,
        payload=_zeros(271828),
        expect_compressed=expect_compressed,
        response_compressed=response_compressed,
    )


def _stub(channel: trio_grpc.Channel) -> test_trio_grpc.TestServiceStub:
    return test_trio_grpc.TestServiceStub(channel)


async def empty_unary(channel: trio_grpc.Channel) -> None:
    response = await _stub(channel).EmptyCall(empty_pb2.Empty())
    expect(
        isinstance(response, empty_pb2.Empty), f"expected an Empty response, got {type(response).__name__}"
    )


async def large_unary(channel: trio_grpc.Channel) -> None:
    _check_payload(await _stub(channel).UnaryCall(_large_request()), 314159)


async def very_large_request(channel: trio_grpc.Channel) -> None:
    request = messages_pb2.SimpleRequest(
        response_type=messages_pb2.COMPRESSABLE, response_size=10, payload=_zeros(VERY_LARGE_PAYLOAD)
    )
    _check_payload(await _stub(channel).UnaryCall(request), 10)


async def _client_compressed_unary(channel: trio_grpc.Channel, probe: bool) -> None:
    stub = _stub(channel)
    expect_compressed = messages_pb2.BoolValue(value=True)
    if probe:  # a server with the CompressedRequest feature refuses this request: it is not compressed
        await expect_error(
            trio_grpc.StatusCode.INVALID_ARGUMENT,
            lambda: stub.UnaryCall(_large_request(expect_compressed=expect_compressed)),
        )
    response = await stub.UnaryCall(_large_request(expect_compressed=expect_compressed), compression="gzip")
    _check_payload(response, 314159)
    response = await stub.UnaryCall(_large_request(expect_compressed=messages_pb2.BoolValue(value=False)))
    _check_payload(response, 314159)


async def client_compressed_unary(channel: trio_grpc.Channel) -> None:
    await _client_compressed_unary(channel, probe=True)


async def client_compressed_unary_noprobe(channel: trio_grpc.Channel) -> None:
    await _client_compressed_unary(channel, probe=False)


async def server_compressed_unary(channel: trio_grpc.Channel) -> None:
    stub = _stub(channel)
    for compressed in (True, False):
        request = _large_request(response_compressed=messages_pb2.BoolValue(value=compressed))
        response, call = await stub.UnaryCall.with_call(request)
        _check_payload(response, 314159)
        expect(
            call.response_compressed == compressed,
            f"response_compressed={compressed}, but the compressed flag is {call.response_compressed}",
        )


async def client_streaming(channel: trio_grpc.Channel) -> None:
    requests = [
        messages_pb2.StreamingInputCallRequest(payload=_zeros(size)) for size in (27182, 8, 1828, 45904)
    ]
    response = await _stub(channel).StreamingInputCall(requests)
    expect(
        response.aggregated_payload_size == 74922,
        f"expected aggregated_payload_size 74922, got {response.aggregated_payload_size}",
    )


async def _client_compressed_streaming(channel: trio_grpc.Channel, probe: bool) -> None:
    stub = _stub(channel)
    compressed_request = messages_pb2.StreamingInputCallRequest(
        expect_compressed=messages_pb2.BoolValue(value=True), payload=_zeros(27182)
    )
    if probe:
        await expect_error(
            trio_grpc.StatusCode.INVALID_ARGUMENT, lambda: stub.StreamingInputCall([compressed_request])
        )
    async with stub.StreamingInputCall.open(compression="gzip") as call:
        await call.send(compressed_request)
        uncompressed_request = messages_pb2.StreamingInputCallRequest(
            expect_compressed=messages_pb2.BoolValue(value=False), payload=_zeros(45904)
        )
        await call.send(uncompressed_request, compress=False)
        response = await call.response()
    expect(
        response.aggregated_payload_size == 73086,
        f"expected aggregated_payload_size 73086, got {response.aggregated_payload_size}",
    )


async def client_compressed_streaming(channel: trio_grpc.Channel) -> None:
    await _client_compressed_streaming(channel, probe=True)


async def client_compressed_streaming_noprobe(channel: trio_grpc.Channel) -> None:
    await _client_compressed_streaming(channel, probe=False)


async def server_streaming(channel: trio_grpc.Channel) -> None:
    sizes = (31415, 9, 2653, 58979)
    request = messages_pb2.StreamingOutputCallRequest(
        response_type=messages_pb2.COMPRESSABLE,
        response_parameters=[messages_pb2.ResponseParameters(size=size) for size in sizes],
    )
    async with _stub(channel).StreamingOutputCall(request) as call:
        responses = [response async for response in call]
    expect(len(responses) == len(sizes), f"expected {len(sizes)} responses, got {len(responses)}")
    for response, size in zip(responses, sizes, strict=True):
        _check_payload(response, size)


async def server_compressed_streaming(channel: trio_grpc.Channel) -> None:
    sizes_compressed = ((31415, True), (92653, False))
    request = messages_pb2.StreamingOutputCallRequest(
        response_type=messages_pb2.COMPRESSABLE,
        response_parameters=[
            messages_pb2.ResponseParameters(size=size, compressed=messages_pb2.BoolValue(value=compressed))
            for size, compressed in sizes_compressed
        ],
    )
    async with _stub(channel).StreamingOutputCall(request) as call:
        for size, compressed in sizes_compressed:
            response = await call.receive()
            if response is None:
                raise InteropFailure("expected two responses, the stream ended early")
            _check_payload(response, size)
            expect(
                call.response_compressed == compressed,
                f"compressed={compressed}, but the response's compressed flag is {call.response_compressed}",
            )
        expect(await call.receive() is None, "expected exactly two responses")


async def ping_pong(channel: trio_grpc.Channel) -> None:
    async with _stub(channel).FullDuplexCall() as call:
        for response_size, payload_size in ((31415, 27182), (9, 8), (2653, 1828), (58979, 45904)):
            await call.send(
                messages_pb2.StreamingOutputCallRequest(
                    response_type=messages_pb2.COMPRESSABLE,
                    response_parameters=[messages_pb2.ResponseParameters(size=response_size)],
                    payload=_zeros(payload_size),
                )
            )
            response = await call.receive()
            if response is None:
                raise InteropFailure("the stream ended before its reply")
            _check_payload(response, response_size)
        await call.done_writing()
        expect(await call.receive() is None, "expected exactly four responses")


async def empty_stream(channel: trio_grpc.Channel) -> None:
    async with _stub(channel).FullDuplexCall() as call:
        await call.done_writing()
        expect(await call.receive() is None, "expected zero responses")


async def timeout_on_sleeping_server(channel: trio_grpc.Channel) -> None:
    async def sleeping_call() -> None:
        async with _stub(channel).FullDuplexCall(timeout=0.001) as call:
            await call.send(messages_pb2.StreamingOutputCallRequest(payload=_zeros(27182)))
            await call.receive()

    await expect_error(trio_grpc.StatusCode.DEADLINE_EXCEEDED, sleeping_call)


async def cancel_after_begin(channel: trio_grpc.Channel) -> None:
    async with _stub(channel).StreamingInputCall.open() as call:
        pass  # leaving the block of a call that has not ended cancels it (RST_STREAM CANCEL)
    expect(call.code == trio_grpc.StatusCode.CANCELLED, f"expected CANCELLED, got {call.code}")


async def cancel_after_first_response(channel: trio_grpc.Channel) -> None:
    async with _stub(channel).FullDuplexCall() as call:
        await call.send(
            messages_pb2.StreamingOutputCallRequest(
                response_type=messages_pb2.COMPRESSABLE,
                response_parameters=[messages_pb2.ResponseParameters(size=31415)],
                payload=_zeros(27182),
            )
        )
        expect(await call.receive() is not None, "expected a response before cancelling")
    expect(call.code == trio_grpc.StatusCode.CANCELLED, f"expected CANCELLED, got {call.code}")


async def custom_metadata(channel: trio_grpc.Channel) -> None:
    stub = _stub(channel)
    metadata: list[tuple[str, str | bytes]] = [
        (INITIAL_METADATA_KEY, INITIAL_METADATA_VALUE),
        (TRAILING_METADATA_KEY, TRAILING_METADATA_VALUE),
    ]

    def check(initial: trio_grpc.Metadata, trailing: trio_grpc.Metadata, method: str) -> None:
        initial_value = dict(initial).get(INITIAL_METADATA_KEY)
        expect(
            initial_value == INITIAL_METADATA_VALUE,
            f"{method}: expected {INITIAL_METADATA_VALUE!r} in the initial metadata, got {initial_value!r}",
        )
        trailing_value = dict(trailing).get(TRAILING_METADATA_KEY)
        expect(
            trailing_value == TRAILING_METADATA_VALUE,
            f"{method}: expected {TRAILING_METADATA_VALUE!r} in the trailers, got {trailing_value!r}",
        )

    async with stub.UnaryCall.open(_large_request(), metadata=metadata) as unary:
        initial = await unary.initial_metadata()
        _check_payload(await unary.response(), 314159)
    check(initial, unary.trailing_metadata, "UnaryCall")

    async with stub.FullDuplexCall(metadata=metadata) as call:
        await call.send(
            messages_pb2.StreamingOutputCallRequest(
                response_type=messages_pb2.COMPRESSABLE,
                response_parameters=[messages_pb2.ResponseParameters(size=314159)],
                payload=_zeros(271828),
            )
        )
        await call.done_writing()
        initial = await call.initial_metadata()
        responses = [response async for response in call]
    expect(len(responses) == 1, f"FullDuplexCall: expected one response, got {len(responses)}")
    _check_payload(responses[0], 314159)
    check(initial, call.trailing_metadata, "FullDuplexCall")


async def _echo_status(channel: trio_grpc.Channel, message: str, *, duplex: bool) -> None:
    stub = _stub(channel)
    status = messages_pb2.EchoStatus(code=trio_grpc.StatusCode.UNKNOWN, message=message)

    async def unary() -> None:
        await stub.UnaryCall(messages_pb2.SimpleRequest(response_status=status))

    async def full_duplex() -> None:
        async with stub.FullDuplexCall() as call:
            await call.send(messages_pb2.StreamingOutputCallRequest(response_status=status))
            await call.done_writing()
            await call.receive()

    calls = {"UnaryCall": unary, "FullDuplexCall": full_duplex} if duplex else {"UnaryCall": unary}
    for method, operation in calls.items():
        error = await expect_error(trio_grpc.StatusCode.UNKNOWN, operation)
        expect(error.message == message, f"{method}: expected the message {message!r}, got {error.message!r}")


async def status_code_and_message(channel: trio_grpc.Channel) -> None:
    await _echo_status(channel, "test status message", duplex=True)


async def special_status_message(channel: trio_grpc.Channel) -> None:
    await _echo_status(channel, SPECIAL_STATUS_MESSAGE, duplex=False)


async def unimplemented_method(channel: trio_grpc.Channel) -> None:
    await expect_error(
        trio_grpc.StatusCode.UNIMPLEMENTED, lambda: _stub(channel).UnimplementedCall(empty_pb2.Empty())
    )


async def unimplemented_service(channel: trio_grpc.Channel) -> None:
    stub = test_trio_grpc.UnimplementedServiceStub(channel)
    await expect_error(trio_grpc.StatusCode.UNIMPLEMENTED, lambda: stub.UnimplementedCall(empty_pb2.Empty()))


#: The spec's cases (and very_large_request), in the order `--test_case=all` runs them.
SPEC_CASES: tuple[Case, ...] = (
    empty_unary,
    large_unary,
    client_compressed_unary,
    server_compressed_unary,
    client_streaming,
    client_compressed_streaming,
    server_streaming,
    server_compressed_streaming,
    ping_pong,
    empty_stream,
    timeout_on_sleeping_server,
    cancel_after_begin,
    cancel_after_first_response,
    custom_metadata,
    status_code_and_message,
    special_status_message,
    unimplemented_method,
    unimplemented_service,
    very_large_request,
)
CASES: dict[str, Case] = {
    case.__name__: case
    for case in (*SPEC_CASES, client_compressed_unary_noprobe, client_compressed_streaming_noprobe)
}


# -- command line ------------------------------------------------------------------------------------------


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m tests.interop.client", description="Run one gRPC interop client case on trio_grpc."
    )
    parser.add_argument("--server_host", default="localhost")
    parser.add_argument("--server_host_override", help="name for TLS verification and :authority")
    parser.add_argument("--server_port", type=int, required=True)
    parser.add_argument(
        "--test_case",
        default="large_unary",
        choices=[*CASES, "all"],
        metavar="TEST_CASE",
        help="a case, or all",
    )
    add_bool_flag(parser, "--use_tls", "connect with TLS (with ALPN h2)")
    add_bool_flag(parser, "--use_test_ca", "trust --ca_file instead of the system's CAs")
    parser.add_argument("--ca_file", help="PEM file of the test CA for --use_test_ca (the spec's ca.pem)")
    # Accepted so that standard runners can pass them; the cases that need them (auth) are not implemented.
    for unused in (
        "--default_service_account",
        "--oauth_scope",
        "--service_account_key_file",
        "--service_config_json",
    ):
        parser.add_argument(unused, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.use_test_ca and not args.ca_file:
        parser.error("--use_test_ca=true needs --ca_file (trio_grpc has no built-in test CA)")
    return args


def make_channel(args: argparse.Namespace) -> trio_grpc.Channel:
    host = f"[{args.server_host}]" if ":" in args.server_host else args.server_host
    target = f"{host}:{args.server_port}"
    if not args.use_tls:
        return trio_grpc.Channel(target, server_hostname=args.server_host_override)
    tls = ssl.create_default_context(cafile=args.ca_file if args.use_test_ca else None)
    return trio_grpc.Channel(target, tls=tls, server_hostname=args.server_host_override)


async def _run(args: argparse.Namespace) -> str | None:
    """Run the chosen cases; the one-line reason of the first failure, or None."""
    cases = SPEC_CASES if args.test_case == "all" else (CASES[args.test_case],)
    async with make_channel(args) as channel:
        for case in cases:
            try:
                await case(channel)
            except InteropFailure as failure:
                return f"{case.__name__} failed: {failure}"
            except trio_grpc.RpcError as error:
                return f"{case.__name__} failed: unexpected status {error}"
            print(f"{case.__name__}: passed", flush=True)
    return None


def main(argv: list[str] | None = None) -> None:
    args = _parse_args(argv)
    try:
        failure = trio.run(_run, args)
    except KeyboardInterrupt:
        sys.exit(130)
    if failure is not None:
        sys.exit(f"error: {failure}")


if __name__ == "__main__":
    main()
