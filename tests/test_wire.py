"""Property and example tests for the sans-I/O wire layer: framing, grpc-timeout, metadata, compression.

The reference is the gRPC over HTTP/2 spec (grpc/grpc doc/PROTOCOL-HTTP2.md).
"""

from __future__ import annotations

import base64
import gzip
import itertools
import math
import re
import zlib
from fractions import Fraction

import pytest
from hyperframe.frame import DataFrame, _raw_data_repr
from hypothesis import given, settings
from hypothesis import strategies as st

import trio_grpc._transport  # noqa: F401  (what makes DATA frames' repr cheap)
from trio_grpc._compression import DecompressedTooLarge, compress, decompress
from trio_grpc._framing import FramingError, MessageDecoder, MessageTooLarge, encode_message
from trio_grpc._metadata import (
    MetadataError,
    decode_metadata,
    encode_metadata,
    percent_decode,
    percent_encode,
)
from trio_grpc._timeout import format_timeout, parse_timeout

FAST = settings(max_examples=200, deadline=None)
SLOW = settings(max_examples=50, deadline=None)

# --------------------------------------------------------------------------------------------------
# Framing
# --------------------------------------------------------------------------------------------------

messages_st = st.lists(st.tuples(st.booleans(), st.binary(max_size=300)), max_size=8)


def _encode_all(messages: list[tuple[bool, bytes]]) -> bytes:
    return b"".join(encode_message(body, compressed) for compressed, body in messages)


def _split(stream: bytes, cuts: list[int]) -> list[bytes]:
    bounds = [0, *sorted(cuts), len(stream)]
    return [stream[a:b] for a, b in itertools.pairwise(bounds)]


def _feed_all(decoder: MessageDecoder, chunks: list[bytes]) -> list[tuple[bool, bytes]]:
    out: list[tuple[bool, bytes]] = []
    for chunk in chunks:
        out.extend(decoder.feed(chunk))
    return out


def _immutable(body: bytes | memoryview) -> bool:
    """A body is bytes, or a read-only view: nothing may change it later."""
    return type(body) is bytes or (isinstance(body, memoryview) and body.readonly)


def test_decoder_takes_a_payload_that_is_one_message_without_copying() -> None:
    payload = encode_message(b"x" * 70000)
    ((compressed, body),) = MessageDecoder(max_message_size=100000).feed(payload)
    assert isinstance(body, memoryview) and body.obj is payload and body == b"x" * 70000
    assert not compressed


def test_decoder_copies_small_messages_out_of_a_shared_payload() -> None:
    """Messages sharing a payload, and the start of one that is still incomplete, are copied out of it:
    a view would keep the whole payload alive for as long as the smallest of them is unread."""
    payload = encode_message(b"a") + encode_message(b"b" * 100)[:50]
    decoder = MessageDecoder(max_message_size=1000)
    messages = decoder.feed(payload)
    assert messages == [(False, b"a")] and type(messages[0][1]) is bytes
    assert decoder.pending == 50
    assert decoder.feed(b"b" * 55) == [(False, b"b" * 100)]
    assert decoder.pending == 0


@FAST
@given(data=st.binary(max_size=40), pad_length=st.one_of(st.none(), st.integers(0, 5)))
def test_data_frame_repr_is_hyperframes_own(data: bytes, pad_length: int | None) -> None:
    """trio_grpc makes the repr h2 takes of every received DATA frame cheap; the text stays the same."""
    frame = DataFrame(1, data=data)
    if pad_length is not None:
        frame.flags.add("PADDED")
        frame.pad_length = pad_length
    assert repr(frame).endswith(": " + _raw_data_repr(frame.serialize_body()))


def test_encode_message_layout() -> None:
    assert encode_message(b"abc") == b"\x00\x00\x00\x00\x03abc"
    assert encode_message(b"", compressed=True) == b"\x01\x00\x00\x00\x00"
    assert encode_message(b"x" * 0x10203) == b"\x00\x00\x01\x02\x03" + b"x" * 0x10203


@FAST
@given(messages=messages_st, data=st.data())
def test_decoder_any_chunking_yields_same_messages(
    messages: list[tuple[bool, bytes]], data: st.DataObject
) -> None:
    stream = _encode_all(messages)
    # Duplicate cut points give empty chunks; adjacent ones give 1-byte chunks.
    cuts = data.draw(st.lists(st.integers(0, len(stream)), max_size=40), label="cuts")
    decoder = MessageDecoder(max_message_size=300)
    out = _feed_all(decoder, _split(stream, cuts))
    assert out == messages
    assert all(_immutable(body) for _, body in out)
    assert decoder.pending == 0


@FAST
@given(messages=messages_st)
def test_decoder_one_byte_chunks_and_empty_chunks(messages: list[tuple[bool, bytes]]) -> None:
    stream = _encode_all(messages)
    decoder = MessageDecoder(max_message_size=300)
    out: list[tuple[bool, bytes]] = []
    for i in range(len(stream)):
        out.extend(decoder.feed(b""))
        out.extend(decoder.feed(stream[i : i + 1]))
    out.extend(decoder.feed(b""))
    assert out == messages
    assert decoder.pending == 0


@FAST
@given(messages=messages_st.filter(bool), data=st.data())
def test_truncated_stream_leaves_pending(messages: list[tuple[bool, bytes]], data: st.DataObject) -> None:
    # Cut strictly inside one message (at a message boundary the stream would be complete).
    index = data.draw(st.integers(0, len(messages) - 1), label="index")
    compressed, body = messages[index]
    encoded = encode_message(body, compressed)
    keep = data.draw(st.integers(1, len(encoded) - 1), label="keep")
    stream = _encode_all(messages[:index]) + encoded[:keep]
    cuts = data.draw(st.lists(st.integers(0, len(stream)), max_size=10), label="cuts")
    decoder = MessageDecoder(max_message_size=300)
    out = _feed_all(decoder, _split(stream, cuts))
    assert out == messages[:index]
    assert decoder.pending == keep


@FAST
@given(limit=st.integers(0, 2**32 - 2), data=st.data())
def test_oversized_length_refused_from_prefix_alone(limit: int, data: st.DataObject) -> None:
    length = data.draw(st.integers(limit + 1, 2**32 - 1), label="length")
    flag = data.draw(st.sampled_from([b"\x00", b"\x01"]), label="flag")
    prefix = flag + length.to_bytes(4, "big")
    decoder = MessageDecoder(max_message_size=limit)
    # Four bytes are not yet a prefix: nothing to judge.
    assert decoder.feed(prefix[:4]) == []
    # The fifth completes it; no body byte has been fed.
    with pytest.raises(MessageTooLarge) as info:
        decoder.feed(prefix[4:])
    assert info.value.length == length
    assert info.value.limit == limit


def test_oversized_length_refused_in_one_chunk_after_good_messages() -> None:
    decoder = MessageDecoder(max_message_size=10)
    with pytest.raises(MessageTooLarge):
        decoder.feed(encode_message(b"ok") + b"\x00\x00\x00\x00\x0b")


def test_exactly_max_size_is_accepted() -> None:
    limit = 1000
    decoder = MessageDecoder(max_message_size=limit)
    body = bytes(range(256)) * 3 + b"z" * (limit - 768)
    encoded = encode_message(body, compressed=True)
    assert decoder.feed(encoded[:5]) == []  # the prefix of a max-size message is fine
    assert decoder.pending == 5
    assert decoder.feed(encoded[5:]) == [(True, body)]
    assert decoder.pending == 0
    assert MessageDecoder(max_message_size=0).feed(encode_message(b"")) == [(False, b"")]


@pytest.mark.parametrize("flag", [2, 3, 0x7F, 0x80, 0xFF])
def test_bad_compressed_flag(flag: int) -> None:
    decoder = MessageDecoder(max_message_size=100)
    with pytest.raises(FramingError):
        decoder.feed(bytes([flag]) + b"\x00\x00\x00\x01x")


@FAST
@given(flag=st.integers(2, 255), before=messages_st)
def test_bad_compressed_flag_anywhere(flag: int, before: list[tuple[bool, bytes]]) -> None:
    decoder = MessageDecoder(max_message_size=300)
    stream = _encode_all(before)
    assert _feed_all(decoder, [stream]) == before
    with pytest.raises(FramingError):
        decoder.feed(bytes([flag]) + b"\x00\x00\x00\x00")


# --------------------------------------------------------------------------------------------------
# grpc-timeout
# --------------------------------------------------------------------------------------------------

_UNITS = {
    b"H": Fraction(3600),
    b"M": Fraction(60),
    b"S": Fraction(1),
    b"m": Fraction(1, 10**3),
    b"u": Fraction(1, 10**6),
    b"n": Fraction(1, 10**9),
}
_VALID_TIMEOUT = re.compile(rb"[0-9]{1,8}[HMSmun]")
TEN_YEARS = 10 * 365.25 * 24 * 3600


def test_timeout_spec_example() -> None:
    assert parse_timeout(b"1S") == 1.0  # "grpc-timeout = 1S" in the spec's sample request


@FAST
@given(digits=st.from_regex(rb"[0-9]{1,8}", fullmatch=True), unit=st.sampled_from(sorted(_UNITS)))
def test_parse_valid_timeout(digits: bytes, unit: bytes) -> None:
    expected = float(int(digits) * _UNITS[unit])
    assert math.isclose(parse_timeout(digits + unit), expected, rel_tol=1e-15, abs_tol=0.0)


@pytest.mark.parametrize(
    "value",
    [
        b"",
        b"S",
        b"1",
        b"123456789S",
        b"000000001S",
        b"1s",
        b"1h",
        b"1x",
        b"1\x00",
        b"-1S",
        b"+1S",
        b" 1S",
        b"1S ",
        b"1 S",
        b"1.5S",
        b"1e3S",
        b"0x1S",
        b"1SS",
        b"\xd9\xa1S",
        b"\xef\xbc\x91S",
    ],
)
def test_malformed_timeout(value: bytes) -> None:
    with pytest.raises(ValueError):
        parse_timeout(value)


@FAST
@given(value=st.binary(max_size=12))
def test_parse_timeout_accepts_exactly_the_grammar(value: bytes) -> None:
    if _VALID_TIMEOUT.fullmatch(value):
        assert parse_timeout(value) >= 0.0
    else:
        with pytest.raises(ValueError):
            parse_timeout(value)


def _check_formatted(seconds: float) -> None:
    formatted = format_timeout(seconds)
    assert _VALID_TIMEOUT.fullmatch(formatted), formatted
    parsed = parse_timeout(formatted)
    assert parsed >= seconds, (seconds, formatted, parsed)  # never a shorter deadline
    step = float(_UNITS[formatted[-1:]])
    assert parsed - seconds <= step * (1 + 1e-9), (seconds, formatted, parsed)


@FAST
@given(seconds=st.floats(min_value=0.0, max_value=TEN_YEARS, exclude_max=True))
def test_format_timeout_never_shorter(seconds: float) -> None:
    _check_formatted(seconds)


@pytest.mark.parametrize(
    "seconds",
    [
        0.0,
        1e-9,
        1.5e-9,
        0.1,
        0.099999999,
        0.0999999991,
        0.1 + 1e-17,
        1.0,
        99.999999,
        99.9999991,
        100.0,
        99999.999,
        6000000.0,
        5999999.5,
        359999940.0,
        0.3,
        0.7,
        1 / 3,
        2 / 3,
        1e-7 * 3,
        # seconds * 10**k rounds down onto the integer just below the exact product:
        8.500000000000001e-08,
        7.500000000000001e-05,
        0.043000000000000003,
    ],
)
def test_format_timeout_boundaries(seconds: float) -> None:
    _check_formatted(seconds)


@FAST
@given(amount=st.integers(0, 99_999_999), unit=st.sampled_from([b"n", b"u", b"m", b"S"]), up=st.booleans())
def test_format_timeout_next_to_unit_boundaries(amount: int, unit: bytes, up: bool) -> None:
    exact = float(amount * _UNITS[unit])
    _check_formatted(math.nextafter(exact, math.inf if up else 0.0))
    _check_formatted(exact)


def test_format_timeout_examples() -> None:
    assert format_timeout(1.0) == b"1000000u"  # 10**9 n does not fit in 8 digits
    assert format_timeout(0.001) == b"1000000n"
    assert format_timeout(0.0) == b"0n"
    assert format_timeout(-5.0) == b"0n"
    assert format_timeout(3600.0) == b"3600000m"
    assert format_timeout(10 * 86400.0) == b"864000S"


# --------------------------------------------------------------------------------------------------
# grpc-message percent-encoding
# --------------------------------------------------------------------------------------------------

_PERCENT_ENCODED = re.compile(rb"(?:[\x20-\x24\x26-\x7e]|%[0-9A-F]{2})*")


@FAST
@given(text=st.text())
def test_percent_round_trip(text: str) -> None:
    encoded = percent_encode(text)
    assert _PERCENT_ENCODED.fullmatch(encoded), encoded
    assert percent_decode(encoded) == text


@FAST
@given(text=st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E, exclude_characters="%")))
def test_percent_printable_ascii_unchanged(text: str) -> None:
    assert percent_encode(text) == text.encode("ascii")


@FAST
@given(raw=st.binary())
def test_percent_decode_never_raises(raw: bytes) -> None:
    assert isinstance(percent_decode(raw), str)


def test_percent_examples() -> None:
    # Percent-Byte-Encoded -> "%" 2HEXDIGIT (0-9 A-F); '%' itself and non-ASCII UTF-8 bytes are escaped.
    assert percent_encode("my error: 100% done \u2713") == b"my error: 100%25 done %E2%9C%93"
    assert percent_encode("tab\there\nnul\x00") == b"tab%09here%0Anul%00"
    assert percent_decode(b"my error: 100%25 done %E2%9C%93") == "my error: 100% done \u2713"
    assert percent_decode(b"%e2%9c%93") == "\u2713"  # lower-case hex is accepted


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (b"%zz", "%zz"),
        (b"abc%", "abc%"),
        (b"%4", "%4"),
        (b"%%41", "%A"),
        (b"100%", "100%"),
        (b"%2", "%2"),
        (b"%g0ok", "%g0ok"),
        (b"%FF", "\ufffd"),
        (b"a%E2%9Cb", "a\ufffdb"),
    ],
)
def test_percent_decode_lenient(raw: bytes, expected: str) -> None:
    assert percent_decode(raw) == expected


# --------------------------------------------------------------------------------------------------
# Metadata
# --------------------------------------------------------------------------------------------------

_RESERVED_NAMES = {
    "content-type",
    "te",
    "connection",
    "keep-alive",
    "proxy-connection",
    "transfer-encoding",
    "upgrade",
    "host",
}


def _reserved(key: str) -> bool:
    return key.startswith((":", "grpc-")) or key in _RESERVED_NAMES


ascii_keys = st.from_regex(r"[0-9a-zA-Z_.\-]+", fullmatch=True).filter(
    lambda k: not _reserved(k.lower()) and not k.lower().endswith("-bin")
)
bin_keys = st.builds(
    lambda k, suffix: k + suffix,
    st.from_regex(r"[0-9a-zA-Z_.\-]+", fullmatch=True),
    st.sampled_from(["-bin", "-BIN", "-Bin"]),
).filter(lambda k: not _reserved(k.lower()))
printable = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E))
pairs = st.one_of(st.tuples(ascii_keys, printable), st.tuples(bin_keys, st.binary()))


@FAST
@given(metadata=st.lists(pairs, max_size=6))
def test_metadata_round_trip(metadata: list[tuple[str, str | bytes]]) -> None:
    headers = encode_metadata(metadata)
    for key, value in headers:
        assert re.fullmatch(rb"[0-9a-z_.\-]+", key)
        assert re.fullmatch(rb"[\x20-\x7e]*", value)
        if key.endswith(b"-bin"):
            assert not value.endswith(b"=")  # emit un-padded
    assert decode_metadata(headers) == tuple((key.lower(), value) for key, value in metadata)


def test_metadata_keys_go_out_lowercase() -> None:
    assert encode_metadata([("X-Request-ID", "abc"), ("Trace-BIN", b"\x00")]) == [
        (b"x-request-id", b"abc"),
        (b"trace-bin", b"AA"),
    ]
    assert encode_metadata(None) == []
    assert encode_metadata([]) == []


@FAST
@given(key=bin_keys, value=st.binary())
def test_bin_padded_or_unpadded(key: str, value: bytes) -> None:
    raw_key = key.lower().encode()
    padded = base64.b64encode(value)
    unpadded = padded.rstrip(b"=")
    assert decode_metadata([(raw_key, padded)]) == ((key.lower(), value),)
    assert decode_metadata([(raw_key, unpadded)]) == ((key.lower(), value),)


@FAST
@given(key=bin_keys, values=st.lists(st.binary(), min_size=1, max_size=5))
def test_bin_values_joined_with_commas_are_split(key: str, values: list[bytes]) -> None:
    joined = b",".join(base64.b64encode(value).rstrip(b"=") for value in values)
    assert decode_metadata([(key.lower().encode(), joined)]) == tuple((key.lower(), v) for v in values)


@pytest.mark.parametrize(
    "key",
    [
        ":path",
        ":authority",
        "content-type",
        "Content-Type",
        "te",
        "TE",
        "grpc-timeout",
        "grpc-anything",
        "GRPC-Status",
        "grpc-trace-bin",
        "connection",
        "host",
        "transfer-encoding",
    ],
)
def test_reserved_keys_refused_on_encode(key: str) -> None:
    with pytest.raises(MetadataError):
        encode_metadata([(key, b"x" if key.lower().endswith("-bin") else "x")])


def test_reserved_keys_dropped_on_decode() -> None:
    headers = [
        (b":path", b"/a/b"),
        (b":status", b"200"),
        (b"content-type", b"application/grpc"),
        (b"te", b"trailers"),
        (b"grpc-timeout", b"1S"),
        (b"grpc-anything", b"x"),
        (b"grpc-status-details-bin", b"AA"),
        (b"connection", b"close"),
        (b"user-key", b"kept"),
        (b"user-bin", b"AQI"),
    ]
    assert decode_metadata(headers) == (("user-key", "kept"), ("user-bin", b"\x01\x02"))


@pytest.mark.parametrize(
    "key", ["", "a b", "a/b", "a:b", "caf\xe9", "\u212a", "\u212a-bin", "a\n", "a\x00", "@"]
)
def test_invalid_keys_refused(key: str) -> None:
    with pytest.raises(MetadataError):
        encode_metadata([(key, b"x" if key.endswith("-bin") else "x")])


@pytest.mark.parametrize(
    "value", ["caf\xe9", "\u2713", "\u00a0", "a\n", "\n", "a\r\nb", "\x00", "\t", "\x7f", "x\x1b"]
)
def test_non_printable_str_values_refused(value: str) -> None:
    with pytest.raises(MetadataError):
        encode_metadata([("key", value)])


@FAST
@given(value=st.text(min_size=1).filter(lambda v: not re.fullmatch(r"[\x20-\x7e]*", v)))
def test_any_non_printable_ascii_value_refused(value: str) -> None:
    with pytest.raises(MetadataError):
        encode_metadata([("key", value)])


def test_value_types_per_key_kind() -> None:
    with pytest.raises(MetadataError):
        encode_metadata([("key", b"bytes")])
    with pytest.raises(MetadataError):
        encode_metadata([("key-bin", "str")])
    assert encode_metadata([("key-bin", bytearray(b"\xff")), ("k2-bin", memoryview(b"\xfe"))]) == [
        (b"key-bin", b"/w"),
        (b"k2-bin", b"/g"),
    ]


@pytest.mark.parametrize("raw", [b"not base64!", b"abcde", b"ab cd", b"YQ=x", b"\xff\xfe", b"-_-_"])
def test_invalid_base64_bin_value_dropped(raw: bytes) -> None:
    assert decode_metadata([(b"a-bin", raw), (b"b", b"kept")]) == (("b", "kept"),)


header_keys = st.binary(min_size=1, max_size=12).map(bytes.lower)
header_values = st.binary(max_size=20).filter(lambda v: not {0, 10, 13} & set(v))


@FAST
@given(headers=st.lists(st.tuples(header_keys, header_values), max_size=6))
def test_received_metadata_can_be_echoed(headers: list[tuple[bytes, bytes]]) -> None:
    # Spec: an implementation may accept or throw away an invalid ASCII-Value, but what it accepts the
    # application must be permitted to echo back as metadata.
    metadata = decode_metadata(headers)
    assert decode_metadata(encode_metadata(metadata)) == metadata


# --------------------------------------------------------------------------------------------------
# Compression
# --------------------------------------------------------------------------------------------------

codecs = st.sampled_from(["gzip", "deflate"])


@FAST
@given(name=codecs, data=st.binary(max_size=2000))
def test_compress_round_trip(name: str, data: bytes) -> None:
    assert decompress(name, compress(name, data), max_size=len(data)) == data


@FAST
@given(data=st.binary(max_size=2000))
def test_gzip_and_deflate_interop(data: bytes) -> None:
    assert gzip.decompress(compress("gzip", data)) == data
    assert decompress("gzip", gzip.compress(data), max_size=2000) == data
    # gRPC "deflate" is the zlib format (RFC 1950), not raw deflate.
    assert zlib.decompress(compress("deflate", data)) == data
    assert decompress("deflate", zlib.compress(data), max_size=2000) == data


@FAST
@given(name=codecs, data=st.binary(max_size=500), limit=st.integers(0, 600))
def test_decompress_limit_is_exact(name: str, data: bytes, limit: int) -> None:
    compressed = compress(name, data)
    if len(data) <= limit:
        assert decompress(name, compressed, max_size=limit) == data
    else:
        with pytest.raises(DecompressedTooLarge):
            decompress(name, compressed, max_size=limit)


@pytest.mark.parametrize("name", ["gzip", "deflate"])
def test_decompression_bomb_refused(name: str) -> None:
    bomb = compress(name, bytes(10_000_000))
    assert len(bomb) < 20_000
    with pytest.raises(DecompressedTooLarge):
        decompress(name, bomb, max_size=4 * 1024 * 1024)


@pytest.mark.parametrize("name", ["gzip", "deflate"])
@pytest.mark.parametrize("raw", [b"", b"not compressed at all", b"\x1f\x8b", b"\x78\x9c\xff\xff\xff"])
def test_corrupt_data_raises_zlib_error(name: str, raw: bytes) -> None:
    with pytest.raises(zlib.error):
        decompress(name, raw, max_size=1000)


@SLOW
@given(name=codecs, data=st.binary(max_size=300), cut=st.integers(0, 10_000))
def test_truncated_compressed_data_raises(name: str, data: bytes, cut: int) -> None:
    compressed = compress(name, data)
    cut %= len(compressed)
    with pytest.raises(zlib.error):
        decompress(name, compressed[:cut], max_size=1000)


@pytest.mark.parametrize("name", ["gzip", "deflate"])
def test_bad_checksum_raises(name: str) -> None:
    compressed = bytearray(compress(name, b"hello world" * 10))
    # gzip ends with CRC32 then ISIZE; zlib ends with Adler-32.
    compressed[-8 if name == "gzip" else -1] ^= 0xFF
    with pytest.raises(zlib.error):
        decompress(name, bytes(compressed), max_size=1000)
