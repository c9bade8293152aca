"""Interceptors, server and client, for the four kinds: metadata both ways, ending a call with a status,
the outcome and its duration, the order of composition; a grpcio client against a server with interceptors;
the two shipped ones (AccessLog through chatserver as a subprocess, Metrics)."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from functools import partial
from typing import Any

import grpc  # type: ignore[import-untyped]
import pytest
import trio

import trio_grpc
from tests.grpcio_stubs import test_pb2_grpc
from tests.interop._proto.grpc.testing import messages_pb2, test_pb2
from tests.test_cli_chatserver import ChatServer, create_room, running_chatserver, start_chatserver
from trio_grpc import Call, RpcError, ServicerContext, StatusCode
from trio_grpc.interceptors import AccessLog, Metrics

SERVICE = test_pb2.DESCRIPTOR.services_by_name["TestService"]
TIMEOUT = 10

SimpleRequest = messages_pb2.SimpleRequest
SimpleResponse = messages_pb2.SimpleResponse
StreamingOutputCallRequest = messages_pb2.StreamingOutputCallRequest
StreamingOutputCallResponse = messages_pb2.StreamingOutputCallResponse
StreamingInputCallRequest = messages_pb2.StreamingInputCallRequest
StreamingInputCallResponse = messages_pb2.StreamingInputCallResponse


class Service:
    """The four kinds; each handler records the metadata it received and sets a trailer of its own."""

    def __init__(self) -> None:
        self.calls: list[str] = []
        self.metadata: list[dict[str, Any]] = []

    def _seen(self, context: ServicerContext) -> None:
        self.calls.append(context.method.rsplit("/", 1)[1])
        self.metadata.append(dict(context.invocation_metadata))
        context.set_trailing_metadata([("handler", "set")])

    async def UnaryCall(self, request: SimpleRequest, context: ServicerContext) -> SimpleResponse:
        self._seen(context)
        if request.response_status.code:
            raise RpcError(StatusCode(request.response_status.code), request.response_status.message)
        if request.response_size < 0:
            await trio.sleep_forever()  # until the deadline
        return SimpleResponse(username="u")

    async def StreamingOutputCall(
        self, request: StreamingOutputCallRequest, context: ServicerContext
    ) -> None:
        self._seen(context)
        await context.send(StreamingOutputCallResponse())

    async def StreamingInputCall(
        self, requests: AsyncIterator[StreamingInputCallRequest], context: ServicerContext
    ) -> StreamingInputCallResponse:
        self._seen(context)
        count = sum([1 async for _ in requests])
        return StreamingInputCallResponse(aggregated_payload_size=count)

    async def FullDuplexCall(
        self, requests: AsyncIterator[StreamingOutputCallRequest], context: ServicerContext
    ) -> None:
        self._seen(context)
        async for _ in requests:
            await context.send(StreamingOutputCallResponse())


class Recording:
    """A server interceptor: reads `who`, adds initial and trailing metadata, records what it saw."""

    def __init__(self, name: str, log: list[tuple[str, ...]]) -> None:
        self.name, self.log = name, log

    @asynccontextmanager
    async def __call__(self, context: ServicerContext) -> AsyncIterator[None]:
        who = dict(context.invocation_metadata).get("who", "?")
        self.log.append((self.name, "before", who))
        context.add_initial_metadata([(f"{self.name}-initial", "i")])
        start = trio.current_time()
        yield
        assert context.status_code is not None
        elapsed = trio.current_time() - start
        self.log.append((self.name, "after", context.status_code.name, f"{elapsed >= 0}"))
        context.add_trailing_metadata([(f"{self.name}-trailing", "t")])


class Gate:
    """A server interceptor that ends a call with PERMISSION_DENIED before the handler without a token."""

    @asynccontextmanager
    async def __call__(self, context: ServicerContext) -> AsyncIterator[None]:
        if dict(context.invocation_metadata).get("token") != "secret":
            raise RpcError(StatusCode.PERMISSION_DENIED, "no token", trailing_metadata=[("gate", "closed")])
        yield


@asynccontextmanager
async def serving(
    service: Service,
    interceptors: Sequence[Any],
    client_interceptors: Sequence[Any] = (),
) -> AsyncIterator[tuple[trio_grpc.Stub, int]]:
    server = trio_grpc.Server([trio_grpc.bind_service(SERVICE, service)], interceptors=interceptors)
    async with trio.open_nursery() as nursery:
        port = await nursery.start(partial(server.serve_tcp, 0, host="127.0.0.1"))
        async with trio_grpc.Channel(f"127.0.0.1:{port}", interceptors=client_interceptors) as channel:
            yield trio_grpc.Stub(channel, SERVICE), port
        await server.shutdown(grace=1)


async def call_each_kind(stub: trio_grpc.Stub, metadata: list[tuple[str, str]]) -> list[Call]:
    """One call of each kind, each run to its end; the finished calls."""
    calls = []
    _, call = await stub.UnaryCall.with_call(SimpleRequest(), metadata=metadata)
    calls.append(call)
    async with stub.StreamingOutputCall(StreamingOutputCallRequest(), metadata=metadata) as call:
        assert len([m async for m in call]) == 1
    calls.append(call)
    _, call = await stub.StreamingInputCall.with_call([StreamingInputCallRequest()] * 2, metadata=metadata)
    calls.append(call)
    async with stub.FullDuplexCall(metadata=metadata) as call:
        await call.send(StreamingOutputCallRequest())
        await call.done_writing()
        assert len([m async for m in call]) == 1
    calls.append(call)
    return calls


KINDS = ["UnaryCall", "StreamingOutputCall", "StreamingInputCall", "FullDuplexCall"]


async def test_server_interceptors_all_kinds_in_order() -> None:
    log: list[tuple[str, ...]] = []
    service = Service()
    with trio.fail_after(TIMEOUT):
        async with serving(service, [Recording("outer", log), Recording("inner", log)]) as (stub, _):
            calls = await call_each_kind(stub, [("who", "ann")])
    assert service.calls == KINDS
    per_call = [
        ("outer", "before", "ann"),
        ("inner", "before", "ann"),
        ("inner", "after", "OK", "True"),
        ("outer", "after", "OK", "True"),
    ]
    assert log == per_call * 4
    for call in calls:
        assert call.code == StatusCode.OK
        assert await call.initial_metadata() == (("outer-initial", "i"), ("inner-initial", "i"))
        # The handler's set_trailing_metadata comes first; interceptors add to it on the way out.
        assert call.trailing_metadata == (
            ("handler", "set"),
            ("inner-trailing", "t"),
            ("outer-trailing", "t"),
        )


async def test_server_interceptor_ends_the_call_before_the_handler() -> None:
    log: list[tuple[str, ...]] = []
    service = Service()
    with trio.fail_after(TIMEOUT):
        async with serving(service, [Recording("outer", log), Gate()]) as (stub, _):
            with pytest.raises(RpcError) as denied:
                await stub.UnaryCall(SimpleRequest())
            with pytest.raises(RpcError) as denied_stream:
                async with stub.FullDuplexCall() as call:
                    await call.done_writing()
                    await call.receive()
            assert await stub.UnaryCall(SimpleRequest(), metadata=[("token", "secret")])
    assert (denied.value.code, denied.value.message) == (StatusCode.PERMISSION_DENIED, "no token")
    assert ("gate", "closed") in denied.value.trailing_metadata
    assert denied_stream.value.code == StatusCode.PERMISSION_DENIED
    assert service.calls == ["UnaryCall"]  # the handler ran only for the call with the token
    outcomes = [entry[2] for entry in log if entry[1] == "after"]
    assert outcomes == ["PERMISSION_DENIED", "PERMISSION_DENIED", "OK"]


async def test_server_interceptor_sees_handler_errors_and_the_deadline() -> None:
    log: list[tuple[str, ...]] = []
    with trio.fail_after(TIMEOUT):
        async with serving(Service(), [Recording("outer", log), Recording("inner", log)]) as (stub, _):
            failing = SimpleRequest(response_status=messages_pb2.EchoStatus(code=5, message="nope"))
            with pytest.raises(RpcError) as caught:
                await stub.UnaryCall(failing)
            assert caught.value.code == StatusCode.NOT_FOUND
            assert ("outer-trailing", "t") in caught.value.trailing_metadata
            with pytest.raises(RpcError) as late:
                await stub.UnaryCall(SimpleRequest(response_size=-1), timeout=0.3)
            assert late.value.code == StatusCode.DEADLINE_EXCEEDED
    outcomes = [entry[:3] for entry in log if entry[1] == "after"]
    assert outcomes[:2] == [("inner", "after", "NOT_FOUND"), ("outer", "after", "NOT_FOUND")]
    # The server's deadline and the client's RST_STREAM(CANCEL) at its own deadline race: either may end
    # the call first. Both levels see the same status, whichever it is.
    [late_code] = {entry[2] for entry in outcomes[2:]}
    assert [entry[0] for entry in outcomes[2:]] == ["inner", "outer"]
    assert late_code in ("DEADLINE_EXCEEDED", "CANCELLED"), outcomes


class Tagging:
    """A client interceptor: adds `who`, reads the response metadata and the status after the call."""

    def __init__(self, name: str, log: list[tuple[str, ...]]) -> None:
        self.name, self.log = name, log

    @asynccontextmanager
    async def __call__(self, call: Call) -> AsyncIterator[None]:
        call.add_metadata([(f"{self.name}-who", "ann")])
        self.log.append((self.name, "before", call.method, str(len(call.request_metadata))))
        try:
            yield
        finally:
            assert call.code is not None
            initial = dict(await call.initial_metadata()) if call.code == StatusCode.OK else {}
            trailing = dict(call.trailing_metadata)
            self.log.append(
                (
                    self.name,
                    "after",
                    call.code.name,
                    initial.get("outer-initial", "-"),
                    trailing.get("handler", "-"),
                )
            )


async def test_client_interceptors_all_kinds_in_order() -> None:
    log: list[tuple[str, ...]] = []
    service = Service()
    client = [Tagging("first", log), Tagging("second", log)]
    with trio.fail_after(TIMEOUT):
        async with serving(service, [Recording("outer", [])], client) as (stub, _):
            await call_each_kind(stub, [("who", "ann")])
    assert service.calls == KINDS
    for metadata in service.metadata:  # the caller's own metadata, then what each interceptor added
        assert (metadata["who"], metadata["first-who"], metadata["second-who"]) == ("ann", "ann", "ann")
    expected = []
    for kind in KINDS:
        path = f"/grpc.testing.TestService/{kind}"
        expected += [
            ("first", "before", path, "2"),
            ("second", "before", path, "3"),
            ("second", "after", "OK", "i", "set"),
            ("first", "after", "OK", "i", "set"),
        ]
    assert log == expected


class Refusing:
    """A client interceptor that fails calls before anything is sent."""

    @asynccontextmanager
    async def __call__(self, call: Call) -> AsyncIterator[None]:
        raise RpcError(StatusCode.UNAUTHENTICATED, "no credentials")
        yield  # pragma: no cover


async def test_client_interceptor_fails_the_call_before_sending() -> None:
    log: list[tuple[str, ...]] = []
    service = Service()
    with trio.fail_after(TIMEOUT):
        async with serving(service, [], [Tagging("outer", log), Refusing()]) as (stub, _):
            with pytest.raises(RpcError) as unary:
                await stub.UnaryCall(SimpleRequest())
            with pytest.raises(RpcError) as streaming:
                async with stub.FullDuplexCall():
                    pass
    assert unary.value.code == streaming.value.code == StatusCode.UNAUTHENTICATED
    assert service.calls == []  # nothing reached the server
    assert [entry[:3] for entry in log if entry[1] == "after"] == [("outer", "after", "UNAUTHENTICATED")] * 2


async def test_a_grpcio_client_against_a_server_with_interceptors() -> None:
    log: list[tuple[str, ...]] = []
    service = Service()
    with trio.fail_after(TIMEOUT):
        async with serving(service, [Recording("outer", log), Gate()]) as (_, port):

            def grpcio_calls() -> tuple[Any, Any]:
                with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
                    stub = test_pb2_grpc.TestServiceStub(channel)
                    _, call = stub.UnaryCall.with_call(
                        SimpleRequest(), metadata=[("token", "secret"), ("who", "grpcio")], timeout=TIMEOUT
                    )
                    try:
                        stub.UnaryCall(SimpleRequest(), timeout=TIMEOUT)
                    except grpc.RpcError as error:
                        return call, error
                    raise AssertionError("the gate let a call without a token through")

            ok, denied = await trio.to_thread.run_sync(grpcio_calls)
    assert ("outer-initial", "i") in ok.initial_metadata()
    assert ("outer-trailing", "t") in ok.trailing_metadata()
    assert denied.code() == grpc.StatusCode.PERMISSION_DENIED and denied.details() == "no token"
    assert log[0] == ("outer", "before", "grpcio")
    assert [entry[2] for entry in log if entry[1] == "after"] == ["OK", "PERMISSION_DENIED"]


async def test_metrics_count_and_time_by_method_and_status() -> None:
    server_metrics, client_metrics = Metrics(), Metrics()
    with trio.fail_after(TIMEOUT):
        async with serving(Service(), [server_metrics.server], [client_metrics.client]) as (stub, _):
            for _ in range(3):
                await stub.UnaryCall(SimpleRequest())
            with pytest.raises(RpcError):
                await stub.UnaryCall(SimpleRequest(response_status=messages_pb2.EchoStatus(code=5)))
    unary = "/grpc.testing.TestService/UnaryCall"
    for metrics in (server_metrics, client_metrics):
        assert set(metrics.stats) == {(unary, StatusCode.OK), (unary, StatusCode.NOT_FOUND)}
        ok = metrics.stats[(unary, StatusCode.OK)]
        assert ok.count == 3 and metrics.stats[(unary, StatusCode.NOT_FOUND)].count == 1
        assert 0 < ok.mean_seconds <= ok.max_seconds < TIMEOUT


async def test_access_log_in_process(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("INFO", logger="trio_grpc.access")
    with trio.fail_after(TIMEOUT):
        async with serving(Service(), [AccessLog()]) as (stub, _):
            await stub.UnaryCall(SimpleRequest(), metadata=[("authorization", "Bearer hunter2")])
    [line] = [record.getMessage() for record in caplog.records if record.name == "trio_grpc.access"]
    assert re.fullmatch(r"/grpc\.testing\.TestService/UnaryCall ipv4:127\.0\.0\.1:\d+ OK \d+\.\dms", line), (
        line
    )
    assert "hunter2" not in caplog.text


@pytest.fixture
def chatserver() -> Any:
    yield from running_chatserver()


def test_chatserver_logs_one_access_line_per_call(chatserver: ChatServer) -> None:
    room = create_room(chatserver)
    line = chatserver.proc.expect(r"INFO trio_grpc\.access: (.*)$", "stderr").group(1)
    assert re.fullmatch(r"/rpc\.ChatService/CreateChatRoom ipv4:127\.0\.0\.1:\d+ OK \d+\.\dms", line), line
    assert room not in line  # the method, not the request, is logged


def test_chatserver_no_access_log() -> None:
    server = start_chatserver("--no-access-log")
    try:
        room = create_room(server)
        server.proc.expect(rf"room {room} created", "stderr")
    finally:
        server.stop()
    assert not any("trio_grpc.access" in line for line in server.proc.lines("stderr"))


async def test_server_interceptor_sees_the_client_cancel() -> None:
    outcomes: list[StatusCode | None] = []
    ended = trio.Event()

    @asynccontextmanager
    async def watch(context: ServicerContext) -> AsyncIterator[None]:
        try:
            yield
        finally:
            outcomes.append(context.status_code)
            ended.set()

    with trio.fail_after(TIMEOUT):
        async with serving(Service(), [watch]) as (stub, _):
            async with stub.FullDuplexCall() as call:
                await call.send(StreamingOutputCallRequest())
                await call.receive()  # the handler is running; leaving the block resets the stream
            await ended.wait()
    assert outcomes == [StatusCode.CANCELLED]
