"""trio_grpc servicers and stubs for grpc/reflection/v1alpha/reflection.proto; written by protoc-gen-trio_grpc: do not edit."""

from __future__ import annotations

import abc
from collections.abc import AsyncIterator

import trio_grpc
from trio_grpc._proto.grpc.reflection.v1alpha import reflection_pb2 as grpc_dot_reflection_dot_v1alpha_dot_reflection__pb2

__all__ = ["ServerReflectionBase", "ServerReflectionStub"]


class ServerReflectionBase(abc.ABC):
    """Servicer of grpc.reflection.v1alpha.ServerReflection: implement every method, serve with `Server([servicer.bind()])`."""

    @abc.abstractmethod
    async def ServerReflectionInfo(
        self, requests: AsyncIterator[grpc_dot_reflection_dot_v1alpha_dot_reflection__pb2.ServerReflectionRequest], context: trio_grpc.ServicerContext
    ) -> None:
        """Send each response with `await context.send(response)`; return None."""

    def bind(self) -> trio_grpc.ServiceBinding:
        return trio_grpc.bind_service(
            grpc_dot_reflection_dot_v1alpha_dot_reflection__pb2.DESCRIPTOR.services_by_name["ServerReflection"], self
        )


class ServerReflectionStub:
    """Client of grpc.reflection.v1alpha.ServerReflection: `ServerReflectionStub(channel)`, one typed method per RPC."""

    def __init__(self, channel: trio_grpc.Channel) -> None:
        methods = grpc_dot_reflection_dot_v1alpha_dot_reflection__pb2.DESCRIPTOR.services_by_name["ServerReflection"].methods_by_name
        self.ServerReflectionInfo: trio_grpc.StreamStreamMethod[grpc_dot_reflection_dot_v1alpha_dot_reflection__pb2.ServerReflectionRequest, grpc_dot_reflection_dot_v1alpha_dot_reflection__pb2.ServerReflectionResponse] = trio_grpc.StreamStreamMethod(
            channel, methods["ServerReflectionInfo"]
        )
