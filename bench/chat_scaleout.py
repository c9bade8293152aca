"""Scale-out: deliveries/s for rooms of 100 members spread over 1, 2 and 4 chatserver processes.

Each run starts its own redis-server (free port, no persistence) and `chatserver --workers N --backend
redis://...`; the compiled load generator of bench/chat_load (see bench/chat_fanout.py) connects its
members over many connections, which SO_REUSEPORT spreads over the workers. The CPU time of the workers
and of Redis, from /proc, is printed beside the rate: on a machine with fewer cores than processes the
rate cannot grow, the CPU per delivery shows what each process costs.

    python -m bench.chat_scaleout [--members 100] [--messages 500] [--workers 1 2 4] [--rooms 1 4]

With several rooms, one generator per room runs at once (each creates its own room, with its own members
and sender); the rate is all their deliveries over the longest delivery phase, p50/p99 the worst room's.
For each room count, the first row is the memory backend (one process, no Redis), for comparison.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

from bench.chat_fanout import load_generator, wait_for_line

TICKS = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def cpu_seconds(pid: int) -> float:
    """User + system time of a live process."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def server_pids(pid: int) -> list[int]:
    """The processes that serve: the workers of a --workers parent, or the server itself."""
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    return [int(child) for child in children] or [pid]


def run(
    generator: Path, workers: int, members: int, messages: int, *, rooms: int = 1, shared: bool = True
) -> dict[str, Any]:
    """One measurement; `shared=False`: the memory backend (one process), for the baseline row."""
    redis_port = free_port()
    redis = subprocess.Popen(
        [
            "redis-server",
            "--port",
            str(redis_port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ],
        stdout=subprocess.PIPE,
    )
    wait_for_line(redis.stdout, rb"Ready to accept connections", "redis-server")
    command = [
        sys.executable,
        "-m",
        "cli.chatserver",
        "--host",
        "127.0.0.1",
        "--port",
        "0",
        "--no-access-log",
    ]
    if shared:
        command += ["--backend", f"redis://127.0.0.1:{redis_port}/0", "--workers", str(workers)]
    server = subprocess.Popen(command, stderr=subprocess.PIPE)
    try:
        port = int(wait_for_line(server.stderr, rb"listening on 127\.0\.0\.1:(\d+)", "chatserver").group(1))
        pids = server_pids(server.pid)
        before = sum(map(cpu_seconds, pids)), cpu_seconds(redis.pid)
        # 5 members per connection: 20 connections for 100 members, for the kernel to spread.
        load = [str(generator), f"-target=127.0.0.1:{port}", f"-members={members}", "-per-conn=5"]
        load += [f"-messages={messages}", "-join-batch=10"]
        generators = [subprocess.Popen(load, stdout=subprocess.PIPE, text=True) for _ in range(rooms)]
        outputs = [generator.communicate(timeout=300)[0] for generator in generators]
        result = _combined([json.loads(output.strip().splitlines()[-1]) for output in outputs])
        servers_cpu = sum(map(cpu_seconds, pids)) - before[0]
        result["servers_cpu_us_per_delivery"] = 1e6 * servers_cpu / max(result["deliveries"], 1)
        result["redis_cpu_s"] = cpu_seconds(redis.pid) - before[1]
        result["processes"] = len(pids)
        return result
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(30)
        redis.terminate()
        redis.wait(30)


def _combined(rooms: list[dict[str, Any]]) -> dict[str, Any]:
    """One result for rooms loaded at once: their deliveries over the longest delivery phase."""
    deliveries = sum(room["deliveries"] for room in rooms)
    seconds = max(room["delivery_s"] for room in rooms)
    return {
        "deliveries": deliveries,
        "deliveries_per_s": deliveries / seconds if seconds else 0.0,
        "complete": all(room["complete"] for room in rooms),
        "expected_deliveries": sum(room["expected_deliveries"] for room in rooms),
        "p50_ms": max(room["p50_ms"] for room in rooms),
        "p99_ms": max(room["p99_ms"] for room in rooms),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--members", type=int, default=100)
    parser.add_argument("--messages", type=int, default=500, help="messages the one sender posts")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--rooms", type=int, nargs="+", default=[1, 4], help="rooms loaded at once")
    args = parser.parse_args()
    generator = load_generator()
    print(f"per room: {args.members} members, 1 sender x {args.messages} messages; {os.cpu_count()} cores")
    print(
        f"{'rooms':>5} {'backend':>7} {'processes':>9} {'deliveries/s':>13} {'p50 ms':>8} {'p99 ms':>8} "
        f"{'µs CPU/delivery':>16} {'Redis CPU s':>12}"
    )
    rows = [("memory", 1, False)] + [("redis", workers, True) for workers in args.workers]
    for rooms in args.rooms:
        for backend, workers, shared in rows:
            r = run(generator, workers, args.members, args.messages, rooms=rooms, shared=shared)
            complete = "" if r["complete"] else f"  incomplete: {r['deliveries']}/{r['expected_deliveries']}"
            print(
                f"{rooms:>5} {backend:>7} {r['processes']:>9} {r['deliveries_per_s']:>13,.0f} "
                f"{r['p50_ms']:>8.1f} {r['p99_ms']:>8.1f} "
                f"{r['servers_cpu_us_per_delivery']:>16.2f} {r['redis_cpu_s']:>12.2f}{complete}",
                flush=True,
            )


if __name__ == "__main__":
    main()
