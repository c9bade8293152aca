"""Length-prefixed message framing (sans-I/O).

Every gRPC message on a stream is a 1-byte compressed flag, a 4-byte big-endian length, then the body.
The decoder accepts DATA in any chunking and refuses a length over the limit from the prefix alone,
before a byte of the body is buffered.
"""

from __future__ import annotations

_PREFIX = 5
_COMPRESSED_FLAG = 1 << 32


class FramingError(Exception):
    """The peer broke the framing (bad flag). The stream cannot go on."""


class MessageTooLarge(Exception):
    def __init__(self, length: int, limit: int) -> None:
        super().__init__(f"received message larger than max ({length} vs. {limit})")
        self.length = length
        self.limit = limit


def encode_message(body: bytes, compressed: bool = False) -> bytes:
    # The flag byte and the 4-byte length are one 5-byte big-endian number: one concatenation, not two.
    prefix = (len(body) | _COMPRESSED_FLAG) if compressed else len(body)
    return prefix.to_bytes(_PREFIX, "big") + body


class MessageDecoder:
    """Turns DATA payloads into (compressed, body) messages, copying each body at most once.

    A payload of bytes that is exactly one message gives a read-only view of it, not a copy. A payload
    that is a memoryview (of a socket read, from `InboundFrames`) is never kept: a view of it would pin the
    whole read, so what is kept of it is copied, once. Other messages within one payload are sliced out of
    it (so that a view does not keep a whole payload alive for its smallest message). A message spread over
    payloads is gathered in a buffer of its own, which is then handed out as a read-only view: one copy, and
    a buffer that, once large, is a mapping of its own that goes back to the system when it is dropped.
    """

    __slots__ = ("_buffer", "_compressed", "_length", "max_message_size")

    def __init__(self, max_message_size: int) -> None:
        #: The message being assembled, prefix included.
        self._buffer = bytearray()
        #: Its body length once its prefix is here; -1 before.
        self._length = -1
        self._compressed = False
        self.max_message_size = max_message_size

    @property
    def pending(self) -> int:
        """Bytes of a message not yet complete; non-zero at end of stream means a truncated message."""
        return len(self._buffer)

    def discard(self) -> int:
        """Drop the message being assembled; the number of bytes dropped."""
        dropped = len(self._buffer)
        self._buffer, self._length = bytearray(), -1
        return dropped

    def feed(self, data: bytes | memoryview) -> list[tuple[bool, bytes | memoryview]]:
        """The messages `data` completes. A memoryview is the caller's (a view of a socket read): what is
        kept of it is copied."""
        messages: list[tuple[bool, bytes | memoryview]] = []
        offset = self._continue(data, messages) if self._buffer else 0
        end = len(data)
        while end - offset >= _PREFIX:
            compressed, length = self._parse_prefix(data[offset : offset + _PREFIX])
            start = offset + _PREFIX
            if end - start < length:
                self._compressed, self._length = compressed, length
                break
            if offset == 0 and start + length == end and isinstance(data, bytes):
                messages.append((compressed, memoryview(data)[_PREFIX:]))
            else:  # a slice of bytes is a copy; of a view, `bytes` makes it one
                messages.append((compressed, bytes(data[start : start + length])))
            offset = start + length
        if offset < end:
            self._buffer = bytearray(memoryview(data)[offset:])
        return messages

    def _parse_prefix(self, prefix: bytes | bytearray | memoryview) -> tuple[bool, int]:
        """(compressed, body length) from a 5-byte prefix; refuses a bad flag or an oversize length."""
        flag = prefix[0]
        if flag > 1:
            raise FramingError(f"invalid compressed flag {flag}")
        length = int.from_bytes(prefix[1:_PREFIX], "big")
        if length > self.max_message_size:
            raise MessageTooLarge(length, self.max_message_size)
        return flag == 1, length

    def _continue(self, data: bytes | memoryview, messages: list[tuple[bool, bytes | memoryview]]) -> int:
        """Add `data` to the message being assembled, completing it if `data` holds the rest; how many
        bytes of `data` that took."""
        buffer = self._buffer
        offset = 0
        if self._length < 0:  # its prefix is still incomplete
            offset = _PREFIX - len(buffer)
            buffer += data[:offset]
            if len(buffer) < _PREFIX:
                return len(data)
            self._compressed, self._length = self._parse_prefix(buffer)
        needed = _PREFIX + self._length - len(buffer)
        if len(data) - offset < needed:
            buffer += memoryview(data)[offset:]
            return len(data)
        buffer += memoryview(data)[offset : offset + needed]
        # Nobody else holds the buffer, and a view stops it from being resized: it stays as it is.
        messages.append((self._compressed, memoryview(buffer)[_PREFIX:].toreadonly()))
        self._buffer, self._length = bytearray(), -1
        return offset + needed
