"""Memory comes back the moment a connection closes, without the cyclic GC.

An idle server may never reach a full collection, so anything a closed stream or connection leaves in a
reference cycle (a stored exception whose traceback holds the stream, a dict of bound methods) holds its
buffers for good. Each test runs with `gc.disable()` and checks weak references to the connection, its streams
and its contexts.
"""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from functools import partial
from typing import Any

import h2.config
import h2.connection
import h2.events
import pytest
import trio
import trio.testing

import trio_grpc
from tests.interop._proto.grpc.testing import messages_pb2, test_pb2
from trio_grpc import RpcError, StatusCode
from trio_grpc._server import ServerConnection

SERVICE = test_pb2.DESCRIPTOR.services_by_name["TestService"]
TIMEOUT = 10
MiB = 1024 * 1024


@contextmanager
def cyclic_gc_disabled() -> Iterator[None]:
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


class Recorder:
    """Handlers that keep weak references to their context and stream, and what the server holds."""

    def __init__(self) -> None:
        self.refs: list[weakref.ref[Any]] = []
        self.entered = trio.Event()

    def keep(self, context: trio_grpc.ServicerContext) -> None:
        self.refs += [weakref.ref(context), weakref.ref(context._stream), weakref.ref(context._connection)]
        self.entered.set()

    async def UnaryCall(
        self, request: messages_pb2.SimpleRequest, context: trio_grpc.ServicerContext
    ) -> messages_pb2.SimpleResponse:
        self.keep(context)
        if request.response_status.code:
            raise RpcError(StatusCode(request.response_status.code), "as asked")
        return messages_pb2.SimpleResponse()

    async def StreamingInputCall(
        self, requests: Any, context: trio_grpc.ServicerContext
    ) -> messages_pb2.StreamingInputCallResponse:
        self.keep(context)
        size = 0
        async for request in requests:
            size += len(request.payload.body)
        return messages_pb2.StreamingInputCallResponse(aggregated_payload_size=size)

    def dead(self) -> list[str]:
        return [repr(ref()) for ref in self.refs if ref() is not None]


async def ping_answered(socket: trio.SocketStream, client: h2.connection.H2Connection) -> None:
    while True:
        data = await socket.receive_some(65536)
        assert data, "the server closed the connection"
        if any(isinstance(event, h2.events.PingAckReceived) for event in client.receive_data(data)):
            return


@pytest.fixture
def disconnected(monkeypatch: pytest.MonkeyPatch) -> trio.Event:
    """Set when a server connection's `run` has returned."""
    event = trio.Event()
    run = ServerConnection.run

    async def run_then_signal(self: ServerConnection) -> None:
        try:
            await run(self)
        finally:
            event.set()

    monkeypatch.setattr(ServerConnection, "run", run_then_signal)
    return event


async def wait_until_disconnected(server: trio_grpc.Server, disconnected: trio.Event) -> None:
    await disconnected.wait()
    await trio.testing.wait_all_tasks_blocked()  # the accept loop's task lets go of the connection
    assert not server._connections


async def calls_of_every_outcome(port: int, recorder: Recorder) -> weakref.ref[Any]:
    """OK, an error status, and a call left half-way; a weak reference to the channel's connection."""
    async with trio_grpc.Channel(f"127.0.0.1:{port}") as channel:
        stub = trio_grpc.Stub(channel, SERVICE)
        await stub.UnaryCall(messages_pb2.SimpleRequest())
        try:
            await stub.UnaryCall(messages_pb2.SimpleRequest(response_status=messages_pb2.EchoStatus(code=5)))
        except RpcError as exc:
            assert exc.code == StatusCode.NOT_FOUND
        async with stub.StreamingInputCall.open() as call:  # left half-way: RST_STREAM(CANCEL)
            await call.send(messages_pb2.StreamingInputCallRequest())
            await recorder.entered.wait()
        return weakref.ref(channel._connection)


async def test_connection_streams_and_contexts_die_with_the_connection(disconnected: trio.Event) -> None:
    recorder = Recorder()
    server = trio_grpc.Server([trio_grpc.bind_service(SERVICE, recorder)])
    with cyclic_gc_disabled(), trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            port = await nursery.start(partial(server.serve_tcp, 0, host="127.0.0.1"))
            recorder.refs.append(await calls_of_every_outcome(port, recorder))
            await wait_until_disconnected(server, disconnected)
            assert recorder.dead() == []
            await server.shutdown()


async def test_a_partly_received_message_is_freed_when_its_connection_closes(
    disconnected: trio.Event,
) -> None:
    """The issue's case: a 4 MiB length prefix, most of the body, then the connection closes."""
    recorder = Recorder()
    server = trio_grpc.Server([trio_grpc.bind_service(SERVICE, recorder)])
    with cyclic_gc_disabled(), trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            port = await nursery.start(partial(server.serve_tcp, 0, host="127.0.0.1"))
            socket = await trio.open_tcp_stream("127.0.0.1", port)
            client = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
            client.initiate_connection()
            client.send_headers(
                1,
                [
                    (":method", "POST"),
                    (":scheme", "http"),
                    (":path", "/grpc.testing.TestService/StreamingInputCall"),
                    (":authority", "test"),
                    ("content-type", "application/grpc"),
                    ("te", "trailers"),
                ],
            )
            body = b"\x00" + (4 * MiB - 16).to_bytes(4, "big") + bytes(60000)
            for offset in range(0, len(body), 16000):
                client.send_data(1, body[offset : offset + 16000])
            client.ping(b"received")  # answered once the server has read all that comes before it
            await socket.send_all(client.data_to_send())
            await recorder.entered.wait()
            await ping_answered(socket, client)
            assert server._memory_budget.used >= 60000  # the partial body, held
            await socket.aclose()
            await wait_until_disconnected(server, disconnected)
            assert recorder.dead() == []
            assert server._memory_budget.used == 0
            await server.shutdown()
