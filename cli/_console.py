"""chatter's console: prompts and typed lines on stdin, incoming messages on stdout, never garbled.

Two implementations of one interface:
- `TerminalConsole` (stdin and stdout are a terminal): the terminal is put in cbreak mode (no echo, no
  line buffering; Ctrl-C still raises SIGINT) so we know what is typed so far. When a message arrives
  mid-typing, the input line is erased (carriage return, cursor up over wrapped rows, erase to end of
  screen), the message printed, and the prompt and partial input drawn again. The saved terminal mode is
  restored when the console is closed, whatever way the program ends. Job control is followed: on
  Ctrl-Z (SIGTSTP) the saved mode is given back before the process stops, so the shell gets the terminal
  as it lent it; on SIGCONT (`fg`) cbreak mode is set again, since the shell has put echo back on (every
  line would show twice), and the prompt and partial input are drawn again.
- `PipeConsole` (anything else): plain lines. A prompt is followed by the answer it read, so a
  transcript reads like the interactive session; typed chat lines are not echoed.
"""

from __future__ import annotations

import os
import shutil
import signal
import sys
import termios
import tty
import unicodedata
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Protocol

import trio

from ._stdin import StdinReader

# Remote text must not drive our terminal: control characters become U+FFFD.
_CONTROL_CHARACTERS = {code: "\ufffd" for code in [*range(0x20), *range(0x7F, 0xA0)]}


def printable(text: str) -> str:
    return text.translate(_CONTROL_CHARACTERS)


def width(text: str) -> int:
    """Terminal columns `text` takes: 2 for wide (CJK, most emoji), 0 for combining marks and format
    characters (the zero-width joiner, variation selectors), else 1. A joined emoji sequence may show
    narrower than this sum; erasing a little too much is the lesser evil."""
    return sum(_char_width(char) for char in text)


def _char_width(char: str) -> int:
    if unicodedata.category(char) in ("Mn", "Me", "Cf"):
        return 0
    return 2 if unicodedata.east_asian_width(char) in ("W", "F") else 1


class Console(Protocol):
    async def read_line(self, prompt: str, *, echo: bool = True) -> str | None:
        """A line answered to `prompt`; None at end of input (Ctrl-D on an empty line).

        Without `echo`, a console that does not show typing (a pipe) does not print the line either."""

    def show(self, line: str) -> None:
        """Print a line above whatever is being typed."""

    def close(self) -> None:
        """Give the terminal back as it was."""


@asynccontextmanager
async def open_console() -> AsyncIterator[Console]:
    """A TerminalConsole (following job control meanwhile) when stdin and stdout are a terminal, else a
    PipeConsole; closed on the way out."""
    if not (os.isatty(0) and os.isatty(1)):
        yield PipeConsole()
        return
    console = TerminalConsole()
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(console.follow_job_control)
            yield console
            nursery.cancel_scope.cancel()
    finally:
        console.close()


def _write(text: str) -> None:
    sys.stdout.write(text)
    sys.stdout.flush()


class PipeConsole:
    def __init__(self) -> None:
        self._reader = StdinReader()

    async def read_line(self, prompt: str, *, echo: bool = True) -> str | None:
        if not echo:
            return await self._reader.read_line()
        _write(prompt)
        line = await self._reader.read_line()
        _write(("" if line is None else line) + "\n")
        return line

    def show(self, line: str) -> None:
        _write(line + "\n")

    def close(self) -> None:
        pass


class TerminalConsole:
    def __init__(self) -> None:
        self._reader = StdinReader()
        self._saved_mode = termios.tcgetattr(0)
        tty.setcbreak(0, termios.TCSANOW)
        self._prompt: str | None = None  # None: no line being read
        self._typed: list[str] = []
        self._drawn = 0  # columns of prompt + input on screen
        self._escape = ""  # an escape sequence (arrow key...) being skipped
        self._unread = ""

    def close(self) -> None:
        termios.tcsetattr(0, termios.TCSADRAIN, self._saved_mode)

    async def follow_job_control(self) -> None:
        """Stop politely on Ctrl-Z, take the terminal back on SIGCONT (see the module docstring)."""
        with trio.open_signal_receiver(signal.SIGTSTP, signal.SIGCONT) as signals:
            async for signum in signals:
                if signum == signal.SIGTSTP:
                    self.close()
                    os.kill(os.getpid(), signal.SIGSTOP)  # what SIGTSTP would have done unhandled
                else:
                    tty.setcbreak(0, termios.TCSANOW)
                    if self._prompt is not None:
                        self._drawn = 0  # the shell has moved the cursor to a line of its own
                        self._redraw()

    async def read_line(self, prompt: str, *, echo: bool = True) -> str | None:
        self._prompt, self._typed = prompt, []
        self._redraw()
        line = None
        try:
            while line is None:
                text, self._unread = self._unread or await self._reader.read_text(), ""
                if not text:
                    break
                for index, char in enumerate(text):
                    line = self._key(char)
                    if line is not None:
                        self._unread = text[index + 1 :]  # typed ahead, or pasted: for the next line
                        break
        except _EndOfInput:
            pass
        finally:
            if line is None:  # end of input, or cancelled: take the unfinished line off the screen
                self._erase()
            else:  # leave the line on screen as typed and go to the next, as a terminal does
                _write("\n")
            self._prompt, self._drawn = None, 0
        return line

    def _key(self, char: str) -> str | None:
        """Apply one typed character; the finished line on Enter."""
        if self._escape:  # skip ESC x, ESC O x and ESC [ params final-byte (arrow keys and the like)
            self._escape += char
            if len(self._escape) == 2:
                if char not in "[O":
                    self._escape = ""
            elif self._escape[1] == "O" or "@" <= char <= "~":
                self._escape = ""
            return None
        if char in "\r\n":
            return "".join(self._typed)
        if char == "\x04":  # Ctrl-D: end of input on an empty line, as in a shell
            if not self._typed:
                raise _EndOfInput
        elif char == "\x1b":
            self._escape = char
        elif char in "\x7f\x08":
            if self._typed:
                _pop_character(self._typed)
                self._redraw()
        elif char == "\x15":  # Ctrl-U: erase the line
            self._typed.clear()
            self._redraw()
        elif char == "\x17":  # Ctrl-W: erase the last word
            while self._typed and self._typed[-1] == " ":
                self._typed.pop()
            while self._typed and self._typed[-1] != " ":
                self._typed.pop()
            self._redraw()
        elif char.isprintable() or char == "\t" or unicodedata.category(char) == "Cf":  # Cf: emoji joiners
            char = " " if char == "\t" else char
            self._typed.append(char)
            _write(char)  # the terminal wraps it as it would have wrapped a redraw
            self._drawn += width(char)
        return None

    def show(self, line: str) -> None:
        if self._prompt is None:
            _write(line + "\n")
            return
        self._erase()
        _write(line + "\n")
        self._redraw(erased=True)

    def _columns(self) -> int:
        return max(1, shutil.get_terminal_size().columns)

    def _erase(self) -> None:
        rows_up = (self._drawn - 1) // self._columns() if self._drawn else 0
        _write((f"\x1b[{rows_up}A" if rows_up else "") + "\r\x1b[J")
        self._drawn = 0

    def _redraw(self, *, erased: bool = False) -> None:
        if not erased:
            self._erase()
        text = (self._prompt or "") + "".join(self._typed)
        _write(text)
        self._drawn = width(text)


def _pop_character(typed: list[str]) -> None:
    """Backspace: the last character as seen, with its combining marks; a joined emoji goes whole."""
    while typed:
        while typed and _char_width(typed[-1]) == 0:
            typed.pop()
        if typed:
            typed.pop()
        if not (typed and typed[-1] == "\u200d"):  # joined to what is before: that goes too
            return


class _EndOfInput(Exception):
    pass
