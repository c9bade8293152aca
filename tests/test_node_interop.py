"""The gRPC interop cases between trio_grpc and grpc-js (on Node's nghttp2), both ways, plaintext and TLS.

The Node programs live in tests/interop_node/ (`npm ci` installs the locked grpc-js there once per lock
file). One test id per case and direction, e.g. `large_unary-trio_to_node_tls`:
- trio_to_node: our interop client (tests/interop/client.py) against the grpc-js server, one case a test;
- node_to_trio: the grpc-js client against trio_grpc's server. It runs every case in one Node process per
  transport (one JSON line a case), so each test only looks up its line.

nghttp2 grants flow-control window only after half of it has been consumed, which is why a sender that
waits for window a peer never promised stalls here and nowhere else; flow_control_lazy_window is the
node_to_trio case beyond the spec that asks for exactly such sizes.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import logging
import re
import select
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import pytest
import trio

from tests.interop import client
from tests.interop.harness import (
    SERVER_HOST_OVERRIDE,
    STARTUP_TIMEOUT,
    Direction,
    Ports,
    Tls,
    trio_channel,
    trio_grpc_errors,
)

NODE_DIR = Path(__file__).parent / "interop_node"
NODE = shutil.which("node")
NPM = shutil.which("npm")
pytestmark = pytest.mark.skipif(
    NODE is None or NPM is None, reason="grpc-js interop needs Node.js and npm (`node`, `npm` on PATH)"
)

CASE_TIMEOUT = 10.0  # seconds, for one trio_to_node case; the slowest takes about one
NODE_CLIENT_TIMEOUT = 120.0  # for all node_to_trio cases of one transport; each ends by its own deadline
NPM_CI_TIMEOUT = 300.0
SPEC_CASE_NAMES = [case.__name__ for case in client.SPEC_CASES]
#: Beyond the spec: responses of 30,000 then 40,000 bytes, which stall a sender that waits for window
#: nghttp2 has not promised (see tests/interop_node/client.js).
NODE_EXTRA_CASES = ["flow_control_lazy_window"]

NO_COMPRESSED_REQUEST_ON_NODE = (
    "a grpc-js server cannot see whether a request arrived compressed, so it cannot refuse the uncompressed "
    "probe; {case}_noprobe runs the rest of the case"
)
NO_COMPRESSED_RESPONSE_ON_NODE = "a grpc-js server never compresses a response (grpc-js lacks the feature)"


def _trio_to_node_matrix() -> list[Any]:
    params = []
    for tls in (False, True):
        direction = Direction("trio", "node", tls)
        for name in SPEC_CASE_NAMES:
            marks = []
            if name.startswith("client_compressed_"):
                marks.append(pytest.mark.skip(reason=NO_COMPRESSED_REQUEST_ON_NODE.format(case=name)))
                params.append(pytest.param(f"{name}_noprobe", tls, id=f"{name}_noprobe-{direction}"))
            if name.startswith("server_compressed_"):
                marks.append(pytest.mark.skip(reason=NO_COMPRESSED_RESPONSE_ON_NODE))
            params.append(pytest.param(name, tls, id=f"{name}-{direction}", marks=marks))
    return params


def _node_to_trio_matrix() -> list[Any]:
    return [
        pytest.param(name, tls, id=f"{name}-{Direction('node', 'trio', tls)}")
        for tls in (False, True)
        for name in [*SPEC_CASE_NAMES, *NODE_EXTRA_CASES]
    ]


# -- Node programs -----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def node_modules() -> None:
    """`npm ci` once per package-lock.json: a stamp in node_modules records the lock it installed."""
    lock = hashlib.sha256((NODE_DIR / "package-lock.json").read_bytes()).hexdigest()
    stamp = NODE_DIR / "node_modules" / ".trio-grpc-lock-sha256"
    if stamp.exists() and stamp.read_text() == lock:
        return
    assert NPM is not None
    command = [NPM, "ci", "--no-audit", "--no-fund", "--ignore-scripts"]
    result = subprocess.run(command, cwd=NODE_DIR, capture_output=True, text=True, timeout=NPM_CI_TIMEOUT)
    if result.returncode != 0:
        pytest.fail(f"`npm ci` in {NODE_DIR} failed ({result.returncode}):\n{result.stderr}")
    stamp.write_text(lock)


@dataclasses.dataclass(frozen=True)
class TlsFiles:
    ca: Path
    cert_chain: Path
    key: Path


@pytest.fixture(scope="module")
def tls_files(tls: Tls, tmp_path_factory: pytest.TempPathFactory) -> TlsFiles:
    directory = tmp_path_factory.mktemp("node-tls")
    files = TlsFiles(directory / "ca.pem", directory / "server.pem", directory / "server.key")
    tls.ca.cert_pem.write_to_path(files.ca)
    files.cert_chain.write_bytes(b"".join(pem.bytes() for pem in tls.cert.cert_chain_pems))
    tls.cert.private_key_pem.write_to_path(files.key)
    return files


def _read_port(process: subprocess.Popen[str], stderr: IO[str]) -> int:
    """The port of the server's `listening on port N` line, waiting at most STARTUP_TIMEOUT."""
    assert process.stdout is not None
    ready, _, _ = select.select([process.stdout], [], [], STARTUP_TIMEOUT)
    line = process.stdout.readline() if ready else ""
    match = re.search(r"listening on port (\d+)", line)
    if match is None:
        process.kill()
        process.wait()
        stderr.seek(0)
        pytest.fail(f"the grpc-js server did not report its port (said {line!r}):\n{stderr.read()}")
    return int(match.group(1))


@pytest.fixture(scope="module")
def node_server(
    node_modules: None, tls_files: TlsFiles, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Ports]:
    """The grpc-js interop server, one process plaintext and one TLS, each on a port of its choosing."""
    assert NODE is not None
    logs = tmp_path_factory.mktemp("node-server")
    common = [NODE, str(NODE_DIR / "server.js"), "--port=0", "--host=127.0.0.1"]
    tls_flags = ["--use_tls=true", f"--tls_cert_file={tls_files.cert_chain}"]
    tls_flags.append(f"--tls_key_file={tls_files.key}")
    ports = []
    with contextlib.ExitStack() as cleanup:
        for name, flags in (("plaintext", []), ("tls", tls_flags)):
            stderr = cleanup.enter_context((logs / f"{name}.stderr").open("w+"))
            process = subprocess.Popen([*common, *flags], stdout=subprocess.PIPE, stderr=stderr, text=True)
            cleanup.callback(_stop, process)
            ports.append(_read_port(process, stderr))
        yield Ports(*ports)


def _stop(process: subprocess.Popen[str]) -> None:
    process.terminate()
    process.wait(STARTUP_TIMEOUT)
    assert process.stdout is not None
    process.stdout.close()


@dataclasses.dataclass(frozen=True)
class NodeRun:
    """What one grpc-js client process reported: a result per case, and what trio_grpc logged meanwhile."""

    results: dict[str, dict[str, Any]]
    output: str  # stderr, and any stdout line that is not a result
    server_errors: list[str]


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def _node_client_command(port: int, use_tls: bool, tls_files: TlsFiles) -> list[str]:
    assert NODE is not None
    cases = ",".join([*SPEC_CASE_NAMES, *NODE_EXTRA_CASES])
    command = [NODE, str(NODE_DIR / "client.js"), "--server_host=127.0.0.1", f"--server_port={port}"]
    command.append(f"--test_case={cases}")
    if use_tls:
        command += ["--use_tls=true", "--use_test_ca=true", f"--ca_file={tls_files.ca}"]
        command.append(f"--server_host_override={SERVER_HOST_OVERRIDE}")
    return command


def _parse_results(stdout: str) -> tuple[dict[str, dict[str, Any]], list[str]]:
    results: dict[str, dict[str, Any]] = {}
    other = []
    for line in stdout.splitlines():
        try:
            result = json.loads(line)
            results[result["case"]] = result
        except (ValueError, KeyError, TypeError):
            other.append(line)
    return results, other


@pytest.fixture(scope="module")
def node_runs(node_modules: None, trio_server: Ports, tls_files: TlsFiles) -> dict[bool, NodeRun]:
    """Every node_to_trio case, plaintext and TLS at once (two processes), against trio_grpc's server."""
    records = _Records()
    logger = logging.getLogger("trio_grpc")
    logger.addHandler(records)
    try:
        processes = {
            use_tls: subprocess.Popen(
                _node_client_command(trio_server.port(use_tls), use_tls, tls_files),
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for use_tls in (False, True)
        }
        deadline = time.monotonic() + NODE_CLIENT_TIMEOUT
        outputs = {}
        for use_tls, process in processes.items():
            try:
                outputs[use_tls] = process.communicate(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                process.kill()
                stdout, stderr = process.communicate()
                outputs[use_tls] = (stdout, f"{stderr}\nkilled after {NODE_CLIENT_TIMEOUT} s")
    finally:
        logger.removeHandler(records)
    runs = {}
    for use_tls, (stdout, stderr) in outputs.items():
        results, other = _parse_results(stdout)
        runs[use_tls] = NodeRun(results, "\n".join([*other, stderr]), trio_grpc_errors(records.records))
    return runs


# -- the matrix --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("case", "use_tls"), _trio_to_node_matrix())
async def test_trio_to_node(
    case: str, use_tls: bool, node_server: Ports, tls: Tls, caplog: pytest.LogCaptureFixture
) -> None:
    with trio.move_on_after(CASE_TIMEOUT) as scope:
        async with trio_channel(node_server.port(use_tls), use_tls, tls) as channel:
            await client.CASES[case](channel)
    if scope.cancelled_caught:
        pytest.fail(
            f"{case} against the grpc-js server did not finish within {CASE_TIMEOUT} s. A stall? nghttp2"
            " grants window only after half of it is consumed: does a sender wait for window never promised?"
        )
    errors = trio_grpc_errors(caplog.records)
    assert not errors, f"trio_grpc logged errors during the case: {errors}"


@pytest.mark.parametrize(("case", "use_tls"), _node_to_trio_matrix())
def test_node_to_trio(case: str, use_tls: bool, node_runs: dict[bool, NodeRun]) -> None:
    run = node_runs[use_tls]
    result = run.results.get(case)
    assert result is not None, f"the grpc-js client reported nothing for {case}:\n{run.output}"
    assert result["passed"], f"{case} failed after {result['seconds']:.2f} s: {result['error']}"


@pytest.mark.parametrize("use_tls", [False, True], ids=lambda tls: str(Direction("node", "trio", tls)))
def test_trio_server_logged_no_errors(use_tls: bool, node_runs: dict[bool, NodeRun]) -> None:
    """A handler's unexpected exception becomes a status a case may not look at; the log shows it."""
    errors = node_runs[use_tls].server_errors
    assert not errors, f"trio_grpc logged errors while the grpc-js client ran: {errors}"
