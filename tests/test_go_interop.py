"""The gRPC interop cases between trio_grpc and grpc-go (Debian's 1.33, in GOPATH mode), both directions.

tests/interop_go/ holds a Go program written from the spec: the TestService server, and the client cases in
one process printing a JSON line per case. It is built once (cached by a digest of its sources under
tests/interop_go/.cache/). Servers are subprocesses, plaintext and TLS: `python -m tests.interop.server` for
the Go client, which runs every case against it once per mode; the Go server for our client
(tests/interop/client.py), one case per test. One test id per case and direction, e.g.
`large_unary-go_to_trio_tls`. The module is skipped only where `go` is not installed.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import trio

import trio_grpc
from tests.interop import client
from tests.interop._proto.grpc.testing import messages_pb2
from tests.interop.harness import (
    SERVER_HOST_OVERRIDE,
    Ports,
    Tls,
    TlsFiles,
    server_process,
    trio_channel,
    trio_server_command,
)

GO = shutil.which("go")
if GO is None:
    pytest.skip("`go` is not installed: no grpc-go interop (.ci/run installs it)", allow_module_level=True)

GO_DIR = Path(__file__).parent / "interop_go"
CACHE = GO_DIR / ".cache"
GO_ENV = {
    **os.environ,
    "GO111MODULE": "off",
    "GOPATH": f"{GO_DIR}:/usr/share/gocode",
    "GOCACHE": str(CACHE / "go-build"),
    "GOFLAGS": "",
}
BUILD_TIMEOUT = 300.0  # seconds; a first build compiles grpc-go: 15 to 50 s on a busy 2-core machine
CASE_TIMEOUT = 5.0  # seconds, for one case on either side; each takes well under half a second
FLOW_CONTROL_CASE = "flow_control_lazy_window"
CASES = [case.__name__ for case in client.SPEC_CASES] + [FLOW_CONTROL_CASE]

NO_COMPRESSED_RESPONSES_ON_GRPC_GO = (
    "a grpc-go 1.33 server compresses a response only when its request came compressed, with no choice per "
    "call or message, so it cannot offer the CompressedResponse feature"
)


@dataclasses.dataclass(frozen=True)
class Direction:
    client: str  # "go" or "trio"
    tls: bool

    @property
    def server(self) -> str:
        return "trio" if self.client == "go" else "go"

    def __str__(self) -> str:
        return f"{self.client}_to_{self.server}{'_tls' if self.tls else ''}"


def _matrix() -> list[Any]:
    params = []
    for case in CASES:
        for direction in [Direction(side, tls) for tls in (False, True) for side in ("go", "trio")]:
            marks = []
            if case.startswith("server_compressed_") and direction.server == "go":
                marks.append(pytest.mark.skip(reason=NO_COMPRESSED_RESPONSES_ON_GRPC_GO))
            params.append(pytest.param(case, direction, id=f"{case}-{direction}", marks=marks))
    return params


# -- the Go program ----------------------------------------------------------------------------------------


def _source_digest() -> str:
    """A digest of the Go sources and the toolchain: the binary is rebuilt whenever either changes."""
    digest = hashlib.sha256()
    version = subprocess.run([GO, "version"], capture_output=True, check=True, env=GO_ENV).stdout
    digest.update(version)
    for source in sorted((GO_DIR / "src").rglob("*.go")):
        digest.update(str(source.relative_to(GO_DIR)).encode() + b"\0" + source.read_bytes() + b"\0")
    return digest.hexdigest()[:16]


@pytest.fixture(scope="module")
def go_program() -> Path:
    binary = CACHE / "bin" / f"triointerop-{_source_digest()}"
    if binary.exists():
        return binary
    binary.parent.mkdir(parents=True, exist_ok=True)
    for stale in binary.parent.glob("triointerop-*"):
        stale.unlink()
    partial = binary.with_suffix(".partial")  # renamed once complete: an interrupted build leaves no binary
    build = subprocess.run(
        [GO, "build", "-o", str(partial), "triointerop"],
        capture_output=True,
        text=True,
        env=GO_ENV,
        timeout=BUILD_TIMEOUT,
    )
    assert build.returncode == 0, f"go build failed:\n{build.stderr}"
    partial.rename(binary)
    return binary


# -- servers -----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tls_files(tls: Tls, tmp_path_factory: pytest.TempPathFactory) -> TlsFiles:
    return tls.write_files(tmp_path_factory.mktemp("tls"))


def _go_server_command(program: Path, tls_files: TlsFiles | None) -> list[str]:
    command = [str(program), "server", "--port=0", "--host=127.0.0.1"]
    if tls_files is not None:
        command += ["--use_tls=true", f"--tls_cert_file={tls_files.cert}", f"--tls_key_file={tls_files.key}"]
    return command


@pytest.fixture(scope="module")
def logs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("logs")


@pytest.fixture(scope="module")
def trio_servers(tls_files: TlsFiles, logs: Path) -> Iterator[Ports]:
    with (
        server_process(trio_server_command(), logs / "trio.stderr") as plaintext,
        server_process(trio_server_command(tls_files=tls_files), logs / "trio-tls.stderr") as tls,
    ):
        yield Ports(plaintext, tls)


@pytest.fixture(scope="module")
def go_servers(go_program: Path, tls_files: TlsFiles, logs: Path) -> Iterator[Ports]:
    with (
        server_process(_go_server_command(go_program, None), logs / "go.stderr") as plaintext,
        server_process(_go_server_command(go_program, tls_files), logs / "go-tls.stderr") as tls,
    ):
        yield Ports(plaintext, tls)


# -- the Go client -----------------------------------------------------------------------------------------


def _run_go_client(program: Path, port: int, tls_files: TlsFiles | None) -> dict[str, dict[str, Any]]:
    """Every case in one Go client process: each case's result line, by case name."""
    command = [
        str(program),
        "client",
        "--server_host=127.0.0.1",
        f"--server_port={port}",
        f"--test_cases={','.join(CASES)}",
        f"--case_timeout={CASE_TIMEOUT}s",
    ]
    if tls_files is not None:
        command += [
            "--use_tls=true",
            "--use_test_ca=true",
            f"--ca_file={tls_files.ca}",
            f"--server_host_override={SERVER_HOST_OVERRIDE}",
        ]
    try:
        run = subprocess.run(command, capture_output=True, text=True, timeout=CASE_TIMEOUT * (len(CASES) + 1))
    except subprocess.TimeoutExpired as expired:  # the per-case deadlines make this a bug of the program
        pytest.fail(f"the Go client outlived its case deadlines; stderr: {expired.stderr!r}")
    results = [json.loads(line) for line in run.stdout.splitlines()]
    assert [result["case"] for result in results] == CASES, f"the Go client stopped early:\n{run.stderr}"
    return {result["case"]: result for result in results}


@pytest.fixture(scope="module")
def go_client_results(
    go_program: Path, trio_servers: Ports, tls_files: TlsFiles
) -> Callable[[bool], dict[str, dict[str, Any]]]:
    """The Go client's results against our server, plaintext or TLS, each run once, on first use."""
    runs: dict[bool, dict[str, dict[str, Any]]] = {}

    def results(use_tls: bool) -> dict[str, dict[str, Any]]:
        if use_tls not in runs:
            runs[use_tls] = _run_go_client(
                go_program, trio_servers.port(use_tls), tls_files if use_tls else None
            )
        return runs[use_tls]

    return results


# -- our client --------------------------------------------------------------------------------------------


async def flow_control_lazy_window(channel: trio_grpc.Channel) -> None:
    """Not in the spec: 16,000 then 50,000 bytes up one stream. grpc-go returns receive window once a quarter
    of it (16,384 of 65,535 bytes) is consumed, so our client must send the second message in pieces rather
    than wait for room for all of it."""
    requests = [
        messages_pb2.StreamingInputCallRequest(payload=messages_pb2.Payload(body=bytes(size)))
        for size in (16000, 50000)
    ]
    response = await client._stub(channel).StreamingInputCall(requests)
    client.expect(
        response.aggregated_payload_size == 66000,
        f"expected aggregated_payload_size 66000, got {response.aggregated_payload_size}",
    )


TRIO_CASES: dict[str, client.Case] = {**client.CASES, FLOW_CONTROL_CASE: flow_control_lazy_window}


@pytest.mark.parametrize(("case", "direction"), _matrix())
async def test_go_interop(
    case: str,
    direction: Direction,
    go_client_results: Callable[[bool], dict[str, dict[str, Any]]],
    go_servers: Ports,
    tls: Tls,
) -> None:
    if direction.client == "go":
        result = go_client_results(direction.tls)[case]
        assert result["passed"], result["error"]
        return
    port = go_servers.port(direction.tls)
    with trio.fail_after(CASE_TIMEOUT):
        async with trio_channel(port, direction.tls, tls) as channel:
            await TRIO_CASES[case](channel)
