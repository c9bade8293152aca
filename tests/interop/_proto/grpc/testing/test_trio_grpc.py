"""trio_grpc servicers and stubs for grpc/testing/test.proto; written by protoc-gen-trio_grpc: do not edit."""

from __future__ import annotations

import abc
from collections.abc import AsyncIterator

import trio_grpc
from tests.interop._proto.grpc.testing import empty_pb2 as grpc_dot_testing_dot_empty__pb2
from tests.interop._proto.grpc.testing import messages_pb2 as grpc_dot_testing_dot_messages__pb2
from tests.interop._proto.grpc.testing import test_pb2 as grpc_dot_testing_dot_test__pb2

__all__ = ["TestServiceBase", "TestServiceStub", "UnimplementedServiceBase", "UnimplementedServiceStub", "ReconnectServiceBase", "ReconnectServiceStub"]


class TestServiceBase(abc.ABC):
    """Servicer of grpc.testing.TestService: implement every method, serve with `Server([servicer.bind()])`."""

    @abc.abstractmethod
    async def EmptyCall(
        self, request: grpc_dot_testing_dot_empty__pb2.Empty, context: trio_grpc.ServicerContext
    ) -> grpc_dot_testing_dot_empty__pb2.Empty:
        """Return the response."""

    @abc.abstractmethod
    async def UnaryCall(
        self, request: grpc_dot_testing_dot_messages__pb2.SimpleRequest, context: trio_grpc.ServicerContext
    ) -> grpc_dot_testing_dot_messages__pb2.SimpleResponse:
        """Return the response."""

    @abc.abstractmethod
    async def CacheableUnaryCall(
        self, request: grpc_dot_testing_dot_messages__pb2.SimpleRequest, context: trio_grpc.ServicerContext
    ) -> grpc_dot_testing_dot_messages__pb2.SimpleResponse:
        """Return the response."""

    @abc.abstractmethod
    async def StreamingOutputCall(
        self, request: grpc_dot_testing_dot_messages__pb2.StreamingOutputCallRequest, context: trio_grpc.ServicerContext
    ) -> None:
        """Send each response with `await context.send(response)`; return None."""

    @abc.abstractmethod
    async def StreamingInputCall(
        self, requests: AsyncIterator[grpc_dot_testing_dot_messages__pb2.StreamingInputCallRequest], context: trio_grpc.ServicerContext
    ) -> grpc_dot_testing_dot_messages__pb2.StreamingInputCallResponse:
        """Return the response."""

    @abc.abstractmethod
    async def FullDuplexCall(
        self, requests: AsyncIterator[grpc_dot_testing_dot_messages__pb2.StreamingOutputCallRequest], context: trio_grpc.ServicerContext
    ) -> None:
        """Send each response with `await context.send(response)`; return None."""

    @abc.abstractmethod
    async def HalfDuplexCall(
        self, requests: AsyncIterator[grpc_dot_testing_dot_messages__pb2.StreamingOutputCallRequest], context: trio_grpc.ServicerContext
    ) -> None:
        """Send each response with `await context.send(response)`; return None."""

    @abc.abstractmethod
    async def UnimplementedCall(
        self, request: grpc_dot_testing_dot_empty__pb2.Empty, context: trio_grpc.ServicerContext
    ) -> grpc_dot_testing_dot_empty__pb2.Empty:
        """Return the response."""

    def bind(self) -> trio_grpc.ServiceBinding:
        return trio_grpc.bind_service(
            grpc_dot_testing_dot_test__pb2.DESCRIPTOR.services_by_name["TestService"], self
        )


class TestServiceStub:
    """Client of grpc.testing.TestService: `TestServiceStub(channel)`, one typed method per RPC."""

    def __init__(self, channel: trio_grpc.Channel) -> None:
        methods = grpc_dot_testing_dot_test__pb2.DESCRIPTOR.services_by_name["TestService"].methods_by_name
        self.EmptyCall: trio_grpc.UnaryUnaryMethod[grpc_dot_testing_dot_empty__pb2.Empty, grpc_dot_testing_dot_empty__pb2.Empty] = trio_grpc.UnaryUnaryMethod(
            channel, methods["EmptyCall"]
        )
        self.UnaryCall: trio_grpc.UnaryUnaryMethod[grpc_dot_testing_dot_messages__pb2.SimpleRequest, grpc_dot_testing_dot_messages__pb2.SimpleResponse] = trio_grpc.UnaryUnaryMethod(
            channel, methods["UnaryCall"]
        )
        self.CacheableUnaryCall: trio_grpc.UnaryUnaryMethod[grpc_dot_testing_dot_messages__pb2.SimpleRequest, grpc_dot_testing_dot_messages__pb2.SimpleResponse] = trio_grpc.UnaryUnaryMethod(
            channel, methods["CacheableUnaryCall"]
        )
        self.StreamingOutputCall: trio_grpc.UnaryStreamMethod[grpc_dot_testing_dot_messages__pb2.StreamingOutputCallRequest, grpc_dot_testing_dot_messages__pb2.StreamingOutputCallResponse] = trio_grpc.UnaryStreamMethod(
            channel, methods["StreamingOutputCall"]
        )
        self.StreamingInputCall: trio_grpc.StreamUnaryMethod[grpc_dot_testing_dot_messages__pb2.StreamingInputCallRequest, grpc_dot_testing_dot_messages__pb2.StreamingInputCallResponse] = trio_grpc.StreamUnaryMethod(
            channel, methods["StreamingInputCall"]
        )
        self.FullDuplexCall: trio_grpc.StreamStreamMethod[grpc_dot_testing_dot_messages__pb2.StreamingOutputCallRequest, grpc_dot_testing_dot_messages__pb2.StreamingOutputCallResponse] = trio_grpc.StreamStreamMethod(
            channel, methods["FullDuplexCall"]
        )
        self.HalfDuplexCall: trio_grpc.StreamStreamMethod[grpc_dot_testing_dot_messages__pb2.StreamingOutputCallRequest, grpc_dot_testing_dot_messages__pb2.StreamingOutputCallResponse] = trio_grpc.StreamStreamMethod(
            channel, methods["HalfDuplexCall"]
        )
        self.UnimplementedCall: trio_grpc.UnaryUnaryMethod[grpc_dot_testing_dot_empty__pb2.Empty, grpc_dot_testing_dot_empty__pb2.Empty] = trio_grpc.UnaryUnaryMethod(
            channel, methods["UnimplementedCall"]
        )


class UnimplementedServiceBase(abc.ABC):
    """Servicer of grpc.testing.UnimplementedService: implement every method, serve with `Server([servicer.bind()])`."""

    @abc.abstractmethod
    async def UnimplementedCall(
        self, request: grpc_dot_testing_dot_empty__pb2.Empty, context: trio_grpc.ServicerContext
    ) -> grpc_dot_testing_dot_empty__pb2.Empty:
        """Return the response."""

    def bind(self) -> trio_grpc.ServiceBinding:
        return trio_grpc.bind_service(
            grpc_dot_testing_dot_test__pb2.DESCRIPTOR.services_by_name["UnimplementedService"], self
        )


class UnimplementedServiceStub:
    """Client of grpc.testing.UnimplementedService: `UnimplementedServiceStub(channel)`, one typed method per RPC."""

    def __init__(self, channel: trio_grpc.Channel) -> None:
        methods = grpc_dot_testing_dot_test__pb2.DESCRIPTOR.services_by_name["UnimplementedService"].methods_by_name
        self.UnimplementedCall: trio_grpc.UnaryUnaryMethod[grpc_dot_testing_dot_empty__pb2.Empty, grpc_dot_testing_dot_empty__pb2.Empty] = trio_grpc.UnaryUnaryMethod(
            channel, methods["UnimplementedCall"]
        )


class ReconnectServiceBase(abc.ABC):
    """Servicer of grpc.testing.ReconnectService: implement every method, serve with `Server([servicer.bind()])`."""

    @abc.abstractmethod
    async def Start(
        self, request: grpc_dot_testing_dot_messages__pb2.ReconnectParams, context: trio_grpc.ServicerContext
    ) -> grpc_dot_testing_dot_empty__pb2.Empty:
        """Return the response."""

    @abc.abstractmethod
    async def Stop(
        self, request: grpc_dot_testing_dot_empty__pb2.Empty, context: trio_grpc.ServicerContext
    ) -> grpc_dot_testing_dot_messages__pb2.ReconnectInfo:
        """Return the response."""

    def bind(self) -> trio_grpc.ServiceBinding:
        return trio_grpc.bind_service(
            grpc_dot_testing_dot_test__pb2.DESCRIPTOR.services_by_name["ReconnectService"], self
        )


class ReconnectServiceStub:
    """Client of grpc.testing.ReconnectService: `ReconnectServiceStub(channel)`, one typed method per RPC."""

    def __init__(self, channel: trio_grpc.Channel) -> None:
        methods = grpc_dot_testing_dot_test__pb2.DESCRIPTOR.services_by_name["ReconnectService"].methods_by_name
        self.Start: trio_grpc.UnaryUnaryMethod[grpc_dot_testing_dot_messages__pb2.ReconnectParams, grpc_dot_testing_dot_empty__pb2.Empty] = trio_grpc.UnaryUnaryMethod(
            channel, methods["Start"]
        )
        self.Stop: trio_grpc.UnaryUnaryMethod[grpc_dot_testing_dot_empty__pb2.Empty, grpc_dot_testing_dot_messages__pb2.ReconnectInfo] = trio_grpc.UnaryUnaryMethod(
            channel, methods["Stop"]
        )
