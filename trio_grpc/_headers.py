"""Header blocks without h2's per-call cost: HPACK blocks of constant header lists, reused (sans-I/O).

Most calls send the same header lists: a server's `:status 200` and content-type, its `grpc-status: 0`, a
client's method, scheme, authority and path. HPACK encodes such a list, once its fields are in the dynamic
table, to the same few bytes of table references every time, as long as the table is as it was. So
`HeaderEncoder` keeps the block of each constant list together with the state of the table it refers to (its
length and newest entry) and hands the block out again while that state holds; a block that changed the
table (the first, which inserts the fields) is never reused. Anything after the constant list is encoded
as usual, after it: a field it inserts only makes the next block be encoded afresh. Nothing here ever
produces bytes that plain HPACK encoding of the same list would not have produced in the same state.

`header_frames` frames a block as HEADERS (and CONTINUATION, past the frame size), so that a server can
answer without h2 building, validating and serializing frame objects per call.

`malformed_response` is the check of a received response or trailers block (RFC 9113 8.2.1, 8.3.2) that h2's
inbound validation made, in a few C-level passes over the whole block instead of h2's chain of generators
per field; a client fails just that call with it, where h2 failed the whole connection.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import hpack
import hpack.table

Header = tuple[bytes, bytes]
#: A constant header list: a tuple, so that it can key the cache.
ConstantHeaders = tuple[Header, ...]

# Constant lists come from our own code (a server's few, a client's one per method path): bounded anyway,
# this only guards against a program that calls an unbounded number of paths on one connection.
_MAX_CACHED_BLOCKS = 64
#: Received blocks kept (at most 16 x 512 bytes, and their headers, per connection).
_MAX_DECODED_BLOCKS = 16
#: A received block larger than this is decoded every time (a request's usual block is under 200 bytes).
_MAX_CACHED_BLOCK_SIZE = 512

_HEADERS = 0x1
_CONTINUATION = 0x9
_END_STREAM = 0x1
_END_HEADERS = 0x4


class _DynamicEntries(list[Header]):
    """An HPACK dynamic table's entries, newest first, in a list instead of hpack's deque.

    An empty deque takes 760 bytes, and every connection has two tables, most of them empty or nearly (an
    idle connection, a client's few constant fields). hpack only indexes, iterates, `clear`s, `pop`s the
    oldest and `appendleft`s the newest: a table holds at most a few hundred entries, so the insert at the
    front is a short memmove.
    """

    __slots__ = ()

    def appendleft(self, entry: Header) -> None:
        self.insert(0, entry)


def _lean_table(table: hpack.table.HeaderTable) -> None:
    table.dynamic_entries = _DynamicEntries()  # type: ignore[assignment]


class HeaderEncoder(hpack.Encoder):
    """h2's HPACK encoder, with the blocks of constant header lists kept for reuse.

    `encode_block` is what server and client call; HPACK state must change only for a block that is sent,
    so they call it once h2 has accepted the stream transition the block goes with.
    """

    def __init__(self) -> None:
        super().__init__()
        _lean_table(self.header_table)
        self._blocks: dict[ConstantHeaders, tuple[bytes, int, object]] = {}

    def encode_block(self, constant: ConstantHeaders, headers: Sequence[Header] = ()) -> bytes:
        """The HPACK block of `constant` followed by `headers`."""
        table = self.header_table
        if table.resized:  # a table size update must open the next block: let hpack write it
            return super().encode([*constant, *headers])
        entries = table.dynamic_entries
        length, newest = len(entries), entries[0] if entries else None
        cached = self._blocks.get(constant)
        if cached is not None and cached[1] == length and cached[2] is newest:
            block = cached[0]
        else:
            block = super().encode(constant)
            unchanged = len(entries) == length and (entries[0] if entries else None) is newest
            if unchanged and (cached is not None or len(self._blocks) < _MAX_CACHED_BLOCKS):
                self._blocks[constant] = (block, length, newest)  # the newest entry is kept alive
        if headers:
            block += super().encode(headers)
        return block


class HeaderDecoder(hpack.Decoder):
    """h2's HPACK decoder, with the headers of blocks that left the dynamic table as it was kept for reuse.

    A client sends the same block call after call once its fields are in the table (or sent as literals
    that are not indexed, as nghttp2 sends `:path`): the same bytes in the same table state decode to the
    same headers and leave the table as it was, so they are decoded once. Only small blocks are kept, and
    only a few: a peer sending ever new blocks costs us a lookup each, not memory.
    """

    def __init__(self) -> None:
        super().__init__()
        _lean_table(self.header_table)
        self._blocks: dict[bytes, tuple[Any, int, object, int]] | None = None  # allocated on first use

    def decode(self, data: bytes, raw: bool = False) -> Any:
        table = self.header_table
        entries = table.dynamic_entries
        length, newest, size = len(entries), entries[0] if entries else None, table.maxsize
        blocks = self._blocks
        if blocks is not None and raw:
            cached = blocks.get(data)
            if cached is not None and cached[1] == length and cached[2] is newest and cached[3] == size:
                return cached[0]  # h2 copies the list it is given
        headers = super().decode(data, raw)
        unchanged = len(entries) == length and (entries[0] if entries else None) is newest
        if raw and unchanged and table.maxsize == size and _cacheable(data):
            if blocks is None:
                blocks = self._blocks = {}
            if len(blocks) < _MAX_DECODED_BLOCKS:
                blocks[bytes(data)] = (headers, length, newest, size)
        return headers


def _cacheable(block: bytes) -> bool:
    """Small, and not opening with a table size update (whose validity depends on the current limit)."""
    return 0 < len(block) <= _MAX_CACHED_BLOCK_SIZE and block[0] & 0xE0 != 0x20


def header_frames(stream_id: int, block: bytes, end_stream: bool, max_frame_size: int) -> bytes:
    """HEADERS carrying `block`, with CONTINUATION frames if it is larger than `max_frame_size`."""
    if len(block) <= max_frame_size:
        flags = _END_HEADERS | (_END_STREAM if end_stream else 0)
        return _frame_header(len(block), _HEADERS, flags, stream_id) + block
    frames: list[bytes] = []
    for offset in range(0, len(block), max_frame_size):
        chunk = block[offset : offset + max_frame_size]
        last = offset + max_frame_size >= len(block)
        kind = _CONTINUATION if offset else _HEADERS
        flags = (_END_HEADERS if last else 0) | (_END_STREAM if end_stream and not offset else 0)
        frames += (_frame_header(len(chunk), kind, flags, stream_id), chunk)
    return b"".join(frames)


def _frame_header(length: int, kind: int, flags: int, stream_id: int) -> bytes:
    return length.to_bytes(3, "big") + bytes((kind, flags)) + stream_id.to_bytes(4, "big")


# -- received responses ----------------------------------------------------------------------------------

# A field name: no controls, space, ':' (pseudo-headers are checked apart), uppercase, DEL or non-ASCII.
_NAME = rb"[\x21-\x39\x3b-\x40\x5b-\x7e]+"
_NAME_FIELD = re.compile(_NAME)
_NAMES = re.compile(rb"(?:%s(?:\n%s)*)?" % (_NAME, _NAME))  # names joined with newlines
_FORBIDDEN_IN_VALUE = re.compile(rb"[\x00\r\n]")
_PADDED_VALUES = re.compile(rb"(?m)^[ \t]|[ \t]$")  # values (free of newlines) joined with newlines
_CONNECTION_SPECIFIC = frozenset(
    {b"connection", b"keep-alive", b"proxy-connection", b"transfer-encoding", b"upgrade"}
)


def malformed_response(headers: Sequence[Header], trailers: bool) -> str | None:
    """Why a received response header block (`:status` first, no other pseudo-header) or trailers block
    (no pseudo-header) is malformed HTTP/2, or None."""
    if not trailers and (not headers or headers[0][0] != b":status"):
        return "no :status pseudo-header first"
    regular = headers if trailers else headers[1:]
    names = [name for name, _ in regular]
    values = [value for _, value in headers]
    te = [value for name, value in regular if name == b"te"]
    valid = (
        _NAMES.fullmatch(b"\n".join(names)) is not None
        and _CONNECTION_SPECIFIC.isdisjoint(names)
        and _FORBIDDEN_IN_VALUE.search(b"".join(values)) is None
        and _PADDED_VALUES.search(b"\n".join(values)) is None
        and all(value.lower() == b"trailers" for value in te)
    )
    return None if valid else _why_malformed(regular)


def _why_malformed(regular: Sequence[Header]) -> str:
    for name, value in regular:
        if name.startswith(b":"):
            return f"pseudo-header {name!r} where none may be"
        if not _NAME_FIELD.fullmatch(name) or name in _CONNECTION_SPECIFIC:
            return f"invalid header name {name!r}"
        if name == b"te" and value.lower() != b"trailers":
            return f"invalid te header {value!r}"
    return "invalid header value (NUL, CR, LF, or surrounding whitespace)"
