"""The client's connection management against real servers: keepalive back-off when a server says
`too_many_pings` (gRFC A8).

Each case runs against our own server and against grpcio's (grpc-core), each enforcing its own PING policy.
"""

from __future__ import annotations

import concurrent.futures
import logging
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from functools import partial
from typing import Any

import grpc  # type: ignore[import-untyped]
import pytest
import trio

import trio_grpc
from tests.grpcio_stubs import test_pb2_grpc
from tests.interop._proto.grpc.testing import messages_pb2, test_pb2
from trio_grpc import ChannelSettings, ServerSettings

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
