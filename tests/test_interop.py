"""The gRPC interop cases (doc/interop-test-descriptions.md) between trio_grpc and grpcio, in every direction.

One test id per case and direction, e.g. `large_unary-trio_to_grpcio_tls`. The servers start once per
module: trio_grpc's in a thread of its own running `trio.run`, grpcio's (`grpc.aio`) in a thread running an
asyncio loop, which also runs the grpcio client cases. Each server listens twice, plaintext and TLS (a
trustme CA and a certificate for *.test.google.fr, reached as foo.test.google.fr as the spec's clients do
with --server_host_override).
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import logging
import queue
import ssl
import threading
from collections.abc import Coroutine, Iterator
from typing import Any, TypeVar

import grpc
import pytest
import trio
from grpc import aio

from tests.interop import client, grpcio_reference, server
from tests.interop.harness import SERVER_HOST_OVERRIDE, Tls, trio_channel

T = TypeVar("T")

CASE_TIMEOUT = 15.0  # seconds, for one case; the slowest takes about one
STARTUP_TIMEOUT = 10.0


@dataclasses.dataclass(frozen=True)
class Direction:
    client: str  # "trio" (trio_grpc) or "grpcio"
    server: str
    tls: bool

    def __str__(self) -> str:
        return f"{self.client}_to_{self.server}{'_tls' if self.tls else ''}"


DIRECTIONS = [
    Direction(client_side, server_side, tls)
    for tls in (False, True)
    for client_side, server_side in (("trio", "trio"), ("trio", "grpcio"), ("grpcio", "trio"))
]

NO_COMPRESSED_REQUEST_ON_GRPCIO = (
    "a grpcio server cannot see whether a request arrived compressed, so it cannot refuse the uncompressed "
    "probe (grpc's own Python interop server skips this case too); {case}_noprobe runs the rest of the case"
)


def _matrix() -> list[Any]:
    """Every spec case in every direction, plus the noprobe variants where the grpcio server needs them."""
    params = []
    for name in [case.__name__ for case in client.SPEC_CASES]:
        for direction in DIRECTIONS:
            marks = []
            if name.startswith("client_compressed_") and direction.server == "grpcio":
                marks.append(pytest.mark.skip(reason=NO_COMPRESSED_REQUEST_ON_GRPCIO.format(case=name)))
            params.append(pytest.param(name, direction, id=f"{name}-{direction}", marks=marks))
    for name in ("client_compressed_unary_noprobe", "client_compressed_streaming_noprobe"):
        for direction in DIRECTIONS:
            if direction.server == "grpcio":
                params.append(pytest.param(name, direction, id=f"{name}-{direction}"))
    return params


# -- fixtures ----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tls() -> Tls:
    return Tls.create()


class AsyncioThread:
    """An asyncio loop in a thread of its own, for grpc.aio; coroutines are handed to it to run."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="asyncio-grpcio", daemon=True)
        self._thread.start()

    def run_blocking(self, coroutine: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(STARTUP_TIMEOUT)

    async def run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        """Run in the loop, wait from Trio; a Trio cancellation cancels the asyncio task."""
        future = asyncio.run_coroutine_threadsafe(coroutine, self.loop)
        try:
            return await trio.to_thread.run_sync(future.result, abandon_on_cancel=True)
        finally:
            future.cancel()

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(STARTUP_TIMEOUT)
        self.loop.close()


@pytest.fixture(scope="module")
def asyncio_thread() -> Iterator[AsyncioThread]:
    thread = AsyncioThread()
    yield thread
    thread.close()


@dataclasses.dataclass(frozen=True)
class Ports:
    plaintext: int
    tls: int

    def port(self, tls: bool) -> int:
        return self.tls if tls else self.plaintext


@pytest.fixture(scope="module")
def grpcio_server(asyncio_thread: AsyncioThread, tls: Tls) -> Iterator[Ports]:
    credentials = grpc.ssl_server_credentials(
        [(tls.cert.private_key_pem.bytes(), b"".join(pem.bytes() for pem in tls.cert.cert_chain_pems))]
    )

    async def start() -> tuple[aio.Server, Ports]:
        reference = grpcio_reference.make_server()
        ports = Ports(
            reference.add_insecure_port("127.0.0.1:0"), reference.add_secure_port("127.0.0.1:0", credentials)
        )
        await reference.start()
        return reference, ports

    reference, ports = asyncio_thread.run_blocking(start())
    yield ports
    asyncio_thread.run_blocking(reference.stop(None))


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


@pytest.fixture(scope="module")
def trio_server(tls: Tls) -> Iterator[Ports]:
    thread = TrioServerThread(tls.server_context())
    yield thread.start()
    thread.stop()


# -- the matrix --------------------------------------------------------------------------------------------


async def _run_grpcio_case(case: str, port: int, use_tls: bool, tls: Tls) -> None:
    target = f"127.0.0.1:{port}"
    if use_tls:
        credentials = grpc.ssl_channel_credentials(root_certificates=tls.ca.cert_pem.bytes())
        options = [("grpc.ssl_target_name_override", SERVER_HOST_OVERRIDE)]
        channel = aio.secure_channel(target, credentials, options=options)
    else:
        channel = aio.insecure_channel(target)
    async with channel:
        await grpcio_reference.CASES[case](channel)


@pytest.mark.parametrize(("case", "direction"), _matrix())
async def test_interop(
    case: str,
    direction: Direction,
    trio_server: Ports,
    grpcio_server: Ports,
    asyncio_thread: AsyncioThread,
    tls: Tls,
    caplog: pytest.LogCaptureFixture,
) -> None:
    port = (trio_server if direction.server == "trio" else grpcio_server).port(direction.tls)
    with trio.fail_after(CASE_TIMEOUT):
        if direction.client == "trio":
            async with trio_channel(port, direction.tls, tls) as channel:
                await client.CASES[case](channel)
        else:
            await asyncio_thread.run(_run_grpcio_case(case, port, direction.tls, tls))
    # A handler's unexpected exception becomes a status the case may not look at; the log shows it.
    errors = [
        r.getMessage()
        for r in caplog.records
        if r.levelno >= logging.ERROR and r.name.startswith("trio_grpc")
    ]
    assert not errors, f"trio_grpc logged errors during the case: {errors}"
