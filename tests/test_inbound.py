"""`InboundFrames` against h2 itself: the same bytes, cut at the same places, must give the same events, the
same errors and the same h2 state as h2's own `receive_data`.

Two h2 connections are set up alike; one is fed through `InboundFrames`, the other straight. Hypothesis
writes the peer's frames (DATA whole, empty, padded, badly padded, oversize, past the windows, on closed,
reset and unknown streams, in the middle of a header block, with a content-length, with END_STREAM; HEADERS,
CONTINUATION, RST_STREAM, WINDOW_UPDATE, PING, SETTINGS) and the places where reads cut them. DATA that
`InboundFrames` takes itself comes out in one event per read it spans, so the data of consecutive DATA
events on one stream are compared joined.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from functools import partial
from typing import Any

import h2.config
import h2.connection
import h2.events
import h2.exceptions
import h2.settings
import hpack
import pytest
from hyperframe.frame import (
    ContinuationFrame,
    DataFrame,
    GoAwayFrame,
    HeadersFrame,
    PingFrame,
    RstStreamFrame,
    SettingsFrame,
    WindowUpdateFrame,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.raw_h2 import MAX_FRAME, PREFACE, permissive_config
from trio_grpc._inbound import InboundFrames

REQUEST = [
    (b":method", b"POST"),
    (b":scheme", b"http"),
    (b":path", b"/pkg.Service/Method"),
    (b":authority", b"localhost"),
    (b"content-type", b"application/grpc"),
]


def server_connection() -> h2.connection.H2Connection:
    connection = h2.connection.H2Connection(permissive_config(client_side=False, check_inbound=False))
    connection.initiate_connection()
    connection.data_to_send()
    return connection


def client_connection(config: h2.config.H2Configuration | None = None) -> h2.connection.H2Connection:
    """A client with streams 1, 3 and 5 open (5 half-closed: its request ended) and the server's SETTINGS."""
    connection = h2.connection.H2Connection(
        config or permissive_config(client_side=True, check_inbound=False)
    )
    connection.initiate_connection()
    for stream_id in (1, 3, 5):
        connection.send_headers(stream_id, REQUEST, end_stream=stream_id == 5)
    connection.receive_data(SettingsFrame(0).serialize())
    connection.data_to_send()
    return connection


def _headers(stream_id: int, fields: list[tuple[bytes, bytes]], flags: set[str]) -> bytes:
    frame = HeadersFrame(stream_id, hpack.Encoder().encode(fields))
    frame.flags = flags  # type: ignore[assignment]
    return frame.serialize()


def _data(stream_id: int, length: int, flags: set[str], pad: int | None) -> bytes:
    frame = DataFrame(stream_id, bytes(range(256)) * (length // 256) + bytes(length % 256))
    frame.flags = set(flags)  # type: ignore[assignment]
    if pad is not None:
        frame.flags.add("PADDED")
        frame.pad_length = pad
    return frame.serialize()


def _raw_data(stream_id: int, length: int, flags: int = 0) -> bytes:
    """A DATA frame serialized by hand: hyperframe cannot write a pad length past the body."""
    return length.to_bytes(3, "big") + bytes([0, flags]) + stream_id.to_bytes(4, "big") + bytes(length)


def _bad_padding(stream_id: int) -> bytes:
    """A padded DATA frame whose pad length (5) is past its body (2 bytes)."""
    return b"\x00\x00\x02\x00\x08" + stream_id.to_bytes(4, "big") + b"\x05\x00"


STREAMS = st.sampled_from([1, 3, 5, 7, 9, 2])


@st.composite
def server_frames(draw: st.DrawFn) -> bytes:
    """What a client sends a server: requests on 1, 3 and 5, then anything."""
    out = [PREFACE, SettingsFrame(0).serialize()]
    for stream_id in (1, 3, 5):
        fields = REQUEST + ([(b"content-length", b"10")] if draw(st.booleans()) and stream_id == 5 else [])
        out.append(_headers(stream_id, fields, {"END_HEADERS"}))
    out += draw(st.lists(any_frame(), max_size=12))
    return b"".join(out)


@st.composite
def client_frames(draw: st.DrawFn) -> bytes:
    """What a server sends a client: responses on 1, 3 and 5 (or not), then anything."""
    out = []
    for stream_id in (1, 3, 5):
        if draw(st.booleans()):
            out.append(_headers(stream_id, [(b":status", b"200")], {"END_HEADERS"}))
    out += draw(st.lists(any_frame(), max_size=12))
    return b"".join(out)


@st.composite
def any_frame(draw: st.DrawFn) -> bytes:
    stream_id = draw(STREAMS)
    kind = draw(st.sampled_from(["data"] * 6 + ["bad-data", "headers", "rst", "window", "ping", "settings"]))
    if kind == "data":
        flags = {"END_STREAM"} if draw(st.integers(0, 4)) == 0 else set()
        length = draw(st.sampled_from([0, 1, 5, 100, 4000, MAX_FRAME]))
        pad = draw(st.none() | st.integers(0, 255))
        return _data(stream_id, length, flags, pad)
    if kind == "bad-data":  # oversize, or a pad length past the body
        return draw(st.sampled_from([_raw_data(stream_id, MAX_FRAME + 1), _bad_padding(stream_id)]))
    if kind == "headers":  # trailers, a new request, or a header block left open for a CONTINUATION
        flags = draw(st.sampled_from([{"END_HEADERS", "END_STREAM"}, {"END_HEADERS"}, set()]))
        block = _headers(stream_id, [(b"grpc-status", b"0")], flags)
        if not flags and draw(st.booleans()):
            block += ContinuationFrame(stream_id, b"", flags=["END_HEADERS"]).serialize()
        return block
    if kind == "rst":
        return RstStreamFrame(stream_id, error_code=8).serialize()
    if kind == "window":
        return WindowUpdateFrame(draw(st.sampled_from([0, stream_id])), window_increment=1000).serialize()
    if kind == "ping":
        return PingFrame(0, b"12345678").serialize()
    return SettingsFrame(0, settings={h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 1000}).serialize()


def cuts(data: bytes, points: list[int]) -> list[bytes]:
    bounds = sorted({0, len(data), *(point % (len(data) + 1) for point in points)})
    return [data[start:end] for start, end in itertools.pairwise(bounds)]


def run(
    make: Callable[[], h2.connection.H2Connection], reads: list[bytes], through_inbound: bool
) -> tuple[Any, ...]:
    connection = make()
    receive = InboundFrames(connection).receive if through_inbound else connection.receive_data
    events: list[Any] = []
    try:
        for read in reads:
            events += receive(read)
    except h2.exceptions.ProtocolError as exc:
        return ("error", type(exc), exc.error_code, connection.data_to_send())  # with h2's GOAWAY
    streams = {
        stream_id: (stream.state_machine.state, stream._inbound_window_manager.current_window_size)
        for stream_id, stream in connection.streams.items()
    }
    return ("ok", _joined(events), connection.inbound_flow_control_window, streams, connection.data_to_send())


def _joined(events: list[Any]) -> list[Any]:
    """Events as comparable values, the data of consecutive DATA events on one stream joined."""
    out: list[Any] = []
    for event in events:
        if isinstance(event, h2.events.DataReceived):
            if out and out[-1][0] == "data" and out[-1][1] == event.stream_id:
                _, stream_id, data, length = out.pop()
                out.append(
                    ("data", stream_id, data + bytes(event.data), length + event.flow_controlled_length)
                )
            else:
                out.append(("data", event.stream_id, bytes(event.data), event.flow_controlled_length))
        else:  # h2's repr leaves out the StreamEnded a HEADERS event carries
            out.append((repr(event), repr(getattr(event, "stream_ended", None))))
    return out


def assert_same(make: Callable[[], h2.connection.H2Connection], reads: list[bytes]) -> Any:
    """`reads` through InboundFrames give what they give h2 straight; returns that."""
    expected = run(make, reads, through_inbound=False)
    assert run(make, reads, through_inbound=True) == expected
    return expected


def assert_same_however_read(
    make: Callable[[], h2.connection.H2Connection], data: bytes, reads: list[bytes]
) -> None:
    """As `assert_same`, and what is accepted gives the same in one read or a byte at a time."""
    expected = assert_same(make, reads)
    if expected[0] == "ok":
        assert run(make, [data], through_inbound=True) == expected
        assert run(make, [data[i : i + 1] for i in range(len(data))], through_inbound=True) == expected


FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FUZZ
@given(data=server_frames(), points=st.lists(st.integers(0, 1 << 20), max_size=8))
def test_server_side_matches_h2(data: bytes, points: list[int]) -> None:
    assert_same_however_read(server_connection, data, cuts(data, points))


@FUZZ
@given(data=client_frames(), points=st.lists(st.integers(0, 1 << 20), max_size=8))
def test_client_side_matches_h2(data: bytes, points: list[int]) -> None:
    assert_same_however_read(client_connection, data, cuts(data, points))


# The checks InboundFrames makes before it takes a DATA frame, one case each, cut at every byte.
REQUESTS = PREFACE + SettingsFrame(0).serialize() + _headers(1, REQUEST, {"END_HEADERS"})
WITH_LENGTH = (  # h2load and curl send one
    PREFACE
    + SettingsFrame(0).serialize()
    + _headers(1, [*REQUEST, (b"content-length", b"10")], {"END_HEADERS"})
)
CASES = {
    "many frames in a read": REQUESTS + b"".join(_data(1, 100, set(), None) for _ in range(20)),
    "end of stream": REQUESTS + _data(1, 4000, set(), None) + _data(1, 100, {"END_STREAM"}, None),
    "empty frames": REQUESTS + _data(1, 0, set(), None) + _data(1, 0, {"END_STREAM"}, None),
    "padded": REQUESTS + _data(1, 100, set(), 7) + _data(1, 0, set(), 0) + _data(1, 9, {"END_STREAM"}, 200),
    "padding past the body": REQUESTS + _bad_padding(1),
    "oversize": REQUESTS + _raw_data(1, MAX_FRAME + 1),
    "oversize, not DATA": REQUESTS
    + (MAX_FRAME + 1).to_bytes(3, "big")
    + b"\x06\x00"
    + bytes(4 + MAX_FRAME + 1),
    "past the stream window": REQUESTS + b"".join(_data(1, MAX_FRAME, set(), None) for _ in range(5)),
    "after END_STREAM": REQUESTS + _data(1, 10, {"END_STREAM"}, None) + _data(1, 10, set(), None),
    "after RST_STREAM": REQUESTS + RstStreamFrame(1, error_code=8).serialize() + _data(1, 10, set(), None),
    "after GOAWAY": REQUESTS + GoAwayFrame(0, last_stream_id=1).serialize() + _data(1, 10, set(), None),
    "on a stream never opened": REQUESTS + _data(3, 10, set(), None),
    "on stream 0": REQUESTS + _raw_data(0, 10),
    "in a header block": REQUESTS + _headers(3, REQUEST, set()) + _data(1, 10, set(), None),
    "past content-length": WITH_LENGTH + _data(1, 6, set(), None) + _data(1, 6, set(), None),
    "short of content-length": WITH_LENGTH + _data(1, 6, set(), None) + _data(1, 3, {"END_STREAM"}, None),
    "content-length": WITH_LENGTH + _data(1, 6, set(), None) + _data(1, 4, {"END_STREAM"}, None),
}


@pytest.mark.parametrize("case", CASES)
def test_each_check_matches_h2_cut_anywhere(case: str) -> None:
    data = CASES[case]
    assert_same_however_read(server_connection, data, [data])
    for cut in cut_points(data):
        assert_same(server_connection, [data[:cut], data[cut:]])


# The checks InboundFrames makes before it takes a HEADERS frame on a client's stream, one case each.
RESPONSE = [(b":status", b"200"), (b"content-type", b"application/grpc")]
TRAILERS = [(b"grpc-status", b"0")]
END = {"END_HEADERS", "END_STREAM"}


def _priority_headers(stream_id: int, fields: list[tuple[bytes, bytes]]) -> bytes:
    frame = HeadersFrame(stream_id, hpack.Encoder().encode(fields), stream_weight=16, depends_on=0)
    frame.flags = {"END_HEADERS", "PRIORITY"}  # type: ignore[assignment]
    return frame.serialize()


def _padded_headers(stream_id: int, fields: list[tuple[bytes, bytes]]) -> bytes:
    frame = HeadersFrame(stream_id, hpack.Encoder().encode(fields), pad_length=5)
    frame.flags = {"END_HEADERS", "PADDED"}  # type: ignore[assignment]
    return frame.serialize()


def _response_then(stream_id: int, *frames: bytes) -> bytes:
    return _headers(stream_id, RESPONSE, {"END_HEADERS"}) + b"".join(frames)


CLIENT_CASES = {
    "response, message, trailers": _response_then(5, _data(5, 10, set(), None), _headers(5, TRAILERS, END)),
    "trailers-only": _headers(5, [(b":status", b"200"), *TRAILERS], END),
    "response ending an open stream": _headers(1, RESPONSE, END),
    "many in a read": b"".join(_response_then(i, _headers(i, TRAILERS, END)) for i in (1, 3, 5)),
    "trailers without END_STREAM": _response_then(5, _headers(5, TRAILERS, {"END_HEADERS"})),
    "informational first": _headers(5, [(b":status", b"100")], {"END_HEADERS"}) + _headers(5, RESPONSE, END),
    "informational ending the stream": _headers(5, [(b":status", b"103")], END),
    "after END_STREAM": _headers(5, RESPONSE, END) + _headers(5, TRAILERS, END),
    "after RST_STREAM": RstStreamFrame(1, error_code=8).serialize() + _headers(1, RESPONSE, END),
    "after GOAWAY": GoAwayFrame(0, last_stream_id=5).serialize() + _headers(5, RESPONSE, END),
    "on a stream never opened": _headers(7, RESPONSE, END),
    "on a server's stream": _headers(2, RESPONSE, END),
    "padded": _padded_headers(5, RESPONSE) + _headers(5, TRAILERS, END),
    "with priority": _priority_headers(5, RESPONSE) + _headers(5, TRAILERS, END),
    "continued": _headers(5, RESPONSE, set()) + ContinuationFrame(5, b"", flags=["END_HEADERS"]).serialize(),
    "in a header block": _headers(3, RESPONSE, set()) + _headers(5, RESPONSE, END),
    "undecodable block": b"\x00\x00\x01\x01\x05\x00\x00\x00\x05\xff",
    "content-length": _headers(5, [*RESPONSE, (b"content-length", b"3")], {"END_HEADERS"})
    + _data(5, 4, {"END_STREAM"}, None),
    "bad content-length": _headers(5, [*RESPONSE, (b"content-length", b"x")], {"END_HEADERS"}),
    "cookie crumbs": _headers(5, [*RESPONSE, (b"cookie", b"a=1"), (b"x-v", b"1"), (b"cookie", b"b=2")], END),
    "invalid field": _headers(5, [*RESPONSE, (b"Upper", b"1")], END),
}
# trio_grpc's configuration (h2's inbound validation off), and h2's defaults (validation on, str headers).
CLIENT_CONFIGS = {
    "trio_grpc": permissive_config(client_side=True, check_inbound=False),
    "h2 defaults": h2.config.H2Configuration(client_side=True, header_encoding="utf-8"),
}


@pytest.mark.parametrize("config", CLIENT_CONFIGS)
@pytest.mark.parametrize("case", CLIENT_CASES)
def test_each_headers_check_matches_h2_cut_anywhere(case: str, config: str) -> None:
    data = CLIENT_CASES[case]
    make = partial(client_connection, CLIENT_CONFIGS[config])
    assert_same_however_read(make, data, [data])
    for cut in range(1, len(data)):
        assert_same(make, [data[:cut], data[cut:]])


def test_taken_headers_leave_h2_decoding_state_as_h2_does() -> None:
    """Blocks that insert into the HPACK table, taken here, decode later blocks that refer to them."""
    encoder = hpack.Encoder()
    blocks = [encoder.encode([*RESPONSE, (b"x-id", b"%d" % i)]) for i in (1, 3, 5)]
    data = b"".join(
        HeadersFrame(stream_id, block, flags=["END_HEADERS"]).serialize()
        for stream_id, block in zip((1, 3, 5), blocks, strict=True)
    )
    expected = assert_same(client_connection, [data])
    assert [event[0].count("x-id") for event in expected[1]] == [1, 1, 1]


def cut_points(data: bytes) -> list[int]:
    """Every byte near the start of each frame (a frame header, a pad length), and every 61st byte beyond.

    Inside a payload one cut is like another; cutting a 16 KiB payload at each of its bytes only made the
    suite slow.
    """
    starts, at = [len(PREFACE)], len(PREFACE)
    while at + 9 <= len(data):
        at += 9 + int.from_bytes(data[at : at + 3], "big")
        starts.append(at)
    near = {start + offset for start in starts for offset in range(-3, 13)}
    return sorted({*range(1, len(data), 61), *(cut for cut in near if 0 < cut < len(data))})


@pytest.mark.parametrize("request_headers", [REQUESTS, WITH_LENGTH])
def test_taken_data_is_a_view_of_the_read(request_headers: bytes) -> None:
    """What the issue is about: a DATA payload taken here is not copied."""
    connection = server_connection()
    inbound = InboundFrames(connection)
    inbound.receive(request_headers)
    read = _data(1, 4000 if request_headers is REQUESTS else 5, set(), None) * 2
    data_events = [event for event in inbound.receive(read) if isinstance(event, h2.events.DataReceived)]
    assert [len(event.data) for event in data_events] == [len(read) // 2 - 9] * 2
    assert all(event.data.obj is read for event in data_events)  # type: ignore[attr-defined]


def test_oversize_frame_refused_from_its_header() -> None:
    """h2 buffers an oversize frame whole before refusing it; its header is enough."""
    inbound = InboundFrames(server_connection())
    inbound.receive(REQUESTS)
    with pytest.raises(h2.exceptions.FrameTooLargeError):
        inbound.receive(_raw_data(1, 1 << 23)[:9])


@pytest.mark.parametrize("sizes", [[10], [10, 20, 30], [70000]])
def test_decoder_keeps_nothing_of_a_view(sizes: list[int]) -> None:
    """Messages from a view of a read, whole, several or spread over pieces, hold no reference to it."""
    from trio_grpc._framing import MessageDecoder, encode_message

    bodies = [bytes([size % 251]) * size for size in sizes]
    read = b"".join(encode_message(body) for body in bodies)
    decoder = MessageDecoder(1 << 20)
    view = memoryview(read)
    messages = decoder.feed(view[:40000]) + decoder.feed(view[40000:])
    assert [bytes(body) for _, body in messages] == bodies
    for _, body in messages:
        assert not isinstance(body, memoryview) or body.obj is not read
