"""The standard health service, grpc.health.v1.Health: `add_health(server)` and the server has it.

Owns a serving status per service name ("" meaning the whole server) and answering Check and Watch from it.
Known names are "", every service registered on the server (looked up when asked, so services added after
`add_health` count too; a Watch already running notices one at the next status change) and any name given
to `Health.set`. Setting a status never waits for watchers: each Watch call remembers what it last sent
and, when woken, sends the latest status if it differs, so a watcher that does not read skips to the newest
status instead of queueing every change. Graceful shutdown turns every status to NOT_SERVING (before the
server's GOAWAY) and freezes them.
"""

from __future__ import annotations

import enum
import logging

import trio

from ._proto.grpc.health.v1 import health_pb2, health_trio_grpc
from ._server import Server, ServicerContext
from ._status import RpcError, StatusCode

__all__ = ["SERVICE_NAME", "Health", "ServingStatus", "add_health", "parse_status"]

log = logging.getLogger("trio_grpc.health")

SERVICE_NAME = "grpc.health.v1.Health"


class ServingStatus(enum.IntEnum):
    """grpc.health.v1.HealthCheckResponse.ServingStatus, as a Python enum."""

    UNKNOWN = 0
    SERVING = 1
    NOT_SERVING = 2
    SERVICE_UNKNOWN = 3  # what Watch reports for a name nobody registered


def parse_status(value: str | None) -> ServingStatus:
    """A status from configuration text such as the HEALTH environment variable.

    SERVING, NOT_SERVING, SERVICE_UNKNOWN (any case) or 1, 2, 3; None or "" -> SERVING.
    Anything else -> NOT_SERVING, with a warning logged.
    """
    text = (value or "").strip().upper()
    if not text:
        return ServingStatus.SERVING
    for status in (ServingStatus.SERVING, ServingStatus.NOT_SERVING, ServingStatus.SERVICE_UNKNOWN):
        if text in (status.name, str(status.value)):
            return status
    log.warning(
        "health status %r is not SERVING, NOT_SERVING, SERVICE_UNKNOWN, 1, 2 or 3: using NOT_SERVING", value
    )
    return ServingStatus.NOT_SERVING


class Health(health_trio_grpc.HealthBase):
    """The grpc.health.v1.Health servicer. `add_health` creates and registers one."""

    def __init__(
        self, initial: ServingStatus = ServingStatus.SERVING, *, server: Server | None = None
    ) -> None:
        self._server = server
        self._default = ServingStatus(initial)  # of "" and of registered services not `set` explicitly
        self._statuses: dict[str, ServingStatus] = {}
        self._frozen = False
        self._version = 0  # bumped on every change; a watcher compares it to know whether to re-read
        self._changed = trio.lowlevel.ParkingLot()

    def get(self, service: str) -> ServingStatus | None:
        """The status of `service`, None if it is not known."""
        status = self._statuses.get(service)
        if status is not None:
            return status
        if service == "" or (self._server is not None and service in self._server.services):
            return self._default
        return None

    def set(self, service: str, status: ServingStatus) -> None:
        """Set the status of `service` ("" for the whole server); watchers see it. Ignored after shutdown."""
        status = ServingStatus(status)
        if self._frozen:
            log.debug("health of %r not set to %s: the server is shutting down", service, status.name)
            return
        self._statuses[service] = status
        self._notify()

    def enter_graceful_shutdown(self) -> None:
        """Every known service becomes NOT_SERVING for good (later `set` calls are ignored)."""
        self._default = ServingStatus.NOT_SERVING
        self._statuses = dict.fromkeys(self._statuses, ServingStatus.NOT_SERVING)
        self._frozen = True
        self._notify()

    def _notify(self) -> None:
        self._version += 1
        self._changed.unpark_all()

    async def Check(
        self, request: health_pb2.HealthCheckRequest, context: ServicerContext
    ) -> health_pb2.HealthCheckResponse:
        status = self.get(request.service)
        if status is None:
            raise RpcError(StatusCode.NOT_FOUND, f"unknown service {request.service!r}")
        return health_pb2.HealthCheckResponse(status=status.name)

    async def Watch(self, request: health_pb2.HealthCheckRequest, context: ServicerContext) -> None:
        """The current status at once, then each change, until the client cancels."""
        sent: ServingStatus | None = None
        while True:
            version = self._version
            status = self.get(request.service)
            if status is None:
                status = ServingStatus.SERVICE_UNKNOWN
            if status != sent:
                await context.send(health_pb2.HealthCheckResponse(status=status.name))
                sent = status
            if self._version == version:  # nothing changed while we were sending: wait for a change
                await self._changed.park()


def add_health(server: Server, initial: ServingStatus = ServingStatus.SERVING) -> Health:
    """Serve grpc.health.v1.Health on `server`, every known service starting at `initial`.

    Graceful shutdown of the server flips every status to NOT_SERVING before its GOAWAY.
    Returns the `Health` object, to change statuses with `health.set(service, status)`.
    """
    health = Health(initial, server=server)
    server.add_service(health.bind())
    server.on_shutdown(health.enter_graceful_shutdown)
    return health
