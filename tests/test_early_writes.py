"""Writes made by a task about to wait for the peer (`Connection.write_before_waiting`) beside the writer's.

A handler or caller that waits for the peer writes the connection's queued frames itself, when the writer is
not mid-write; what the socket does not take at once goes back to the writer. Against real grpcio peers: if
a direct write ever cut into the writer's frames or overtook them, grpcio would see a broken frame or a
message out of order and fail the call.
"""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator
from typing import Any

import grpc  # type: ignore[import-untyped]
import trio

import trio_grpc
from tests.grpcio_stubs import test_pb2_grpc
from tests.interop._proto.grpc.testing import messages_pb2, test_pb2
from trio_grpc import StatusCode

TIMEOUT = 30
SERVICE = test_pb2.DESCRIPTOR.services_by_name["TestService"]
# Small answers go out whole from the handler's own task; 300,000 bytes are more than a loopback socket
# takes at once, so the rest of such a write waits for the writer while other streams queue behind it.
SIZES = (16, 70_000, 300_000, 9, 31_415)
ROUNDS = 15
STREAMS = 4


class Duplex:
    async def FullDuplexCall(self, requests: AsyncIterator[Any], context: Any) -> None:
        """Per request, one response per parameter, each filled with the request's first payload byte."""
        async for request in requests:
            fill = request.payload.body[:1] or b"-"
            for parameters in request.response_parameters:
                body = fill * parameters.size
                await context.send(
                    messages_pb2.StreamingOutputCallResponse(payload=messages_pb2.Payload(body=body))
                )


def _request(fill: bytes, *sizes: int) -> messages_pb2.StreamingOutputCallRequest:
    return messages_pb2.StreamingOutputCallRequest(
        payload=messages_pb2.Payload(body=fill),
        response_parameters=[messages_pb2.ResponseParameters(size=size) for size in sizes],
    )


def _ping_pong_with_grpcio(target: str, fill: bytes, errors: list[str]) -> None:
    """One FullDuplexCall, one request in flight at a time; every answer's size and bytes checked."""
    with grpc.insecure_channel(target) as channel:
        stub = test_pb2_grpc.TestServiceStub(channel)
        outbox: list[messages_pb2.StreamingOutputCallRequest] = []
        ready = threading.Semaphore(0)

        def requests() -> Any:
            for _ in range(ROUNDS * len(SIZES)):
                ready.acquire()
                yield outbox.pop()

        responses = stub.FullDuplexCall(requests(), timeout=TIMEOUT)
        for round_ in range(ROUNDS):
            for size in SIZES:
                outbox.append(_request(fill, size, 5))  # two answers: one whole message after the other
                ready.release()
                for expected in (size, 5):
                    body = next(responses).payload.body
                    if body != fill * expected:
                        errors.append(f"round {round_}: {len(body)} bytes, expected {expected} of {fill!r}")
                        return
        responses.cancel()


async def test_direct_and_writer_writes_never_interleave_against_grpcio() -> None:
    """Several grpcio ping-pong streams on one connection each, several connections, answers large and small:
    every answer arrives whole and in order."""
    errors: list[str] = []
    with trio.fail_after(TIMEOUT):
        server = trio_grpc.Server([trio_grpc.bind_service(SERVICE, Duplex())])
        async with trio.open_nursery() as nursery:
            port = await nursery.start(server.serve_tcp, 0, "127.0.0.1")
            async with trio.open_nursery() as clients:
                for index in range(STREAMS):
                    fill = bytes([ord("a") + index])
                    clients.start_soon(
                        trio.to_thread.run_sync, _ping_pong_with_grpcio, f"127.0.0.1:{port}", fill, errors
                    )
            await server.shutdown(grace=1)
    assert errors == []


async def test_many_streams_on_one_connection_of_ours_keep_their_bytes() -> None:
    """Our client and server both write early: 8 ping-pong streams share one connection, each answer
    checked; then a call cancelled while its large request is partly written leaves the connection usable."""
    with trio.fail_after(TIMEOUT):
        server = trio_grpc.Server([trio_grpc.bind_service(SERVICE, Duplex())])
        async with trio.open_nursery() as nursery:
            port = await nursery.start(server.serve_tcp, 0, "127.0.0.1")
            async with trio_grpc.Channel(f"127.0.0.1:{port}") as channel:
                stub = trio_grpc.Stub(channel, SERVICE)

                async def ping_pong(fill: bytes) -> None:
                    async with stub.FullDuplexCall() as call:
                        for size in SIZES * 3:
                            await call.send(_request(fill, size))
                            response = await call.receive()
                            assert response is not None and response.payload.body == fill * size

                async with trio.open_nursery() as callers:
                    for index in range(8):
                        callers.start_soon(ping_pong, bytes([ord("A") + index]))

                connection = channel._connection
                with trio.move_on_after(0.001) as scope:  # cancelled early in a 4 MiB-ish exchange
                    async with stub.FullDuplexCall() as call:
                        await call.send(_request(b"z" * 3_000_000, 3_000_000))
                        await call.receive()
                if scope.cancelled_caught:
                    assert connection is not None and connection.lost is None

                await ping_pong(b"!")  # the same connection still carries whole messages
                assert channel._connection is connection
            await server.shutdown(grace=1)


async def test_a_call_refused_mid_write_reports_its_status() -> None:
    """A server that answers a unary call before reading its 3 MB request: the early write of the request
    is partial, the writer goes on with it, and the call still ends with the server's status."""

    class Refusing:
        async def UnaryCall(self, request: Any, context: Any) -> Any:
            context.abort(StatusCode.PERMISSION_DENIED, "no")

    with trio.fail_after(TIMEOUT):
        server = trio_grpc.Server([trio_grpc.bind_service(SERVICE, Refusing())])
        async with trio.open_nursery() as nursery:
            port = await nursery.start(server.serve_tcp, 0, "127.0.0.1")
            async with trio_grpc.Channel(f"127.0.0.1:{port}") as channel:
                stub = trio_grpc.Stub(channel, SERVICE)
                for _ in range(3):
                    request = messages_pb2.SimpleRequest(payload=messages_pb2.Payload(body=bytes(3_000_000)))
                    try:
                        await stub.UnaryCall(request)
                    except trio_grpc.RpcError as exc:
                        assert exc.code == StatusCode.PERMISSION_DENIED
                    else:
                        raise AssertionError("the call succeeded")
            await server.shutdown(grace=1)
