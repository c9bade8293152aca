"""HTTP/2 peers made of h2 and a trio socket, for tests that need to send what no real peer would.

h2's checks of what it sends are turned off (`permissive_config`), so a test can send any header, and the
peer does nothing on its own beyond what h2 does (SETTINGS and PING ACKs, connection-level flow control).
`tests/test_hostile_peers.py` builds a raw client on it; `RawServer` here is the raw server.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from functools import partial

import h2.config
import h2.connection
import h2.events
import h2.exceptions
import trio
from hyperframe.frame import ContinuationFrame, HeadersFrame


def frame(body: bytes, flag: int = 0) -> bytes:
    """One length-prefixed message as it goes in DATA frames."""
    return bytes([flag]) + len(body).to_bytes(4, "big") + body


def permissive_config(*, client_side: bool) -> h2.config.H2Configuration:
    return h2.config.H2Configuration(
        client_side=client_side,
        header_encoding=None,
        validate_outbound_headers=False,
        normalize_outbound_headers=False,
    )


class ServerPeer:
    """One connection of a RawServer: its h2 state, and what the tests' answers need to act on it."""

    def __init__(self, socket: trio.SocketStream) -> None:
        self.socket = socket
        self.h2 = h2.connection.H2Connection(permissive_config(client_side=False))
        self.resets: list[tuple[int, int]] = []  # (stream id, error code) of the client's RST_STREAMs
        self.closed_by_client = False
        self._send_lock = trio.Lock()
        self._window_lot = trio.lowlevel.ParkingLot()

    async def flush(self) -> None:
        """Send what h2 has queued (answer tasks and the reader share the socket)."""
        await self.send_raw(b"")

    async def send_raw(self, frames: bytes) -> None:
        """Send frames built by hand, after what h2 has queued."""
        async with self._send_lock:
            data = self.h2.data_to_send() + frames
            if data:
                await self.socket.send_all(data)

    async def wait_for_window(self) -> None:
        """Until the client sends a WINDOW_UPDATE or resets a stream."""
        await self._window_lot.park()

    async def send_raw_headers(
        self, stream_id: int, headers: list[tuple[bytes, bytes]], *, end_stream: bool = False
    ) -> None:
        """HEADERS (and CONTINUATION) built by hand, of literal fields that do not touch the HPACK table,
        not Huffman-coded: h2 would take seconds to encode a field of megabytes."""
        block = b"".join(
            b"\x00" + _hpack_length(name) + name + _hpack_length(value) + value for name, value in headers
        )
        size = self.h2.max_outbound_frame_size
        chunks = [block[offset : offset + size] for offset in range(0, len(block), size)]
        frames = [
            HeadersFrame(stream_id, chunks[0]),
            *(ContinuationFrame(stream_id, chunk) for chunk in chunks[1:]),
        ]
        frames[-1].flags.add("END_HEADERS")
        if end_stream:
            frames[0].flags.add("END_STREAM")
        await self.send_raw(b"".join(frame.serialize() for frame in frames))

    async def drop(self) -> None:
        """Close the TCP connection at once, without GOAWAY."""
        await trio.aclose_forcefully(self.socket)

    def _handle(self, event: h2.events.Event) -> None:
        if isinstance(event, h2.events.StreamReset):
            self.resets.append((event.stream_id, event.error_code))
            self._window_lot.unpark_all()
        elif isinstance(event, h2.events.WindowUpdated):
            self._window_lot.unpark_all()
        elif isinstance(event, h2.events.DataReceived):
            self.h2.acknowledge_received_data(event.flow_controlled_length, event.stream_id)


def _hpack_length(data: bytes) -> bytes:
    """The length of a literal not Huffman-coded: an HPACK integer with a 7-bit prefix (RFC 7541 5.1)."""
    length = len(data)
    if length < 127:
        return bytes([length])
    encoded, length = bytearray([127]), length - 127
    while length >= 128:
        encoded.append(length % 128 + 128)
        length //= 128
    encoded.append(length)
    return bytes(encoded)


#: How a RawServer answers one request: (the connection, stream id, request headers). It may await.
Answer = Callable[[ServerPeer, int, dict[bytes, bytes]], Awaitable[None]]


class RawServer:
    """A server that answers every request with `answer`, in a task of its own per request."""

    def __init__(self, answer: Answer, *, send_settings: bool = True) -> None:
        self.answer = answer
        self.send_settings = send_settings
        self.target = ""
        self.peers: list[ServerPeer] = []
        self.requests: list[tuple[int, dict[bytes, bytes]]] = []  # (stream id, headers), all connections
        self._requests_lot = trio.lowlevel.ParkingLot()

    @property
    def resets(self) -> list[tuple[int, int]]:
        return [reset for peer in self.peers for reset in peer.resets]

    async def wait_for_requests(self, count: int) -> None:
        while len(self.requests) < count:
            await self._requests_lot.park()

    async def _serve(self, socket: trio.SocketStream) -> None:
        peer = ServerPeer(socket)
        self.peers.append(peer)
        if not self.send_settings:  # accepts the connection, reads, never answers: not even SETTINGS
            with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
                while await socket.receive_some(65536):
                    pass
            peer.closed_by_client = True
            return
        peer.h2.initiate_connection()
        async with trio.open_nursery() as nursery:
            await self._read(peer, nursery)
            nursery.cancel_scope.cancel()

    async def _read(self, peer: ServerPeer, nursery: trio.Nursery) -> None:
        try:
            await peer.flush()
            while data := await peer.socket.receive_some(65536):
                for event in peer.h2.receive_data(data):
                    if isinstance(event, h2.events.RequestReceived):
                        headers = dict(event.headers)
                        self.requests.append((event.stream_id, headers))
                        self._requests_lot.unpark_all()
                        nursery.start_soon(self._answer, peer, event.stream_id, headers)
                    peer._handle(event)
                await peer.flush()
            peer.closed_by_client = True
        except (trio.BrokenResourceError, trio.ClosedResourceError):  # an answer dropped the connection
            pass

    async def _answer(self, peer: ServerPeer, stream_id: int, headers: dict[bytes, bytes]) -> None:
        with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):  # connection gone
            try:
                await self.answer(peer, stream_id, headers)
            except h2.exceptions.StreamClosedError:  # the stream is over: what was sent before still goes
                pass
            except h2.exceptions.ProtocolError:
                # h2 refused what the answer asked: it may have updated its HPACK table for a block it
                # never sent, so nothing more it sends on this connection could be trusted. A real server
                # would drop the connection too.
                await peer.drop()
                return
            await peer.flush()


@asynccontextmanager
async def raw_server(answer: Answer, *, send_settings: bool = True) -> AsyncIterator[RawServer]:
    """A RawServer listening on 127.0.0.1 (its `target` is set) until the block ends."""
    server = RawServer(answer, send_settings=send_settings)
    async with trio.open_nursery() as nursery:
        (listener, *_) = await nursery.start(partial(trio.serve_tcp, server._serve, 0, host="127.0.0.1"))
        server.target = f"127.0.0.1:{listener.socket.getsockname()[1]}"
        yield server
        nursery.cancel_scope.cancel()
