"""max_connection_idle, timed by the server's one idle timer, on trio's mock clock.

Connections are memory stream pairs handed out by a listener of our own, so that they run on the mock
clock (sockets would not): each GOAWAY's time is exact, and the test takes no real time.
"""

from __future__ import annotations

import math
from functools import partial
from typing import Any, cast

import pytest
import trio
import trio.testing

import trio_grpc
from tests.test_hostile_peers import SERVICE, ErrorCodes, RawClient, Service, unary_request
from trio_grpc import ServerSettings

IDLE = 100.0


class MemoryListener(trio.abc.Listener[trio.abc.Stream]):
    """Accepts the server ends of memory stream pairs; `connect` makes one and speaks HTTP/2 on it."""

    def __init__(self) -> None:
        self._send, self._receive = trio.open_memory_channel[trio.abc.Stream](math.inf)

    async def accept(self) -> trio.abc.Stream:
        return await self._receive.receive()

    async def aclose(self) -> None:
        self._receive.close()
        await trio.lowlevel.checkpoint()

    async def connect(self) -> RawClient:
        client_end, server_end = trio.testing.memory_stream_pair()
        self._send.send_nowait(server_end)
        client = RawClient(cast(Any, client_end))
        client.h2.initiate_connection()
        await client.flush()
        return client


async def closed_at(client: RawClient, start: float, times: dict[str, float], name: str) -> None:
    await client.until_closed()
    assert client.goaway is not None and client.goaway.error_code == ErrorCodes.NO_ERROR
    times[name] = trio.current_time() - start


async def test_each_idle_connection_is_closed_max_connection_idle_after_its_last_stream(
    autojump_clock: trio.abc.Clock,
) -> None:
    service = Service()
    server = trio_grpc.Server(
        [trio_grpc.bind_service(SERVICE, service)], settings=ServerSettings(max_connection_idle=IDLE)
    )
    listener = MemoryListener()
    times: dict[str, float] = {}
    async with trio.open_nursery() as nursery:
        await nursery.start(partial(server.serve_listeners, [cast(Any, listener)]))
        start = trio.current_time()
        first = await listener.connect()  # idle from 0
        await trio.sleep(30)
        second = await listener.connect()  # idle from 30: after the first, but expires first
        nursery.start_soon(closed_at, second, start, times, "second")
        await trio.sleep(20)
        blocked = await first.request(body=unary_request(response_size=-1))  # busy from 50
        await service.started.wait()
        await trio.sleep(IDLE)  # past the first connection's old deadline: a call in flight is not idle
        assert "first" not in times
        await first.reset(blocked)  # idle again from 150
        await closed_at(first, start, times, "first")
        assert times == {"second": pytest.approx(30 + IDLE), "first": pytest.approx(150 + IDLE)}
        await trio.testing.wait_all_tasks_blocked()
        assert not server._connections
        # With no connection left the timer waits for one; a newcomer is timed from its accept.
        third = await listener.connect()
        connected = trio.current_time()
        await closed_at(third, connected, times, "third")
        assert times["third"] == pytest.approx(IDLE)
        await server.shutdown()


async def test_without_max_connection_idle_connections_stay_open(autojump_clock: trio.abc.Clock) -> None:
    server = trio_grpc.Server(
        [trio_grpc.bind_service(SERVICE, Service())], settings=ServerSettings(max_connection_idle=None)
    )
    listener = MemoryListener()
    async with trio.open_nursery() as nursery:
        await nursery.start(partial(server.serve_listeners, [cast(Any, listener)]))
        client = await listener.connect()
        with trio.move_on_after(10 * 24 * 3600):
            await client.until_closed()
        assert not client.eof and len(server._connections) == 1
        await server.shutdown()
