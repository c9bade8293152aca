"""What several test files share: a record of how a handler ended."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import trio


class CancellationProbe:
    """Records that a handler started, was cancelled, and that its cleanup ran."""

    def __init__(self) -> None:
        self.started = trio.Event()
        self.cancelled = trio.Event()
        self.cleaned_up = trio.Event()

    @contextlib.contextmanager
    def watching(self) -> Iterator[None]:
        try:
            yield
        except trio.Cancelled:
            self.cancelled.set()
            raise
        finally:
            self.cleaned_up.set()

    async def block_until_cancelled(self) -> None:
        self.started.set()
        with self.watching():
            await trio.sleep_forever()
