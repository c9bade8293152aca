"""The client's connection management against real servers: keepalive back-off when a server says
`too_many_pings` (gRFC A8), and transparent retry of the calls a server refused before processing them
(gRFC A6): a graceful shutdown's GOAWAY, REFUSED_STREAM.

Keepalive runs against our own server and against grpcio's (grpc-core), each enforcing its own PING policy.
The handover cases run two of our servers on one port (SO_REUSEPORT): the old one, where the channel's
connection is, goes away while calls start; the new one takes the port, as a restarted server would.
"""

from __future__ import annotations

import collections
import concurrent.futures
import logging
import socket as stdlib_socket
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from functools import partial
from typing import Any

import grpc  # type: ignore[import-untyped]
import pytest
import trio

import trio_grpc
from tests.grpcio_stubs import test_pb2_grpc
from tests.interop._proto.grpc.testing import messages_pb2, test_pb2
from trio_grpc import ChannelSettings, ServerSettings, StatusCode

SERVICE = test_pb2.DESCRIPTOR.services_by_name["TestService"]
TIMEOUT = 15
#: The servers' PING policy in these tests: at most one PING each 0.35 s while they send nothing, one strike
#: forgiven (grpc-core reads 0 strikes as no limit). A client that starts at 0.1 s is cut off at 0.1 and
#: 0.2 s, and settles at 0.4 s.
MIN_PING_INTERVAL = 0.35
MAX_PING_STRIKES = 1
FIRST_KEEPALIVE = 0.1


class Service:
    async def UnaryCall(self, request: Any, context: Any) -> messages_pb2.SimpleResponse:
        return messages_pb2.SimpleResponse()


class GrpcioService(test_pb2_grpc.TestServiceServicer):  # type: ignore[misc]
    def UnaryCall(self, request: Any, context: Any) -> messages_pb2.SimpleResponse:
        return messages_pb2.SimpleResponse()


@asynccontextmanager
async def trio_grpc_server() -> AsyncIterator[str]:
    settings = ServerSettings(
        min_ping_interval_without_data=MIN_PING_INTERVAL,
        keepalive_permit_without_calls=True,
        max_ping_strikes=MAX_PING_STRIKES,
    )
    server = trio_grpc.Server([trio_grpc.bind_service(SERVICE, Service())], settings=settings)
    async with trio.open_nursery() as nursery:
        port = await nursery.start(partial(server.serve_tcp, 0, host="127.0.0.1"))
        yield f"127.0.0.1:{port}"
        await server.shutdown(grace=0)


@contextmanager
def grpcio_server() -> Iterator[str]:
    options = [
        ("grpc.http2.min_ping_interval_without_data_ms", int(MIN_PING_INTERVAL * 1000)),
        ("grpc.http2.max_ping_strikes", MAX_PING_STRIKES),
        ("grpc.keepalive_permit_without_calls", 1),
    ]
    server = grpc.server(concurrent.futures.ThreadPoolExecutor(max_workers=4), options=options)
    test_pb2_grpc.add_TestServiceServicer_to_server(GrpcioService(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        yield f"127.0.0.1:{port}"
    finally:
        server.stop(grace=None)


@asynccontextmanager
async def policed_server(kind: str) -> AsyncIterator[str]:
    if kind == "trio_grpc":
        async with trio_grpc_server() as target:
            yield target
    else:
        with grpcio_server() as target:
            yield target


@pytest.mark.parametrize("kind", ["trio_grpc", "grpcio"])
async def test_keepalive_backs_off_when_the_server_says_too_many_pings(
    kind: str, caplog: pytest.LogCaptureFixture
) -> None:
    settings = ChannelSettings(keepalive_time=FIRST_KEEPALIVE, keepalive_timeout=TIMEOUT)
    intervals: list[float | None] = []
    with trio.fail_after(TIMEOUT), caplog.at_level(logging.WARNING, "trio_grpc.client"):
        async with policed_server(kind) as target, trio_grpc.Channel(target, settings=settings) as channel:
            stub = trio_grpc.Stub(channel, SERVICE)
            while True:
                await stub.UnaryCall(messages_pb2.SimpleRequest())  # a connection, with the interval in force
                connection = channel._connection
                assert connection is not None
                interval = connection.limits.keepalive_time
                assert interval is not None
                intervals.append(interval)
                # Its first PING comes after our call's traffic; the second and third are strikes.
                with trio.move_on_after(6 * interval):
                    await connection._writer_finished.wait()  # closed: GOAWAY too_many_pings
                    assert not connection.usable
                    continue
                break
            # The interval the server accepts: six PINGs answered, the connection still in use.
            assert connection.usable
            await stub.UnaryCall(messages_pb2.SimpleRequest())
            assert channel._connection is connection
    assert intervals == [0.1, 0.2, 0.4]
    backoffs = [record.getMessage() for record in caplog.records if "too_many_pings" in record.getMessage()]
    assert len(backoffs) == 2, backoffs  # once per GOAWAY
    assert backoffs[-1].endswith("doubled to 0.4s")


# -- transparent retry -------------------------------------------------------------------------------------


class CountingService:
    """Counts each request it sees, by server and payload; a request whose body starts with b"hold" waits
    for `release` (or the server's cancellation)."""

    def __init__(self, name: str, seen: collections.Counter[tuple[str, bytes]]) -> None:
        self.name = name
        self.seen = seen
        self.holding = 0
        self.release = trio.Event()
        self._arrivals = trio.lowlevel.ParkingLot()

    async def UnaryCall(self, request: Any, context: Any) -> messages_pb2.SimpleResponse:
        body = request.payload.body
        self.seen[self.name, body] += 1
        if body.startswith(b"hold"):
            self.holding += 1
            self._arrivals.unpark_all()
            await self.release.wait()
        return messages_pb2.SimpleResponse(payload=messages_pb2.Payload(body=body))

    async def wait_holding(self, count: int) -> None:
        while self.holding < count:
            await self._arrivals.park()


def shared_port_listener(port: int = 0) -> trio.SocketListener:
    """A listener with SO_REUSEPORT, so that a second server can take the port over while the first drains."""
    sock = stdlib_socket.socket()
    sock.setsockopt(stdlib_socket.SOL_SOCKET, stdlib_socket.SO_REUSEPORT, 1)
    sock.bind(("127.0.0.1", port))
    sock.listen(128)
    return trio.SocketListener(trio.socket.from_stdlib_socket(sock))


@dataclass
class Handover:
    """Server `old` on a port, then `new` on the same one; a channel whose connection is to `old`."""

    old: trio_grpc.Server
    new: trio_grpc.Server
    old_service: CountingService
    seen: collections.Counter[tuple[str, bytes]]
    stub: trio_grpc.Stub


@asynccontextmanager
async def handover() -> AsyncIterator[Handover]:
    seen: collections.Counter[tuple[str, bytes]] = collections.Counter()
    services = CountingService("old", seen), CountingService("new", seen)
    old, new = (trio_grpc.Server([trio_grpc.bind_service(SERVICE, service)]) for service in services)
    async with trio.open_nursery() as nursery:
        listener = shared_port_listener()
        port = listener.socket.getsockname()[1]
        await nursery.start(old.serve_listeners, [listener])
        async with trio_grpc.Channel(f"127.0.0.1:{port}") as channel:
            stub = trio_grpc.Stub(channel, SERVICE)
            await stub.UnaryCall(request(b"warm-up"))  # the channel's connection: to `old`, alone on the port
            await nursery.start(new.serve_listeners, [shared_port_listener(port)])
            yield Handover(old, new, services[0], seen, stub)
        for service in services:
            service.release.set()
        await old.shutdown(grace=0)
        await new.shutdown(grace=0)


def request(body: bytes) -> messages_pb2.SimpleRequest:
    return messages_pb2.SimpleRequest(payload=messages_pb2.Payload(body=body))


async def call(stub: trio_grpc.Stub, body: bytes, outcomes: dict[bytes, object]) -> None:
    """One unary call; its outcome: the response's body, or the status it failed with."""
    try:
        outcomes[body] = (await stub.UnaryCall(request(body))).payload.body
    except trio_grpc.RpcError as exc:
        outcomes[body] = exc.code


def retries(caplog: pytest.LogCaptureFixture) -> int:
    return sum("sending it again" in record.getMessage() for record in caplog.records)


async def test_calls_started_as_the_server_goes_away_are_sent_once_to_the_next(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Calls whose HEADERS cross the old server's GOAWAY are refused by it (above GOAWAY's last stream id,
    or REFUSED_STREAM as it drains) and sent again, once, to the new server; the calls it took end there."""
    ids = [b"%d" % index for index in range(20)]
    outcomes: dict[bytes, object] = {}
    with trio.fail_after(TIMEOUT), caplog.at_level(logging.DEBUG, "trio_grpc.client"):
        async with handover() as h, trio.open_nursery() as calls:
            for body in (b"hold-1", b"hold-2"):  # in flight on the old server when it goes away
                calls.start_soon(call, h.stub, body, outcomes)
            await h.old_service.wait_holding(2)
            calls.start_soon(partial(h.old.shutdown, grace=TIMEOUT))
            async with trio.open_nursery() as racing:
                for body in ids:  # they run in the same turn as the GOAWAY: none can have read it
                    racing.start_soon(call, h.stub, body, outcomes)
            h.old_service.release.set()
    assert outcomes == {body: body for body in [b"hold-1", b"hold-2", *ids]}
    expected = [("old", b"warm-up"), ("old", b"hold-1"), ("old", b"hold-2"), *(("new", body) for body in ids)]
    assert h.seen == collections.Counter(expected)  # each call handled once, by one server
    assert retries(caplog) == len(ids)


async def test_a_call_the_server_took_is_never_sent_again(caplog: pytest.LogCaptureFixture) -> None:
    """The old server cancels the calls it took when its grace ends: they fail, although the new server would
    answer them, because their handlers ran."""
    outcomes: dict[bytes, object] = {}
    with trio.fail_after(TIMEOUT), caplog.at_level(logging.DEBUG, "trio_grpc.client"):
        async with handover() as h, trio.open_nursery() as calls:
            for body in (b"hold-1", b"hold-2"):
                calls.start_soon(call, h.stub, body, outcomes)
            await h.old_service.wait_holding(2)
            await h.old.shutdown(grace=0)
    assert outcomes == {b"hold-1": StatusCode.UNAVAILABLE, b"hold-2": StatusCode.UNAVAILABLE}
    assert h.seen == collections.Counter([("old", b"warm-up"), ("old", b"hold-1"), ("old", b"hold-2")])
    assert retries(caplog) == 0


class HoldingGrpcioService(test_pb2_grpc.TestServiceServicer):  # type: ignore[misc]
    """CountingService for grpcio: a held request waits until the client cancels it."""

    def __init__(self, seen: collections.Counter[tuple[str, bytes]]) -> None:
        self.seen = seen
        self.holding = threading.Semaphore(0)

    def UnaryCall(self, request: Any, context: Any) -> messages_pb2.SimpleResponse:
        body = request.payload.body
        self.seen["grpcio", body] += 1
        if body.startswith(b"hold"):
            cancelled = threading.Event()
            context.add_callback(cancelled.set)
            self.holding.release()
            cancelled.wait(TIMEOUT)
        return messages_pb2.SimpleResponse(payload=messages_pb2.Payload(body=body))


@asynccontextmanager
async def one_stream_server(
    kind: str, seen: collections.Counter[tuple[str, bytes]]
) -> AsyncIterator[tuple[str, Callable[[int], Awaitable[None]]]]:
    """A server that takes one stream at a time; and how to wait until it holds the n-th held request."""
    if kind == "trio_grpc":
        service = CountingService("trio_grpc", seen)
        server = trio_grpc.Server(
            [trio_grpc.bind_service(SERVICE, service)], settings=ServerSettings(max_concurrent_streams=1)
        )
        async with trio.open_nursery() as nursery:
            port = await nursery.start(partial(server.serve_tcp, 0, host="127.0.0.1"))
            yield f"127.0.0.1:{port}", service.wait_holding
            await server.shutdown(grace=0)
        return
    grpcio_service = HoldingGrpcioService(seen)
    grpcio = grpc.server(
        concurrent.futures.ThreadPoolExecutor(max_workers=4), options=[("grpc.max_concurrent_streams", 1)]
    )
    test_pb2_grpc.add_TestServiceServicer_to_server(grpcio_service, grpcio)
    port = grpcio.add_insecure_port("127.0.0.1:0")
    grpcio.start()

    async def wait_holding(count: int) -> None:
        assert await trio.to_thread.run_sync(grpcio_service.holding.acquire, True, TIMEOUT)

    try:
        yield f"127.0.0.1:{port}", wait_holding
    finally:
        grpcio.stop(grace=None)


@pytest.mark.parametrize("kind", ["trio_grpc", "grpcio"])
async def test_a_call_refused_over_max_concurrent_streams_is_sent_again(
    kind: str, caplog: pytest.LogCaptureFixture
) -> None:
    """One stream allowed; a call starts as soon as the one before was cancelled. Our server still counts
    the cancelled stream while its handler winds down, and refuses the new one (REFUSED_STREAM): it is sent
    again and runs once. grpc-core frees the stream at the RST_STREAM, and refuses nothing."""
    seen: collections.Counter[tuple[str, bytes]] = collections.Counter()
    rounds = 5
    with trio.fail_after(TIMEOUT), caplog.at_level(logging.DEBUG, "trio_grpc.client"):
        async with (
            one_stream_server(kind, seen) as (target, wait_holding),
            trio_grpc.Channel(target) as channel,
        ):
            stub = trio_grpc.Stub(channel, SERVICE)
            for index in range(rounds):
                async with stub.UnaryCall.open(request(b"hold-%d" % index)):
                    await wait_holding(index + 1)
                # Left: cancelled (RST_STREAM), and the next call goes at once.
                response = await stub.UnaryCall(request(b"next-%d" % index))
                assert response.payload.body == b"next-%d" % index
    assert seen == collections.Counter(
        (kind, body) for index in range(rounds) for body in (b"hold-%d" % index, b"next-%d" % index)
    )
    assert retries(caplog) == (rounds if kind == "trio_grpc" else 0)


async def test_a_refused_call_with_no_server_left_to_take_it_fails_unavailable(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The retry finds no server: the call fails with why, and stays failed."""
    seen: collections.Counter[tuple[str, bytes]] = collections.Counter()
    server = trio_grpc.Server([trio_grpc.bind_service(SERVICE, CountingService("only", seen))])
    errors: list[trio_grpc.RpcError] = []

    async def late_call(stub: trio_grpc.Stub) -> None:
        async with stub.UnaryCall.open(request(b"late")) as late:
            with pytest.raises(trio_grpc.RpcError) as caught:
                await late.response()
            errors.append(caught.value)
            assert late.code == StatusCode.UNAVAILABLE
            with pytest.raises(trio_grpc.RpcError):
                await late.receive()

    with trio.fail_after(TIMEOUT), caplog.at_level(logging.DEBUG, "trio_grpc.client"):
        async with trio.open_nursery() as nursery:
            port = await nursery.start(partial(server.serve_tcp, 0, host="127.0.0.1"))
            async with trio_grpc.Channel(f"127.0.0.1:{port}") as channel:
                stub = trio_grpc.Stub(channel, SERVICE)
                await stub.UnaryCall(request(b"warm-up"))
                async with trio.open_nursery() as racing:  # in the same turn: the call crosses the GOAWAY
                    racing.start_soon(partial(server.shutdown, grace=TIMEOUT))
                    racing.start_soon(late_call, stub)
    [error] = errors
    assert error.code == StatusCode.UNAVAILABLE
    assert f"127.0.0.1:{port}" in error.message  # cannot connect to it, or it did not answer
    assert seen == collections.Counter([("only", b"warm-up")])
    assert retries(caplog) == 1
