"""The server's send path for many small messages: what its fast path (a message queued whole, with no wait)
must still guarantee.

- A send cancelled before it begins sends nothing (it checks for cancellation before queueing).
- A handler that sends without ever having to wait still lets the writer and other tasks run, once a batch
  worth a write has gathered, and a deadline or the client leaving still ends it.
- A peer that does not read stops the sender at the write buffer, however small its messages.
Each test is bounded by trio.fail_after; none sleeps to wait for something.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial
from typing import Any

import h2.connection
import h2.events
import h2.settings
import pytest
import trio
import trio.testing

import trio_grpc
from tests.interop._proto.grpc.testing import messages_pb2, test_pb2
from tests.raw_h2 import grpc_message, permissive_config, request_headers
from trio_grpc import RpcError, ServerSettings, StatusCode

SERVICE = test_pb2.DESCRIPTOR.services_by_name["TestService"]
TIMEOUT = 10
KiB = 1024
SIZE = 100
#: Sends a handler makes in a burst that fits the client's default windows (1 MiB) and write buffer (1 MiB).
BURST = 4000
STREAMING_OUTPUT = "/grpc.testing.TestService/StreamingOutputCall"


def response(index: int) -> messages_pb2.StreamingOutputCallResponse:
    return messages_pb2.StreamingOutputCallResponse(payload=messages_pb2.Payload(body=b"%0100d" % index))


def request(*sizes: int) -> messages_pb2.StreamingOutputCallRequest:
    return messages_pb2.StreamingOutputCallRequest(
        response_parameters=[messages_pb2.ResponseParameters(size=size) for size in sizes]
    )


class Service:
    """StreamingOutputCall does what the request's first response size names (see `StreamingOutputCall`)."""

    def __init__(self) -> None:
        self.sent = 0
        self.cancelled = trio.Event()
        self.sibling_ran_after: int | None = None
        self.caught: list[str] = []

    async def StreamingOutputCall(
        self, request: messages_pb2.StreamingOutputCallRequest, context: trio_grpc.ServicerContext
    ) -> None:
        mode = request.response_parameters[0].size
        try:
            if mode == 1:
                await self._sends_in_cancelled_scopes(context)
            elif mode == 2:
                await self._burst_beside_a_sibling(context)
            else:
                while True:  # until cancelled
                    await context.send(response(self.sent))
                    self.sent += 1
        except trio.Cancelled:
            self.cancelled.set()
            raise

    async def _sends_in_cancelled_scopes(self, context: trio_grpc.ServicerContext) -> None:
        """Message 0, then 1 by `send` and 2 by `send_encoded`, each in a scope cancelled before, then 3."""
        await context.send(response(0))
        with trio.CancelScope() as scope:
            scope.cancel()
            await context.send(response(1))
        if scope.cancelled_caught:
            self.caught.append("send")
        with trio.CancelScope() as scope:
            scope.cancel()
            await context.send_encoded(context.encode(response(2)))
        if scope.cancelled_caught:
            self.caught.append("send_encoded")
        await context.send(response(3))

    async def _burst_beside_a_sibling(self, context: trio_grpc.ServicerContext) -> None:
        """BURST sends, none of which has to wait; a task started first notes how many had been sent when it
        first ran."""

        async def sibling() -> None:
            self.sibling_ran_after = self.sent

        async with trio.open_nursery() as nursery:
            nursery.start_soon(sibling)
            for index in range(BURST):
                await context.send(response(index))
                self.sent += 1


@asynccontextmanager
async def serving(
    service: Service, settings: ServerSettings | None = None
) -> AsyncIterator[tuple[trio_grpc.Server, int]]:
    server = trio_grpc.Server([trio_grpc.bind_service(SERVICE, service)], settings=settings)
    async with trio.open_nursery() as nursery:
        port = await nursery.start(partial(server.serve_tcp, 0, host="127.0.0.1"))
        yield server, port
        await server.shutdown(grace=1)


async def receive_all(port: int, call_request: messages_pb2.StreamingOutputCallRequest) -> list[Any]:
    async with trio_grpc.Channel(f"127.0.0.1:{port}") as channel:
        stub = trio_grpc.Stub(channel, SERVICE)
        async with stub.StreamingOutputCall(call_request) as call:
            return [message async for message in call]


async def test_a_send_cancelled_before_it_begins_sends_nothing() -> None:
    """Trio's rule for its own sends: one that raises Cancelled did not happen. (A send that queued first and
    checked after would let message 1 and 2 out, then raise.)"""
    service = Service()
    with trio.fail_after(TIMEOUT):
        async with serving(service) as (_, port):
            received = await receive_all(port, request(1))
    assert [message.payload.body for message in received] == [
        response(0).payload.body,
        response(3).payload.body,
    ]
    assert service.caught == ["send", "send_encoded"]


async def test_sends_that_never_wait_still_let_the_writer_and_other_tasks_run() -> None:
    """BURST messages fit the windows and the write buffer, so no send has to wait; still, the handler yields
    once a batch worth a write (64 KiB, about 600 of these messages) is queued, not only at its end. The
    sibling, started during the handler's turn, runs in the next turn the scheduler gives, before or after
    the handler's next batch: after at most about 1,200 messages."""
    service = Service()
    with trio.fail_after(TIMEOUT):
        async with serving(service) as (_, port):
            received = await receive_all(port, request(2))
    assert len(received) == BURST
    assert service.sibling_ran_after is not None
    assert service.sibling_ran_after < BURST // 2


@pytest.mark.parametrize("how", ["deadline", "client leaves"])
async def test_a_handler_sending_without_waiting_is_still_cancelled(how: str) -> None:
    service = Service()
    with trio.fail_after(TIMEOUT):
        async with serving(service) as (_, port), trio_grpc.Channel(f"127.0.0.1:{port}") as channel:
            stub = trio_grpc.Stub(channel, SERVICE)
            if how == "deadline":
                with pytest.raises(RpcError) as caught:
                    async with stub.StreamingOutputCall(request(0), timeout=0.5) as call:
                        async for _ in call:
                            pass
                assert caught.value.code == StatusCode.DEADLINE_EXCEEDED
            else:
                async with stub.StreamingOutputCall(request(0)) as call:
                    async for _ in call:
                        if service.sent > 2 * BURST:
                            break  # out of the call: RST_STREAM(CANCEL)
                assert call.code == StatusCode.CANCELLED
            await service.cancelled.wait()
            # The connection carries on.
            async with stub.StreamingOutputCall(request(1)) as call:
                assert len([message async for message in call]) == 2


async def test_small_messages_to_a_peer_that_never_reads_stop_at_the_write_buffer() -> None:
    """Windows as large as HTTP/2 allows and a socket nobody reads: the sender of 100 B messages, which
    never has to wait for window, stops once `write_buffer_size` is queued (plus one message)."""
    write_buffer_size = 64 * KiB
    service = Service()
    big_window = {h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 2**31 - 1}
    with trio.fail_after(TIMEOUT):
        async with serving(service, ServerSettings(write_buffer_size=write_buffer_size)) as (server, port):
            socket = await trio.open_tcp_stream("127.0.0.1", port)
            async with socket:
                client = h2.connection.H2Connection(permissive_config(client_side=True))
                client.initiate_connection()
                client.update_settings(big_window)
                client.increment_flow_control_window(2**31 - 1 - 65535)
                stream_id = client.get_next_available_stream_id()
                client.send_headers(stream_id, request_headers(STREAMING_OUTPUT))
                client.send_data(stream_id, grpc_message(request(0).SerializeToString()), end_stream=True)
                await socket.send_all(client.data_to_send())
                # Read until the server has taken our SETTINGS (its ACK) and the first message came.
                while not any(
                    isinstance(event, h2.events.DataReceived)
                    for event in client.receive_data(await socket.receive_some(65536))
                ):
                    pass
                # Now never read again. The handler stops once the socket buffers and our queue are full.
                await trio.testing.wait_all_tasks_blocked()
                (connection,) = server._connections
                sent = service.sent
                assert write_buffer_size < connection._outgoing_size <= write_buffer_size + 2 * SIZE
                await trio.testing.wait_all_tasks_blocked()
                assert service.sent == sent and not service.cancelled.is_set()
            # Closing the socket ends the call.
            await service.cancelled.wait()
