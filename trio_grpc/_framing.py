"""Length-prefixed message framing (sans-I/O).

Every gRPC message on a stream is a 1-byte compressed flag, a 4-byte big-endian length, then the body.
The decoder accepts DATA in any chunking and refuses a length over the limit from the prefix alone,
before a byte of the body is buffered.
"""

from __future__ import annotations

_PREFIX = 5


class FramingError(Exception):
    """The peer broke the framing (bad flag). The stream cannot go on."""


class MessageTooLarge(Exception):
    def __init__(self, length: int, limit: int) -> None:
        super().__init__(f"received message larger than max ({length} vs. {limit})")
        self.length = length
        self.limit = limit


def encode_message(body: bytes, compressed: bool = False) -> bytes:
    return (b"\x01" if compressed else b"\x00") + len(body).to_bytes(4, "big") + body


class MessageDecoder:
    """Turns DATA payloads into (compressed, body) messages."""

    __slots__ = ("_buffer", "max_message_size")

    def __init__(self, max_message_size: int) -> None:
        self._buffer = bytearray()
        self.max_message_size = max_message_size

    @property
    def pending(self) -> int:
        """Bytes of a message not yet complete; non-zero at end of stream means a truncated message."""
        return len(self._buffer)

    def discard(self) -> int:
        """Drop the message being assembled; the number of bytes dropped."""
        dropped = len(self._buffer)
        self._buffer = bytearray()
        return dropped

    def feed(self, data: bytes) -> list[tuple[bool, bytes]]:
        buffer = self._buffer
        if buffer:
            buffer += data
            view: bytes | bytearray = buffer
        else:
            view = data  # common case: whole messages in one chunk, parsed without a copy of the chunk
        messages = []
        offset = 0
        end = len(view)
        while end - offset >= _PREFIX:
            flag = view[offset]
            if flag > 1:
                raise FramingError(f"invalid compressed flag {flag}")
            length = int.from_bytes(view[offset + 1 : offset + _PREFIX], "big")
            if length > self.max_message_size:
                raise MessageTooLarge(length, self.max_message_size)
            start = offset + _PREFIX
            if end - start < length:
                break
            messages.append((flag == 1, bytes(view[start : start + length])))
            offset = start + length
        if buffer:
            del buffer[:offset]
        elif offset < end:
            buffer += data[offset:]
        return messages
