"""Connection floods against chatserver: are new clients still served?

    python -m bench.connection_flood                      # 5,000 held idle, then a 2,000-connection flood
    python -m bench.connection_flood --held 1000 --nofile 256     # out of file descriptors before the cap

chatserver runs in its own process with its default settings (max_connections 1024). Then:
- held:  --held connections, opened --concurrency at a time, each makes one Health.Check and then stays
         open and idle, never reading again (as issue 10's attacker did); how many were served, and how
         long they waited;
- probe: a fresh grpcio client makes a Health.Check (5 s deadline), --probes times in a row;
- flood: --flood more such connections at once while a grpcio client probes every 0.1 s.
Printed: served counts, wait percentiles, probe failures and latencies, server VmRSS.
--nofile caps the server's open files (soft and hard), to exercise eviction when descriptors run out.
"""

from __future__ import annotations

import argparse
import os
import resource
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import grpc  # type: ignore[import-untyped]
import h2.config
import h2.connection
import trio
from grpc_health.v1 import health_pb2, health_pb2_grpc  # type: ignore[import-untyped]

from bench.memory import memory

_HEALTH_CHECK = "/grpc.health.v1.Health/Check"
_WAIT_LIMIT = 30.0  # seconds a held connection waits for its answer before it counts as not served


def health_check_bytes() -> bytes:
    """What a client writes to open a connection and make one Health.Check: the same for every connection."""
    client = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True, header_encoding=None))
    client.initiate_connection()
    headers = [
        (b":method", b"POST"),
        (b":scheme", b"http"),
        (b":path", _HEALTH_CHECK.encode()),
        (b":authority", b"localhost"),
        (b"te", b"trailers"),
        (b"content-type", b"application/grpc"),
    ]
    client.send_headers(1, headers)
    body = health_pb2.HealthCheckRequest().SerializeToString()
    client.send_data(1, b"\x00" + len(body).to_bytes(4, "big") + body, end_stream=True)
    return client.data_to_send()


def ends_stream_one(data: bytes) -> bool:
    """Whether `data` (a prefix of what the server sent) holds a frame that ends stream 1 (the trailers)."""
    offset = 0
    while offset + 9 <= len(data):
        length = int.from_bytes(data[offset : offset + 3], "big")
        kind, flags = data[offset + 3], data[offset + 4]
        stream_id = int.from_bytes(data[offset + 5 : offset + 9], "big") & 0x7FFFFFFF
        if stream_id == 1 and kind in (0, 1) and flags & 1:
            return True
        offset += 9 + length
    return False


class Holder:
    """Connections that each made one call and then sit idle, never reading again."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.request = health_check_bytes()
        self.waits: list[float] = []
        self.failed = 0
        self.sockets: list[trio.SocketStream] = []

    async def open(self, count: int, concurrency: int) -> None:
        opening = trio.Semaphore(concurrency)
        async with trio.open_nursery() as nursery:
            for _ in range(count):
                await opening.acquire()
                nursery.start_soon(self._one, opening)

    async def _one(self, opening: trio.Semaphore) -> None:
        start = time.perf_counter()
        try:
            with trio.fail_after(_WAIT_LIMIT):
                stream = await trio.open_tcp_stream("127.0.0.1", self.port)
                self.sockets.append(stream)
                await stream.send_all(self.request)
                received = b""
                while not ends_stream_one(received):
                    chunk = await stream.receive_some(65536)
                    if not chunk:
                        raise ConnectionError("closed before the answer")
                    received += chunk
            self.waits.append(time.perf_counter() - start)
        except (OSError, ConnectionError, trio.BrokenResourceError, trio.TooSlowError):
            self.failed += 1
        finally:
            opening.release()

    async def close(self) -> None:
        for stream in self.sockets:
            await trio.aclose_forcefully(stream)


def probe(target: str) -> float | None:
    """Seconds for a Health.Check on a new grpcio channel; None if it failed."""
    start = time.perf_counter()
    with grpc.insecure_channel(target) as channel:
        try:
            health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
        except grpc.RpcError:
            return None
    return time.perf_counter() - start


def probing(target: str, stop: threading.Event, results: list[float | None]) -> None:
    while not stop.is_set():
        results.append(probe(target))
        stop.wait(0.1)


def percentiles(values: list[float]) -> str:
    if not values:
        return "-"
    ordered = sorted(values)
    pick = lambda q: ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000  # noqa: E731
    return f"p50 {pick(0.5):.1f} ms, p99 {pick(0.99):.1f} ms, max {ordered[-1] * 1000:.1f} ms"


def report_probes(label: str, results: list[float | None]) -> None:
    ok = [result for result in results if result is not None]
    print(f"{label}: {len(results) - len(ok)} of {len(results)} failed; {percentiles(ok)}")


def start_server(port: int, nofile: int | None) -> subprocess.Popen[bytes]:
    limit: Callable[[], None] | None = None
    if nofile is not None:
        limit = lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, nofile))  # noqa: E731
    command = [sys.executable, "-m", "cli.chatserver", "--host", "127.0.0.1", "--port", str(port)]
    server = subprocess.Popen([*command, "--log-level", "ERROR"], preexec_fn=limit)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return server
        except OSError:
            time.sleep(0.1)
    server.kill()
    raise RuntimeError("chatserver did not start")


def cpu_seconds(pid: int) -> float:
    """User and system CPU time a process has used."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def cpu_report(pid: int, since: tuple[float, float, float]) -> str:
    """CPU the server and this generator used since `since` (from `cpu_mark`), beside the wall time."""
    wall, server, ours = since
    return (
        f"{time.perf_counter() - wall:.1f} s wall, server CPU {cpu_seconds(pid) - server:.1f} s, "
        f"generator CPU {time.process_time() - ours:.1f} s"
    )


def cpu_mark(pid: int) -> tuple[float, float, float]:
    return time.perf_counter(), cpu_seconds(pid), time.process_time()


def open_fds(pid: int) -> int:
    return len(list(Path(f"/proc/{pid}/fd").iterdir()))


async def run(args: argparse.Namespace) -> None:
    port = args.port
    server = start_server(port, args.nofile)
    target = f"127.0.0.1:{port}"
    try:
        print(f"chatserver pid {server.pid}, port {port}, RSS {memory(server.pid)[0]:.0f} MiB")
        held = Holder(port)
        mark = cpu_mark(server.pid)
        await held.open(args.held, args.concurrency)
        print(
            f"held: {len(held.waits)} of {args.held} served, {held.failed} not "
            f"({cpu_report(server.pid, mark)}); waits {percentiles(held.waits)}; server RSS "
            f"{memory(server.pid)[0]:.0f} MiB, {open_fds(server.pid)} fds"
        )
        results = [await trio.to_thread.run_sync(probe, target) for _ in range(args.probes)]
        report_probes(f"probes with {args.held} held", results)

        stop, flood_results = threading.Event(), []
        prober = threading.Thread(target=probing, args=(target, stop, flood_results))
        prober.start()
        flood = Holder(port)
        mark = cpu_mark(server.pid)
        await flood.open(args.flood, args.flood)
        flood_cpu = cpu_report(server.pid, mark)
        stop.set()
        await trio.to_thread.run_sync(prober.join)
        print(
            f"flood: {len(flood.waits)} of {args.flood} served, {flood.failed} not ({flood_cpu}); "
            f"waits {percentiles(flood.waits)}"
        )
        report_probes("probes during the flood", flood_results)
        print(f"server RSS {memory(server.pid)[0]:.0f} MiB, peak {memory(server.pid)[1]:.0f} MiB")
        await held.close()
        await flood.close()
    finally:
        server.terminate()
        server.wait(10)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--held", type=int, default=5000)
    parser.add_argument("--flood", type=int, default=2000)
    parser.add_argument("--probes", type=int, default=20)
    parser.add_argument("--concurrency", type=int, default=200, help="held connections opening at once")
    parser.add_argument("--port", type=int, default=21500)
    parser.add_argument("--nofile", type=int, help="the server's limit on open files (soft and hard)")
    sys.stdout.reconfigure(line_buffering=True)  # type: ignore[union-attr]
    trio.run(run, parser.parse_args())


if __name__ == "__main__":
    main()
