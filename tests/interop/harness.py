"""What the interop test modules share: the TLS identities, trio_grpc's server in a thread, our channel.

The spec's clients reach the server as foo.test.google.fr (--server_host_override) and its server1.pem is a
certificate for *.test.google.fr; a trustme CA issues the same names, so no key material lives in the tree.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import queue
import ssl
import threading

import trio
import trustme

import trio_grpc
from tests.interop import server

SERVER_HOST_OVERRIDE = "foo.test.google.fr"
STARTUP_TIMEOUT = 10.0  # seconds


@dataclasses.dataclass(frozen=True)
class Direction:
    client: str  # "trio" (trio_grpc), or the other stack: "grpcio", "node"...
    server: str
    tls: bool

    def __str__(self) -> str:
        return f"{self.client}_to_{self.server}{'_tls' if self.tls else ''}"


@dataclasses.dataclass(frozen=True)
class Tls:
    ca: trustme.CA
    cert: trustme.LeafCert

    @classmethod
    def for_interop(cls) -> Tls:
        ca = trustme.CA()
        return cls(ca, ca.issue_cert("*.test.google.fr"))  # the names of the spec's server1.pem

    def server_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.cert.configure_cert(context)
        return context

    def client_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context()
        self.ca.configure_trust(context)
        return context


@dataclasses.dataclass(frozen=True)
class Ports:
    plaintext: int
    tls: int

    def port(self, tls: bool) -> int:
        return self.tls if tls else self.plaintext


class TrioServerThread:
    """trio_grpc's interop server in a thread running its own `trio.run`, plaintext and TLS."""

    def __init__(self, tls_context: ssl.SSLContext) -> None:
        self._server = server.make_server()
        self._tls_context = tls_context
        self._started: queue.Queue[Ports | BaseException] = queue.Queue()
        self._token: trio.lowlevel.TrioToken | None = None
        self._stop: trio.Event | None = None
        self._thread = threading.Thread(target=self._run, name="trio-grpc-server", daemon=True)

    def start(self) -> Ports:
        self._thread.start()
        started = self._started.get(timeout=STARTUP_TIMEOUT)
        if isinstance(started, BaseException):
            raise started
        return started

    def stop(self) -> None:
        assert self._stop is not None
        trio.from_thread.run_sync(self._stop.set, trio_token=self._token)
        self._thread.join(STARTUP_TIMEOUT)

    def _run(self) -> None:
        try:
            trio.run(self._serve)
        except BaseException as exc:  # reported to start(), which waits for the ports
            self._started.put(exc)

    async def _serve(self) -> None:
        self._token = trio.lowlevel.current_trio_token()
        self._stop = trio.Event()
        serve = functools.partial(self._server.serve_tcp, host="127.0.0.1")
        async with trio.open_nursery() as nursery:
            plaintext = await nursery.start(serve, 0)
            tls = await nursery.start(functools.partial(serve, tls=self._tls_context), 0)
            self._started.put(Ports(plaintext, tls))
            await self._stop.wait()
            await self._server.shutdown(grace=1.0)


def trio_channel(port: int, use_tls: bool, tls: Tls) -> trio_grpc.Channel:
    if not use_tls:
        return trio_grpc.Channel(f"127.0.0.1:{port}")
    return trio_grpc.Channel(
        f"127.0.0.1:{port}", tls=tls.client_context(), server_hostname=SERVER_HOST_OVERRIDE
    )


def trio_grpc_errors(records: list[logging.LogRecord]) -> list[str]:
    """What trio_grpc logged at ERROR: a handler's unexpected exception, which a case's status may hide."""
    return [r.getMessage() for r in records if r.levelno >= logging.ERROR and r.name.startswith("trio_grpc")]
