"""trio_grpc.health against grpcio's own health client (grpc_health.v1) and against our client."""

from __future__ import annotations

import contextlib
import functools
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc
import pytest
import trio
from grpc_health.v1 import health_pb2 as grpcio_health_pb2
from grpc_health.v1 import health_pb2_grpc as grpcio_health_grpc

import trio_grpc
from chat._proto.rpc import chat_pb2
from trio_grpc import health, reflection
from trio_grpc._proto.grpc.health.v1 import health_pb2
from trio_grpc.health import ServingStatus

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:grpc")

CHAT = "rpc.ChatService"
GRPCIO_OPTIONS = [("grpc.enable_http_proxy", 0)]


class Chat:
    async def CreateChatRoom(self, request: Any, context: trio_grpc.ServicerContext) -> Any:
        return chat_pb2.ChatRoom(room_id="room")


@contextlib.asynccontextmanager
async def serving(
    initial: ServingStatus = ServingStatus.SERVING,
) -> AsyncIterator[tuple[trio_grpc.Server, health.Health, str]]:
    """A server with rpc.ChatService and health on 127.0.0.1; shut down (with a short grace) on exit."""
    server = trio_grpc.Server(
        [trio_grpc.bind_service(chat_pb2.DESCRIPTOR.services_by_name["ChatService"], Chat())]
    )
    statuses = health.add_health(server, initial)
    async with trio.open_nursery() as nursery:
        port = await nursery.start(functools.partial(server.serve_tcp, 0, host="127.0.0.1"))
        yield server, statuses, f"127.0.0.1:{port}"
        await server.shutdown(grace=1)


async def in_grpcio_thread(address: str, client: Callable[[grpcio_health_grpc.HealthStub], Any]) -> Any:
    """Run `client` with a grpcio health stub on `address`, in a thread (it may call back into Trio)."""

    def run() -> Any:
        with grpc.insecure_channel(address, options=GRPCIO_OPTIONS) as channel:
            return client(grpcio_health_grpc.HealthStub(channel))

    return await trio.to_thread.run_sync(run, abandon_on_cancel=True)  # so that fail_after fails it


def check(stub: grpcio_health_grpc.HealthStub, service: str) -> int:
    request = grpcio_health_pb2.HealthCheckRequest(service=service)
    return stub.Check(request, timeout=5).status  # type: ignore[no-any-return]


def grpcio_status(name: str) -> int:
    return grpcio_health_pb2.HealthCheckResponse.ServingStatus.Value(name)  # type: ignore[no-any-return]


# -- parse_status --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (None, ServingStatus.SERVING),
        ("", ServingStatus.SERVING),
        ("SERVING", ServingStatus.SERVING),
        ("serving", ServingStatus.SERVING),
        ("Not_Serving", ServingStatus.NOT_SERVING),
        ("service_unknown", ServingStatus.SERVICE_UNKNOWN),
        ("1", ServingStatus.SERVING),
        ("2", ServingStatus.NOT_SERVING),
        ("3", ServingStatus.SERVICE_UNKNOWN),
    ],
)
def test_parse_status_accepts_names_in_any_case_and_numbers(
    text: str | None, expected: ServingStatus
) -> None:
    assert health.parse_status(text) is expected


@pytest.mark.parametrize("text", ["healthy", "0", "4", "UNKNOWN", "SERVING!"])
def test_parse_status_falls_back_to_not_serving_with_a_warning(
    text: str, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="trio_grpc.health"):
        assert health.parse_status(text) is ServingStatus.NOT_SERVING
    assert text in caplog.text and "NOT_SERVING" in caplog.text


def test_serving_status_matches_the_proto_enum() -> None:
    values = health_pb2.HealthCheckResponse.ServingStatus
    assert {status.name: status.value for status in ServingStatus} == dict(values.items())


# -- Check ---------------------------------------------------------------------------------------------


async def test_grpcio_check_serving_not_serving_and_unknown() -> None:
    with trio.fail_after(20):
        async with serving() as (server, statuses, address):
            reflection.add_reflection(server)  # registered after add_health: known all the same

            def client(stub: grpcio_health_grpc.HealthStub) -> None:
                for service in ("", CHAT, health.SERVICE_NAME, "grpc.reflection.v1.ServerReflection"):
                    assert check(stub, service) == grpcio_status("SERVING"), service
                trio.from_thread.run_sync(statuses.set, CHAT, ServingStatus.NOT_SERVING)
                assert check(stub, CHAT) == grpcio_status("NOT_SERVING")
                assert check(stub, "") == grpcio_status("SERVING")  # the others are untouched
                with pytest.raises(grpc.RpcError) as unknown:
                    check(stub, "no.such.Service")
                assert unknown.value.code() == grpc.StatusCode.NOT_FOUND
                trio.from_thread.run_sync(statuses.set, "no.such.Service", ServingStatus.SERVING)
                assert check(stub, "no.such.Service") == grpcio_status("SERVING")  # set makes it known

            await in_grpcio_thread(address, client)


async def test_initial_status_applies_to_every_known_service() -> None:
    with trio.fail_after(20):
        async with serving(ServingStatus.NOT_SERVING) as (_, _, address):

            def client(stub: grpcio_health_grpc.HealthStub) -> list[int]:
                return [check(stub, service) for service in ("", CHAT, health.SERVICE_NAME)]

            assert await in_grpcio_thread(address, client) == [grpcio_status("NOT_SERVING")] * 3


# -- Watch ---------------------------------------------------------------------------------------------


async def test_grpcio_watch_sees_the_current_status_then_each_change() -> None:
    with trio.fail_after(20):
        async with serving() as (_, statuses, address):

            def client(stub: grpcio_health_grpc.HealthStub) -> list[int]:
                responses = stub.Watch(grpcio_health_pb2.HealthCheckRequest(service=CHAT), timeout=10)
                seen = [next(responses).status]
                trio.from_thread.run_sync(statuses.set, CHAT, ServingStatus.NOT_SERVING)
                seen.append(next(responses).status)
                trio.from_thread.run_sync(statuses.set, CHAT, ServingStatus.SERVING)
                seen.append(next(responses).status)
                responses.cancel()
                return seen

            seen = await in_grpcio_thread(address, client)
            assert seen == [grpcio_status(name) for name in ("SERVING", "NOT_SERVING", "SERVING")]


async def test_grpcio_watch_of_an_unknown_service_stays_open_until_it_becomes_known() -> None:
    with trio.fail_after(20):
        async with serving() as (_, statuses, address):

            def client(stub: grpcio_health_grpc.HealthStub) -> list[int]:
                responses = stub.Watch(grpcio_health_pb2.HealthCheckRequest(service="later"), timeout=10)
                seen = [next(responses).status]
                # A change elsewhere wakes the watcher; it must not repeat SERVICE_UNKNOWN.
                trio.from_thread.run_sync(statuses.set, CHAT, ServingStatus.NOT_SERVING)
                trio.from_thread.run_sync(statuses.set, "later", ServingStatus.SERVING)
                seen.append(next(responses).status)
                responses.cancel()
                return seen

            seen = await in_grpcio_thread(address, client)
            assert seen == [grpcio_status("SERVICE_UNKNOWN"), grpcio_status("SERVING")]


async def test_grpcio_watchers_see_the_flip_to_not_serving_on_graceful_shutdown() -> None:
    with trio.fail_after(20):
        async with serving() as (server, statuses, address):
            watching = trio.Event()

            def client(stub: grpcio_health_grpc.HealthStub) -> list[list[int]]:
                calls = [
                    stub.Watch(grpcio_health_pb2.HealthCheckRequest(service=service), timeout=10)
                    for service in ("", CHAT)
                ]
                seen = [[next(call).status] for call in calls]
                trio.from_thread.run_sync(watching.set)
                for call, call_seen in zip(calls, seen, strict=True):
                    call_seen.append(next(call).status)
                    call.cancel()
                return seen

            seen: list[list[list[int]]] = []

            async def watch() -> None:
                seen.append(await in_grpcio_thread(address, client))

            async with trio.open_nursery() as nursery:
                nursery.start_soon(watch)
                await watching.wait()
                await server.shutdown(grace=10)  # returns once the watchers cancelled their calls
            assert seen == [[[grpcio_status("SERVING"), grpcio_status("NOT_SERVING")]] * 2]
            assert statuses.get("") is ServingStatus.NOT_SERVING
            statuses.set("", ServingStatus.SERVING)  # ignored from now on
            assert statuses.get("") is ServingStatus.NOT_SERVING


async def test_a_watcher_that_never_reads_holds_up_neither_set_nor_other_watchers() -> None:
    flips = 200  # far more status messages than the stalled watcher's flow-control window holds
    # A tiny window, and no credit back until the application reads: the stalled call blocks its sender.
    settings = trio_grpc.ChannelSettings(stream_window_size=64, stream_read_buffer_size=0)
    watch_method = health_pb2.DESCRIPTOR.services_by_name["Health"].methods_by_name["Watch"]
    with trio.fail_after(30):
        async with (
            serving() as (_, statuses, address),
            trio_grpc.Channel(address, settings=settings) as channel,
        ):
            stub = trio_grpc.Stub(channel, watch_method.containing_service)
            request = health_pb2.HealthCheckRequest(service=CHAT)
            async with contextlib.AsyncExitStack() as stack:
                stalled = await stack.enter_async_context(stub.Watch(request))
                watchers = [await stack.enter_async_context(stub.Watch(request)) for _ in range(5)]
                for watcher in watchers:
                    assert (await watcher.receive()).status == ServingStatus.SERVING
                for flip in range(flips):
                    expected = ServingStatus.NOT_SERVING if flip % 2 == 0 else ServingStatus.SERVING
                    statuses.set(CHAT, expected)
                    for watcher in watchers:
                        assert (await watcher.receive()).status == expected
                statuses.set(CHAT, ServingStatus.UNKNOWN)  # a value the flips never used: the last word

                received: list[int] = []
                while not received or received[-1] != ServingStatus.UNKNOWN:
                    received.append((await stalled.receive()).status)
                # It got what fit in its window, then straight the latest status: no backlog of changes.
                assert len(received) < flips
