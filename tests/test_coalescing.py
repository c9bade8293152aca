"""Messages queued on one stream leave many to a DATA frame; a lone message leaves without waiting for more.

The peer on the other side is raw h2, so that the test sees the frames themselves.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import h2.connection
import h2.events
import trio

import trio_grpc
from tests.interop._proto.grpc.testing import messages_pb2, test_pb2
from tests.raw_h2 import grpc_message, permissive_config

TIMEOUT = 10
MESSAGES = 500
SIZE = 100
STREAMING_OUTPUT = "/grpc.testing.TestService/StreamingOutputCall"
#: A StreamingOutputCall request's headers, as a raw h2 client sends them.
STREAMING_REQUEST_HEADERS = [
    (b":method", b"POST"),
    (b":scheme", b"http"),
    (b":path", STREAMING_OUTPUT.encode()),
    (b":authority", b"localhost"),
    (b"te", b"trailers"),
    (b"content-type", b"application/grpc"),
]
SERVICE = test_pb2.DESCRIPTOR.services_by_name["TestService"]


def response_body() -> bytes:
    response = messages_pb2.StreamingOutputCallResponse(payload=messages_pb2.Payload(body=bytes(SIZE)))
    return grpc_message(response.SerializeToString())


class Service:
    def __init__(self) -> None:
        self.may_finish = trio.Event()

    async def StreamingOutputCall(
        self, request: messages_pb2.StreamingOutputCallRequest, context: Any
    ) -> None:
        """As many responses as asked for, in a loop; then waits until the test lets it finish."""
        for parameters in request.response_parameters:
            await context.send(
                messages_pb2.StreamingOutputCallResponse(
                    payload=messages_pb2.Payload(body=bytes(parameters.size))
                )
            )
        await self.may_finish.wait()

    async def StreamingInputCall(self, requests: AsyncIterator[Any], context: Any) -> Any:
        total = sum([len(request.payload.body) async for request in requests])
        return messages_pb2.StreamingInputCallResponse(aggregated_payload_size=total)


async def open_raw_client(port: int) -> tuple[trio.SocketStream, h2.connection.H2Connection]:
    socket = await trio.open_tcp_stream("127.0.0.1", port)
    conn = h2.connection.H2Connection(permissive_config(client_side=True))
    conn.initiate_connection()
    await socket.send_all(conn.data_to_send())
    return socket, conn


async def read_data(
    socket: trio.SocketStream, conn: h2.connection.H2Connection, stream_id: int, size: int
) -> tuple[bytes, int]:
    """Read until `size` bytes of DATA came on the stream: (the bytes, how many DATA frames carried them)."""
    data, frames = bytearray(), 0
    while len(data) < size:
        for event in conn.receive_data(await socket.receive_some(65536)):
            if isinstance(event, h2.events.DataReceived) and event.stream_id == stream_id:
                data += event.data
                frames += 1
                conn.acknowledge_received_data(event.flow_controlled_length, stream_id)
        await socket.send_all(conn.data_to_send())
    return bytes(data), frames


async def server_streaming(port: int, messages: int) -> tuple[bytes, int]:
    socket, conn = await open_raw_client(port)
    async with socket:
        request = messages_pb2.StreamingOutputCallRequest(
            response_parameters=[messages_pb2.ResponseParameters(size=SIZE)] * messages
        )
        stream_id = conn.get_next_available_stream_id()
        conn.send_headers(stream_id, STREAMING_REQUEST_HEADERS)
        conn.send_data(stream_id, grpc_message(request.SerializeToString()), end_stream=True)
        await socket.send_all(conn.data_to_send())
        return await read_data(socket, conn, stream_id, messages * len(response_body()))


async def test_messages_sent_in_a_loop_share_data_frames() -> None:
    service = Service()
    server = trio_grpc.Server([trio_grpc.bind_service(SERVICE, service)])
    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            port = await nursery.start(server.serve_tcp, 0)
            data, frames = await server_streaming(port, MESSAGES)
            assert data == response_body() * MESSAGES  # every message, whole and in order
            # 500 x 106 bytes fit in 4 frames of 16 KiB; one frame per message would be 500.
            assert frames <= 10, frames
            service.may_finish.set()
            nursery.cancel_scope.cancel()


async def test_a_lone_message_leaves_without_waiting_for_more() -> None:
    """The handler sends one message and then waits for the test: the message must come all the same."""
    service = Service()
    server = trio_grpc.Server([trio_grpc.bind_service(SERVICE, service)])
    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            port = await nursery.start(server.serve_tcp, 0)
            data, frames = await server_streaming(port, 1)
            assert (data, frames) == (response_body(), 1)
            service.may_finish.set()
            nursery.cancel_scope.cancel()


async def test_client_requests_sent_in_a_loop_share_data_frames() -> None:
    """A client-streaming call against a raw h2 server that counts the DATA frames of the requests."""
    request = messages_pb2.StreamingInputCallRequest(payload=messages_pb2.Payload(body=bytes(SIZE)))
    body = grpc_message(request.SerializeToString())
    counted: list[tuple[bytes, int]] = []
    ended = trio.Event()

    async def serve(socket: trio.SocketStream) -> None:
        conn = h2.connection.H2Connection(permissive_config(client_side=False))
        conn.initiate_connection()
        await socket.send_all(conn.data_to_send())
        data, frames = bytearray(), 0
        while True:
            received = await socket.receive_some(65536)
            if not received:
                return
            for event in conn.receive_data(received):
                if isinstance(event, h2.events.DataReceived):
                    data += event.data
                    frames += 1
                    conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
                elif isinstance(event, h2.events.StreamEnded):
                    counted.append((bytes(data), frames))
                    ended.set()
                    conn.send_headers(
                        event.stream_id,
                        [
                            (b":status", b"200"),
                            (b"content-type", b"application/grpc"),
                            (b"grpc-status", b"0"),
                        ],
                        end_stream=True,
                    )
            await socket.send_all(conn.data_to_send())

    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            listeners = await nursery.start(trio.serve_tcp, serve, 0)
            port = listeners[0].socket.getsockname()[1]
            async with trio_grpc.Channel(f"127.0.0.1:{port}") as channel:
                stub = trio_grpc.Stub(channel, SERVICE)
                async with stub.StreamingInputCall.open() as call:
                    for _ in range(MESSAGES):
                        await call.send(request)
                    await call.done_writing()
                    await ended.wait()
            [(data, frames)] = counted
            assert data == body * MESSAGES
            assert frames <= 10, frames
            nursery.cancel_scope.cancel()


async def test_large_messages_are_cut_at_the_peers_frame_size_within_its_windows() -> None:
    """Messages larger than a frame and than the windows (the peer's defaults: 16,384-byte frames, 65,535-
    byte windows, credit returned frame by frame): the transport writes these DATA frames itself, and the
    peer's h2, which refuses an oversize frame or one past its window, takes every byte in order."""
    sizes = [100_000, 3, 70_000, 16_379, 200_000]  # 16,379 + 5 bytes of prefix: exactly one frame
    service = Service()
    server = trio_grpc.Server([trio_grpc.bind_service(SERVICE, service)])
    expected = b"".join(
        grpc_message(
            messages_pb2.StreamingOutputCallResponse(
                payload=messages_pb2.Payload(body=bytes(size))
            ).SerializeToString()
        )
        for size in sizes
    )
    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            port = await nursery.start(server.serve_tcp, 0)
            socket, conn = await open_raw_client(port)
            async with socket:
                request = messages_pb2.StreamingOutputCallRequest(
                    response_parameters=[messages_pb2.ResponseParameters(size=size) for size in sizes]
                )
                stream_id = conn.get_next_available_stream_id()
                conn.send_headers(stream_id, STREAMING_REQUEST_HEADERS)
                conn.send_data(stream_id, grpc_message(request.SerializeToString()), end_stream=True)
                await socket.send_all(conn.data_to_send())
                data, frames = await read_data(socket, conn, stream_id, len(expected))
            assert data == expected
            assert frames >= len(expected) // 16384
            service.may_finish.set()
            nursery.cancel_scope.cancel()
