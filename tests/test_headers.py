"""HPACK blocks of constant header lists, reused (trio_grpc._headers): whatever the sequence of blocks and
table size changes, a peer's decoder reads exactly the headers we meant."""

from __future__ import annotations

import h2.config
import h2.connection
import h2.events
import hpack
from hypothesis import given, settings
from hypothesis import strategies as st

from trio_grpc._headers import HeaderDecoder, HeaderEncoder, header_frames

CONSTANTS = [
    ((b":status", b"200"), (b"content-type", b"application/grpc")),
    ((b"grpc-status", b"0"),),
    ((b":status", b"200"), (b"content-type", b"application/grpc"), (b"grpc-status", b"5")),
]
extra_st = st.lists(
    st.tuples(st.sampled_from([b"x-a", b"x-b", b"grpc-message"]), st.binary(min_size=0, max_size=40)),
    max_size=3,
)
step_st = st.one_of(
    st.tuples(st.just("block"), st.integers(0, len(CONSTANTS) - 1), extra_st),
    st.tuples(st.just("resize"), st.sampled_from([0, 64, 256, 4096]), st.just([])),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(step_st, max_size=30))
def test_every_block_decodes_to_the_headers_meant(
    steps: list[tuple[str, int, list[tuple[bytes, bytes]]]],
) -> None:
    encoder = HeaderEncoder()
    decoder = hpack.Decoder()
    for kind, value, extra in steps:
        if kind == "resize":  # the peer's SETTINGS_HEADER_TABLE_SIZE; the decoder learns it from the block
            # Only a change: hpack itself loses a pending size update when set twice to the same size.
            if value != encoder.header_table_size:
                encoder.header_table_size = value
            continue
        block = encoder.encode_block(CONSTANTS[value], extra)
        assert decoder.decode(block, raw=True) == [*CONSTANTS[value], *extra]


received_step_st = st.one_of(
    st.tuples(st.just("block"), st.integers(0, len(CONSTANTS) - 1), extra_st, st.booleans()),
    st.tuples(st.just("resize"), st.sampled_from([0, 64, 256, 4096]), st.just([]), st.just(False)),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(received_step_st, max_size=30))
def test_decoding_with_reuse_gives_what_plain_hpack_gives(
    steps: list[tuple[str, int, list[tuple[bytes, bytes]], bool]],
) -> None:
    """Blocks as a peer's hpack makes them (indexed or not, `never_indexed` fields, table size updates)."""
    encoder = hpack.Encoder()
    plain, reusing = hpack.Decoder(), HeaderDecoder()
    for kind, value, extra, never_indexed in steps:
        if kind == "resize":
            if value != encoder.header_table_size:  # hpack loses a repeated update (see above)
                encoder.header_table_size = value
            continue
        fields = [*CONSTANTS[value], *((n, v, never_indexed) for n, v in extra)]
        block = encoder.encode(fields)
        assert reusing.decode(block, raw=True) == plain.decode(block, raw=True)


def test_a_block_that_left_the_table_as_it_was_is_decoded_once() -> None:
    encoder, decoder = hpack.Encoder(), HeaderDecoder()
    request = [(b":method", b"POST"), (b":path", b"/a.B/C", True), (b"te", b"trailers")]
    first = encoder.encode(request)  # inserts te: trailers
    assert decoder.decode(first, raw=True) == [
        (b":method", b"POST"),
        (b":path", b"/a.B/C"),
        (b"te", b"trailers"),
    ]
    second = encoder.encode(request)
    headers = decoder.decode(second, raw=True)
    assert decoder.decode(second, raw=True) is headers
    third = encoder.encode([(b"x-new", b"1")])  # moves every index: the kept block no longer applies
    decoder.decode(third, raw=True)
    assert decoder.decode(second, raw=True) is not headers


def test_a_peer_sending_ever_new_blocks_fills_only_a_few_places() -> None:
    decoder = HeaderDecoder()
    for index in range(1000):
        block = hpack.Encoder().encode([(b"x-unique", b"%d" % index, True)])  # never indexed: kept
        decoder.decode(block, raw=True)
    assert len(decoder._blocks or {}) <= 16


def test_a_constant_block_is_reused_while_the_table_is_unchanged_and_only_then() -> None:
    encoder = HeaderEncoder()
    constant = CONSTANTS[0]
    first = encoder.encode_block(constant)  # inserts content-type: never reused
    second = encoder.encode_block(constant)  # table references only
    assert len(second) < len(first)
    assert encoder.encode_block(constant) is second
    encoder.encode_block((), [(b"x-new", b"value")])  # a new entry moves every index by one
    moved = encoder.encode_block(constant)
    assert moved is not second and moved != second
    assert encoder.encode_block(constant) is moved


def test_a_block_past_the_frame_size_goes_out_in_continuation_frames() -> None:
    client = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True, header_encoding=None))
    client.initiate_connection()
    stream_id = client.get_next_available_stream_id()
    client.send_headers(
        stream_id, [(b":method", b"GET"), (b":scheme", b"http"), (b":path", b"/"), (b":authority", b"x")]
    )
    client.data_to_send()
    headers = [(b":status", b"200"), *((b"x-%d" % i, b"v" * 100) for i in range(400))]
    block = hpack.Encoder().encode(headers)
    settings_frame = b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"  # the server's (empty) SETTINGS
    frames = header_frames(stream_id, block, end_stream=True, max_frame_size=16384)
    assert len(block) > 2 * 16384  # HEADERS and at least two CONTINUATION frames
    events = client.receive_data(settings_frame + frames)
    response = next(e for e in events if isinstance(e, h2.events.ResponseReceived))
    assert response.headers == headers
    assert any(isinstance(e, h2.events.StreamEnded) for e in events)
