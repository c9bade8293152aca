"""Interceptors: code around every call of a server or a channel, and two that are ready to use.

An interceptor is a callable taking the call (a `ServicerContext` on a server, a `Call` on a channel) and
returning an async context manager that wraps it; write one with `contextlib.asynccontextmanager`:
before its `yield` it can read and add request metadata, or end the call by raising `RpcError`; after it,
it reads the status the call ended with. `Server(interceptors=[...])`, `Channel(interceptors=[...])`: the
first in the list wraps all the others. See docs/api.md, "Interceptors".
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import trio

from ._client import Call, ClientInterceptor
from ._server import ServerInterceptor, ServicerContext
from ._status import StatusCode

__all__ = ["AccessLog", "ClientInterceptor", "MethodStats", "Metrics", "ServerInterceptor"]


class AccessLog:
    """A server interceptor: one INFO line per call, when it ends.

    `/rpc.ChatService/CreateChatRoom ipv4:127.0.0.1:50312 OK 1.2ms`: method, peer, status, duration.
    Metadata is never logged (it may carry credentials).
    """

    def __init__(self, logger: logging.Logger | None = None) -> None:
        self.logger = logger or logging.getLogger("trio_grpc.access")

    @asynccontextmanager
    async def __call__(self, context: ServicerContext) -> AsyncIterator[None]:
        start = trio.current_time()
        try:
            yield
        finally:
            # No status: a cancellation from outside the call (the connection's own end) cut it short.
            status = context.status_code.name if context.status_code is not None else "CANCELLED"
            milliseconds = (trio.current_time() - start) * 1000
            self.logger.info("%s %s %s %.1fms", context.method, context.peer, status, milliseconds)


@dataclasses.dataclass
class MethodStats:
    """Calls of one method that ended with one status."""

    count: int = 0
    total_seconds: float = 0.0
    max_seconds: float = 0.0

    @property
    def mean_seconds(self) -> float:
        return self.total_seconds / self.count if self.count else 0.0

    def add(self, seconds: float) -> None:
        self.count += 1
        self.total_seconds += seconds
        self.max_seconds = max(self.max_seconds, seconds)


class Metrics:
    """Counts and latency by (method, status), in process: `metrics.stats[("/pkg.Svc/M", StatusCode.OK)]`.

    `metrics.server` is a server interceptor, `metrics.client` a client one; give each side its own
    Metrics if a program both serves and calls. Export `stats` to whatever the application reports to.
    """

    def __init__(self) -> None:
        self.stats: dict[tuple[str, StatusCode], MethodStats] = {}

    def record(self, method: str, code: StatusCode, seconds: float) -> None:
        key = (method, code)
        stats = self.stats.get(key)
        if stats is None:
            stats = self.stats[key] = MethodStats()
        stats.add(seconds)

    @asynccontextmanager
    async def server(self, context: ServicerContext) -> AsyncIterator[None]:
        start = trio.current_time()
        try:
            yield
        finally:
            code = context.status_code if context.status_code is not None else StatusCode.CANCELLED
            self.record(context.method, code, trio.current_time() - start)

    @asynccontextmanager
    async def client(self, call: Call) -> AsyncIterator[None]:
        start = trio.current_time()
        try:
            yield
        finally:
            code = call.code if call.code is not None else StatusCode.CANCELLED
            self.record(call.method, code, trio.current_time() - start)
