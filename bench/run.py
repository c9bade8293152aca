"""Load every server of `bench.servers` with h2load, in one run, and print throughput and ratios.

    python -m bench.run                # full run (a few minutes on two cores)
    python -m bench.run --quick        # smoke run, well under 30 s
    python -m bench.run --markdown     # tables as Markdown, for docs/benchmarks.md

Scenarios (each one a fixed gRPC request body POSTed by h2load, the client that is not what we measure):
- unary:  UnaryCall echo of a small payload; requests/s.
- stream: StreamingOutputCall, one request asking for many small responses; messages/s.
- large:  UnaryCall echo of a 1 MiB payload; MiB/s of payload echoed (each way).
- stream100: StreamingOutputCall, 1,000 responses of 100 B per call; messages/s.
- stream64k: StreamingOutputCall, 100 responses of 64 KiB per call, to a client with 1 MiB stream and
  16 MiB connection windows (as grpc clients grow theirs); MiB/s of response payload.

Method: every server runs as its own process pinned to core 0, h2load (one thread) is pinned to core 1, so
each server gets one core's worth and the load generator never competes with it. Before the load, each
server answers each scenario once to a real gRPC client (grpcio), which checks the payload and the status.
h2load counts an HTTP 200 as success even when grpc-status is not 0, so every measured run also checks
that the DATA bytes received are exactly requests x the expected response size: an error answer carries
no DATA. Each server is warmed up, then the rounds go round-robin over the servers (drift hits all alike),
and the median round is reported (--pick best: the fastest).
Besides throughput and h2load's per-request latency, each row shows the server's own CPU time per call
(from /proc, all its threads) and its CPU use during the run: CPU per call is the efficiency figure least
disturbed by other load, and a CPU use well under 100% means the server was waiting or crowded out.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from pathlib import Path

from bench.servers import (
    SERVERS,
    STREAM_PATH,
    UNARY_PATH,
    SimpleRequest,
    SimpleResponse,
    StreamRequest,
    StreamResponse,
    frame,
    installed_servers,
)
from tests.interop._proto.grpc.testing import messages_pb2

REPO = Path(__file__).resolve().parent.parent
LABELS = {
    "trio_grpc": "trio_grpc",
    "grpc_aio": "grpc.aio",
    "grpclib": "grpclib",
    "bare_h2": "bare h2 (ceiling)",
}
MiB = 1 << 20
SCENARIOS = ("unary", "stream", "large", "stream100", "stream64k")
OTHER_LOADS = ("pingpong", "client", "memory")  # not made by h2load: bench.loads, bench.memory


@dataclasses.dataclass(frozen=True)
class Scenario:
    name: str
    title: str
    path: str
    request: bytes  # one framed request message: the body h2load POSTs
    response_size: int  # DATA bytes of one complete, successful response
    messages: int  # response messages per request
    payload: int  # payload bytes echoed per request (for MiB/s)
    requests: int
    clients: int
    streams: int
    unit: str = ""  # req/s unless msg/s (messages x calls) or MiB/s (payload x calls)
    h2load_flags: tuple[str, ...] = ()


@dataclasses.dataclass(frozen=True)
class Result:
    seconds: float
    requests_per_second: float
    mean_ms: float
    p50_ms: float
    p99_ms: float
    cpu_seconds: float = float("nan")  # CPU time of the server process (all its threads) during the run

    @property
    def cpu_share(self) -> float:
        """Fraction of one core the server used; well under 1 means it waited, or was crowded out."""
        return self.cpu_seconds / self.seconds


def scenarios(args: argparse.Namespace) -> list[Scenario]:
    payload = messages_pb2.Payload(body=b"x" * args.size)
    unary = SimpleRequest(payload=payload)
    stream = StreamRequest(
        response_parameters=[messages_pb2.ResponseParameters(size=args.size)] * args.stream_messages
    )
    one_stream_response = frame(
        StreamResponse(payload=messages_pb2.Payload(body=bytes(args.size))).SerializeToString()
    )
    large_payload = messages_pb2.Payload(body=b"x" * MiB)
    large = SimpleRequest(payload=large_payload)
    all_scenarios = [
        Scenario(
            "unary",
            f"Unary echo, {args.size} B payload",
            UNARY_PATH,
            frame(unary.SerializeToString()),
            len(frame(SimpleResponse(payload=payload).SerializeToString())),
            1,
            args.size,
            args.requests,
            args.clients,
            args.streams,
        ),
        Scenario(
            "stream",
            f"Server streaming, {args.stream_messages} x {args.size} B responses per call",
            STREAM_PATH,
            frame(stream.SerializeToString()),
            args.stream_messages * len(one_stream_response),
            args.stream_messages,
            0,
            max(args.requests * 10 // args.stream_messages, args.clients * args.streams),
            args.clients,
            args.streams,
        ),
        Scenario(
            "large",
            "Unary echo, 1 MiB payload",
            UNARY_PATH,
            frame(large.SerializeToString()),
            len(frame(SimpleResponse(payload=large_payload).SerializeToString())),
            1,
            MiB,
            args.large_requests,
            2,
            2,
        ),
    ]
    all_scenarios.append(_streaming("stream100", 1000, 100, args.requests * 10 // 1000, args, ()))
    all_scenarios.append(
        _streaming(
            "stream64k",
            100,
            64 * 1024,
            args.large_requests // 8,
            args,
            ("--window-bits=20", "--connection-window-bits=24"),
        )
    )
    return [scenario for scenario in all_scenarios if scenario.name in args.scenarios]


def _streaming(
    name: str, messages: int, size: int, requests: int, args: argparse.Namespace, flags: tuple[str, ...]
) -> Scenario:
    """StreamingOutputCall: `messages` responses of `size` bytes per call."""
    request = StreamRequest(response_parameters=[messages_pb2.ResponseParameters(size=size)] * messages)
    response = frame(StreamResponse(payload=messages_pb2.Payload(body=bytes(size))).SerializeToString())
    big = size >= 64 * 1024
    clients, streams = (2, 2) if big else (args.clients, args.streams)
    return Scenario(
        name,
        f"Server streaming, {messages:,} x {size:,} B responses per call",
        STREAM_PATH,
        frame(request.SerializeToString()),
        messages * len(response),
        messages,
        messages * size,
        max(requests, clients * streams),
        clients,
        streams,
        unit="MiB/s" if big else "msg/s",
        h2load_flags=flags,
    )


# -- servers ---------------------------------------------------------------------------------------------


@contextmanager
def server_process(name: str, pin: list[str]) -> Iterator[tuple[subprocess.Popen[str], int]]:
    """A `bench.servers` process; yields it with its port; SIGINT (then SIGKILL) on the way out."""
    process = subprocess.Popen(
        [*pin, sys.executable, "-m", "bench.servers", name],
        cwd=REPO,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()  # the server prints READY <port>, or dies
        match = re.fullmatch(r"READY (\d+)\n", line)
        if match is None:
            raise SystemExit(f"error: server {name} did not start (got {line!r})")
        yield process, int(match.group(1))
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def verify(name: str, port: int, scenario: Scenario) -> None:
    """One call with a real gRPC client (grpcio): right payload back, status OK, or exit with an error."""
    import grpc  # type: ignore[import-untyped]

    options = [("grpc.max_receive_message_length", 8 * MiB), ("grpc.max_send_message_length", 8 * MiB)]
    with grpc.insecure_channel(f"127.0.0.1:{port}", options=options) as channel:
        try:
            if scenario.path == UNARY_PATH:
                request = SimpleRequest.FromString(scenario.request[5:])
                call = channel.unary_unary(
                    UNARY_PATH,
                    request_serializer=SimpleRequest.SerializeToString,
                    response_deserializer=SimpleResponse.FromString,
                )
                ok = call(request, timeout=10).payload == request.payload
            else:
                stream_request = StreamRequest.FromString(scenario.request[5:])
                stream_call = channel.unary_stream(
                    STREAM_PATH,
                    request_serializer=StreamRequest.SerializeToString,
                    response_deserializer=StreamResponse.FromString,
                )
                sizes = [len(r.payload.body) for r in stream_call(stream_request, timeout=10)]
                ok = sizes == [p.size for p in stream_request.response_parameters]
        except grpc.RpcError as exc:
            raise SystemExit(
                f"error: {name} failed the {scenario.name} check: {exc.code()} {exc.details()}"
            ) from None
    if not ok:
        raise SystemExit(f"error: {name} answered the {scenario.name} check with the wrong response")


# -- h2load ----------------------------------------------------------------------------------------------


def h2load_command(
    h2load: str, scenario: Scenario, port: int, body: Path, log: Path | None, requests: int
) -> list[str]:
    command = [
        h2load,
        f"--requests={requests}",
        f"--clients={scenario.clients}",
        f"--max-concurrent-streams={scenario.streams}",
        "--threads=1",
        f"--data={body}",
        "--header=content-type: application/grpc",
        "--header=te: trailers",
        *scenario.h2load_flags,
    ]
    if log is not None:
        command.append(f"--log-file={log}")
    return [*command, f"http://127.0.0.1:{port}{scenario.path}"]


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process, all threads (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run_h2load(
    command: list[str], scenario: Scenario, requests: int, log: Path | None, server_pid: int
) -> Result:
    if log is not None:
        log.unlink(missing_ok=True)  # h2load appends to its log file
    cpu_before = cpu_seconds(server_pid)
    completed = subprocess.run(command, capture_output=True, text=True, timeout=900)
    cpu_used = cpu_seconds(server_pid) - cpu_before
    out = completed.stdout
    if completed.returncode != 0:
        raise SystemExit(f"error: h2load failed ({completed.returncode}): {completed.stderr.strip()}")
    finished = re.search(r"finished in ([\d.]+)(m?s), ([\d.]+) req/s", out)
    done = re.search(r"requests: \d+ total, \d+ started, \d+ done, (\d+) succeeded", out)
    status = re.search(r"status codes: (\d+) 2xx", out)
    data = re.search(r"\((\d+)\) data", out)
    if not (finished and done and status and data):
        raise SystemExit(f"error: cannot parse h2load output:\n{out}")
    expected_data = requests * scenario.response_size
    if (
        int(done.group(1)) != requests
        or int(status.group(1)) != requests
        or int(data.group(1)) != expected_data
    ):
        raise SystemExit(
            f"error: not every request succeeded ({done.group(1)} succeeded, {status.group(1)} HTTP 2xx, "
            f"{data.group(1)} DATA bytes for {expected_data} expected):\n{out}"
        )
    seconds = float(finished.group(1)) / (1000 if finished.group(2) == "ms" else 1)
    latencies = (
        sorted(int(line.split("\t")[2]) / 1000 for line in log.read_text().splitlines()) if log else []
    )
    return Result(
        seconds=seconds,
        requests_per_second=float(finished.group(3)),
        mean_ms=statistics.fmean(latencies) if latencies else float("nan"),
        p50_ms=latencies[len(latencies) // 2] if latencies else float("nan"),
        p99_ms=latencies[min(len(latencies) - 1, len(latencies) * 99 // 100)] if latencies else float("nan"),
        cpu_seconds=cpu_used,
    )


def run_scenario(
    args: argparse.Namespace,
    scenario: Scenario,
    ports: dict[str, int],
    processes: dict[str, subprocess.Popen[str]],
    tmp: Path,
    pin_load: list[str],
) -> None:
    """One h2load scenario against every server: warm-up, interleaved rounds, the table."""
    body = tmp / f"{scenario.name}.bin"
    body.write_bytes(scenario.request)
    log = tmp / "h2load.log"
    example = h2load_command("h2load", scenario, 0, Path(f"{scenario.name}.bin"), None, scenario.requests)
    print(f"\n## {scenario.title}\n# {' '.join(example).replace(':0/', ':PORT/')}", flush=True)
    warm_up = max(scenario.requests // 5, scenario.clients * scenario.streams)
    for name in args.servers:
        verify(name, ports[name], scenario)
        command = h2load_command(args.h2load, scenario, ports[name], body, None, warm_up)
        run_h2load(pin_load + command, scenario, warm_up, None, processes[name].pid)
    rounds: dict[str, list[Result]] = {name: [] for name in args.servers}
    for _ in range(args.rounds):
        for name in args.servers:
            command = h2load_command(args.h2load, scenario, ports[name], body, log, scenario.requests)
            rounds[name].append(
                run_h2load(pin_load + command, scenario, scenario.requests, log, processes[name].pid)
            )
            if processes[name].poll() is not None:
                raise SystemExit(f"error: server {name} exited during the load")
    picked = {name: pick(results, args.pick) for name, results in rounds.items()}
    for name, results in rounds.items():
        spread = ", ".join(f"{throughput(scenario, r)[1]:,.0f}" for r in results)
        print(f"#   {LABELS[name]}: rounds {spread}", flush=True)
    print(table(scenario, picked, args.markdown), flush=True)
    if starved := [LABELS[n] for n, r in picked.items() if r.cpu_share < 0.9]:
        print(
            f"# warning: {', '.join(starved)} used under 90% of its core: other load on the "
            "machine, or a server that waits (CPU µs/call is much less disturbed by other load)"
        )


def run_pingpong(
    args: argparse.Namespace,
    ports: dict[str, int],
    processes: dict[str, subprocess.Popen[str]],
    pin_load: list[str],
) -> None:
    """Round trips on one FullDuplexCall (`bench.loads pingpong`), the servers interleaved."""
    rounds = 500 if args.quick else 5000
    print(f"\n## Ping-pong on one FullDuplexCall, 16 B answers, {rounds} round trips", flush=True)
    print(f"# python -m bench.loads pingpong PORT --rounds {rounds}")
    results: dict[str, list[tuple[float, float]]] = {name: [] for name in args.servers}
    for _ in range(args.rounds):
        for name in args.servers:
            line = _load_line([*pin_load, "pingpong", str(ports[name]), "--rounds", str(rounds)])
            p50, p99 = (float(x) for x in line.split()[1:])
            results[name].append((p50, p99))
            if processes[name].poll() is not None:
                raise SystemExit(f"error: server {name} exited during the load")
    picked = {name: sorted(r)[len(r) // 2] for name, r in results.items()}
    for name, r in results.items():
        print(f"#   {LABELS[name]}: p50 rounds " + ", ".join(f"{p50:,.0f}" for p50, _ in r))
    print(_ratio_table(["server", "p50 µs", "p99 µs"], picked, args.servers, args.markdown), flush=True)


def run_client_load(args: argparse.Namespace, pin_server: list[str], pin_load: list[str]) -> None:
    """Each client stack's CPU per unary call against grpcio's sync server (`bench.loads client`)."""
    from bench.loads import CLIENT_STACKS

    stacks = [s for s in CLIENT_STACKS if s in installed_servers()]
    calls = 3000 if args.quick else 20000
    print(
        f"\n## Clients: 64 concurrent unary callers, {calls} calls, against grpcio's sync server", flush=True
    )
    print(f"# python -m bench.loads client STACK PORT --calls {calls}")
    results: dict[str, list[tuple[float, float]]] = {name: [] for name in stacks}
    with server_process("grpc_sync", pin_server) as (_, port):
        for _ in range(args.rounds):
            for name in stacks:
                line = _load_line([*pin_load, "client", name, str(port), "--calls", str(calls)])
                rate, cpu = (float(x) for x in line.split()[1:])
                results[name].append((cpu, rate))
    picked = {name: sorted(r)[len(r) // 2] for name, r in results.items()}
    for name, r in results.items():
        print(f"#   {LABELS[name]}: CPU µs/call rounds " + ", ".join(f"{cpu:,.0f}" for cpu, _ in r))
    print(_ratio_table(["client", "CPU µs/call", "calls/s"], picked, stacks, args.markdown), flush=True)


def _load_line(arguments: list[str]) -> str:
    """Run `bench.loads` (after any taskset prefix in `arguments`) and return its one result line."""
    prefix = arguments[: arguments.index("-c") + 2] if "taskset" in arguments else []
    rest = arguments[len(prefix) :]
    completed = subprocess.run(
        [*prefix, sys.executable, "-m", "bench.loads", *rest],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
    )
    if completed.returncode != 0:
        raise SystemExit(f"error: bench.loads {' '.join(rest)} failed: {completed.stderr.strip()}")
    return completed.stdout.strip().splitlines()[-1]


def _ratio_table(
    header: list[str], picked: dict[str, tuple[float, float]], names: list[str], markdown: bool
) -> str:
    """Rows of (first, second) figures, lower first figure is better, with ratios to the peers."""
    references = [name for name in ("grpc_aio", "grpclib") if name in picked]
    header = [*header, *(f"vs {LABELS[r]}" for r in references)]
    rows = [
        [
            LABELS[name],
            f"{picked[name][0]:,.0f}",
            f"{picked[name][1]:,.0f}",
            *(f"{picked[name][0] / picked[r][0]:.2f}x" for r in references),
        ]
        for name in names
    ]
    return format_table(header, rows, markdown)


def pick(results: list[Result], how: str) -> Result:
    """The median round, or the best one (other load on the machine only ever makes a round slower)."""
    ordered = sorted(results, key=lambda r: r.requests_per_second)
    return ordered[-1] if how == "best" else ordered[len(ordered) // 2]


def load_average() -> str:
    return "load average " + " ".join(Path("/proc/loadavg").read_text().split()[:3])


# -- report ----------------------------------------------------------------------------------------------


def throughput(scenario: Scenario, result: Result) -> tuple[str, float]:
    if scenario.name == "large" or scenario.unit == "MiB/s":
        return "MiB/s", result.requests_per_second * scenario.payload / MiB
    if scenario.messages > 1:
        return "msg/s", result.requests_per_second * scenario.messages
    return "req/s", result.requests_per_second


def table(scenario: Scenario, results: dict[str, Result], markdown: bool) -> str:
    unit = throughput(scenario, next(iter(results.values())))[0]
    references = [name for name in ("grpc_aio", "grpclib", "bare_h2") if name in results]
    header = ["server", unit, "mean ms", "p50 ms", "p99 ms", "CPU µs/call", "CPU use"]
    header += [f"vs {LABELS[r]}" for r in references]
    rows = []
    for name, result in results.items():
        value = throughput(scenario, result)[1]
        row = [LABELS[name], f"{value:,.0f}" if value >= 100 else f"{value:,.1f}"]
        row += [f"{result.mean_ms:.2f}", f"{result.p50_ms:.2f}", f"{result.p99_ms:.2f}"]
        cpu_per_call = result.cpu_seconds * 1e6 / (result.requests_per_second * result.seconds)
        row += [f"{cpu_per_call:,.0f}", f"{result.cpu_share:.0%}"]
        row += [f"{value / throughput(scenario, results[r])[1]:.2f}x" for r in references]
        rows.append(row)
    return format_table(header, rows, markdown)


def format_table(header: list[str], rows: list[list[str]], markdown: bool) -> str:
    if markdown:
        lines = [
            "| " + " | ".join(header) + " |",
            "|" + "|".join(["---"] + ["--:"] * (len(header) - 1)) + "|",
        ]
        lines += ["| " + " | ".join(row) + " |" for row in rows]
        return "\n".join(lines)
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    lines = [
        "  ".join(
            cell.ljust(w) if i == 0 else cell.rjust(w)
            for i, (cell, w) in enumerate(zip(r, widths, strict=True))
        )
        for r in [header, *rows]
    ]
    return "\n".join(lines)


# -- main ------------------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.run",
        description="Run the same h2load load against trio_grpc, grpc.aio, grpclib and a bare Trio+h2 "
        "server, and print throughput, latency and ratios.",
    )
    parser.add_argument("--quick", action="store_true", help="smoke run: few requests, one round (< 30 s)")
    parser.add_argument(
        "--requests",
        type=int,
        help="unary requests per round (default 20000, quick 3000); "
        "the stream scenario makes 10x fewer calls",
    )
    parser.add_argument("--clients", type=int, default=10, help="h2load connections (default 10)")
    parser.add_argument(
        "--streams", type=int, default=10, help="concurrent streams per connection (default 10)"
    )
    parser.add_argument(
        "--rounds", type=int, help="measured rounds per server, median reported (default 3, quick 1)"
    )
    parser.add_argument("--large-requests", type=int, help="1 MiB echoes per round (default 300, quick 30)")
    parser.add_argument(
        "--size", type=int, default=16, help="payload bytes of the small messages (default 16)"
    )
    parser.add_argument("--stream-messages", type=int, default=100, help="responses per streaming call (100)")
    parser.add_argument(
        "--servers",
        default=",".join(installed_servers()),
        help=f"comma-separated subset of {SERVERS} (default: those installed)",
    )
    parser.add_argument(
        "--scenarios",
        default=",".join(SCENARIOS + OTHER_LOADS),
        help=f"comma-separated subset of {','.join(SCENARIOS + OTHER_LOADS)} (default: all)",
    )
    parser.add_argument(
        "--no-pin", action="store_true", help="do not pin server and h2load to separate cores"
    )
    parser.add_argument(
        "--h2load", default=shutil.which("h2load"), help="h2load binary (package nghttp2-client)"
    )
    parser.add_argument("--markdown", action="store_true", help="print the tables as Markdown")
    parser.add_argument(
        "--pick", choices=("median", "best"), default="median", help="which round to report (default median)"
    )
    args = parser.parse_args(argv)
    args.requests = args.requests or (3000 if args.quick else 20000)
    args.rounds = args.rounds or (1 if args.quick else 3)
    args.large_requests = args.large_requests or (30 if args.quick else 300)
    args.servers = [s for s in args.servers.split(",") if s]
    args.scenarios = [s for s in args.scenarios.split(",") if s]
    if unknown := set(args.servers) - set(SERVERS):
        parser.error(f"unknown servers: {sorted(unknown)}")
    if unknown := set(args.scenarios) - set(SCENARIOS + OTHER_LOADS):
        parser.error(f"unknown scenarios: {sorted(unknown)}")
    if args.h2load is None:
        parser.error("h2load not found: apt-get install nghttp2-client, or pass --h2load")
    return args


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    pin_server: list[str] = []
    pin_load: list[str] = []
    if not args.no_pin and (os.cpu_count() or 1) >= 2 and shutil.which("taskset"):
        pin_server, pin_load = ["taskset", "-c", "0"], ["taskset", "-c", "1"]
    chosen = scenarios(args)
    started = time.monotonic()
    print(
        f"# {len(args.servers)} servers, scenarios {args.scenarios}, {args.rounds} round(s); "
        f"servers {'on core 0, h2load on core 1' if pin_server else 'not pinned'}; {args.pick} round shown",
        flush=True,
    )
    print(f"# {load_average()} (anything else running skews the figures; CPU µs/call much less)")
    with ExitStack() as stack, tempfile.TemporaryDirectory(prefix="trio-grpc-bench-") as tmp:
        ports: dict[str, int] = {}
        processes: dict[str, subprocess.Popen[str]] = {}
        for name in args.servers:
            processes[name], ports[name] = stack.enter_context(server_process(name, pin_server))
        for scenario in chosen:
            run_scenario(args, scenario, ports, processes, Path(tmp), pin_load)
        if "pingpong" in args.scenarios:
            run_pingpong(args, ports, processes, pin_load)
    if "client" in args.scenarios:
        run_client_load(args, pin_server, pin_load)
    if "memory" in args.scenarios:
        from bench.memory import memory_table

        print("\n## Memory (VmRSS)", flush=True)
        print(memory_table(args.servers, pin_server, args.markdown), flush=True)
    print(f"\n# done in {time.monotonic() - started:.0f} s; {load_average()}")


if __name__ == "__main__":
    main()
