"""What a developer trips over first: handlers refused at bind time, and the small grpcio habits that work.

The service is the interop TestService; every test is bounded by trio.fail_after.
"""

from __future__ import annotations

import math
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
import trio

import trio_grpc
from tests.interop._proto.grpc.testing import messages_pb2, test_pb2, test_trio_grpc
from trio_grpc import RpcError, StatusCode
from trio_grpc._client import _parse_target

SERVICE = test_pb2.DESCRIPTOR.services_by_name["TestService"]
TIMEOUT = 10
Context = trio_grpc.ServicerContext
SimpleRequest = messages_pb2.SimpleRequest
SimpleResponse = messages_pb2.SimpleResponse
StreamingOutputCallRequest = messages_pb2.StreamingOutputCallRequest
StreamingOutputCallResponse = messages_pb2.StreamingOutputCallResponse


@asynccontextmanager
async def serving(
    implementation: object, target: str = "127.0.0.1:{port}"
) -> AsyncIterator[trio_grpc.Channel]:
    server = trio_grpc.Server([trio_grpc.bind_service(SERVICE, implementation)])
    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            # host positionally: nursery.start passes no keyword arguments
            port = await nursery.start(server.serve_tcp, 0, "127.0.0.1")
            async with trio_grpc.Channel(target.format(port=port)) as channel:
                yield channel
            await server.shutdown(grace=1)


# -- bind time --------------------------------------------------------------------------------------------


def test_a_misspelled_handler_is_refused_with_the_name_it_should_have() -> None:
    class Service:
        async def UnaryCal(self, request: SimpleRequest, context: Context) -> SimpleResponse:
            return SimpleResponse()

    with pytest.raises(
        TypeError, match=r"Service has no UnaryCall .* but has UnaryCal: did you mean UnaryCall\?"
    ):
        trio_grpc.bind_service(SERVICE, Service())


def test_a_plain_def_handler_is_refused() -> None:
    class Service:
        def UnaryCall(self, request: SimpleRequest, context: Context) -> SimpleResponse:
            return SimpleResponse()

    with pytest.raises(TypeError, match=r"grpc.testing.TestService.UnaryCall .* write `async def UnaryCall`"):
        trio_grpc.bind_service(SERVICE, Service())


def test_a_yielding_handler_is_refused() -> None:
    class Service:
        async def StreamingOutputCall(
            self, request: StreamingOutputCallRequest, context: Context
        ) -> AsyncIterator[StreamingOutputCallResponse]:
            yield StreamingOutputCallResponse()

    with pytest.raises(TypeError, match=r"async generator: send each response with `await context.send"):
        trio_grpc.bind_service(SERVICE, Service())


def test_unrelated_names_and_missing_methods_still_bind() -> None:
    class Service:
        def helper(self) -> None: ...

        async def EmptyCall(self, request: object, context: Context) -> None: ...

    binding = trio_grpc.bind_service(SERVICE, Service())
    assert list(binding.handlers) == ["/grpc.testing.TestService/EmptyCall"]


def test_a_generated_base_refuses_an_incomplete_servicer() -> None:
    class Partial(test_trio_grpc.UnimplementedServiceBase):
        pass

    with pytest.raises(TypeError, match=r"abstract method '?UnimplementedCall"):
        Partial()  # type: ignore[abstract]


async def test_a_streaming_handler_that_returns_a_value_fails_the_call_saying_so() -> None:
    class Service:
        async def StreamingOutputCall(
            self, request: StreamingOutputCallRequest, context: Context
        ) -> StreamingOutputCallResponse:
            return StreamingOutputCallResponse()

    async with serving(Service()) as channel:
        stub = test_trio_grpc.TestServiceStub(channel)
        with pytest.raises(RpcError) as caught:
            async with stub.StreamingOutputCall(StreamingOutputCallRequest()) as call:
                assert [response async for response in call] == []
    assert caught.value.code == StatusCode.INTERNAL
    assert "StreamingOutputCall handler returned a value" in caught.value.message
    assert "await context.send(response)" in caught.value.message


# -- small things -----------------------------------------------------------------------------------------


class Echo:
    def __init__(self) -> None:
        self.deadlines: list[float] = []

    async def UnaryCall(self, request: SimpleRequest, context: Context) -> SimpleResponse:
        self.deadlines.append(context.deadline)
        return SimpleResponse(username="echo")


async def test_timeout_inf_means_no_deadline() -> None:
    service = Echo()
    async with serving(service) as channel:
        stub = test_trio_grpc.TestServiceStub(channel)
        assert (await stub.UnaryCall(SimpleRequest(), timeout=math.inf)).username == "echo"
        with trio.CancelScope():  # a scope with no deadline sets none either
            assert (await stub.UnaryCall(SimpleRequest())).username == "echo"
    assert service.deadlines == [math.inf, math.inf]


@pytest.mark.parametrize(
    "target", ["ipv4:127.0.0.1:{port}", "dns:///localhost:{port}", "dns:localhost:{port}"]
)
async def test_grpcio_target_forms_connect(target: str) -> None:
    async with serving(Echo(), target) as channel:
        assert (await test_trio_grpc.TestServiceStub(channel).UnaryCall(SimpleRequest())).username == "echo"
        assert channel._authority.decode().rpartition(":")[0] in ("127.0.0.1", "localhost")


def test_target_forms_parse_to_host_and_port() -> None:
    assert _parse_target("ipv6:[::1]:50051") == ("::1", 50051)
    assert _parse_target("dns://8.8.8.8/example.com:443") == ("example.com", 443)
    assert trio_grpc.Channel("ipv6:[::1]:50051")._authority == b"[::1]:50051"
    with pytest.raises(ValueError, match="is not host:port"):
        _parse_target("ipv4:127.0.0.1")


async def test_set_code_and_set_details_end_the_call_as_in_grpcio() -> None:
    class Service:
        async def UnaryCall(self, request: SimpleRequest, context: Context) -> SimpleResponse | None:
            context.set_code(StatusCode.NOT_FOUND)
            context.set_details("no such user")
            return None

        async def StreamingOutputCall(self, request: StreamingOutputCallRequest, context: Context) -> None:
            await context.send(StreamingOutputCallResponse())
            context.set_code(StatusCode.FAILED_PRECONDITION)
            context.set_details("stopped early")

    async with serving(Service()) as channel:
        stub = test_trio_grpc.TestServiceStub(channel)
        with pytest.raises(RpcError) as unary:
            await stub.UnaryCall(SimpleRequest())
        received = []
        with pytest.raises(RpcError) as streaming:
            async with stub.StreamingOutputCall(StreamingOutputCallRequest()) as call:
                async for response in call:
                    received.append(response)
    assert (unary.value.code, unary.value.message) == (StatusCode.NOT_FOUND, "no such user")
    assert (streaming.value.code, streaming.value.message) == (
        StatusCode.FAILED_PRECONDITION,
        "stopped early",
    )
    assert len(received) == 1
