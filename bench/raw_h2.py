"""A raw HTTP/2 client for `bench.attacks`: frames built by hand, written in the batches an attack chooses.

h2's client state machine refuses much of what an attacker sends (a RST_STREAM right after HEADERS, more
streams than the server allows, a window that overflows, a header block that never ends), so frames are
built here with hyperframe and hpack. A reader task parses what the server sends back and keeps what an
attack reports: GOAWAYs, RST_STREAM codes, gRPC and HTTP statuses, PING and SETTINGS ACKs, whether and when
the connection was closed, and the server's flow-control windows so that bodies can be sent within them.
The reader never writes: SETTINGS ACKs and the WINDOW_UPDATEs that return credit for DATA go through a
replier task, so that a writer blocked on a full socket cannot stop the reading.
"""

from __future__ import annotations

import collections
import contextlib
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass, field

import h2.errors
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

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
MAX_FRAME = 16384  # SETTINGS_MAX_FRAME_SIZE's default: what a server must accept
INITIAL_WINDOW = 65535
INITIAL_WINDOW_SIZE = SettingsFrame.INITIAL_WINDOW_SIZE
Header = tuple[bytes, bytes]


def error_name(code: int) -> str:
    try:
        return h2.errors.ErrorCodes(code).name
    except ValueError:
        return f"error {code:#x}"


def grpc_message(body: bytes) -> bytes:
    """One uncompressed length-prefixed gRPC message."""
    return b"\x00" + len(body).to_bytes(4, "big") + body


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


class Frames:
    """Serialized frames; header blocks are HPACK-encoded with this connection's encoder."""

    def __init__(self) -> None:
        self.encoder = hpack.Encoder()

    def headers(
        self, stream_id: int, headers: Iterable[Header], *, end_stream: bool = False, end_headers: bool = True
    ) -> bytes:
        """HEADERS, then as many CONTINUATION frames as the block needs (the last one ends it, if asked)."""
        block = self.encoder.encode(list(headers), huffman=False)  # hpack's Huffman coder is quadratic
        pieces = [block[i : i + MAX_FRAME] for i in range(0, len(block), MAX_FRAME)] or [b""]
        first = HeadersFrame(stream_id, pieces[0], flags=["END_STREAM"] if end_stream else [])
        frames = [first, *(ContinuationFrame(stream_id, piece) for piece in pieces[1:])]
        if end_headers:
            frames[-1].flags.add("END_HEADERS")
        return b"".join(frame.serialize() for frame in frames)

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
    def rst(stream_id: int, code: int = h2.errors.ErrorCodes.CANCEL) -> bytes:
        return RstStreamFrame(stream_id, error_code=code).serialize()

    @staticmethod
    def ping(opaque: int) -> bytes:
        return PingFrame(0, opaque.to_bytes(8, "big")).serialize()

    @staticmethod
    def settings(settings: dict[int, int] | None = None, *, ack: bool = False) -> bytes:
        return SettingsFrame(0, settings or {}, flags=["ACK"] if ack else []).serialize()

    @staticmethod
    def window_update(stream_id: int, increment: int) -> bytes:
        # Written by hand: hyperframe refuses an increment outside 1 .. 2**31-1, and 0 is an attack too.
        return (
            (4).to_bytes(3, "big") + b"\x08\x00" + stream_id.to_bytes(4, "big") + increment.to_bytes(4, "big")
        )


@dataclass
class StreamSeen:
    headers: list[Header] = field(default_factory=list)  # the response headers, then the trailers
    reset: int | None = None
    ended: bool = False
    data: int = 0

    @property
    def done(self) -> bool:
        return self.ended or self.reset is not None

    def field(self, name: bytes) -> bytes | None:
        return dict(self.headers).get(name)


@dataclass
class Seen:
    """What the server sent on one connection."""

    streams: dict[int, StreamSeen] = field(default_factory=lambda: collections.defaultdict(StreamSeen))
    goaway: tuple[int, bytes] | None = None  # error code, debug data
    ping_acks: int = 0
    settings_acks: int = 0
    closed_after: float | None = None  # seconds from connect to the server's close (EOF or reset)
    broken: str | None = None  # how the connection failed, if it did not end in a clean EOF


class Peer:
    """One client connection. Open it with `connect`; write with `send`; what came back is in `seen`."""

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
        stream.data += len(frame.data)
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
            self.seen.streams[stream_id].headers += self._decoder.decode(bytes(block), raw=True)

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


def status_name(stream: StreamSeen) -> str:
    """A response's outcome: its gRPC status name, or its HTTP status when that is not 200."""
    http = stream.field(b":status")
    if http is not None and http != b"200":
        return f"HTTP {http.decode()}"
    raw = stream.field(b"grpc-status")
    if raw is None:
        return "no grpc-status"
    try:
        return StatusCode(int(raw)).name
    except ValueError:
        return f"grpc-status {raw!r}"


@dataclass(frozen=True)
class Connecting:
    """How to connect: TCP handshakes in flight at once (None: no limit), and how long one may take."""

    limiter: trio.CapacityLimiter | None = None
    within: float = 10.0


ANY_TIME = Connecting()


@contextlib.asynccontextmanager
async def connect(
    port: int,
    *,
    preface: bool = True,
    settings: dict[int, int] | None = None,
    wait_settings: bool = True,
    connecting: Connecting = ANY_TIME,
) -> AsyncIterator[Peer]:
    """A connection to 127.0.0.1:`port` whose preface (unless told not to) is sent; closed on exit.

    With `wait_settings`, waits (up to 5 s) for the server's SETTINGS so that its windows are known.
    Raises OSError if the connection is refused, trio.TooSlowError if it is not made in time.
    """
    started = trio.current_time()
    async with connecting.limiter or contextlib.nullcontext():
        with trio.fail_after(connecting.within):
            stream = await trio.open_tcp_stream("127.0.0.1", port)
    async with stream, trio.open_nursery() as nursery:
        peer = Peer(stream, started, replies=preface)
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
