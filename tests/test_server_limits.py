"""The server's connection-level limits: the connection cap and eviction, idleness, the handshake deadline,
and the PING policy (strikes, as grpc-core and grpc-go count them).

Peers are the hand-driven h2 client of tests/raw_h2.py, raw sockets for peers that never speak HTTP/2,
and grpcio for clients whose PINGs must be let through. Timeouts are short real ones: sockets do not run
on trio's mock clock.
"""

from __future__ import annotations

import errno
import os
import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial
from typing import Any, cast

import grpc  # type: ignore[import-untyped]
import h2.events
import pytest
import trio
import trio.testing
import trustme

import trio_grpc
from tests.grpcio_stubs import test_pb2_grpc
from tests.interop._proto.grpc.testing import messages_pb2
from tests.raw_h2 import PREFACE, ErrorCodes, RawClient
from tests.test_hostile_peers import (
    SERVICE,
    Running,
    Service,
    assert_still_serving,
    serving,
    unary_request,
)
from trio_grpc import ServerSettings

TIMEOUT = 10


@asynccontextmanager
async def clients(running: Running, count: int) -> AsyncIterator[list[RawClient]]:
    """`count` connections, each served one call, in order: the first is idle the longest."""
    async with trio.open_nursery() as nursery:
        opened: list[RawClient] = []
        for _ in range(count):
            opened.append(await nursery.start(hold_connection, running.port))
            await assert_still_serving(opened[-1])
        yield opened
        nursery.cancel_scope.cancel()


async def hold_connection(port: int, *, task_status: trio.TaskStatus[RawClient]) -> None:
    async with RawClient.connect(port) as client:
        task_status.started(client)
        await trio.sleep_forever()


async def until_goaway(client: RawClient) -> h2.events.ConnectionTerminated:
    await client.until_closed()
    assert client.goaway is not None
    return client.goaway


# -- the connection cap ------------------------------------------------------------------------------------


async def test_at_the_cap_the_longest_idle_connection_makes_room() -> None:
    with trio.fail_after(TIMEOUT):
        async with (
            serving(ServerSettings(max_connections=4)) as running,
            clients(running, 4) as (first, second, third, fourth),
        ):
            busy = await first.request(body=unary_request(response_size=-1))  # first: not idle
            await running.service.started.wait()
            async with RawClient.connect(running.port) as newcomer:
                await assert_still_serving(newcomer)
                goaway = await until_goaway(second)  # idle the longest
                assert (goaway.error_code, goaway.last_stream_id) == (ErrorCodes.NO_ERROR, 1)
                for other in (first, third, fourth):
                    await assert_still_serving(other)
                assert not first.responses[busy].done
            assert len(running.server._connections) <= 4


async def test_at_the_cap_with_every_connection_busy_a_newcomer_waits_for_one_to_go_idle() -> None:
    with trio.fail_after(TIMEOUT):
        async with (
            serving(ServerSettings(max_connections=2)) as running,
            clients(running, 2) as (first, second),
        ):
            calls = [await client.request(body=unary_request(response_size=-1)) for client in (first, second)]
            await trio.testing.wait_all_tasks_blocked()
            assert len(running.service.requests) == 4
            async with RawClient.connect(running.port) as newcomer:
                with trio.move_on_after(0.3):  # accepted by the kernel, not served
                    await newcomer.receive()
                assert newcomer.h2.remote_settings.initial_window_size == 65535  # no SETTINGS yet
                await second.reset(calls[1])  # the second goes idle, and makes way
                goaway = await until_goaway(second)
                assert goaway.error_code == ErrorCodes.NO_ERROR
                await assert_still_serving(newcomer)
                assert not first.responses[calls[0]].done


async def test_a_flood_of_silent_connections_does_not_lock_a_client_out() -> None:
    # Handshake timeout far away: what makes room is eviction, not the timeout.
    settings = ServerSettings(max_connections=4, handshake_timeout=60)
    with trio.fail_after(TIMEOUT):
        async with serving(settings) as running:
            silent = [await trio.open_tcp_stream("127.0.0.1", running.port) for _ in range(20)]
            async with RawClient.connect(running.port) as client:
                await assert_still_serving(client)
            for stream in silent[:-3]:  # the oldest were closed to make room (after our SETTINGS)
                while await stream.receive_some(65536):
                    pass
            for stream in silent:
                await stream.aclose()


class OutOfDescriptorsOnce:
    """A listener whose next accept, once `fail_next` is set, fails as it does when descriptors run out."""

    def __init__(self, listener: trio.SocketListener) -> None:
        self._listener = listener
        self.fail_next = False

    async def accept(self) -> trio.SocketStream:
        if self.fail_next:
            self.fail_next = False
            await trio.lowlevel.checkpoint()
            raise OSError(errno.EMFILE, os.strerror(errno.EMFILE))
        return await self._listener.accept()

    async def aclose(self) -> None:
        await self._listener.aclose()


async def test_out_of_file_descriptors_below_the_cap_the_longest_idle_connection_makes_room() -> None:
    service = Service()
    server = trio_grpc.Server([trio_grpc.bind_service(SERVICE, service)])
    (tcp_listener,) = await trio.open_tcp_listeners(0, host="127.0.0.1")
    listener = OutOfDescriptorsOnce(tcp_listener)
    running = Running(server, tcp_listener.socket.getsockname()[1], service)
    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            await nursery.start(partial(server.serve_listeners, [cast(Any, listener)]))
            async with clients(running, 2) as (first, second):
                listener.fail_next = True  # for the accept after the one already waiting
                async with RawClient.connect(running.port) as newcomer:
                    await assert_still_serving(newcomer)
                    goaway = await until_goaway(first)
                    assert goaway.error_code == ErrorCodes.NO_ERROR
                    async with RawClient.connect(running.port) as next_one:
                        await assert_still_serving(next_one)
                    await assert_still_serving(second)
            await server.shutdown(grace=0.5)


# -- idleness ------------------------------------------------------------------------------------------------


async def test_idle_connection_gets_goaway_after_max_connection_idle() -> None:
    with trio.fail_after(TIMEOUT):
        async with (
            serving(ServerSettings(max_connection_idle=0.3)) as running,
            RawClient.connect(running.port) as client,
        ):
            blocked = await client.request(body=unary_request(response_size=-1))
            await running.service.started.wait()
            with trio.move_on_after(0.5):  # a call in flight: not idle
                await client.until_closed()
            assert client.goaway is None
            await client.reset(blocked)
            start = trio.current_time()
            goaway = await until_goaway(client)
            assert 0.25 <= trio.current_time() - start < 3
            assert (goaway.error_code, goaway.last_stream_id) == (ErrorCodes.NO_ERROR, blocked)


# -- the handshake deadline ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "sent",
    [b"", PREFACE, PREFACE + b"\x00\x00\x06\x04\x00\x00\x00\x00"],  # nothing; no SETTINGS; half a SETTINGS
    ids=["nothing", "preface-only", "partial-settings"],
)
async def test_connection_without_settings_is_closed_after_handshake_timeout(sent: bytes) -> None:
    with trio.fail_after(TIMEOUT):
        async with serving(ServerSettings(handshake_timeout=0.3)) as running:
            stream = await trio.open_tcp_stream("127.0.0.1", running.port)
            async with stream:
                await stream.send_all(sent)
                start = trio.current_time()
                while await stream.receive_some(65536):  # our SETTINGS, then the close
                    pass
                assert 0.25 <= trio.current_time() - start < 3
            await trio.testing.wait_all_tasks_blocked()
            assert not running.server._connections


@pytest.fixture(scope="module")
def tls_ca() -> trustme.CA:
    return trustme.CA()


@asynccontextmanager
async def serving_tls(settings: ServerSettings, ca: trustme.CA) -> AsyncIterator[Running]:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("localhost").configure_cert(context)
    service = Service()
    server = trio_grpc.Server([trio_grpc.bind_service(SERVICE, service)], settings=settings)
    async with trio.open_nursery() as nursery:
        port = await nursery.start(partial(server.serve_tcp, 0, host="127.0.0.1", tls=context))
        yield Running(server, port, service)
        await server.shutdown(grace=0.5)


async def test_tls_stalls_are_closed_at_the_handshake_timeout_and_harm_no_one(
    tls_ca: trustme.CA,
) -> None:
    client_context = ssl.create_default_context()
    tls_ca.configure_trust(client_context)
    client_context.set_alpn_protocols(["h2"])
    with trio.fail_after(TIMEOUT):
        async with serving_tls(ServerSettings(handshake_timeout=0.5), tls_ca) as running:
            # A TCP connection that never starts TLS (this used to end the whole server at the timeout).
            stalled = await trio.open_tcp_stream("127.0.0.1", running.port)
            start = trio.current_time()
            assert await stalled.receive_some(65536) == b""
            assert 0.45 <= trio.current_time() - start < 3
            await stalled.aclose()
            # TLS, then no HTTP/2: the same deadline.
            tcp = await trio.open_tcp_stream("127.0.0.1", running.port)
            start = trio.current_time()
            silent = trio.SSLStream(tcp, client_context, server_hostname="localhost")
            await silent.do_handshake()
            with pytest.raises(trio.BrokenResourceError):  # no close_notify: the socket just closes
                while await silent.receive_some(65536):  # our SETTINGS, then the close
                    pass
            assert 0.45 <= trio.current_time() - start < 3
            await trio.aclose_forcefully(silent)
            async with trio_grpc.Channel(f"localhost:{running.port}", tls=client_context) as channel:
                stub = trio_grpc.Stub(channel, SERVICE)
                response = await stub.UnaryCall(messages_pb2.SimpleRequest(response_size=2))
                assert response.payload.body == b"rr"


# -- PINGs -------------------------------------------------------------------------------------------------


async def send_pings(client: RawClient, count: int) -> None:
    """`count` PINGs in one write, then wait for their ACKs (which come before a GOAWAY, if one comes)."""
    acks = client.ping_acks + count
    for _ in range(count):
        client.h2.ping(b"12345678")
    await client.flush()
    while client.ping_acks < acks:
        assert await client.receive()


async def assert_kicked_for_pings(client: RawClient) -> None:
    goaway = await until_goaway(client)
    assert (goaway.error_code, goaway.additional_data) == (ErrorCodes.ENHANCE_YOUR_CALM, b"too_many_pings")


async def test_ping_flood_gets_enhance_your_calm_too_many_pings() -> None:
    with trio.fail_after(TIMEOUT):
        async with serving() as running, RawClient.connect(running.port) as other:
            async with RawClient.connect(running.port) as flooder:
                await send_pings(flooder, 4)  # grpc's default: the first PING is free, 2 strikes allowed
                await assert_kicked_for_pings(flooder)
                assert flooder.ping_acks == 4  # all answered, the GOAWAY last
            await assert_still_serving(other)


async def test_pings_after_headers_or_data_from_us_earn_no_strikes() -> None:
    with trio.fail_after(TIMEOUT):
        async with serving() as running, RawClient.connect(running.port) as client:
            for _ in range(5):
                await send_pings(client, 3)  # one free, two strikes: the most allowed
                await assert_still_serving(client)  # our HEADERS and DATA clear the strikes
            await send_pings(client, 4)  # a third strike: no traffic from us since the first
            await assert_kicked_for_pings(client)


async def test_pings_without_calls_are_strikes_unless_permitted() -> None:
    quick = {"min_ping_interval_without_data": 0.0}
    with trio.fail_after(TIMEOUT):
        async with serving(ServerSettings(**quick)) as running:
            async with RawClient.connect(running.port) as client:  # no interval limit, but no call either
                await send_pings(client, 4)
                await assert_kicked_for_pings(client)
            async with RawClient.connect(running.port) as client:  # during a call, no interval limit
                await client.request(body=unary_request(response_size=-1))
                await running.service.started.wait()
                await send_pings(client, 20)
                await assert_still_serving(client)
        async with (
            serving(ServerSettings(**quick, keepalive_permit_without_calls=True)) as running,
            RawClient.connect(running.port) as client,
        ):
            await send_pings(client, 20)
            await assert_still_serving(client)


class PingCounter:
    """Counts the PINGs the server's (sole) connection receives from now on."""

    def __init__(self, running: Running, wanted: int = 0) -> None:
        connection = running.connection()
        self._handle = connection._dispatch[h2.events.PingReceived]
        # The table is per class: this connection gets its own copy, read from its next read on.
        connection._dispatch = {**connection._dispatch, h2.events.PingReceived: self._count}
        self.count = 0
        self._wanted = wanted
        self.reached = trio.Event()

    def _count(self, connection: Any, event: h2.events.PingReceived) -> None:
        self.count += 1
        if self.count >= self._wanted:
            self.reached.set()
        self._handle(connection, event)


async def in_thread(function: Any, *args: Any) -> Any:
    return await trio.to_thread.run_sync(partial(function, *args), abandon_on_cancel=True)


async def test_grpcio_keepalive_within_the_policy_is_not_kicked() -> None:
    # grpc-core PINGs at most once a second, whatever keepalive_time says: a policy just below that.
    settings = ServerSettings(min_ping_interval_without_data=0.5, keepalive_permit_without_calls=True)
    options = [
        ("grpc.keepalive_time_ms", 1000),
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.max_pings_without_data", 0),  # else it stops after two PINGs without data
    ]
    with trio.fail_after(TIMEOUT):
        async with serving(settings) as running:
            with grpc.insecure_channel(f"127.0.0.1:{running.port}", options=options) as channel:
                stub = test_pb2_grpc.TestServiceStub(channel)
                call = partial(stub.UnaryCall, messages_pb2.SimpleRequest(response_size=1), timeout=TIMEOUT)
                await in_thread(call)
                connection = running.connection()
                await PingCounter(running, wanted=4).reached.wait()  # a strike each, were they too soon
                assert (await in_thread(call)).payload.body == b"r"
                assert running.server._connections == {connection} and connection.lost is None


async def test_grpcio_bdp_pings_on_a_large_download_are_not_kicked() -> None:
    """grpc-core probes bandwidth with a PING when DATA arrives: default policy, many PINGs, no GOAWAY."""
    request = messages_pb2.StreamingOutputCallRequest(
        response_parameters=[messages_pb2.ResponseParameters(size=64 * 1024)]
    )
    with trio.fail_after(TIMEOUT):
        async with serving() as running:
            with grpc.insecure_channel(f"127.0.0.1:{running.port}") as channel:
                stub = test_pb2_grpc.TestServiceStub(channel)
                unary = partial(stub.UnaryCall, messages_pb2.SimpleRequest(response_size=1), timeout=TIMEOUT)
                await in_thread(unary)
                connection = running.connection()

                pings = PingCounter(running)

                def download() -> int:
                    """Until the server has seen twice a flood's worth of PINGs: as strikes, a GOAWAY."""
                    responses = stub.StreamingOutputCall(request, timeout=TIMEOUT)
                    received = 0
                    while pings.count < 8:  # read across threads: a plain int, enough for this
                        received += len(next(responses).payload.body)
                    responses.cancel()
                    return received

                assert await in_thread(download) > 0
                assert (await in_thread(unary)).payload.body == b"r"
                assert running.server._connections == {connection} and connection.lost is None
