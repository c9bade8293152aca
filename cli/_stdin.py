"""Reading standard input from Trio without threads and without touching the file's blocking mode.

A pipe or terminal is polled (`wait_readable`) and then read with one `os.read`, which returns what is
there; so a read is cancellable. A regular file or /dev/null cannot be polled, but never blocks either.
`trio.lowlevel.FdStream` is avoided on purpose: it sets O_NONBLOCK on the open file, which a terminal
shares with stdout, and a non-blocking stdout makes `print` fail with BlockingIOError.
"""

from __future__ import annotations

import codecs
import os

import trio

CHUNK_SIZE = 65536


class StdinReader:
    """Bytes, then decoded text and lines, from a file descriptor (stdin by default)."""

    def __init__(self, fd: int = 0) -> None:
        self.fd = fd
        self._pollable = True
        self._decoder = codecs.getincrementaldecoder("utf-8")("replace")
        self._pending = ""
        self.at_eof = False

    async def read_bytes(self) -> bytes:
        """What is available now (at least one byte), or b"" at end of input."""
        if self._pollable:
            try:
                await trio.lowlevel.wait_readable(self.fd)
            except OSError:  # epoll refuses regular files and /dev/null: reads there never block
                self._pollable = False
        if not self._pollable:
            await trio.lowlevel.checkpoint()
        data = os.read(self.fd, CHUNK_SIZE)
        if not data:
            self.at_eof = True
        return data

    async def read_text(self) -> str:
        """Decoded text now available, or "" at end of input."""
        while True:
            data = await self.read_bytes()
            text = self._decoder.decode(data, final=not data)
            if text or not data:
                return text

    async def read_line(self) -> str | None:
        """The next line without its line ending; the last line even without one; None at end of input."""
        while "\n" not in self._pending:
            if self.at_eof:
                break
            self._pending += await self.read_text()
        if not self._pending:
            return None
        line, newline, self._pending = self._pending.partition("\n")
        if not newline:
            self._pending = ""
        return line.removesuffix("\r")
