"""Raw HTTP/2 peers for the tests and the bench: peers that send what no real one would.

One module for every hand-made peer, so that the wire's constants, a gRPC request's headers, the header
block's split into frames and the record of a response exist once. `bench` imports it from here (it
already takes its protobuf code from `tests`); nothing here imports `bench`.

- `RawClient`: h2 driven by hand over a trio socket, h2's checks of what it sends turned off
  (`permissive_config`). h2 keeps the connection's state (HPACK, windows, stream ids), so a test sends any
  header and reads well-formed answers with little code.
- `FrameClient`: frames built with hyperframe and hpack, for what h2's client state machine refuses to
  send (a RST_STREAM right after HEADERS, more streams than the server allows, a window that overflows, a
  header block that never ends). Its reader never writes: SETTINGS ACKs and the WINDOW_UPDATEs that return
  credit go through a replier task, so that a writer blocked on a full socket cannot stop the reading.
- `RawServer`: h2 on the server side, answering each request with a test's coroutine.
"""

from __future__ import annotations

import collections
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.exceptions
import hpack
import trio
from hyperframe.frame import (
    ContinuationFrame,
    DataFrame,
    Frame,
    GoAwayFrame,
    HeadersFrame,
    PingFrame,
    RstStreamFrame,
    SettingsFrame,
    WindowUpdateFrame,
)

from trio_grpc import StatusCode
from trio_grpc._metadata import percent_decode

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
MAX_FRAME = 16384  # SETTINGS_MAX_FRAME_SIZE's default: what every peer must accept
INITIAL_WINDOW = 65535
INITIAL_WINDOW_SIZE = SettingsFrame.INITIAL_WINDOW_SIZE
Header = tuple[bytes, bytes]
ErrorCodes = h2.errors.ErrorCodes


def error_name(code: int) -> str:
    try:
        return ErrorCodes(code).name
    except ValueError:
        return f"error {code:#x}"


def grpc_message(body: bytes, flag: int = 0) -> bytes:
    """One length-prefixed gRPC message (`flag` 1: compressed), as it goes in DATA frames."""
    return bytes([flag]) + len(body).to_bytes(4, "big") + body


def request_headers(path: str, *extra: Header, **replace: bytes) -> list[Header]:
    """A gRPC request's headers; `replace` changes one (content_type=... for content-type), `extra` adds."""
    headers = {
        b":method": b"POST",
        b":scheme": b"http",
        b":path": path.encode(),
        b":authority": b"127.0.0.1",
        b"content-type": b"application/grpc",
        b"te": b"trailers",
    }
    for name, value in replace.items():
        headers[name.replace("_", "-").encode()] = value
    return [*headers.items(), *extra]


def permissive_config(*, client_side: bool, check_inbound: bool = True) -> h2.config.H2Configuration:
    """h2 that sends any header as it is (and, without `check_inbound`, takes any)."""
    return h2.config.H2Configuration(
        client_side=client_side,
        header_encoding=None,
        validate_inbound_headers=check_inbound,
        validate_outbound_headers=False,
        normalize_outbound_headers=False,
    )


def header_frames(
    stream_id: int, block: bytes, *, end_stream: bool = False, end_headers: bool = True, size: int = MAX_FRAME
) -> bytes:
    """An encoded header block as HEADERS and as many CONTINUATION frames as it needs (the last ends it)."""
    pieces = [block[i : i + size] for i in range(0, len(block), size)] or [b""]
    first = HeadersFrame(stream_id, pieces[0], flags=["END_STREAM"] if end_stream else [])
    frames = [first, *(ContinuationFrame(stream_id, piece) for piece in pieces[1:])]
    if end_headers:
        frames[-1].flags.add("END_HEADERS")
    return b"".join(frame.serialize() for frame in frames)


@dataclass
class Response:
    """What came back on one stream."""

    headers: list[Header] | None = None
    trailers: list[Header] | None = None
    data: bytearray = field(default_factory=bytearray)
    reset: int | None = None
    ended: bool = False

    @property
    def done(self) -> bool:
        return self.ended or self.reset is not None

    def header(self, name: bytes) -> bytes | None:
        return dict(self.headers or ()).get(name)

    def status_field(self, name: bytes) -> bytes | None:
        """A status field, from the trailers or from a Trailers-Only response."""
        return dict(self.trailers if self.trailers is not None else self.headers or ()).get(name)

    @property
    def grpc_status(self) -> StatusCode | None:
        raw = self.status_field(b"grpc-status")
        return None if raw is None else StatusCode(int(raw))

    @property
    def grpc_message(self) -> str:
        return percent_decode(self.status_field(b"grpc-message") or b"")

    def record(self, event: h2.events.Event) -> None:
        """Keep what an h2 event on this stream says."""
        if isinstance(event, h2.events.ResponseReceived):
            self.headers = event.headers
        elif isinstance(event, h2.events.TrailersReceived):
            self.trailers = event.headers
        elif isinstance(event, h2.events.DataReceived):
            self.data += event.data
        elif isinstance(event, h2.events.StreamEnded):
            self.ended = True
        elif isinstance(event, h2.events.StreamReset):
            self.reset = event.error_code

    def on_header_block(self, fields: list[Header]) -> None:
        if self.headers is None:
            self.headers = fields
        else:
            self.trailers = fields

    def messages(self) -> list[tuple[int, bytes]]:
        data, messages = bytes(self.data), []
        while data:
            length = int.from_bytes(data[1:5], "big")
            messages.append((data[0], data[5 : 5 + length]))
            data = data[5 + length :]
        return messages


def status_name(response: Response) -> str:
    """A response's outcome: its gRPC status name, or its HTTP status when that is not 200."""
    http = response.header(b":status")
    if http is not None and http != b"200":
        return f"HTTP {http.decode()}"
    raw = response.status_field(b"grpc-status")
    if raw is None:
        return "no grpc-status"
    try:
        return StatusCode(int(raw)).name
    except ValueError:
        return f"grpc-status {raw!r}"


async def read_some(socket: trio.SocketStream) -> bytes:
    """What comes next on `socket`; b"" once the peer has closed it, or reset it."""
    try:
        return await socket.receive_some(65536)
    except trio.BrokenResourceError:
        return b""


# -- RawClient: h2 driven by hand ---------------------------------------------------------------------------


class RawClient:
    """An HTTP/2 client made of h2 and a socket, that sends exactly what a test tells it to."""

    def __init__(self, stream: trio.SocketStream, *, acknowledge_data: bool = True) -> None:
        self.h2 = h2.connection.H2Connection(permissive_config(client_side=True))
        self.socket = stream
        self.acknowledge_data = acknowledge_data
        self.responses: dict[int, Response] = {}
        self.goaway: h2.events.ConnectionTerminated | None = None
        self.ping_acks = 0
        self.eof = False

    @classmethod
    @contextlib.asynccontextmanager
    async def connect(
        cls, port: int, *, settings: dict[int, int] | None = None, **options: Any
    ) -> AsyncIterator[RawClient]:
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        async with stream:
            client = cls(stream, **options)
            client.h2.initiate_connection()
            if settings:
                client.h2.update_settings(settings)
            await client.flush()
            yield client

    async def flush(self) -> None:
        data = self.h2.data_to_send()
        if data:
            await self.socket.send_all(data)

    async def request(
        self,
        path: str = "/grpc.testing.TestService/UnaryCall",  # the interop service's, the tests' usual server
        body: bytes | None = None,
        *,
        end_stream: bool = True,
        set_headers: dict[bytes, bytes] | None = None,
        drop: tuple[bytes, ...] = (),
        extra: list[Header] | None = None,
        flush: bool = True,
    ) -> int:
        """Open a stream with a gRPC request's headers (changed as asked), then send `body`.

        `flush=False` leaves the frames queued, for a test that sends many in one write.
        """
        headers = {**dict(request_headers(path)), **(set_headers or {})}
        header_list = [(name, value) for name, value in headers.items() if name not in drop]
        header_list += extra or []
        stream_id = self.h2.get_next_available_stream_id()
        self.responses[stream_id] = Response()
        self.h2.send_headers(stream_id, header_list, end_stream=body is None and end_stream)
        if body is not None:
            self.h2.send_data(stream_id, body, end_stream=end_stream)
        if flush:
            await self.flush()
        return stream_id

    async def send(self, stream_id: int, data: bytes, end_stream: bool = False) -> None:
        self.h2.send_data(stream_id, data, end_stream=end_stream)
        await self.flush()

    async def reset(self, stream_id: int, code: int = ErrorCodes.CANCEL) -> None:
        self.h2.reset_stream(stream_id, code)
        await self.flush()

    async def receive(self) -> bool:
        """Read and handle what comes next; False once the server closed the connection."""
        data = await read_some(self.socket)
        if not data:
            self.eof = True
            return False
        for event in self.h2.receive_data(data):
            response = self.responses.get(getattr(event, "stream_id", 0))
            if response is not None:
                response.record(event)
            if isinstance(event, h2.events.DataReceived) and self.acknowledge_data:
                self.h2.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
            elif isinstance(event, h2.events.ConnectionTerminated):
                self.goaway = event
            elif isinstance(event, h2.events.PingAckReceived):
                self.ping_acks += 1
        await self.flush()
        return True

    async def response(self, stream_id: int) -> Response:
        response = self.responses[stream_id]
        while not response.done:
            if not await self.receive():
                raise AssertionError(f"connection closed before stream {stream_id} ended: {self.goaway}")
        return response

    async def until_closed(self) -> None:
        while await self.receive():
            pass


# -- FrameClient: frames built by hand -----------------------------------------------------------------------


class Frames:
    """Serialized frames; header blocks are HPACK-encoded with this connection's encoder."""

    def __init__(self) -> None:
        self.encoder = hpack.Encoder()

    def headers(
        self, stream_id: int, headers: Iterable[Header], *, end_stream: bool = False, end_headers: bool = True
    ) -> bytes:
        block = self.encoder.encode(list(headers), huffman=False)  # hpack's Huffman coder is quadratic
        return header_frames(stream_id, block, end_stream=end_stream, end_headers=end_headers)

    @staticmethod
    def data(stream_id: int, payload: bytes | memoryview, *, end_stream: bool = False) -> bytes:
        """DATA frames of at most MAX_FRAME bytes each (one empty frame for an empty payload)."""
        view = memoryview(payload)
        chunks = [view[i : i + MAX_FRAME] for i in range(0, len(view), MAX_FRAME)] or [view]
        frames = [DataFrame(stream_id, bytes(chunk)) for chunk in chunks]
        if end_stream:
            frames[-1].flags.add("END_STREAM")
        return b"".join(frame.serialize() for frame in frames)

    @staticmethod
    def continuation(stream_id: int, block: bytes, *, end_headers: bool = False) -> bytes:
        return ContinuationFrame(stream_id, block, flags=["END_HEADERS"] if end_headers else []).serialize()

    @staticmethod
    def rst(stream_id: int, code: int = ErrorCodes.CANCEL) -> bytes:
        return RstStreamFrame(stream_id, error_code=code).serialize()

    @staticmethod
    def ping(opaque: int) -> bytes:
        return PingFrame(0, opaque.to_bytes(8, "big")).serialize()

    @staticmethod
    def settings(settings: dict[int, int] | None = None, *, ack: bool = False) -> bytes:
        return SettingsFrame(0, settings or {}, flags=["ACK"] if ack else []).serialize()

    @staticmethod
    def goaway(last_stream_id: int, code: int = ErrorCodes.NO_ERROR) -> bytes:
        return GoAwayFrame(0, last_stream_id=last_stream_id, error_code=code).serialize()

    @staticmethod
    def window_update(stream_id: int, increment: int) -> bytes:
        # Written by hand: hyperframe refuses an increment outside 1 .. 2**31-1, and 0 is an attack too.
        return (
            (4).to_bytes(3, "big") + b"\x08\x00" + stream_id.to_bytes(4, "big") + increment.to_bytes(4, "big")
        )


@dataclass
class Seen:
    """What the server sent on one connection."""

    streams: dict[int, Response] = field(default_factory=lambda: collections.defaultdict(Response))
    goaway: tuple[int, bytes] | None = None  # error code, debug data
    ping_acks: int = 0
    settings_acks: int = 0
    closed_after: float | None = None  # seconds from connect to the server's close (EOF or reset)
    broken: str | None = None  # how the connection failed, if it did not end in a clean EOF


class FrameClient:
    """One connection: open it with `connect_frames`, write with `send`; what came back is in `seen`."""

    def __init__(self, stream: trio.SocketStream, started: float, *, replies: bool = True) -> None:
        self.stream = stream
        self.replies = replies  # off for a peer that never sent the preface: it must stay silent
        self.frames = Frames()
        self.seen = Seen()
        self.own_checks: set[int] = set()  # streams of `check` calls, left out of the attack's outcome
        self.body_sent = 0  # DATA payload bytes written by send_body, on all streams
        self._started = started
        self._decoder = hpack.Decoder()
        self._header_block: tuple[int, bytearray] | None = None
        self._send_lock = trio.Lock()
        self._replies = bytearray()
        self._have_replies = trio.Event()
        self._changed = trio.Event()  # set and replaced whenever something arrives
        self._settings_seen = trio.Event()
        self._next_stream = 1
        self.connection_window = INITIAL_WINDOW
        self.initial_stream_window = INITIAL_WINDOW
        self.stream_windows: dict[int, int] = {}

    @property
    def closed(self) -> bool:
        return self.seen.closed_after is not None or self.seen.broken is not None

    def stream_id(self) -> int:
        stream_id, self._next_stream = self._next_stream, self._next_stream + 2
        return stream_id

    async def send(self, data: bytes) -> bool:
        """Write `data` in one `send_all`; False if the connection is gone."""
        if self.closed:
            return False
        try:
            async with self._send_lock:
                await self.stream.send_all(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
            self.seen.broken = self.seen.broken or f"write failed: {type(exc).__name__}"
            return False
        return True

    async def send_body(
        self, stream_id: int, payload: bytes | memoryview, *, end_stream: bool = False
    ) -> int:
        """Send `payload` on a stream as fast as the server's windows allow; the bytes sent.

        Stops early if the connection closes or the stream is reset; waits (the caller bounds it) when
        the server grants no more credit.
        """
        view, sent = memoryview(payload), 0
        self.stream_windows.setdefault(stream_id, self.initial_stream_window)
        while sent < len(view) and not self.closed and not self.seen.streams[stream_id].done:
            room = min(self.connection_window, self.stream_windows[stream_id], len(view) - sent)
            if room <= 0:
                await self.wait_for_change()
                continue
            self.connection_window -= room
            self.stream_windows[stream_id] -= room
            last = sent + room == len(view)
            if not await self.send(
                self.frames.data(stream_id, view[sent : sent + room], end_stream=end_stream and last)
            ):
                break
            sent += room
            self.body_sent += room
        return sent

    async def wait_for_change(self) -> None:
        await self._changed.wait()

    async def wait_until(self, condition: Callable[[], bool], within: float) -> bool:
        """Wait until `condition()` holds (checked whenever something arrives) or the connection closes."""
        with trio.move_on_after(within):
            while not condition() and not self.closed:
                await self.wait_for_change()
        return condition()

    async def wait_closed(self, within: float) -> bool:
        with trio.move_on_after(within):
            while not self.closed:
                await self.wait_for_change()
        return self.closed

    async def check(self, path: str = "/grpc.health.v1.Health/Check", within: float = 3) -> str:
        """A well-formed unary call on this connection: its outcome in a few words."""
        stream_id = self.stream_id()
        self.own_checks.add(stream_id)
        request = self.frames.headers(stream_id, request_headers(path))
        if not await self.send(request + self.frames.data(stream_id, grpc_message(b""), end_stream=True)):
            return "connection closed"
        stream = self.seen.streams[stream_id]
        if not await self.wait_until(lambda: stream.done, within):
            return "connection closed" if self.closed else f"no answer in {within:g} s"
        if stream.reset is not None:
            return f"RST_STREAM {error_name(stream.reset)}"
        return status_name(stream)

    # -- reading ------------------------------------------------------------------------------------------

    async def _read(self) -> None:
        buffer = bytearray()
        try:
            while data := await self.stream.receive_some(256 * 1024):
                buffer += data
                self._parse(buffer)
                self._notify()
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
            self.seen.broken = self.seen.broken or f"closed: {type(exc).__name__}"
        except (hpack.HPACKError, ValueError) as exc:  # hyperframe's errors are ValueErrors
            self.seen.broken = f"unreadable answer: {exc}"
        if self.seen.closed_after is None:
            self.seen.closed_after = trio.current_time() - self._started
        self._notify()

    def _notify(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    def _parse(self, buffer: bytearray) -> None:
        while len(buffer) >= 9:
            length = int.from_bytes(buffer[:3], "big")
            if len(buffer) < 9 + length:
                return
            frame, _ = Frame.parse_frame_header(memoryview(bytes(buffer[:9])))
            frame.parse_body(memoryview(bytes(buffer[9 : 9 + length])))
            del buffer[: 9 + length]
            self._on_frame(frame)

    def _on_frame(self, frame: Frame) -> None:
        match frame:
            case SettingsFrame() if "ACK" in frame.flags:
                self.seen.settings_acks += 1
            case SettingsFrame():
                self._on_settings(frame.settings)
            case WindowUpdateFrame() if frame.stream_id == 0:
                self.connection_window += frame.window_increment
            case WindowUpdateFrame():
                if frame.stream_id in self.stream_windows:
                    self.stream_windows[frame.stream_id] += frame.window_increment
            case PingFrame() if "ACK" in frame.flags:
                self.seen.ping_acks += 1
            case PingFrame():
                self._reply(PingFrame(0, frame.opaque_data, flags=["ACK"]).serialize())
            case GoAwayFrame():
                self.seen.goaway = (frame.error_code, frame.additional_data)
            case RstStreamFrame():
                self.seen.streams[frame.stream_id].reset = frame.error_code
            case DataFrame():
                self._on_data(frame)
            case HeadersFrame() | ContinuationFrame():
                self._on_header_block(frame)

    def _on_settings(self, settings: dict[int, int]) -> None:
        if INITIAL_WINDOW_SIZE in settings:
            delta = settings[INITIAL_WINDOW_SIZE] - self.initial_stream_window
            self.initial_stream_window = settings[INITIAL_WINDOW_SIZE]
            for stream_id in self.stream_windows:
                self.stream_windows[stream_id] += delta
        self._reply(Frames.settings(ack=True))
        self._settings_seen.set()

    def _on_data(self, frame: DataFrame) -> None:
        stream = self.seen.streams[frame.stream_id]
        stream.data += frame.data
        stream.ended = stream.ended or "END_STREAM" in frame.flags
        if frame.flow_controlled_length:  # give the credit back at once: we are a fast reader
            increment = frame.flow_controlled_length
            self._reply(Frames.window_update(0, increment) + Frames.window_update(frame.stream_id, increment))

    def _on_header_block(self, frame: HeadersFrame | ContinuationFrame) -> None:
        if isinstance(frame, HeadersFrame):
            self._header_block = (frame.stream_id, bytearray(frame.data))
            self.seen.streams[frame.stream_id].ended |= "END_STREAM" in frame.flags
        elif self._header_block is not None:
            self._header_block[1].extend(frame.data)
        if "END_HEADERS" in frame.flags and self._header_block is not None:
            stream_id, block = self._header_block
            self._header_block = None
            fields = [
                (bytes(name), bytes(value)) for name, value in self._decoder.decode(bytes(block), raw=True)
            ]
            self.seen.streams[stream_id].on_header_block(fields)

    def _reply(self, data: bytes) -> None:
        if not self.replies:
            return
        self._replies += data
        self._have_replies.set()

    async def _send_replies(self) -> None:
        while not self.closed:
            await self._have_replies.wait()
            self._have_replies = trio.Event()
            await self.flush_replies()

    async def flush_replies(self) -> None:
        """Send the pending replies now: before a header block in pieces, which nothing may interrupt."""
        data, self._replies = bytes(self._replies), bytearray()
        if data:
            await self.send(data)


@dataclass(frozen=True)
class Connecting:
    """How to connect: TCP handshakes in flight at once (None: no limit), and how long one may take."""

    limiter: trio.CapacityLimiter | None = None
    within: float = 10.0


ANY_TIME = Connecting()


@contextlib.asynccontextmanager
async def connect_frames(
    port: int,
    *,
    preface: bool = True,
    settings: dict[int, int] | None = None,
    wait_settings: bool = True,
    connecting: Connecting = ANY_TIME,
) -> AsyncIterator[FrameClient]:
    """A FrameClient to 127.0.0.1:`port` whose preface (unless told not to) is sent; closed on exit.

    With `wait_settings`, waits (up to 5 s) for the server's SETTINGS so that its windows are known.
    Raises OSError if the connection is refused, trio.TooSlowError if it is not made in time.
    """
    started = trio.current_time()
    async with connecting.limiter or contextlib.nullcontext():
        with trio.fail_after(connecting.within):
            stream = await trio.open_tcp_stream("127.0.0.1", port)
    async with stream, trio.open_nursery() as nursery:
        peer = FrameClient(stream, started, replies=preface)
        nursery.start_soon(peer._read)
        nursery.start_soon(peer._send_replies)
        if preface:
            await peer.send(PREFACE + Frames.settings(settings))
            if wait_settings:
                with trio.move_on_after(5):
                    await peer._settings_seen.wait()
                await peer.flush_replies()  # our SETTINGS ACK
        try:
            yield peer
        finally:
            nursery.cancel_scope.cancel()


# -- RawServer ---------------------------------------------------------------------------------------------


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
        self, stream_id: int, headers: list[Header], *, end_stream: bool = False
    ) -> None:
        """HEADERS (and CONTINUATION) built by hand, of literal fields that do not touch the HPACK table,
        not Huffman-coded: h2 would take seconds to encode a field of megabytes."""
        block = b"".join(
            b"\x00" + _hpack_length(name) + name + _hpack_length(value) + value for name, value in headers
        )
        size = self.h2.max_outbound_frame_size
        await self.send_raw(header_frames(stream_id, block, end_stream=end_stream, size=size))

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


@contextlib.asynccontextmanager
async def raw_server(answer: Answer, *, send_settings: bool = True) -> AsyncIterator[RawServer]:
    """A RawServer listening on 127.0.0.1 (its `target` is set) until the block ends."""
    server = RawServer(answer, send_settings=send_settings)
    async with trio.open_nursery() as nursery:
        (listener, *_) = await nursery.start(partial(trio.serve_tcp, server._serve, 0, host="127.0.0.1"))
        server.target = f"127.0.0.1:{listener.socket.getsockname()[1]}"
        yield server
        nursery.cancel_scope.cancel()
