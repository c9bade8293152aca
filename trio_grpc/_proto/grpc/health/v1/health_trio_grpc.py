"""trio_grpc servicers and stubs for grpc/health/v1/health.proto; written by protoc-gen-trio_grpc: do not edit."""

from __future__ import annotations

import abc
from collections.abc import AsyncIterator

import trio_grpc
from trio_grpc._proto.grpc.health.v1 import health_pb2 as grpc_dot_health_dot_v1_dot_health__pb2

__all__ = ["HealthBase", "HealthStub"]


class HealthBase(abc.ABC):
    """Servicer of grpc.health.v1.Health: implement every method, serve with `Server([servicer.bind()])`."""

    @abc.abstractmethod
    async def Check(
        self, request: grpc_dot_health_dot_v1_dot_health__pb2.HealthCheckRequest, context: trio_grpc.ServicerContext
    ) -> grpc_dot_health_dot_v1_dot_health__pb2.HealthCheckResponse:
        """Return the response."""

    @abc.abstractmethod
    async def Watch(
        self, request: grpc_dot_health_dot_v1_dot_health__pb2.HealthCheckRequest, context: trio_grpc.ServicerContext
    ) -> None:
        """Send each response with `await context.send(response)`; return None."""

    def bind(self) -> trio_grpc.ServiceBinding:
        return trio_grpc.bind_service(
            grpc_dot_health_dot_v1_dot_health__pb2.DESCRIPTOR.services_by_name["Health"], self
        )


class HealthStub:
    """Client of grpc.health.v1.Health: `HealthStub(channel)`, one typed method per RPC."""

    def __init__(self, channel: trio_grpc.Channel) -> None:
        methods = grpc_dot_health_dot_v1_dot_health__pb2.DESCRIPTOR.services_by_name["Health"].methods_by_name
        self.Check: trio_grpc.UnaryUnaryMethod[grpc_dot_health_dot_v1_dot_health__pb2.HealthCheckRequest, grpc_dot_health_dot_v1_dot_health__pb2.HealthCheckResponse] = trio_grpc.UnaryUnaryMethod(
            channel, methods["Check"]
        )
        self.Watch: trio_grpc.UnaryStreamMethod[grpc_dot_health_dot_v1_dot_health__pb2.HealthCheckRequest, grpc_dot_health_dot_v1_dot_health__pb2.HealthCheckResponse] = trio_grpc.UnaryStreamMethod(
            channel, methods["Watch"]
        )
