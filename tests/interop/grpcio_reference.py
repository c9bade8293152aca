"""The reference side of the interop matrix: TestService server and client cases on grpcio (`grpc.aio`).

Written from doc/interop-test-descriptions.md, kept plain: no trio_grpc import, nothing shared with the
trio_grpc side but the generated protos. Where grpcio cannot do what the spec text asks, the code says so:

- CompressedRequest (server): a grpcio handler cannot tell whether a request arrived compressed (grpc-encoding
  and the message flag stay inside grpc core), so `expect_compressed` is not checked. grpc's own Python
  interop server does not implement it either; grpc's interop matrix skips client_compressed_* against it.
- Client compression is per call in grpcio: in client_compressed_streaming both messages of the compressed
  call go compressed (the spec sends the second one uncompressed).
- A grpcio client cannot see the compressed flag of a response, which the spec allows ("if supported by the
  implementation"): server_compressed_* check sizes only.
- timeout_on_sleeping_server uses a 1 s timeout instead of 1 ms, to keep clear of a grpc.aio bug (see there).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable

import grpc
from grpc import aio

from tests.grpcio_stubs import test_pb2_grpc
from tests.interop._proto.grpc.testing import empty_pb2, messages_pb2

INITIAL_METADATA_KEY = "x-grpc-test-echo-initial"
TRAILING_METADATA_KEY = "x-grpc-test-echo-trailing-bin"
MAX_MESSAGE_SIZE = 16 * 1024 * 1024  # room for very_large_request's 10 MiB
_CODES = {code.value[0]: code for code in grpc.StatusCode}


# -- server --------------------------------------------------------------------------------------------------


async def _echo_metadata(context: aio.ServicerContext) -> None:
    received = dict(context.invocation_metadata() or ())
    initial = [(key, received[key]) for key in (INITIAL_METADATA_KEY,) if key in received]
    # Sent even when empty: grpc.aio (1.85) ignores set_compression() for a unary response unless the handler
    # sent the initial metadata itself (_finish_handler_with_unary_response sends them without the encoding).
    await context.send_initial_metadata(initial)
    if TRAILING_METADATA_KEY in received:
        context.set_trailing_metadata([(TRAILING_METADATA_KEY, received[TRAILING_METADATA_KEY])])


async def _echo_status(status: messages_pb2.EchoStatus, context: aio.ServicerContext) -> None:
    code = _CODES.get(status.code, grpc.StatusCode.UNKNOWN)
    if code is not grpc.StatusCode.OK:
        await context.abort(code, status.message)


async def _payload(
    payload_type: messages_pb2.PayloadType, size: int, context: aio.ServicerContext
) -> messages_pb2.Payload:
    if payload_type != messages_pb2.COMPRESSABLE:
        await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"unsupported response_type {payload_type}")
    return messages_pb2.Payload(type=payload_type, body=bytes(size))


class TestServiceServicer(test_pb2_grpc.TestServiceServicer):
    """UnimplementedCall stays the generated base class's, which answers UNIMPLEMENTED."""

    async def EmptyCall(self, request: empty_pb2.Empty, context: aio.ServicerContext) -> empty_pb2.Empty:
        await _echo_metadata(context)
        return empty_pb2.Empty()

    async def UnaryCall(
        self, request: messages_pb2.SimpleRequest, context: aio.ServicerContext
    ) -> messages_pb2.SimpleResponse:
        # expect_compressed is not checked: see the module docstring.
        if request.response_compressed.value:
            context.set_compression(grpc.Compression.Gzip)
        await _echo_metadata(context)
        if request.HasField("response_status"):
            await _echo_status(request.response_status, context)
        payload = await _payload(request.response_type, request.response_size, context)
        return messages_pb2.SimpleResponse(payload=payload)

    async def CacheableUnaryCall(
        self, request: messages_pb2.SimpleRequest, context: aio.ServicerContext
    ) -> messages_pb2.SimpleResponse:
        await context.send_initial_metadata([("cache-control", "max-age=60, public")])
        return messages_pb2.SimpleResponse(payload=messages_pb2.Payload(body=str(time.time_ns()).encode()))

    async def StreamingInputCall(
        self,
        request_iterator: AsyncIterator[messages_pb2.StreamingInputCallRequest],
        context: aio.ServicerContext,
    ) -> messages_pb2.StreamingInputCallResponse:
        total = 0
        async for request in request_iterator:
            total += len(request.payload.body)
        return messages_pb2.StreamingInputCallResponse(aggregated_payload_size=total)

    async def StreamingOutputCall(
        self, request: messages_pb2.StreamingOutputCallRequest, context: aio.ServicerContext
    ) -> None:
        context.set_compression(grpc.Compression.Gzip)
        await _echo_metadata(context)
        await _respond(request, context)

    async def FullDuplexCall(
        self,
        request_iterator: AsyncIterator[messages_pb2.StreamingOutputCallRequest],
        context: aio.ServicerContext,
    ) -> None:
        context.set_compression(grpc.Compression.Gzip)
        await _echo_metadata(context)
        async for request in request_iterator:
            await _respond(request, context)

    async def HalfDuplexCall(
        self,
        request_iterator: AsyncIterator[messages_pb2.StreamingOutputCallRequest],
        context: aio.ServicerContext,
    ) -> None:
        context.set_compression(grpc.Compression.Gzip)
        await _echo_metadata(context)
        requests = [request async for request in request_iterator]
        for request in requests:
            await _respond(request, context)


async def _respond(request: messages_pb2.StreamingOutputCallRequest, context: aio.ServicerContext) -> None:
    """The responses asked by one StreamingOutputCallRequest: sizes, intervals, per-message compression."""
    if request.HasField("response_status"):
        await _echo_status(request.response_status, context)
    for parameters in request.response_parameters:
        if parameters.interval_us:
            await asyncio.sleep(parameters.interval_us / 1_000_000)
        if not parameters.compressed.value:
            context.disable_next_message_compression()
        payload = await _payload(request.response_type, parameters.size, context)
        await context.write(messages_pb2.StreamingOutputCallResponse(payload=payload))


def make_server() -> aio.Server:
    """A grpc.aio server with TestService; add a port and start it in a running asyncio loop."""
    server = aio.server(options=[("grpc.max_receive_message_length", MAX_MESSAGE_SIZE)])
    test_pb2_grpc.add_TestServiceServicer_to_server(TestServiceServicer(), server)
    return server


# -- client --------------------------------------------------------------------------------------------------


class CaseFailed(Exception):
    """An assertion of an interop case did not hold."""


def _expect(condition: bool, message: str) -> None:
    if not condition:
        raise CaseFailed(message)


async def _expect_code(code: grpc.StatusCode, call: Awaitable[object]) -> aio.AioRpcError:
    try:
        await call
    except aio.AioRpcError as error:
        _expect(error.code() is code, f"expected {code.name}, got {error.code().name}: {error.details()!r}")
        return error
    raise CaseFailed(f"expected {code.name}, the call succeeded")


def _zeros(size: int) -> messages_pb2.Payload:
    return messages_pb2.Payload(body=bytes(size))


def _check_payload(
    response: messages_pb2.SimpleResponse | messages_pb2.StreamingOutputCallResponse, size: int
) -> None:
    _expect(response.payload.type == messages_pb2.COMPRESSABLE, f"payload type {response.payload.type}")
    _expect(
        response.payload.body == bytes(size), f"expected {size} zero bytes, got {len(response.payload.body)}"
    )


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


async def empty_unary(channel: aio.Channel) -> None:
    response = await test_pb2_grpc.TestServiceStub(channel).EmptyCall(empty_pb2.Empty())
    _expect(isinstance(response, empty_pb2.Empty), f"response is a {type(response).__name__}")


async def large_unary(channel: aio.Channel) -> None:
    _check_payload(await test_pb2_grpc.TestServiceStub(channel).UnaryCall(_large_request()), 314159)


async def very_large_request(channel: aio.Channel) -> None:
    request = messages_pb2.SimpleRequest(
        response_type=messages_pb2.COMPRESSABLE, response_size=10, payload=_zeros(10 * 1024 * 1024)
    )
    _check_payload(await test_pb2_grpc.TestServiceStub(channel).UnaryCall(request), 10)


async def client_compressed_unary(channel: aio.Channel) -> None:
    stub = test_pb2_grpc.TestServiceStub(channel)
    expect_compressed = messages_pb2.BoolValue(value=True)
    await _expect_code(
        grpc.StatusCode.INVALID_ARGUMENT, stub.UnaryCall(_large_request(expect_compressed=expect_compressed))
    )
    response = await stub.UnaryCall(
        _large_request(expect_compressed=expect_compressed), compression=grpc.Compression.Gzip
    )
    _check_payload(response, 314159)
    response = await stub.UnaryCall(_large_request(expect_compressed=messages_pb2.BoolValue(value=False)))
    _check_payload(response, 314159)


async def server_compressed_unary(channel: aio.Channel) -> None:
    stub = test_pb2_grpc.TestServiceStub(channel)
    for compressed in (True, False):
        request = _large_request(response_compressed=messages_pb2.BoolValue(value=compressed))
        _check_payload(await stub.UnaryCall(request), 314159)


async def client_streaming(channel: aio.Channel) -> None:
    async def requests() -> AsyncIterator[messages_pb2.StreamingInputCallRequest]:
        for size in (27182, 8, 1828, 45904):
            yield messages_pb2.StreamingInputCallRequest(payload=_zeros(size))

    response = await test_pb2_grpc.TestServiceStub(channel).StreamingInputCall(requests())
    _expect(response.aggregated_payload_size == 74922, f"aggregated size {response.aggregated_payload_size}")


async def client_compressed_streaming(channel: aio.Channel) -> None:
    stub = test_pb2_grpc.TestServiceStub(channel)
    expect_compressed = messages_pb2.BoolValue(value=True)
    probe = stub.StreamingInputCall()
    await probe.write(
        messages_pb2.StreamingInputCallRequest(expect_compressed=expect_compressed, payload=_zeros(27182))
    )
    await probe.done_writing()
    await _expect_code(grpc.StatusCode.INVALID_ARGUMENT, probe)

    call = stub.StreamingInputCall(compression=grpc.Compression.Gzip)
    await call.write(
        messages_pb2.StreamingInputCallRequest(expect_compressed=expect_compressed, payload=_zeros(27182))
    )
    # grpcio compresses every message of this call: it cannot send this one uncompressed as the spec does.
    await call.write(
        messages_pb2.StreamingInputCallRequest(
            expect_compressed=messages_pb2.BoolValue(value=False), payload=_zeros(45904)
        )
    )
    await call.done_writing()
    response = await call
    _expect(response.aggregated_payload_size == 73086, f"aggregated size {response.aggregated_payload_size}")


async def _streaming_output(channel: aio.Channel, parameters: list[messages_pb2.ResponseParameters]) -> None:
    request = messages_pb2.StreamingOutputCallRequest(
        response_type=messages_pb2.COMPRESSABLE, response_parameters=parameters
    )
    call = test_pb2_grpc.TestServiceStub(channel).StreamingOutputCall(request)
    responses = [response async for response in call]
    _expect(len(responses) == len(parameters), f"expected {len(parameters)} responses, got {len(responses)}")
    for response, asked in zip(responses, parameters, strict=True):
        _check_payload(response, asked.size)


async def server_streaming(channel: aio.Channel) -> None:
    sizes = (31415, 9, 2653, 58979)
    await _streaming_output(channel, [messages_pb2.ResponseParameters(size=size) for size in sizes])


async def server_compressed_streaming(channel: aio.Channel) -> None:
    await _streaming_output(
        channel,
        [
            messages_pb2.ResponseParameters(size=31415, compressed=messages_pb2.BoolValue(value=True)),
            messages_pb2.ResponseParameters(size=92653, compressed=messages_pb2.BoolValue(value=False)),
        ],
    )


async def ping_pong(channel: aio.Channel) -> None:
    call = test_pb2_grpc.TestServiceStub(channel).FullDuplexCall()
    for response_size, payload_size in ((31415, 27182), (9, 8), (2653, 1828), (58979, 45904)):
        await call.write(
            messages_pb2.StreamingOutputCallRequest(
                response_type=messages_pb2.COMPRESSABLE,
                response_parameters=[messages_pb2.ResponseParameters(size=response_size)],
                payload=_zeros(payload_size),
            )
        )
        response = await call.read()
        _expect(response is not aio.EOF, "the stream ended before its reply")
        _check_payload(response, response_size)
    await call.done_writing()
    _expect(await call.read() is aio.EOF, "expected exactly four responses")
    _expect(await call.code() is grpc.StatusCode.OK, f"status {await call.code()}")


async def empty_stream(channel: aio.Channel) -> None:
    call = test_pb2_grpc.TestServiceStub(channel).FullDuplexCall()
    await call.done_writing()
    _expect(await call.read() is aio.EOF, "expected zero responses")
    _expect(await call.code() is grpc.StatusCode.OK, f"status {await call.code()}")


async def timeout_on_sleeping_server(channel: aio.Channel) -> None:
    # 1 s, not the spec's 1 ms (grpc's own aio interop client does the same): a grpc.aio write that fails
    # because the server has just ended the call replaces the server's status with INTERNAL "Internal error
    # from Core" (grpc/grpc#36066), so the write must be done before the deadline.
    call = test_pb2_grpc.TestServiceStub(channel).FullDuplexCall(timeout=1.0)
    await call.write(messages_pb2.StreamingOutputCallRequest(payload=_zeros(27182)))
    await _expect_code(grpc.StatusCode.DEADLINE_EXCEEDED, call.read())


async def cancel_after_begin(channel: aio.Channel) -> None:
    call = test_pb2_grpc.TestServiceStub(channel).StreamingInputCall()
    call.cancel()
    _expect(await call.code() is grpc.StatusCode.CANCELLED, f"status {await call.code()}")


async def cancel_after_first_response(channel: aio.Channel) -> None:
    call = test_pb2_grpc.TestServiceStub(channel).FullDuplexCall()
    await call.write(
        messages_pb2.StreamingOutputCallRequest(
            response_type=messages_pb2.COMPRESSABLE,
            response_parameters=[messages_pb2.ResponseParameters(size=31415)],
            payload=_zeros(27182),
        )
    )
    _expect(await call.read() is not aio.EOF, "expected a response before cancelling")
    call.cancel()
    _expect(await call.code() is grpc.StatusCode.CANCELLED, f"status {await call.code()}")


async def custom_metadata(channel: aio.Channel) -> None:
    stub = test_pb2_grpc.TestServiceStub(channel)
    initial_value, trailing_value = "test_initial_metadata_value", b"\xab\xab\xab"
    metadata = ((INITIAL_METADATA_KEY, initial_value), (TRAILING_METADATA_KEY, trailing_value))

    async def check(call: aio.Call, method: str) -> None:
        initial = dict(await call.initial_metadata())
        _expect(initial.get(INITIAL_METADATA_KEY) == initial_value, f"{method}: initial metadata {initial}")
        trailing = dict(await call.trailing_metadata())
        _expect(
            trailing.get(TRAILING_METADATA_KEY) == trailing_value, f"{method}: trailing metadata {trailing}"
        )

    unary = stub.UnaryCall(_large_request(), metadata=metadata)
    _check_payload(await unary, 314159)
    await check(unary, "UnaryCall")

    duplex = stub.FullDuplexCall(metadata=metadata)
    await duplex.write(
        messages_pb2.StreamingOutputCallRequest(
            response_type=messages_pb2.COMPRESSABLE,
            response_parameters=[messages_pb2.ResponseParameters(size=314159)],
            payload=_zeros(271828),
        )
    )
    await duplex.done_writing()
    responses = [response async for response in duplex]
    _expect(len(responses) == 1, f"FullDuplexCall: {len(responses)} responses")
    _check_payload(responses[0], 314159)
    await check(duplex, "FullDuplexCall")


async def _echo_status_case(channel: aio.Channel, message: str, *, duplex: bool) -> None:
    stub = test_pb2_grpc.TestServiceStub(channel)
    status = messages_pb2.EchoStatus(code=grpc.StatusCode.UNKNOWN.value[0], message=message)
    error = await _expect_code(
        grpc.StatusCode.UNKNOWN, stub.UnaryCall(messages_pb2.SimpleRequest(response_status=status))
    )
    _expect(error.details() == message, f"UnaryCall: message {error.details()!r}")
    if duplex:
        call = stub.FullDuplexCall()
        await call.write(messages_pb2.StreamingOutputCallRequest(response_status=status))
        await call.done_writing()
        _expect(await call.code() is grpc.StatusCode.UNKNOWN, f"FullDuplexCall: status {await call.code()}")
        _expect(await call.details() == message, f"FullDuplexCall: message {await call.details()!r}")


async def status_code_and_message(channel: aio.Channel) -> None:
    await _echo_status_case(channel, "test status message", duplex=True)


async def special_status_message(channel: aio.Channel) -> None:
    message = "\t\ntest with whitespace\r\nand Unicode BMP \u263a and non-BMP \U0001f608\t\n"
    await _echo_status_case(channel, message, duplex=False)


async def unimplemented_method(channel: aio.Channel) -> None:
    stub = test_pb2_grpc.TestServiceStub(channel)
    await _expect_code(grpc.StatusCode.UNIMPLEMENTED, stub.UnimplementedCall(empty_pb2.Empty()))


async def unimplemented_service(channel: aio.Channel) -> None:
    stub = test_pb2_grpc.UnimplementedServiceStub(channel)
    await _expect_code(grpc.StatusCode.UNIMPLEMENTED, stub.UnimplementedCall(empty_pb2.Empty()))


CASES: dict[str, Callable[[aio.Channel], Awaitable[None]]] = {
    case.__name__: case
    for case in (
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
}
