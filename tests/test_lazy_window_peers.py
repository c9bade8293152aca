"""Peers that grant flow-control credit late, as real HTTP/2 stacks do, against our server and our client.

nghttp2 (under grpc-js, curl, nginx) sends WINDOW_UPDATE for a stream or for the connection only once half of
that window has been consumed; grpc-go once a quarter has. A sender that waits for room for a whole message
while part of its window is still open then waits forever: the peer is waiting for the very bytes that would
make it grant more. The peer here is h2 driven by hand over a trio socket, in either role, granting credit by
one of those rules and itself sending only what our windows allow (it waits for our WINDOW_UPDATEs). Every RPC
kind runs with the interop spec's sizes and with sizes that hit each rule's stall, in both directions.
The last tests check what a send cut off mid-message leaves on the wire: RST_STREAM(CANCEL), never trailers.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import h2.config
import h2.connection
import h2.events
import h2.exceptions
import pytest
import trio
import trio.testing
from google.protobuf.message import Message

import trio_grpc
from tests.interop import server as interop_server
from tests.interop._proto.grpc.testing import messages_pb2
from tests.raw_h2 import ErrorCodes, Response, grpc_message, read_some, request_headers
from trio_grpc import ChannelSettings, RpcError, ServerSettings, StatusCode
from trio_grpc._transport import _keep_streams_open_after_goaway

TIMEOUT = 5
#: The HTTP/2 default window, which nghttp2 and grpc-go keep for each stream and for the connection.
WINDOW = 65535

UNARY = "/grpc.testing.TestService/UnaryCall"
SERVER_STREAMING = "/grpc.testing.TestService/StreamingOutputCall"
CLIENT_STREAMING = "/grpc.testing.TestService/StreamingInputCall"
FULL_DUPLEX = "/grpc.testing.TestService/FullDuplexCall"
KINDS = ["unary", "server_streaming", "client_streaming", "ping_pong"]

SimpleRequest = messages_pb2.SimpleRequest
SimpleResponse = messages_pb2.SimpleResponse
StreamingInputCallRequest = messages_pb2.StreamingInputCallRequest
StreamingInputCallResponse = messages_pb2.StreamingInputCallResponse
StreamingOutputCallRequest = messages_pb2.StreamingOutputCallRequest
StreamingOutputCallResponse = messages_pb2.StreamingOutputCallResponse


@dataclass(frozen=True)
class Credit:
    """When a peer returns credit: once 1/divisor of a window has been consumed (None: never)."""

    name: str
    divisor: int | None

    def __str__(self) -> str:
        return self.name


NGHTTP2 = Credit("nghttp2", 2)
GRPC_GO = Credit("grpc_go", 4)
NEVER = Credit("never", None)


@dataclass(frozen=True)
class Sizes:
    """Payload sizes of the requests and of the responses, paired in order where a kind pairs them."""

    name: str
    requests: tuple[int, ...]
    responses: tuple[int, ...]

    def __str__(self) -> str:
        return self.name


SIZES = [
    # The interop spec's client_streaming/ping_pong sizes: the fourth request stalls a whole-message sender
    # at nghttp2's rule (29,038 bytes consumed, under half the window, and 45,909 do not fit in the rest).
    Sizes("interop", (27182, 8, 1828, 45904), (31415, 9, 2653, 58979)),
    Sizes("stall_at_half", (30000, 40000), (30000, 40000)),  # what grpc-js asked of our server
    Sizes("stall_at_quarter", (16000, 50000), (16000, 50000)),  # what grpc-go asked of it
]

#: Our own windows: the defaults, and the peers' 65,535 so that the peer's sends wait for our credit too.
OUR_WINDOWS = {"default": {}, "small": {"stream_window_size": WINDOW, "connection_window_size": WINDOW}}


def complete_messages(response: Response) -> list[tuple[int, bytes]]:
    """The whole messages received so far, as (compressed flag, bytes); one still arriving is left out."""
    data, messages, offset = bytes(response.data), [], 0
    while len(data) - offset >= 5:
        end = offset + 5 + int.from_bytes(data[offset + 1 : offset + 5], "big")
        if end > len(data):
            break
        messages.append((data[offset], data[offset + 5 : end]))
        offset = end
    return messages


def body(size: int) -> bytes:
    """A payload that is not all zeros, so that bytes out of place show."""
    return (b"trio-grpc" * (size // 9 + 1))[:size]


class LazyPeer:
    """One HTTP/2 connection made of h2 and a trio socket, either role, with flow control done by hand.

    Credit goes back per `credit`, counted from the bytes received (as if read at once). Sending waits for
    the other side's WINDOW_UPDATE whenever the window is full, never for more than that.
    """

    def __init__(self, socket: trio.SocketStream, *, client_side: bool, credit: Credit) -> None:
        self.h2 = h2.connection.H2Connection(
            h2.config.H2Configuration(client_side=client_side, header_encoding=None)
        )
        # As real peers do, and unlike h2 on its own: the streams in flight go on after a GOAWAY.
        _keep_streams_open_after_goaway(self.h2)
        self.socket = socket
        self.credit = credit
        #: What came on each stream: for a client the response, for a server the request.
        self.streams: dict[int, Response] = {}
        self._uncredited: dict[int, int] = {}  # bytes received and not yet credited; key 0: the connection

    async def start(self) -> None:
        self.h2.initiate_connection()
        await self.flush()

    async def flush(self) -> None:
        data = self.h2.data_to_send()
        if data:
            await self.socket.send_all(data)

    async def receive(self) -> bool:
        """Read once and record what came; False once the other side closed the connection."""
        data = await read_some(self.socket)
        if not data:
            return False
        for event in self.h2.receive_data(data):
            if isinstance(event, h2.events.RequestReceived):
                self.streams[event.stream_id] = Response(headers=event.headers)
                continue
            stream = self.streams.get(getattr(event, "stream_id", 0))
            if stream is None:
                continue
            stream.record(event)
            if isinstance(event, h2.events.DataReceived):
                self._consumed(event.stream_id, event.flow_controlled_length)
        await self.flush()
        return True

    def _consumed(self, stream_id: int, size: int) -> None:
        if self.credit.divisor is None:
            return
        threshold = WINDOW // self.credit.divisor
        for key in (0, stream_id):
            uncredited = self._uncredited.get(key, 0) + size
            if uncredited >= threshold:
                with contextlib.suppress(h2.exceptions.StreamClosedError):  # it has ended: no credit needed
                    self.h2.increment_flow_control_window(uncredited, stream_id=key or None)
                uncredited = 0
            self._uncredited[key] = uncredited

    async def until(self, condition: Callable[[], bool]) -> None:
        while not condition():
            if not await self.receive():
                raise AssertionError("the connection closed")

    async def send(self, stream_id: int, data: bytes, *, end_stream: bool = False) -> None:
        """Send within the window, waiting for WINDOW_UPDATE whenever it is full."""
        while data:
            window = min(self.h2.local_flow_control_window(stream_id), self.h2.max_outbound_frame_size)
            if window <= 0:
                if not await self.receive():
                    raise AssertionError("the connection closed while waiting for window")
                continue
            self.h2.send_data(stream_id, data[:window])
            data = data[window:]
            await self.flush()
        if end_stream:
            self.h2.end_stream(stream_id)
            await self.flush()

    # -- as a client -----------------------------------------------------------------------------------

    async def open(self, path: str, extra: list[tuple[bytes, bytes]] | None = None) -> Response:
        stream_id = self.h2.get_next_available_stream_id()
        self.h2.send_headers(stream_id, request_headers(path, *(extra or [])))
        await self.flush()
        self.streams[stream_id] = response = Response()
        return response

    def stream_id(self, response: Response) -> int:
        (stream_id,) = (key for key, value in self.streams.items() if value is response)
        return stream_id

    async def send_message(self, call: Response, message: Message, *, end_stream: bool = False) -> None:
        await self.send(
            self.stream_id(call), grpc_message(message.SerializeToString()), end_stream=end_stream
        )

    async def finish(self, call: Response) -> Response:
        await self.until(lambda: call.done)
        return call


@asynccontextmanager
async def peer_client(port: int, credit: Credit) -> AsyncIterator[LazyPeer]:
    socket = await trio.open_tcp_stream("127.0.0.1", port)
    async with socket:
        peer = LazyPeer(socket, client_side=True, credit=credit)
        await peer.start()
        yield peer


@asynccontextmanager
async def our_server(**settings: Any) -> AsyncIterator[tuple[trio_grpc.Server, int]]:
    """trio_grpc serving the interop TestService on 127.0.0.1."""
    server = trio_grpc.Server([interop_server.service_binding()], settings=ServerSettings(**settings))
    async with trio.open_nursery() as nursery:
        port = await nursery.start(partial(server.serve_tcp, 0, host="127.0.0.1"))
        yield server, port
        await server.shutdown(grace=0.5)


def expected_responses(sizes: tuple[int, ...]) -> list[tuple[int, bytes]]:
    """The interop server's streaming responses (payloads of zeros), as (compressed flag, bytes)."""
    return [
        (0, StreamingOutputCallResponse(payload=messages_pb2.Payload(body=bytes(size))).SerializeToString())
        for size in sizes
    ]


def assert_ok(call: Response) -> None:
    assert call.reset is None and call.ended
    assert call.grpc_status == StatusCode.OK, call.grpc_message


async def peer_calls_unary(peer: LazyPeer, sizes: Sizes) -> None:
    """One unary call per size pair, one after the other on one connection: its window runs out first."""
    for request_size, response_size in zip(sizes.requests, sizes.responses, strict=True):
        call = await peer.open(UNARY)
        request = SimpleRequest(
            response_size=response_size, payload=messages_pb2.Payload(body=body(request_size))
        )
        await peer.send_message(call, request, end_stream=True)
        await peer.finish(call)
        assert_ok(call)
        response = SimpleResponse(payload=messages_pb2.Payload(body=bytes(response_size)))
        assert complete_messages(call) == [(0, response.SerializeToString())]


async def peer_calls_server_streaming(peer: LazyPeer, sizes: Sizes) -> None:
    call = await peer.open(SERVER_STREAMING)
    parameters = [messages_pb2.ResponseParameters(size=size) for size in sizes.responses]
    await peer.send_message(call, StreamingOutputCallRequest(response_parameters=parameters), end_stream=True)
    await peer.finish(call)
    assert_ok(call)
    assert complete_messages(call) == expected_responses(sizes.responses)


async def peer_calls_client_streaming(peer: LazyPeer, sizes: Sizes) -> None:
    call = await peer.open(CLIENT_STREAMING)
    for size in sizes.requests:
        await peer.send_message(
            call, StreamingInputCallRequest(payload=messages_pb2.Payload(body=body(size)))
        )
    await peer.send(peer.stream_id(call), b"", end_stream=True)
    await peer.finish(call)
    assert_ok(call)
    response = StreamingInputCallResponse(aggregated_payload_size=sum(sizes.requests))
    assert complete_messages(call) == [(0, response.SerializeToString())]


async def peer_calls_ping_pong(peer: LazyPeer, sizes: Sizes) -> None:
    call = await peer.open(FULL_DUPLEX)
    pairs = list(zip(sizes.requests, sizes.responses, strict=True))
    for index, (request_size, response_size) in enumerate(pairs):
        request = StreamingOutputCallRequest(
            response_parameters=[messages_pb2.ResponseParameters(size=response_size)],
            payload=messages_pb2.Payload(body=body(request_size)),
        )
        await peer.send_message(call, request)
        await peer.until(lambda: len(complete_messages(call)) > index or call.done)  # noqa: B023 (awaited here)
        assert complete_messages(call)[index:] == expected_responses((response_size,))
    await peer.send(peer.stream_id(call), b"", end_stream=True)
    await peer.finish(call)
    assert_ok(call)


PEER_CALLS = {
    "unary": peer_calls_unary,
    "server_streaming": peer_calls_server_streaming,
    "client_streaming": peer_calls_client_streaming,
    "ping_pong": peer_calls_ping_pong,
}


@pytest.mark.parametrize("our_windows", list(OUR_WINDOWS))
@pytest.mark.parametrize("sizes", SIZES, ids=str)
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("credit", [NGHTTP2, GRPC_GO], ids=str)
async def test_lazy_client_against_our_server(
    credit: Credit, kind: str, sizes: Sizes, our_windows: str
) -> None:
    with trio.fail_after(TIMEOUT):
        async with our_server(**OUR_WINDOWS[our_windows]) as (_, port), peer_client(port, credit) as peer:
            await PEER_CALLS[kind](peer, sizes)


# -- the peer as a server, our Channel as its client ---------------------------------------------------


@dataclass
class PeerCall:
    """A call the peer server is answering: how far it got."""

    answered: int = 0
    headers_sent: bool = False
    finished: bool = False


@dataclass
class PeerServer:
    """The interop TestService's four kinds, answered by a LazyPeer; what each call brought is kept."""

    credit: Credit
    #: (path, request messages) of every call, once it ended.
    calls: list[tuple[str, list[bytes]]] = field(default_factory=list)
    peers: list[LazyPeer] = field(default_factory=list)

    async def handle(self, socket: trio.SocketStream) -> None:
        peer = LazyPeer(socket, client_side=False, credit=self.credit)
        self.peers.append(peer)
        progress: dict[int, PeerCall] = {}
        with contextlib.suppress(trio.BrokenResourceError):
            await peer.start()
            while True:
                for stream_id, request in list(peer.streams.items()):
                    call = progress.setdefault(stream_id, PeerCall())
                    if not call.finished and request.reset is None:
                        await self._answer(peer, stream_id, request, call)
                if not await peer.receive():
                    return

    async def _answer(self, peer: LazyPeer, stream_id: int, request: Response, call: PeerCall) -> None:
        path = (request.header(b":path") or b"").decode()
        messages = [message for _, message in complete_messages(request)]
        if path == FULL_DUPLEX:
            for message in messages[call.answered :]:
                parsed = StreamingOutputCallRequest.FromString(message)
                for parameters in parsed.response_parameters:
                    response = StreamingOutputCallResponse(
                        payload=messages_pb2.Payload(body=body(parameters.size))
                    )
                    await self._send(peer, stream_id, call, response)
                call.answered += 1
        elif request.ended and path == UNARY:
            parsed_unary = SimpleRequest.FromString(messages[0])
            response_size = parsed_unary.response_size
            await self._send(
                peer, stream_id, call, SimpleResponse(payload=messages_pb2.Payload(body=body(response_size)))
            )
        elif request.ended and path == SERVER_STREAMING:
            for parameters in StreamingOutputCallRequest.FromString(messages[0]).response_parameters:
                response = StreamingOutputCallResponse(
                    payload=messages_pb2.Payload(body=body(parameters.size))
                )
                await self._send(peer, stream_id, call, response)
        elif request.ended and path == CLIENT_STREAMING:
            total = sum(
                len(StreamingInputCallRequest.FromString(message).payload.body) for message in messages
            )
            await self._send(peer, stream_id, call, StreamingInputCallResponse(aggregated_payload_size=total))
        if request.ended:
            # Recorded before the status goes: once the client has it, the test may look at once.
            call.finished = True
            self.calls.append((path, messages))
            peer.h2.send_headers(stream_id, [(b"grpc-status", b"0")], end_stream=True)
            await peer.flush()

    async def _send(self, peer: LazyPeer, stream_id: int, call: PeerCall, message: Message) -> None:
        if not call.headers_sent:
            peer.h2.send_headers(stream_id, [(b":status", b"200"), (b"content-type", b"application/grpc")])
            call.headers_sent = True
        await peer.send(stream_id, grpc_message(message.SerializeToString()))


@asynccontextmanager
async def channel_to_peer(
    credit: Credit, **settings: Any
) -> AsyncIterator[tuple[trio_grpc.Stub, PeerServer]]:
    peer_server = PeerServer(credit)
    async with trio.open_nursery() as nursery:
        (listener, *_) = await nursery.start(partial(trio.serve_tcp, peer_server.handle, 0, host="127.0.0.1"))
        target = f"127.0.0.1:{listener.socket.getsockname()[1]}"
        async with trio_grpc.Channel(target, settings=ChannelSettings(**settings)) as channel:
            yield trio_grpc.Stub(channel, interop_server.TEST_SERVICE), peer_server
        nursery.cancel_scope.cancel()


async def our_calls_unary(stub: trio_grpc.Stub, peer: PeerServer, sizes: Sizes) -> None:
    requests = []
    for request_size, response_size in zip(sizes.requests, sizes.responses, strict=True):
        request = SimpleRequest(
            response_size=response_size, payload=messages_pb2.Payload(body=body(request_size))
        )
        requests.append(request.SerializeToString())
        response = await stub.UnaryCall(request)
        assert response.payload.body == body(response_size)
    assert peer.calls == [(UNARY, [request]) for request in requests]
    assert len(peer.peers) == 1  # one connection for all


async def our_calls_server_streaming(stub: trio_grpc.Stub, peer: PeerServer, sizes: Sizes) -> None:
    parameters = [messages_pb2.ResponseParameters(size=size) for size in sizes.responses]
    async with stub.StreamingOutputCall(StreamingOutputCallRequest(response_parameters=parameters)) as call:
        bodies = [response.payload.body async for response in call]
    assert bodies == [body(size) for size in sizes.responses]
    assert call.code == StatusCode.OK


async def our_calls_client_streaming(stub: trio_grpc.Stub, peer: PeerServer, sizes: Sizes) -> None:
    requests = [
        StreamingInputCallRequest(payload=messages_pb2.Payload(body=body(size))) for size in sizes.requests
    ]
    response = await stub.StreamingInputCall(requests)
    assert response.aggregated_payload_size == sum(sizes.requests)
    assert peer.calls == [(CLIENT_STREAMING, [request.SerializeToString() for request in requests])]


async def our_calls_ping_pong(stub: trio_grpc.Stub, peer: PeerServer, sizes: Sizes) -> None:
    requests = []
    async with stub.FullDuplexCall() as call:
        for request_size, response_size in zip(sizes.requests, sizes.responses, strict=True):
            request = StreamingOutputCallRequest(
                response_parameters=[messages_pb2.ResponseParameters(size=response_size)],
                payload=messages_pb2.Payload(body=body(request_size)),
            )
            requests.append(request.SerializeToString())
            await call.send(request)
            response = await call.receive()
            assert response is not None and response.payload.body == body(response_size)
        await call.done_writing()
        assert await call.receive() is None
    assert call.code == StatusCode.OK
    assert peer.calls == [(FULL_DUPLEX, requests)]


OUR_CALLS = {
    "unary": our_calls_unary,
    "server_streaming": our_calls_server_streaming,
    "client_streaming": our_calls_client_streaming,
    "ping_pong": our_calls_ping_pong,
}


@pytest.mark.parametrize("our_windows", list(OUR_WINDOWS))
@pytest.mark.parametrize("sizes", SIZES, ids=str)
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("credit", [NGHTTP2, GRPC_GO], ids=str)
async def test_our_client_against_lazy_server(
    credit: Credit, kind: str, sizes: Sizes, our_windows: str
) -> None:
    with trio.fail_after(TIMEOUT):
        async with channel_to_peer(credit, **OUR_WINDOWS[our_windows]) as (stub, peer):
            await OUR_CALLS[kind](stub, peer, sizes)


# -- a send cut off mid-message ------------------------------------------------------------------------
# The peer never grants credit: our side sends the window's worth of a larger message and waits.

BIG = 100_000


async def test_handler_cut_off_mid_message_by_its_deadline_resets_the_stream() -> None:
    with trio.fail_after(TIMEOUT):
        async with our_server() as (_, port), peer_client(port, NEVER) as peer:
            call = await peer.open(UNARY, [(b"grpc-timeout", b"200m")])
            await peer.send_message(call, SimpleRequest(response_size=BIG), end_stream=True)
            await peer.finish(call)
    assert call.header(b":status") == b"200"
    assert len(call.data) == WINDOW  # what the window allowed, and then nothing but the reset
    assert call.reset == ErrorCodes.CANCEL
    assert call.trailers is None and not call.ended


async def test_shutdown_grace_running_out_mid_message_resets_the_stream() -> None:
    with trio.fail_after(TIMEOUT):
        async with our_server() as (server, port), peer_client(port, NEVER) as peer:
            call = await peer.open(UNARY)
            await peer.send_message(call, SimpleRequest(response_size=BIG), end_stream=True)
            await peer.until(lambda: len(call.data) == WINDOW)
            async with trio.open_nursery() as nursery:
                nursery.start_soon(server.shutdown, 0.1)
                await peer.finish(call)
    assert len(call.data) == WINDOW
    assert call.reset == ErrorCodes.CANCEL
    assert call.trailers is None and not call.ended


async def test_our_client_reports_a_response_cut_off_by_shutdown_as_cancelled() -> None:
    """Our client reads nothing and holds back credit: the server's second response stops mid-message."""
    settings = ChannelSettings(
        stream_window_size=WINDOW, connection_window_size=WINDOW, stream_read_buffer_size=1
    )
    parameters = [messages_pb2.ResponseParameters(size=size) for size in (1000, BIG)]
    with trio.fail_after(TIMEOUT):
        async with (
            our_server() as (server, port),
            trio_grpc.Channel(f"127.0.0.1:{port}", settings=settings) as channel,
        ):
            stub = trio_grpc.Stub(channel, interop_server.TEST_SERVICE)
            async with stub.StreamingOutputCall(
                StreamingOutputCallRequest(response_parameters=parameters)
            ) as call:
                await trio.testing.wait_all_tasks_blocked()  # the server waits for window, mid-message
                await server.shutdown(grace=0)
                first = await call.receive()
                assert first is not None and first.payload.body == bytes(1000)
                with pytest.raises(RpcError) as caught:
                    await call.receive()
    assert caught.value.code == StatusCode.CANCELLED


def big_request() -> StreamingInputCallRequest:
    return StreamingInputCallRequest(payload=messages_pb2.Payload(body=body(BIG)))


def the_one_request(peer_server: PeerServer) -> Response:
    (peer,) = peer_server.peers
    (request,) = peer.streams.values()
    return request


async def test_our_client_past_its_deadline_mid_message_resets_the_stream() -> None:
    with trio.fail_after(TIMEOUT):
        async with channel_to_peer(NEVER) as (stub, peer_server):
            with pytest.raises(RpcError) as caught:
                await stub.StreamingInputCall([big_request()], timeout=0.2)
            assert caught.value.code == StatusCode.DEADLINE_EXCEEDED
            await trio.testing.wait_all_tasks_blocked()  # the peer has read what we sent
            request = the_one_request(peer_server)
    assert len(request.data) == WINDOW
    assert request.reset == ErrorCodes.CANCEL and not request.ended


async def cancel_once_all_blocked(scope: trio.CancelScope) -> None:
    await trio.testing.wait_all_tasks_blocked()
    scope.cancel()


async def test_our_client_cancelled_mid_message_resets_the_stream_and_sends_no_more() -> None:
    with trio.fail_after(TIMEOUT):
        async with channel_to_peer(NEVER) as (stub, peer_server):
            async with stub.StreamingInputCall.open() as call, trio.open_nursery() as nursery:
                with trio.CancelScope() as sending:
                    nursery.start_soon(cancel_once_all_blocked, sending)
                    await call.send(big_request())
                assert sending.cancelled_caught
                # Whoever catches the cancellation and carries on gets an error, not a corrupt stream.
                with pytest.raises(RpcError) as caught:
                    await call.send(StreamingInputCallRequest())
                assert caught.value.code == StatusCode.CANCELLED
            await trio.testing.wait_all_tasks_blocked()
            request = the_one_request(peer_server)
    assert len(request.data) == WINDOW
    assert request.reset == ErrorCodes.CANCEL and not request.ended


async def send_each(call: trio_grpc.Call, requests: list[StreamingInputCallRequest]) -> None:
    for request in requests:
        await call.send(request)


async def test_sends_from_two_tasks_on_one_stream_take_turns() -> None:
    """Each message goes out whole before another starts, also when one waits for window half-way."""
    requests = [
        StreamingInputCallRequest(payload=messages_pb2.Payload(body=bytes([65 + index]) * 50_000))
        for index in range(6)
    ]
    with trio.fail_after(TIMEOUT):
        async with channel_to_peer(NGHTTP2) as (stub, peer_server), stub.StreamingInputCall.open() as call:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(send_each, call, requests[0::2])
                nursery.start_soon(send_each, call, requests[1::2])
            response = await call.response()
    assert response == StreamingInputCallResponse(aggregated_payload_size=6 * 50_000)
    ((_, received),) = peer_server.calls
    assert sorted(received) == sorted(request.SerializeToString() for request in requests)


async def test_half_close_waits_for_a_message_another_task_has_half_sent() -> None:
    """done_writing() must not put END_STREAM after half a message another task is still sending."""
    half_closed = trio.Event()

    async def half_close(call: trio_grpc.Call) -> None:
        await call.done_writing()
        half_closed.set()

    with trio.fail_after(TIMEOUT):
        async with channel_to_peer(NEVER) as (stub, peer_server):
            async with stub.StreamingInputCall.open() as call, trio.open_nursery() as nursery:
                nursery.start_soon(call.send, big_request())
                await trio.testing.wait_all_tasks_blocked()  # the send waits for window, half-way
                nursery.start_soon(half_close, call)
                await trio.testing.wait_all_tasks_blocked()
                assert not half_closed.is_set()  # it waits its turn behind the half-sent message
                nursery.cancel_scope.cancel()
            await trio.testing.wait_all_tasks_blocked()
            request = the_one_request(peer_server)
    assert len(request.data) == WINDOW
    assert not request.ended  # no END_STREAM after half a message: the call was reset instead
    assert request.reset == ErrorCodes.CANCEL
