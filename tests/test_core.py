"""trio_grpc server <-> trio_grpc client, in process over 127.0.0.1 (and a unix socket), with pytest-trio.

The service is the interop TestService; each test binds a small implementation of the methods it needs.
No sleep is used to wait for something to happen: tests wait on events set by handlers, and every test is
bounded by trio.fail_after.
"""

from __future__ import annotations

import collections
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial
from typing import Any

import h2.events
import pytest
import trio
import trio.testing

import trio_grpc
from tests.interop._proto.grpc.testing import empty_pb2, messages_pb2, test_pb2
from tests.support import CancellationProbe
from trio_grpc import ChannelSettings, MetadataError, RpcError, ServerSettings, StatusCode
from trio_grpc._transport import ErrorCodes, close_at_once

SERVICE = test_pb2.DESCRIPTOR.services_by_name["TestService"]
UNIMPLEMENTED_SERVICE = test_pb2.DESCRIPTOR.services_by_name["UnimplementedService"]
TIMEOUT = 10
MiB = 1024 * 1024

Context = trio_grpc.ServicerContext
SimpleRequest = messages_pb2.SimpleRequest
SimpleResponse = messages_pb2.SimpleResponse
StreamingOutputCallRequest = messages_pb2.StreamingOutputCallRequest
StreamingOutputCallResponse = messages_pb2.StreamingOutputCallResponse
StreamingInputCallRequest = messages_pb2.StreamingInputCallRequest
StreamingInputCallResponse = messages_pb2.StreamingInputCallResponse


def payload(size: int, fill: bytes = b"x") -> messages_pb2.Payload:
    return messages_pb2.Payload(body=fill * size)


def sizes(*values: int) -> list[messages_pb2.ResponseParameters]:
    return [messages_pb2.ResponseParameters(size=value) for value in values]


@asynccontextmanager
async def serving(
    implementation: object,
    *,
    settings: ServerSettings | None = None,
    channel_settings: ChannelSettings | None = None,
) -> AsyncIterator[tuple[trio_grpc.Server, trio_grpc.Stub]]:
    """A server for `implementation` on 127.0.0.1 and a stub on a channel to it; shut down on the way out."""
    server = trio_grpc.Server([trio_grpc.bind_service(SERVICE, implementation)], settings=settings)
    async with trio.open_nursery() as nursery:
        port = await nursery.start(partial(server.serve_tcp, 0, host="127.0.0.1"))
        async with trio_grpc.Channel(f"127.0.0.1:{port}", settings=channel_settings) as channel:
            yield server, trio_grpc.Stub(channel, SERVICE)
        await server.shutdown(grace=1)
    assert not server._connections


# -- the four kinds, metadata ------------------------------------------------------------------------------


async def test_unary_unary_with_metadata_both_ways() -> None:
    seen: dict[str, Any] = {}

    class Service:
        async def UnaryCall(self, request: SimpleRequest, context: Context) -> SimpleResponse:
            seen["metadata"] = context.invocation_metadata
            seen["method"] = context.method
            seen["peer"] = context.peer
            seen["time_remaining"] = context.time_remaining()
            await context.send_initial_metadata([("initial", "i"), ("initial-bin", b"\x00\xffi")])
            context.set_trailing_metadata([("trailing", "t"), ("trailing-bin", b"\x00\xfft")])
            return SimpleResponse(payload=payload(request.response_size, b"r"))

    with trio.fail_after(TIMEOUT):
        async with serving(Service()) as (_, stub):
            request = SimpleRequest(response_size=3, payload=payload(5))
            metadata = [("k", "v"), ("k-bin", b"\x00\x01\xff"), ("k-bin", b"second"), ("Upper-Case", "u")]
            response, call = await stub.UnaryCall.with_call(request, metadata=metadata, timeout=TIMEOUT)
            assert response.payload.body == b"rrr"
            assert call.code == StatusCode.OK
            assert await call.initial_metadata() == (("initial", "i"), ("initial-bin", b"\x00\xffi"))
            assert call.trailing_metadata == (("trailing", "t"), ("trailing-bin", b"\x00\xfft"))

            received = [item for item in seen["metadata"] if item[0] in ("k", "k-bin", "upper-case")]
            assert received == [
                ("k", "v"),
                ("k-bin", b"\x00\x01\xff"),
                ("k-bin", b"second"),
                ("upper-case", "u"),
            ]
            assert seen["method"] == "/grpc.testing.TestService/UnaryCall"
            assert seen["peer"].startswith("ipv4:127.0.0.1:")
            assert 0 < seen["time_remaining"] <= TIMEOUT


async def test_unary_stream() -> None:
    class Service:
        async def StreamingOutputCall(self, request: StreamingOutputCallRequest, context: Context) -> None:
            # No timeout=, but the call is made inside the test's fail_after: that deadline travels with it.
            remaining = context.time_remaining()
            assert remaining is not None and 0 < remaining <= TIMEOUT
            context.set_trailing_metadata([("count", str(len(request.response_parameters)))])
            for parameters in request.response_parameters:
                await context.send(StreamingOutputCallResponse(payload=payload(parameters.size)))

    with trio.fail_after(TIMEOUT):
        async with serving(Service()) as (_, stub):
            async with stub.StreamingOutputCall(
                StreamingOutputCallRequest(response_parameters=sizes(1, 2, 3, 0, 100_000))
            ) as call:
                received = [len(message.payload.body) async for message in call]
            assert received == [1, 2, 3, 0, 100_000]
            assert call.code == StatusCode.OK
            assert call.trailing_metadata == (("count", "5"),)

            # No message at all: a Trailers-Only OK.
            async with stub.StreamingOutputCall(StreamingOutputCallRequest()) as call:
                assert [message async for message in call] == []
                assert await call.initial_metadata() == ()
            assert call.code == StatusCode.OK
            assert call.trailing_metadata == (("count", "0"),)


async def test_stream_unary_from_iterables_and_by_hand() -> None:
    class Service:
        async def StreamingInputCall(
            self, requests: AsyncIterator[StreamingInputCallRequest], context: Context
        ) -> StreamingInputCallResponse:
            total = 0
            async for request in requests:
                total += len(request.payload.body)
            return StreamingInputCallResponse(aggregated_payload_size=total)

    def request(size: int) -> StreamingInputCallRequest:
        return StreamingInputCallRequest(payload=payload(size))

    async def generate() -> AsyncIterator[StreamingInputCallRequest]:
        for size in (10, 20, 30):
            await trio.lowlevel.checkpoint()
            yield request(size)

    with trio.fail_after(TIMEOUT):
        async with serving(Service()) as (_, stub):
            response = await stub.StreamingInputCall([request(1), request(2), request(70_000)])
            assert response.aggregated_payload_size == 70_003
            assert (await stub.StreamingInputCall(generate())).aggregated_payload_size == 60
            assert (await stub.StreamingInputCall([])).aggregated_payload_size == 0
            async with stub.StreamingInputCall.open(timeout=TIMEOUT) as call:
                await call.send(request(4))
                await call.send(request(5))
                assert (await call.response()).aggregated_payload_size == 9
            assert call.code == StatusCode.OK


async def test_stream_stream_ping_pong() -> None:
    class Service:
        async def FullDuplexCall(
            self, requests: AsyncIterator[StreamingOutputCallRequest], context: Context
        ) -> None:
            async for request in requests:
                for parameters in request.response_parameters:
                    await context.send(StreamingOutputCallResponse(payload=payload(parameters.size)))

    with trio.fail_after(TIMEOUT):
        async with serving(Service()) as (_, stub), stub.FullDuplexCall() as call:
            # Each reply arrives before the next request is sent: the two directions really stream.
            for size in (1, 10, 100_000, 0, 7):
                await call.send(StreamingOutputCallRequest(response_parameters=sizes(size)))
                reply = await call.receive()
                assert reply is not None and len(reply.payload.body) == size
            await call.done_writing()
            assert await call.receive() is None
            assert call.code == StatusCode.OK


# -- status ------------------------------------------------------------------------------------------------

UNICODE_MESSAGE = "ünïcødé ☃ 100% done\r\n\ttab and %41 stays"


async def test_error_status_message_details_and_trailing_metadata() -> None:
    class Service:
        async def UnaryCall(self, request: SimpleRequest, context: Context) -> SimpleResponse:
            context.set_trailing_metadata([("set-before", "yes")])
            raise RpcError(
                StatusCode.NOT_FOUND,
                UNICODE_MESSAGE,
                details=b"\x00\x01 any bytes \xff",
                trailing_metadata=[("why", "because"), ("why-bin", b"\xfe\x00")],
            )

        async def StreamingOutputCall(self, request: StreamingOutputCallRequest, context: Context) -> None:
            await context.send(StreamingOutputCallResponse(payload=payload(1)))
            await context.send(StreamingOutputCallResponse(payload=payload(2)))
            context.abort(StatusCode.FAILED_PRECONDITION, "after two", details=b"d")

        async def EmptyCall(self, request: empty_pb2.Empty, context: Context) -> None:
            return None  # a unary handler must return a response

    with trio.fail_after(TIMEOUT):
        async with serving(Service()) as (_, stub):
            # Trailers-Only: the error comes before any message.
            with pytest.raises(RpcError) as caught:
                await stub.UnaryCall(SimpleRequest())
            error = caught.value
            assert error.code == StatusCode.NOT_FOUND
            assert error.message == UNICODE_MESSAGE
            assert error.details == b"\x00\x01 any bytes \xff"
            assert error.trailing_metadata == (
                ("set-before", "yes"),
                ("why", "because"),
                ("why-bin", b"\xfe\x00"),
            )

            # Trailers after messages.
            received = []
            with pytest.raises(RpcError) as caught:
                async with stub.StreamingOutputCall(StreamingOutputCallRequest()) as call:
                    async for message in call:
                        received.append(message.payload.body)
            assert received == [b"x", b"xx"]
            assert (caught.value.code, caught.value.message, caught.value.details) == (
                StatusCode.FAILED_PRECONDITION,
                "after two",
                b"d",
            )
            assert (call.code, call.message, call.details) == (
                StatusCode.FAILED_PRECONDITION,
                "after two",
                b"d",
            )

            with pytest.raises(RpcError) as caught:
                await stub.EmptyCall(empty_pb2.Empty())
            assert caught.value.code == StatusCode.INTERNAL


async def test_handler_exception_is_unknown_and_not_leaked(caplog: pytest.LogCaptureFixture) -> None:
    class Service:
        async def UnaryCall(self, request: SimpleRequest, context: Context) -> SimpleResponse:
            raise ValueError("secret database password")

        async def EmptyCall(self, request: empty_pb2.Empty, context: Context) -> None:
            raise RpcError(StatusCode.ABORTED, "x", trailing_metadata=[("grpc-status", "0")])  # reserved key

    with trio.fail_after(TIMEOUT), caplog.at_level(logging.ERROR, logger="trio_grpc"):
        async with serving(Service()) as (_, stub):
            with pytest.raises(RpcError) as caught:
                await stub.UnaryCall(SimpleRequest())
            assert caught.value.code == StatusCode.UNKNOWN
            assert "secret" not in caught.value.message and "secret" not in repr(
                caught.value.trailing_metadata
            )
            assert caught.value.message == "Unexpected error in handler"
            logged = [record for record in caplog.records if record.exc_info]
            assert logged and "secret database password" in str(logged[0].exc_info[1])
            assert "/grpc.testing.TestService/UnaryCall" in logged[0].getMessage()

            # An RpcError with trailing metadata the wire cannot carry: UNKNOWN too, and logged.
            with pytest.raises(RpcError) as caught:
                await stub.EmptyCall(empty_pb2.Empty())
            assert caught.value.code == StatusCode.UNKNOWN
            assert isinstance(caplog.records[-1].exc_info[1], MetadataError)  # type: ignore[index]


async def test_rpc_error_from_a_handlers_nursery() -> None:
    class Service:
        async def UnaryCall(self, request: SimpleRequest, context: Context) -> SimpleResponse:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._fail)
                await trio.sleep_forever()
            raise AssertionError("unreachable")

        async def _fail(self) -> None:
            await trio.lowlevel.checkpoint()
            raise RpcError(StatusCode.PERMISSION_DENIED, "nope", details=b"why")

    with trio.fail_after(TIMEOUT):
        async with serving(Service()) as (_, stub):
            with pytest.raises(RpcError) as caught:
                await stub.UnaryCall(SimpleRequest())
            assert (caught.value.code, caught.value.message, caught.value.details) == (
                StatusCode.PERMISSION_DENIED,
                "nope",
                b"why",
            )


async def test_exception_group_mixing_deadline_and_rpc_error_does_not_crash_the_server() -> None:
    """A child that raises while the deadline cancels the handler: the group holds Cancelled and the error."""
    cleaned_up = trio.Event()

    class Service:
        async def UnaryCall(self, request: SimpleRequest, context: Context) -> SimpleResponse:
            if request.response_size:
                return SimpleResponse()
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._raise_when_cancelled)
                await trio.sleep_forever()
            raise AssertionError("unreachable")

        async def _raise_when_cancelled(self) -> None:
            try:
                await trio.sleep_forever()
            finally:
                cleaned_up.set()
                raise RpcError(StatusCode.ABORTED, "cleanup failed")

    with trio.fail_after(TIMEOUT):
        async with serving(Service()) as (server, stub):
            with pytest.raises(RpcError) as caught:
                await stub.UnaryCall(SimpleRequest(), timeout=0.2)
            assert caught.value.code == StatusCode.DEADLINE_EXCEEDED
            await cleaned_up.wait()
            assert await stub.UnaryCall(SimpleRequest(response_size=1)) == SimpleResponse()
            assert len(server._connections) == 1


async def test_unimplemented_method_and_service() -> None:
    class Service:  # implements no method at all
        pass

    with trio.fail_after(TIMEOUT):
        async with serving(Service()) as (_, stub):
            with pytest.raises(RpcError) as caught:
                await stub.UnaryCall(SimpleRequest())
            assert caught.value.code == StatusCode.UNIMPLEMENTED
            assert "/grpc.testing.TestService/UnaryCall" in caught.value.message
            other = trio_grpc.Stub(stub.methods["UnaryCall"]._channel, UNIMPLEMENTED_SERVICE)
            with pytest.raises(RpcError) as caught:
                await other.UnimplementedCall(empty_pb2.Empty())
            assert caught.value.code == StatusCode.UNIMPLEMENTED
            with pytest.raises(RpcError) as caught:
                async with stub.FullDuplexCall() as call:
                    await call.receive()
            assert caught.value.code == StatusCode.UNIMPLEMENTED


# -- deadlines and cancellation ----------------------------------------------------------------------------


class Blocking(CancellationProbe):
    """Handlers that block until cancelled, and record that they were (and that their cleanup ran)."""

    def __init__(self) -> None:
        super().__init__()
        self.contexts: list[trio_grpc.ServicerContext] = []
        self.sent = 0

    async def _block(self, context: Context) -> None:
        self.contexts.append(context)
        await self.block_until_cancelled()

    async def UnaryCall(self, request: SimpleRequest, context: Context) -> SimpleResponse:
        await self._block(context)
        raise AssertionError("unreachable")

    async def StreamingOutputCall(self, request: StreamingOutputCallRequest, context: Context) -> None:
        """Sends one message, then blocks; or, with response parameters, sends until cancelled."""
        if not request.response_parameters:
            await context.send(StreamingOutputCallResponse(payload=payload(1)))
            await self._block(context)
        self.contexts.append(context)
        with self.watching():
            while True:
                await context.send(
                    StreamingOutputCallResponse(payload=payload(request.response_parameters[0].size))
                )
                self.sent += 1
                self.started.set()

    async def FullDuplexCall(
        self, requests: AsyncIterator[StreamingOutputCallRequest], context: Context
    ) -> None:
        async for _ in requests:
            await context.send(StreamingOutputCallResponse(payload=payload(1)))
            await self._block(context)


async def test_deadline_exceeded_cancels_the_handler() -> None:
    service = Blocking()
    with trio.fail_after(TIMEOUT):
        async with serving(service) as (_, stub):
            with pytest.raises(RpcError) as caught:
                await stub.UnaryCall(SimpleRequest(), timeout=0.2)
            assert caught.value.code == StatusCode.DEADLINE_EXCEEDED
            await service.cancelled.wait()
            await service.cleaned_up.wait()
            # Both ends time the call: the handler's scope had the client's deadline (whichever came first,
            # the deadline or the client's RST_STREAM, cancelled it). The server starts its clock when the
            # request arrives, later than the client by the transit time (milliseconds on a busy machine):
            # its deadline is at most that much after the client's, and well before a second one would be.
            remaining = service.contexts[0].time_remaining()
            assert remaining is not None and remaining < 0.1

            # A streaming call: the message before the deadline arrives, then DEADLINE_EXCEEDED.
            service.cancelled = trio.Event()
            received = []
            with pytest.raises(RpcError) as caught:
                async with stub.StreamingOutputCall(StreamingOutputCallRequest(), timeout=0.3) as call:
                    async for message in call:
                        received.append(message)
            assert caught.value.code == StatusCode.DEADLINE_EXCEEDED
            assert len(received) == 1 and call.code == StatusCode.DEADLINE_EXCEEDED
            await service.cancelled.wait()


@pytest.mark.parametrize("kind", ["unary_stream", "stream_stream"])
async def test_leaving_the_call_mid_stream_cancels_the_handler(kind: str) -> None:
    service = Blocking()
    with trio.fail_after(TIMEOUT):
        async with serving(service) as (_, stub):
            if kind == "unary_stream":
                async with stub.StreamingOutputCall(
                    StreamingOutputCallRequest(response_parameters=sizes(1000))
                ) as call:
                    async for _ in call:
                        break
            else:
                async with stub.FullDuplexCall() as call:
                    await call.send(StreamingOutputCallRequest())
                    assert await call.receive() is not None
            assert call.code == StatusCode.CANCELLED
            await service.cancelled.wait()
            await service.cleaned_up.wait()
            context = service.contexts[0]
            assert context.cancelled
            # The client said so with RST_STREAM(CANCEL).
            assert (
                context._stream.closed is not None and context._stream.closed.reset_code == ErrorCodes.CANCEL
            )


async def test_cancelling_the_callers_scope_cancels_the_handler() -> None:
    service = Blocking()
    with trio.fail_after(TIMEOUT):
        async with serving(service) as (server, stub):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(stub.UnaryCall, SimpleRequest())
                await service.started.wait()
                nursery.cancel_scope.cancel()
            await service.cancelled.wait()
            assert len(server._connections) == 1  # the connection itself carries on


# -- shutdown ----------------------------------------------------------------------------------------------


async def test_graceful_shutdown_lets_a_call_in_flight_finish() -> None:
    started, release = trio.Event(), trio.Event()
    results: list[SimpleResponse] = []

    class Service:
        async def UnaryCall(self, request: SimpleRequest, context: Context) -> SimpleResponse:
            started.set()
            await release.wait()
            return SimpleResponse(payload=payload(2))

    server = trio_grpc.Server([trio_grpc.bind_service(SERVICE, Service())])
    shutdown_began, shutdown_done, serve_returned = trio.Event(), trio.Event(), trio.Event()
    server.on_shutdown(shutdown_began.set)

    async def serve(task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
        await server.serve_tcp(0, host="127.0.0.1", task_status=task_status)
        serve_returned.set()

    async def shutdown() -> None:
        await server.shutdown(grace=TIMEOUT)
        shutdown_done.set()

    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            port = await nursery.start(serve)
            target = f"127.0.0.1:{port}"
            async with trio_grpc.Channel(target) as channel:
                stub = trio_grpc.Stub(channel, SERVICE)

                async def call() -> None:
                    results.append(await stub.UnaryCall(SimpleRequest()))

                nursery.start_soon(call)
                await started.wait()
                nursery.start_soon(shutdown)
                await shutdown_began.wait()

                # New calls are refused, on the draining connection and on a new one.
                for caller in (stub, None):
                    with pytest.raises(RpcError) as caught:
                        if caller is None:
                            async with trio_grpc.Channel(target) as other:
                                await trio_grpc.Stub(other, SERVICE).UnaryCall(SimpleRequest())
                        else:
                            await caller.UnaryCall(SimpleRequest())
                    assert caught.value.code == StatusCode.UNAVAILABLE

                assert not shutdown_done.is_set()
                release.set()
                await shutdown_done.wait()
                await serve_returned.wait()
    assert [len(result.payload.body) for result in results] == [2]
    assert not server._connections


async def test_graceful_shutdown_cancels_calls_past_the_grace_period() -> None:
    service = Blocking()
    server = trio_grpc.Server([trio_grpc.bind_service(SERVICE, service)])
    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            port = await nursery.start(partial(server.serve_tcp, 0, host="127.0.0.1"))
            async with trio_grpc.Channel(f"127.0.0.1:{port}") as channel:
                stub = trio_grpc.Stub(channel, SERVICE)
                errors: list[RpcError] = []

                async def call() -> None:
                    with pytest.raises(RpcError) as caught:
                        await stub.UnaryCall(SimpleRequest())
                    errors.append(caught.value)

                async with trio.open_nursery() as calls:
                    calls.start_soon(call)
                    await service.started.wait()
                    await server.shutdown(grace=0.2)
                assert service.cancelled.is_set() and service.cleaned_up.is_set()
                assert [(error.code, error.message) for error in errors] == [
                    (StatusCode.UNAVAILABLE, "server is shutting down")
                ]
        # Leaving the nursery proves that serve_tcp returned.
    assert not server._connections


async def test_serve_unix_socket(tmp_path: Any) -> None:
    peers = []

    class Service:
        async def UnaryCall(self, request: SimpleRequest, context: Context) -> SimpleResponse:
            peers.append(context.peer)
            return SimpleResponse(payload=request.payload)

    path = str(tmp_path / "grpc.sock")
    server = trio_grpc.Server([trio_grpc.bind_service(SERVICE, Service())])
    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            assert await nursery.start(server.serve_unix, path) == path
            async with trio_grpc.Channel(f"unix:{path}") as channel:
                stub = trio_grpc.Stub(channel, SERVICE)
                response = await stub.UnaryCall(SimpleRequest(payload=payload(3)))
                assert response.payload.body == b"xxx"
            await server.shutdown(grace=1)
    assert peers == [f"unix:{path}"]
    assert not (tmp_path / "grpc.sock").exists()


# -- concurrency -------------------------------------------------------------------------------------------


async def test_100_concurrent_streams_share_one_connection() -> None:
    count = 100
    peers: set[str] = set()
    arrived = 0
    all_in = trio.Event()

    class Service:
        async def UnaryCall(self, request: SimpleRequest, context: Context) -> SimpleResponse:
            nonlocal arrived
            peers.add(context.peer)
            arrived += 1
            if arrived == count:
                all_in.set()
            await all_in.wait()  # every call is in its handler at the same time
            return SimpleResponse(payload=request.payload)

    with trio.fail_after(TIMEOUT):
        async with serving(Service()) as (server, stub):
            results: dict[int, bytes] = {}

            async def call(index: int) -> None:
                response = await stub.UnaryCall(SimpleRequest(payload=payload(1, b"%d," % index)))
                results[index] = response.payload.body

            async with trio.open_nursery() as nursery:
                for index in range(count):
                    nursery.start_soon(call, index)
            assert results == {index: b"%d," % index for index in range(count)}
            assert len(peers) == 1
            assert len(server._connections) == 1


async def test_client_waits_for_the_servers_max_concurrent_streams() -> None:
    limit, count = 4, 50
    active = peak = done = 0
    limit_reached, release = trio.Event(), trio.Event()

    class Service:
        async def UnaryCall(self, request: SimpleRequest, context: Context) -> SimpleResponse:
            nonlocal active, peak, done
            active += 1
            peak = max(peak, active)
            if active == limit:
                limit_reached.set()
            await release.wait()
            active -= 1
            done += 1
            return SimpleResponse()

    with trio.fail_after(TIMEOUT):
        async with serving(Service(), settings=ServerSettings(max_concurrent_streams=limit)) as (_, stub):
            async with trio.open_nursery() as nursery:
                for _ in range(count):
                    nursery.start_soon(stub.UnaryCall, SimpleRequest())
                await limit_reached.wait()
                await trio.testing.wait_all_tasks_blocked()
                assert active == limit  # the other calls wait on the client side, none was refused
                release.set()
            assert (done, peak) == (count, limit)


# -- message size limits -----------------------------------------------------------------------------------


class StallsReaders:
    """StreamingInputCall reads nothing until `release` is set; UnaryCall answers at once."""

    def __init__(self) -> None:
        self.release = trio.Event()

    async def StreamingInputCall(
        self, requests: AsyncIterator[StreamingInputCallRequest], context: Context
    ) -> StreamingInputCallResponse:
        await self.release.wait()
        total = 0
        async for request in requests:
            total += len(request.payload.body)
        return StreamingInputCallResponse(aggregated_payload_size=total)

    async def UnaryCall(self, request: SimpleRequest, context: Context) -> SimpleResponse:
        return SimpleResponse(payload=request.payload)


async def test_streams_nobody_reads_do_not_stall_the_connection() -> None:
    # Eight streams fill their windows with messages nobody reads: together they hold far more than the
    # connection window. Only stream-level credit may be held back, so a unary call still gets through.
    settings = ServerSettings(
        stream_window_size=64 * 1024, stream_read_buffer_size=16 * 1024, connection_window_size=256 * 1024
    )
    implementation = StallsReaders()
    message = StreamingInputCallRequest(payload=payload(1024))
    with trio.fail_after(TIMEOUT):
        async with serving(implementation, settings=settings) as (_, stub), trio.open_nursery() as nursery:
            results: list[int] = []

            async def stalled_upload() -> None:
                async with stub.StreamingInputCall.open() as call:
                    for _ in range(300):
                        await call.send(message)
                    response = await call.response()
                    results.append(response.aggregated_payload_size)

            for _ in range(8):
                nursery.start_soon(stalled_upload)
            await trio.testing.wait_all_tasks_blocked()  # every upload now waits for window
            assert not results
            echoed = await stub.UnaryCall(SimpleRequest(payload=payload(100 * 1024)))
            assert len(echoed.payload.body) == 100 * 1024
            implementation.release.set()
        assert results == [300 * 1024] * 8


async def test_large_messages_and_the_receive_limit() -> None:
    class Service:
        async def UnaryCall(self, request: SimpleRequest, context: Context) -> SimpleResponse:
            return SimpleResponse(payload=payload(request.response_size, b"r"))

        async def FullDuplexCall(
            self, requests: AsyncIterator[StreamingOutputCallRequest], context: Context
        ) -> None:
            async for request in requests:
                await context.send(StreamingOutputCallResponse(payload=request.payload))

    with trio.fail_after(TIMEOUT):
        async with serving(Service()) as (server, stub), stub.FullDuplexCall() as parallel:
            await parallel.send(StreamingOutputCallRequest(payload=payload(1)))
            assert await parallel.receive() is not None

            response = await stub.UnaryCall(SimpleRequest(payload=payload(3 * MiB), response_size=3 * MiB))
            assert response.payload.body == b"r" * (3 * MiB)

            # Too large a request: the server refuses it from its length prefix.
            with pytest.raises(RpcError) as caught:
                await stub.UnaryCall(SimpleRequest(payload=payload(5 * MiB)))
            assert caught.value.code == StatusCode.RESOURCE_EXHAUSTED
            assert "larger than max" in caught.value.message

            # Too large a response: the client refuses it.
            with pytest.raises(RpcError) as caught:
                await stub.UnaryCall(SimpleRequest(response_size=5 * MiB))
            assert caught.value.code == StatusCode.RESOURCE_EXHAUSTED
            assert "larger than max" in caught.value.message

            # The call in parallel and the connection carry on.
            await parallel.send(StreamingOutputCallRequest(payload=payload(3 * MiB)))
            reply = await parallel.receive()
            assert reply is not None and len(reply.payload.body) == 3 * MiB
            await parallel.done_writing()
            assert await parallel.receive() is None
            assert (await stub.UnaryCall(SimpleRequest(response_size=10))).payload.body == b"r" * 10
            assert len(server._connections) == 1


async def test_send_limit_is_enforced_before_sending() -> None:
    class Service:
        async def UnaryCall(self, request: SimpleRequest, context: Context) -> SimpleResponse:
            return SimpleResponse(payload=payload(request.response_size))

    settings = ServerSettings(max_send_message_size=1000)
    channel_settings = ChannelSettings(max_send_message_size=1000)
    with trio.fail_after(TIMEOUT):
        async with serving(Service(), settings=settings, channel_settings=channel_settings) as (_, stub):
            with pytest.raises(RpcError) as caught:
                await stub.UnaryCall(SimpleRequest(payload=payload(2000)))
            assert caught.value.code == StatusCode.RESOURCE_EXHAUSTED
            with pytest.raises(RpcError) as caught:
                await stub.UnaryCall(SimpleRequest(response_size=2000))
            assert caught.value.code == StatusCode.RESOURCE_EXHAUSTED
            assert len((await stub.UnaryCall(SimpleRequest(response_size=900))).payload.body) == 900


# -- compression -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("encoding", ["gzip", "deflate"])
async def test_compression_both_ways(encoding: str) -> None:
    seen: list[bool] = []

    class Service:
        async def UnaryCall(self, request: SimpleRequest, context: Context) -> SimpleResponse:
            seen.append(context.request_compressed)
            context.set_compression(encoding)
            return SimpleResponse(payload=payload(request.response_size, b"\0"))

        async def FullDuplexCall(
            self, requests: AsyncIterator[StreamingOutputCallRequest], context: Context
        ) -> None:
            context.set_compression(encoding)
            async for request in requests:
                seen.append(context.request_compressed)
                await context.send(StreamingOutputCallResponse(payload=request.payload))

    with trio.fail_after(TIMEOUT):
        async with serving(Service()) as (_, stub):
            request = SimpleRequest(payload=payload(200_000, b"\0"), response_size=300_000)
            response, call = await stub.UnaryCall.with_call(request, compression=encoding)
            assert response.payload.body == b"\0" * 300_000
            assert call.response_compressed and seen == [True]

            # Uncompressed requests get compressed responses all the same.
            response, call = await stub.UnaryCall.with_call(SimpleRequest(response_size=10))
            assert call.response_compressed and seen == [True, False]

            async with stub.FullDuplexCall(compression=encoding) as call:
                for size in (0, 1, 100_000):
                    await call.send(StreamingOutputCallRequest(payload=payload(size, b"z")))
                    reply = await call.receive()
                    assert reply is not None and reply.payload.body == b"z" * size
                    assert call.response_compressed
                await call.done_writing()
                assert await call.receive() is None
            assert seen[2:] == [True, True, True]


# -- metadata rules ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "metadata",
    [
        [("grpc-status", "0")],
        [("grpc-custom", "x")],
        [("content-type", "text/plain")],
        [("te", "trailers")],
        [(":path", "/x")],
        [("Bad Key", "v")],
        [("key", "ünïcode")],
        [("key", "line\nbreak")],
        [("key", b"bytes")],
        [("key-bin", "not bytes")],
    ],
)
async def test_client_refuses_metadata_the_wire_cannot_carry(metadata: list[tuple[str, Any]]) -> None:
    calls = 0

    class Service:
        async def UnaryCall(self, request: SimpleRequest, context: Context) -> SimpleResponse:
            nonlocal calls
            calls += 1
            return SimpleResponse()

    with trio.fail_after(TIMEOUT):
        async with serving(Service()) as (_, stub):
            with pytest.raises(MetadataError):
                await stub.UnaryCall(SimpleRequest(), metadata=metadata)
            assert calls == 0
            await stub.UnaryCall(SimpleRequest())
            assert calls == 1


# -- keepalive ---------------------------------------------------------------------------------------------


def count_ping_acks(monkeypatch: pytest.MonkeyPatch, connection_class: Any, wanted: int) -> trio.Event:
    """An event set once a connection of `connection_class` has received `wanted` PING ACKs."""
    handle = connection_class._dispatch[h2.events.PingAckReceived]
    reached = trio.Event()
    counts: collections.Counter[int] = collections.Counter()

    def counting(self: Any, event: h2.events.PingAckReceived) -> None:
        counts[id(self)] += 1
        if counts[id(self)] >= wanted:
            reached.set()
        handle(self, event)

    table = {**connection_class._dispatch, h2.events.PingAckReceived: counting}
    monkeypatch.setattr(connection_class, "_dispatch", table)  # before any connection reads it
    return reached


async def test_keepalive_pings_are_answered_both_ways(monkeypatch: pytest.MonkeyPatch) -> None:
    class Service:
        async def UnaryCall(self, request: SimpleRequest, context: Context) -> SimpleResponse:
            return SimpleResponse(payload=request.payload)

    settings = ServerSettings(
        keepalive_time=0.02,
        keepalive_timeout=TIMEOUT,
        min_ping_interval_without_data=0,  # the client's PINGs are far too frequent for the default policy
        keepalive_permit_without_calls=True,
    )
    channel_settings = ChannelSettings(keepalive_time=0.02, keepalive_timeout=TIMEOUT)
    client_acks = count_ping_acks(monkeypatch, trio_grpc._client.ClientConnection, 5)
    server_acks = count_ping_acks(monkeypatch, trio_grpc._server.ServerConnection, 5)
    with trio.fail_after(TIMEOUT):
        async with serving(Service(), settings=settings, channel_settings=channel_settings) as (server, stub):
            await stub.UnaryCall(SimpleRequest())
            channel = stub.methods["UnaryCall"]._channel
            client_connection = channel._connection
            (server_connection,) = server._connections
            await client_acks.wait()
            await server_acks.wait()
            response = await stub.UnaryCall(SimpleRequest(payload=payload(4)))
            assert response.payload.body == b"xxxx"
            assert channel._connection is client_connection and client_connection.usable
            assert server._connections == {server_connection}


async def test_max_connection_idle_closes_idle_connections_only() -> None:
    class Service:
        async def UnaryCall(self, request: SimpleRequest, context: Context) -> SimpleResponse:
            await trio.sleep(request.response_size / 1000)  # a call that lasts longer than the idle limit
            return SimpleResponse()

    settings = ServerSettings(max_connection_idle=0.2)
    with trio.fail_after(TIMEOUT):
        async with serving(Service(), settings=settings) as (server, stub):
            channel = stub.methods["UnaryCall"]._channel
            await stub.UnaryCall(SimpleRequest(response_size=500))
            first = channel._connection
            assert first.usable  # busy for 0.5 s: not idle
            await first._writer_finished.wait()  # then idle for 0.2 s: GOAWAY, and the connection closes
            assert not first.usable
            await trio.testing.wait_all_tasks_blocked()
            assert not server._connections
            await stub.UnaryCall(SimpleRequest())  # a new connection, transparently
            assert channel._connection is not first


async def test_closing_in_a_finally_of_a_cancelled_scope_does_not_swallow_what_is_on_its_way_out() -> None:
    # The shape of a lost Ctrl-C: KeyboardInterrupt raised in a connection task whose scope is cancelled,
    # then the socket closed in `finally`. An unshielded close would raise Cancelled, and the scope that
    # catches it would drop the interrupt.
    class Interrupt(Exception):
        pass

    with pytest.raises(Interrupt), trio.CancelScope() as scope:
        scope.cancel()
        try:
            raise Interrupt
        finally:
            await close_at_once(trio.testing.MemorySendStream())


class DrainsABurst:
    """StreamingInputCall waits until the client has sent everything, then counts how often another task
    got to run while it read the buffered burst."""

    def __init__(self) -> None:
        self.release = trio.Event()
        self.other_task_turns = -1

    async def StreamingInputCall(
        self, requests: AsyncIterator[StreamingInputCallRequest], context: Context
    ) -> StreamingInputCallResponse:
        await self.release.wait()
        turns = 0

        async def other_task() -> None:
            nonlocal turns
            while True:
                turns += 1
                await trio.lowlevel.checkpoint()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(other_task)
            await trio.lowlevel.checkpoint()
            before = turns
            count = 0
            async for _ in requests:
                count += 1
            self.other_task_turns = turns - before
            nursery.cancel_scope.cancel()
        return StreamingInputCallResponse(aggregated_payload_size=count)


async def test_reading_a_burst_of_buffered_requests_lets_other_tasks_run() -> None:
    # Every receive is a schedule point, as a Trio channel's is: a chat room's Post handler draining a burst
    # must not starve the tasks delivering those messages to members.
    implementation = DrainsABurst()
    with trio.fail_after(TIMEOUT):
        async with serving(implementation) as (_, stub), stub.StreamingInputCall.open() as call:
            for _ in range(500):
                await call.send(StreamingInputCallRequest(payload=payload(8)))
            await call.done_writing()
            await trio.testing.wait_all_tasks_blocked()  # the whole burst now waits in the server's buffer
            implementation.release.set()
            response = await call.response()
    assert response.aggregated_payload_size == 500
    assert implementation.other_task_turns >= 500
