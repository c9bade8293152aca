"""A frame-level fuzzer against a live chatserver: nothing a peer writes may end the process or bloat it.

Hypothesis writes, after the client preface, a sequence of HTTP/2 frames (good and broken gRPC requests to
the server's real methods, CONTINUATION, DATA with whole, partial and badly prefixed messages, RST_STREAM,
SETTINGS, PING, WINDOW_UPDATE, PRIORITY, GOAWAY and frames of unknown types, over several streams) and cuts
the bytes into writes at points it picks, many frames to a write (or all of them in one). After each
example, the server process must be alive, answer a grpcio Health.Check on a new connection, and its RSS
must stay within RSS_GROWTH_BOUND of what it was after start-up.

One server serves the whole run. If an example kills it, the test fails (with the server's stderr) and
the next example gets a new server, so that hypothesis can shrink the failure to a minimal reproducer.

The suite runs a short profile (50 examples, no shrinking); a long run, which shrinks what it finds:

    FUZZ_EXAMPLES=2000 /work/venv/bin/python -m pytest -q -p no:cacheprovider tests/test_frame_fuzz.py
"""

from __future__ import annotations

import contextlib
import os
import subprocess
from collections.abc import Iterator

import grpc
import hpack
import pytest
import trio
from grpc_health.v1 import health_pb2, health_pb2_grpc
from hyperframe.frame import (
    ContinuationFrame,
    DataFrame,
    Frame,
    GoAwayFrame,
    HeadersFrame,
    PingFrame,
    PriorityFrame,
    RstStreamFrame,
    SettingsFrame,
    WindowUpdateFrame,
)
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from tests.raw_h2 import PREFACE
from tests.test_cli_chatserver import ChatServer, start_chatserver

MiB = 1024 * 1024
FUZZ_EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "50"))
#: Shrinking restarts the server for each attempt (minutes): only in a long run, not in the suite.
PHASES = list(Phase) if "FUZZ_EXAMPLES" in os.environ else [Phase.explicit, Phase.reuse, Phase.generate]
#: What the fuzzer may leave the server holding: its frames are small, so anything near this is a leak.
RSS_GROWTH_BOUND = 64 * MiB
#: Seconds for one example: writing, and the server closing the connection after our end of stream.
EXAMPLE_TIMEOUT = 15
HEALTH_TIMEOUT = 10

START = PREFACE + SettingsFrame(0).serialize()
METHODS = [
    "/grpc.health.v1.Health/Check",
    "/grpc.health.v1.Health/Watch",
    "/rpc.ChatService/ListChatRooms",
    "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
]
# Stream ids a client may not open or use: 0, even, and one far above those in use.
BAD_STREAM_IDS = st.sampled_from([0, 2, 2**31 - 1])
ERROR_CODES = st.integers(0, 13) | st.integers(0, 2**32 - 1)


def message(body: bytes, flag: int = 0, length: int | None = None) -> bytes:
    """One length-prefixed gRPC message; `length` overrides the prefix (to lie about the body)."""
    return bytes([flag]) + (len(body) if length is None else length).to_bytes(4, "big") + body


def readdressed(frame: Frame, stream_id: int) -> bytes:
    """The frame's bytes on `stream_id`, even one hyperframe would refuse (0 for DATA, non-zero for PING)."""
    data = bytearray(frame.serialize())
    data[5:9] = stream_id.to_bytes(4, "big")
    return bytes(data)


def unknown_frame(frame_type: int, flags: int, stream_id: int, payload: bytes) -> bytes:
    return (
        len(payload).to_bytes(3, "big") + bytes([frame_type, flags]) + stream_id.to_bytes(4, "big") + payload
    )


@st.composite
def request_headers(draw: st.DrawFn) -> list[tuple[bytes, bytes]]:
    """A gRPC request's header list, or one broken in one of the ways the server must refuse."""
    path = draw(st.sampled_from([*METHODS, "/no.Such/Method", "", "*"]))
    headers = {
        b":method": draw(st.sampled_from([b"POST", b"POST", b"GET"])),
        b":scheme": b"http",
        b":path": path.encode(),
        b":authority": b"localhost",
        b"te": b"trailers",
        b"content-type": draw(
            st.sampled_from([b"application/grpc", b"application/grpc+proto", b"text/plain"])
        ),
    }
    if draw(st.integers(0, 3)) == 0:  # missing pseudo-headers, te or content-type
        for name in draw(st.sets(st.sampled_from(list(headers)), min_size=1, max_size=2)):
            del headers[name]
    header_list = list(headers.items())
    extras = st.sampled_from(
        [
            (b"grpc-timeout", b"1S"),
            (b"grpc-timeout", b"abc"),
            (b"grpc-timeout", b"99999999n"),
            (b"grpc-encoding", b"gzip"),
            (b"grpc-encoding", b"snappy"),
            (b"X-Upper", b"a"),
            (b"connection", b"close"),
            (b"x-bin", b"!!"),
            (b":path", b"/again"),
            (b"x-newline", b"a\r\nb"),
        ]
    )
    header_list += draw(st.lists(extras, max_size=2)) if draw(st.integers(0, 2)) == 0 else []
    return draw(st.permutations(header_list)) if draw(st.booleans()) else header_list


class Streams:
    """The stream ids of a conversation: mostly the next new one or one in use, now and then a bad one."""

    def __init__(self) -> None:
        self.opened: list[int] = []

    def new(self, draw: st.DrawFn) -> int:
        if self.opened and draw(st.integers(0, 4)) == 0:
            return self.existing(draw)  # trailers, or a second HEADERS on a stream
        stream_id = self.opened[-1] + 2 if self.opened else 1
        self.opened.append(stream_id)
        return stream_id

    def existing(self, draw: st.DrawFn) -> int:
        if not self.opened or draw(st.integers(0, 9)) == 0:
            return draw(BAD_STREAM_IDS | st.sampled_from([1, 3, 5]))  # 1, 3, 5: idle ones, or not
        return draw(st.sampled_from(self.opened[-3:]))


@st.composite
def header_frames(draw: st.DrawFn, encoder: hpack.Encoder, streams: Streams) -> list[bytes]:
    """HEADERS (maybe trailers, maybe garbage HPACK), split over CONTINUATION frames or left unfinished."""
    stream_id = streams.new(draw)
    if draw(st.integers(0, 19)) == 0:
        block = draw(st.binary(min_size=1, max_size=20))
    else:
        block = encoder.encode(draw(request_headers()))  # in order, so the server's HPACK state follows
    pieces = draw(st.integers(1, 3))
    size = -(-len(block) // pieces)
    chunks = [block[index : index + size] for index in range(0, len(block), size)] or [b""]
    end_headers = draw(st.booleans()) or draw(st.integers(0, 4)) > 0
    flags = ["END_STREAM"] if draw(st.booleans()) else []
    frames = []
    for index, chunk in enumerate(chunks):
        last = index == len(chunks) - 1
        if index == 0:
            first = HeadersFrame(1, chunk, flags=[*flags, *(["END_HEADERS"] if last and end_headers else [])])
            frames.append(readdressed(first, stream_id))
        else:
            following = ContinuationFrame(1, chunk, flags=["END_HEADERS"] if last and end_headers else [])
            frames.append(readdressed(following, stream_id))
    return frames


@st.composite
def data_frame(draw: st.DrawFn, streams: Streams) -> bytes:
    whole = message(b"")  # an empty message is a valid request of every one of METHODS
    payload = draw(
        st.sampled_from(
            [
                whole,
                whole * 3,
                whole[:3],  # a partial prefix
                message(b"\x0a\x03abc"),
                message(b"\xff\xff\xff"),  # not protobuf
                message(b"", flag=1),  # compressed, with no grpc-encoding
                message(b"", flag=7),
                message(b"", length=4 * MiB - 1),  # a large message that never comes
                message(b"", length=2**32 - 1),  # over the limit
                b"",
            ]
        )
        | st.binary(max_size=64)
    )
    flags = ["END_STREAM"] if draw(st.booleans()) else []
    return readdressed(DataFrame(1, payload, flags=flags), streams.existing(draw))


@st.composite
def control_frame(draw: st.DrawFn, streams: Streams) -> bytes:
    kind = draw(st.sampled_from(["rst", "settings", "ping", "window", "priority", "goaway", "unknown"]))
    if kind == "rst":
        return readdressed(RstStreamFrame(1, error_code=draw(ERROR_CODES)), streams.existing(draw))
    if kind == "settings":
        values = st.sampled_from([0, 1, 16383, 16384, 2**24 - 1, 2**24, 2**31 - 1, 2**31, 2**32 - 1])
        codes = st.integers(1, 8) | st.integers(0, 2**16 - 1)
        if draw(st.integers(0, 4)) == 0:
            return SettingsFrame(0, flags=["ACK"]).serialize()
        return SettingsFrame(0, settings=draw(st.dictionaries(codes, values, max_size=4))).serialize()
    if kind == "ping":
        flags = ["ACK"] if draw(st.booleans()) else []
        ping = PingFrame(0, opaque_data=draw(st.binary(min_size=8, max_size=8)), flags=flags)
        return readdressed(ping, draw(st.sampled_from([0, 0, 1])))
    if kind == "window":
        increment = draw(st.sampled_from([0, 1, 65535, 2**31 - 1]) | st.integers(0, 2**31 - 1))
        stream_id = 0 if draw(st.booleans()) else streams.existing(draw)
        return readdressed(WindowUpdateFrame(1, window_increment=increment), stream_id)
    if kind == "priority":
        stream_id = streams.existing(draw)
        depends_on = draw(st.sampled_from([0, stream_id, 1, 3]))  # itself: a stream error (RFC 9113 5.3.1)
        priority = PriorityFrame(1, depends_on=depends_on, stream_weight=draw(st.integers(0, 255)))
        priority.exclusive = draw(st.booleans())
        return readdressed(priority, stream_id)
    if kind == "goaway":
        goaway = GoAwayFrame(0, last_stream_id=draw(st.integers(0, 9)), error_code=draw(ERROR_CODES))
        goaway.additional_data = draw(st.binary(max_size=16))
        return goaway.serialize()
    return unknown_frame(
        draw(st.integers(0x0A, 0xFF)),
        draw(st.integers(0, 255)),
        streams.existing(draw),
        draw(st.binary(max_size=32)),
    )


@st.composite
def conversation(draw: st.DrawFn) -> list[bytes]:
    """The client preface and the drawn frames, cut into the writes that carry them."""
    encoder, streams = hpack.Encoder(), Streams()
    frames: list[bytes] = []
    for _ in range(draw(st.integers(1, 30))):
        kind = draw(st.sampled_from(["headers"] * 3 + ["data"] * 3 + ["control"] * 3 + ["continuation"]))
        if kind == "headers":
            frames += draw(header_frames(encoder, streams))
        elif kind == "data":
            frames.append(draw(data_frame(streams)))
        elif kind == "control":
            frames.append(draw(control_frame(streams)))
        else:  # with no HEADERS open before it: a connection error
            orphan = ContinuationFrame(1, b"\x82", flags=["END_HEADERS"])
            frames.append(readdressed(orphan, streams.existing(draw)))
    data = START + b"".join(frames)
    cuts = sorted(draw(st.sets(st.integers(1, len(data) - 1), max_size=8)))
    return [data[start:end] for start, end in zip([0, *cuts], [*cuts, len(data)], strict=True)]


class Target:
    """The chatserver under attack, started again only after an example or a test killed it (and failed)."""

    def __init__(self) -> None:
        self._start()

    def _start(self) -> None:
        self.server = start_chatserver("--grace", "0")
        health_check(self.server.target)
        self.baseline_rss = rss(self.server.proc.process.pid)

    def alive(self) -> ChatServer:
        """The server, after starting a new one if the last example killed this one."""
        if self.server.proc.process.poll() is not None:
            self.server.stop()
            self._start()
        return self.server


def rss(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmRSS in /proc/{pid}/status")


def own_connection(target: str) -> grpc.Channel:
    """A grpcio channel with a connection of its own (channels share connections by default)."""
    return grpc.insecure_channel(target, options=[("grpc.use_local_subchannel_pool", 1)])


def health_check(target: str) -> None:
    with own_connection(target) as channel:
        response = health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(), timeout=HEALTH_TIMEOUT
        )
    assert response.status == health_pb2.HealthCheckResponse.SERVING


def failure(server: ChatServer) -> str:
    """Why the server did not answer, with the end of its log (a traceback if it crashed)."""
    try:
        code = server.proc.process.wait(HEALTH_TIMEOUT)
    except subprocess.TimeoutExpired:
        state = "the server is running but did not answer Health.Check"
    else:
        state = f"the server exited with {code}"
    return "\n".join([state, *server.proc.lines("stderr")[-40:]])


@pytest.fixture(scope="module")
def target() -> Iterator[Target]:
    target = Target()
    yield target
    if target.server.proc.process.poll() is None:  # one that died has failed its example already
        assert target.server.stop() == 0, target.server.proc.output()


async def play(port: int, writes: list[bytes]) -> None:
    """Write each chunk in its own send_all while reading whatever comes back, then end our side."""
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    async with stream, trio.open_nursery() as nursery:
        nursery.start_soon(drain, stream)
        with contextlib.suppress(trio.BrokenResourceError):  # the server hung up first (after a GOAWAY)
            for chunk in writes:
                await stream.send_all(chunk)
            await stream.send_eof()  # the server then closes the connection, and drain() returns


async def drain(stream: trio.SocketStream) -> None:
    with contextlib.suppress(trio.BrokenResourceError):  # a reset rather than a clean close
        while await stream.receive_some(65536):
            pass


@settings(
    max_examples=FUZZ_EXAMPLES,
    phases=PHASES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(writes=conversation())
async def test_no_frame_sequence_kills_or_bloats_the_server(target: Target, writes: list[bytes]) -> None:
    server = target.alive()
    with trio.fail_after(EXAMPLE_TIMEOUT):
        await play(server.port, writes)
    try:
        await trio.to_thread.run_sync(health_check, server.target)
    except grpc.RpcError as exc:
        raise AssertionError(f"{failure(server)}\nafter these writes: {writes!r}") from exc
    growth = rss(server.proc.process.pid) - target.baseline_rss
    assert growth <= RSS_GROWTH_BOUND, f"server RSS grew by {growth / MiB:.1f} MiB"
