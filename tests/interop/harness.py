"""What the interop test modules share: the TLS identities, trio_grpc's server in a thread or as a program,
other stacks' server programs, our channel.

The spec's clients reach the server as foo.test.google.fr (--server_host_override) and its server1.pem is a
certificate for *.test.google.fr; a trustme CA issues the same names, so no key material lives in the tree.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import logging
import queue
import re
import ssl
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import trio
import trustme

import trio_grpc
from tests.interop import server

SERVER_HOST_OVERRIDE = "foo.test.google.fr"
STARTUP_TIMEOUT = 10.0  # seconds
REPOSITORY = Path(__file__).resolve().parents[2]
#: The line an interop server program prints once it accepts connections (tests.interop.server's wording).
_LISTENING = re.compile(r"listening on port (\d+)")


@dataclasses.dataclass(frozen=True)
class Direction:
    client: str  # "trio" (trio_grpc), or the other stack: "grpcio", "node"...
    server: str
    tls: bool

    def __str__(self) -> str:
        return f"{self.client}_to_{self.server}{'_tls' if self.tls else ''}"


@dataclasses.dataclass(frozen=True)
class TlsFiles:
    """The test CA and the server's certificate as PEM files, for programs that take file names."""

    ca: Path
    cert: Path
    key: Path


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

    def write_files(self, directory: Path) -> TlsFiles:
        files = TlsFiles(directory / "ca.pem", directory / "server.pem", directory / "server.key")
        self.ca.cert_pem.write_to_path(str(files.ca))
        self.cert.cert_chain_pems[0].write_to_path(str(files.cert))
        self.cert.private_key_pem.write_to_path(str(files.key))
        return files


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


def trio_server_command(port: int = 0, tls_files: TlsFiles | None = None) -> list[str]:
    """`python -m tests.interop.server` on 127.0.0.1, plaintext or (given its files) TLS."""
    command = [sys.executable, "-m", "tests.interop.server", f"--port={port}", "--host=127.0.0.1"]
    if tls_files is not None:
        command += ["--use_tls=true", f"--tls_cert_file={tls_files.cert}", f"--tls_key_file={tls_files.key}"]
    return command


def _first_line(process: subprocess.Popen[str], timeout: float) -> str:
    """The first line of the process's stdout, or "" if none came in time (a thread reads, so that a
    silent program cannot block the test)."""
    lines: queue.Queue[str] = queue.Queue()
    assert process.stdout is not None
    stdout = process.stdout
    threading.Thread(target=lambda: lines.put(stdout.readline()), daemon=True).start()
    try:
        return lines.get(timeout=timeout)
    except queue.Empty:
        return ""


@contextlib.contextmanager
def server_process(command: list[str], stderr_path: Path) -> Iterator[int]:
    """Run an interop server program; yield the port it reports ("listening on port N"), then stop it.

    Its stderr goes to `stderr_path`, shown if it does not start."""
    with stderr_path.open("w") as stderr:
        process = subprocess.Popen(command, cwd=REPOSITORY, stdout=subprocess.PIPE, stderr=stderr, text=True)
    try:
        line = _first_line(process, STARTUP_TIMEOUT)
        match = _LISTENING.search(line)
        if match is None:
            raise RuntimeError(
                f"{command[0]} did not report its port (first line {line!r}); stderr:\n"
                + stderr_path.read_text()
            )
        yield int(match.group(1))
    finally:
        process.terminate()
        try:
            process.wait(STARTUP_TIMEOUT)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        assert process.stdout is not None
        process.stdout.close()
