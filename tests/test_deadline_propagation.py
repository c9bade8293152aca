"""Deadlines travel with calls: an outgoing call carries the effective deadline of its cancel scopes.

A handler runs inside a cancel scope with the incoming deadline, so a call it makes passes the remaining
time on with no code: client -> A -> B, and B knows when the client gives up.
"""

from __future__ import annotations

import math
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial

import pytest
import trio

import trio_grpc
from tests.interop._proto.grpc.testing import messages_pb2, test_pb2
from trio_grpc import RpcError, StatusCode

SERVICE = test_pb2.DESCRIPTOR.services_by_name["TestService"]
TIMEOUT = 10
CLIENT_TIMEOUT = 5.0
MARGIN = 1.0  # generous: two cores shared by many processes; in practice B sees a few ms less than the client

SimpleRequest = messages_pb2.SimpleRequest
SimpleResponse = messages_pb2.SimpleResponse
Context = trio_grpc.ServicerContext


class Recorder:
    """Records the deadline each call arrived with; optionally waits until cancelled."""

    def __init__(self, *, block: bool = False) -> None:
        self.remaining: list[float | None] = []
        self.timeout_headers: list[bytes | None] = []
        self.block = block
        self.cancelled = trio.Event()

    async def UnaryCall(self, request: SimpleRequest, context: Context) -> SimpleResponse:
        self.remaining.append(context.time_remaining())
        self.timeout_headers.append(dict(context._raw_headers).get(b"grpc-timeout"))
        if self.block:
            try:
                await trio.sleep_forever()
            finally:
                self.cancelled.set()
        return SimpleResponse(username="B")


class Relay:
    """A's handler: calls B with no timeout of its own."""

    def __init__(self, stub: trio_grpc.Stub) -> None:
        self.stub = stub
        self.remaining: list[float | None] = []
        self.outcome: list[str] = []

    async def UnaryCall(self, request: SimpleRequest, context: Context) -> SimpleResponse:
        self.remaining.append(context.time_remaining())
        try:
            response: SimpleResponse = await self.stub.UnaryCall(request)
        except trio.Cancelled:
            self.outcome.append("Cancelled")  # A's own scope (the incoming deadline) ended the call
            raise
        return SimpleResponse(username=f"A>{response.username}")


@asynccontextmanager
async def serving(implementation: object) -> AsyncIterator[str]:
    server = trio_grpc.Server([trio_grpc.bind_service(SERVICE, implementation)])
    async with trio.open_nursery() as nursery:
        port = await nursery.start(partial(server.serve_tcp, 0, host="127.0.0.1"))
        yield f"127.0.0.1:{port}"
        await server.shutdown(grace=1)


@asynccontextmanager
async def no_deadline() -> AsyncIterator[None]:
    """A scope with no deadline, the test's own fail_after shielded off; a watchdog still bounds it."""

    async def watchdog(scope: trio.CancelScope) -> None:
        await trio.sleep(TIMEOUT)
        scope.cancel()

    async with trio.open_nursery() as nursery:
        with trio.CancelScope(shield=True) as scope:
            nursery.start_soon(watchdog, scope)
            yield
        nursery.cancel_scope.cancel()


@asynccontextmanager
async def chain(b: Recorder) -> AsyncIterator[tuple[trio_grpc.Stub, Relay]]:
    """client -> A -> B: three servers in this process, each on port 0; the stub calls A."""
    async with serving(b) as b_target, trio_grpc.Channel(b_target) as to_b:
        relay = Relay(trio_grpc.Stub(to_b, SERVICE))
        async with serving(relay) as a_target, trio_grpc.Channel(a_target) as to_a:
            yield trio_grpc.Stub(to_a, SERVICE), relay


async def test_three_hops_b_sees_what_a_has_left() -> None:
    b = Recorder()
    with trio.fail_after(TIMEOUT):
        async with chain(b) as (stub, relay), no_deadline():  # timeout= is the only deadline in play
            response = await stub.UnaryCall(SimpleRequest(), timeout=CLIENT_TIMEOUT)
    assert response.username == "A>B"
    [a_remaining], [b_remaining] = relay.remaining, b.remaining
    figures = f"client timeout {CLIENT_TIMEOUT}s, A had {a_remaining}s, B had {b_remaining}s"
    print(figures)
    assert a_remaining is not None and b_remaining is not None, figures
    assert CLIENT_TIMEOUT - MARGIN < b_remaining < a_remaining < CLIENT_TIMEOUT, figures


async def test_an_enclosing_scope_is_the_deadline() -> None:
    """No timeout= at all: the caller's move_on_after is what the servers see."""
    b = Recorder()
    with trio.fail_after(TIMEOUT):
        async with chain(b) as (stub, _):
            with trio.move_on_after(3):
                await stub.UnaryCall(SimpleRequest())
    [b_remaining] = b.remaining
    assert b_remaining is not None and 3 - MARGIN < b_remaining < 3, f"B had {b_remaining}s of 3s"


async def test_timeout_and_scope_the_earlier_wins() -> None:
    b = Recorder()
    with trio.fail_after(TIMEOUT):
        async with serving(b) as target, trio_grpc.Channel(target) as channel:
            stub = trio_grpc.Stub(channel, SERVICE)
            with trio.move_on_after(2):
                await stub.UnaryCall(SimpleRequest(), timeout=8)  # the scope's 2s is earlier
                await stub.UnaryCall(SimpleRequest(), timeout=1)  # the timeout is earlier
    first, second = b.remaining
    assert first is not None and 2 - MARGIN < first < 2, b.remaining
    assert second is not None and 1 - MARGIN < second < 1, b.remaining


async def test_when_the_propagated_deadline_passes() -> None:
    """B blocks: B's handler is cancelled, A's handler sees Cancelled from its own scope (not an RpcError),
    and the client, whose timeout started it all, gets DEADLINE_EXCEEDED."""
    b = Recorder(block=True)
    with trio.fail_after(TIMEOUT):
        async with chain(b) as (stub, relay):
            async with no_deadline():
                with pytest.raises(RpcError) as caught:
                    await stub.UnaryCall(SimpleRequest(), timeout=0.5)
            await b.cancelled.wait()
    assert caught.value.code == StatusCode.DEADLINE_EXCEEDED
    assert relay.outcome == ["Cancelled"]


async def test_a_caller_scope_passing_cancels_the_caller() -> None:
    """The deadline came from the caller's scope: that scope is cancelled, as any Trio wait in it would be."""
    b = Recorder(block=True)
    with trio.fail_after(TIMEOUT):
        async with serving(b) as target, trio_grpc.Channel(target) as channel:
            stub = trio_grpc.Stub(channel, SERVICE)
            with trio.move_on_after(0.3) as scope:
                await stub.UnaryCall(SimpleRequest())
            assert scope.cancelled_caught
            await b.cancelled.wait()  # the stream was reset: B's handler is cancelled too


@pytest.mark.parametrize("timeout", [None, math.inf], ids=["no-timeout", "timeout-inf"])
async def test_no_deadline_sends_no_grpc_timeout(timeout: float | None) -> None:  # noqa: ASYNC109
    b = Recorder()
    with trio.fail_after(TIMEOUT):
        async with serving(b) as target, trio_grpc.Channel(target) as channel:
            stub = trio_grpc.Stub(channel, SERVICE)
            async with no_deadline():
                await stub.UnaryCall(SimpleRequest(), timeout=timeout)
    assert b.timeout_headers == [None] and b.remaining == [None]
