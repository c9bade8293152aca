"""Room fan-out through a real `chatserver`, two ways.

    python -m bench.chat_fanout [slow-reader] [--members 50] [--messages 5000] [--buffer 256]
    python -m bench.chat_fanout load [--go-seed BINARY] [--only SCENARIO ...]

`slow-reader` (the default): N trio_grpc members, one poster, M messages, one member that never reads. Prints
how long the N members took to receive all M messages (N x M deliveries), what became of the member that never
reads (cut off with RESOURCE_EXHAUSTED once its server-side buffer and its stream window are full), whether
the others saw its leave notice, and the server's RSS before and after.

`load`: the scenarios of issue 13, driven by the compiled load generator in bench/chat_load/ (grpc-go, so that
the client side is not what limits the figures), against `chatserver` and, with `--go-seed`, the seed's Go
chatserver (built outside this repository; it listens on :8080 only). The server is pinned to core 0 and the
generator to core 1; a fresh server runs each scenario. Prints a table of join time, deliveries/s, p50/p99
delivery latency, the server's CPU per delivery and the generator's own CPU, ours beside the seed's.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import trio

import trio_grpc
from chat._proto.rpc import chat_pb2

SERVICE = chat_pb2.DESCRIPTOR.services_by_name["ChatService"]
POSTER = "poster"


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


async def start_chatserver(buffer: int) -> tuple[trio.Process, int]:
    command = [sys.executable, "-m", "cli.chatserver", "--host", "127.0.0.1", "--port", "0"]
    command += ["--buffer", str(buffer)]
    process = await trio.lowlevel.open_process(command, stderr=subprocess.PIPE)
    assert process.stderr is not None
    seen = b""
    while (match := re.search(rb"listening on 127\.0\.0\.1:(\d+)", seen)) is None:
        chunk = await process.stderr.receive_some()
        if not chunk:
            raise RuntimeError(f"chatserver did not start: {seen.decode(errors='replace')}")
        seen += chunk
    return process, int(match.group(1))


def join(room: str, name: str) -> chat_pb2.ChatMessage:
    return chat_pb2.ChatMessage(join=chat_pb2.JoinChat(room_id=room, name=name))


async def drain(stream: trio.abc.ReceiveStream) -> None:
    """Read the server's log so that it never blocks writing it."""
    while await stream.receive_some():
        pass


async def main(members: int, messages: int, buffer: int) -> None:
    with trio.fail_after(120):
        process, port = await start_chatserver(buffer)
        assert process.stderr is not None
        async with trio.open_nursery() as nursery:
            nursery.start_soon(drain, process.stderr)
            try:
                await run(port, process.pid, members, messages, buffer)
            finally:
                process.terminate()
                await process.wait()


async def run(port: int, pid: int, members: int, messages: int, buffer: int) -> None:
    target = f"127.0.0.1:{port}"
    # The member that never reads takes little in before its window closes (16 KiB, and no read buffer to
    # speak of), so that it falls behind within this run.
    slow_settings = trio_grpc.ChannelSettings(stream_window_size=16 * 1024, stream_read_buffer_size=1)
    async with (
        trio_grpc.Channel(target) as channel,
        trio_grpc.Channel(target, settings=slow_settings) as slow,
    ):
        stub, slow_stub = trio_grpc.Stub(channel, SERVICE), trio_grpc.Stub(slow, SERVICE)
        room = (await stub.CreateChatRoom(chat_pb2.CreateChatRoomRequest())).room_id
        rss_before = rss_mib(pid)
        joined, done = trio.Semaphore(0), trio.Semaphore(0)
        left_seen: list[bool] = []
        finished: list[float] = []

        async def member(index: int) -> None:
            name = f"member-{index}"
            async with stub.Chat() as call:
                await call.send(join(room, name))
                async for message in call:
                    if message.name == name:  # the replay ends with our own join notice
                        break
                joined.release()
                received, saw_leave = 0, False
                async for message in call:
                    if message.name == POSTER:
                        received += 1
                    elif message.name == "slow" and message.message == "Has left the chat":
                        saw_leave = True
                    if received == messages and saw_leave:
                        break
                finished.append(trio.current_time())
                left_seen.append(saw_leave)
                done.release()

        slow_outcome: list[str] = []

        async def slow_member() -> None:
            async with slow_stub.Chat() as call:
                await call.send(join(room, "slow"))
                joined.release()
                await done.acquire()  # read nothing until every other member is through
                done.release()
                count = 0
                try:
                    async for message in call:
                        count += 1 if message.name == POSTER else 0
                except trio_grpc.RpcError as error:
                    slow_outcome.append(f"{error.code.name} after {count} of the messages: {error.message}")
                else:
                    slow_outcome.append(f"ended OK after {count} messages")

        async with trio.open_nursery() as nursery:
            for index in range(members):
                nursery.start_soon(member, index)
            nursery.start_soon(slow_member)
            for _ in range(members + 1):
                await joined.acquire()
            started = trio.current_time()
            requests = (
                chat_pb2.PostRequest(room_id=room, message=chat_pb2.Message(name=POSTER, message=f"m{i}"))
                for i in range(messages)
            )
            summary = await stub.Post(requests)
        elapsed = max(finished) - started
        deliveries = members * messages
        print(f"members {members}, messages {messages}, buffer {buffer}: posted {summary.accepted}")
        print(f"  all {deliveries:,} deliveries in {elapsed:.2f} s: {deliveries / elapsed:,.0f} deliveries/s")
        everyone_saw_it = len(left_seen) == members and all(left_seen)
        print(f"  every member saw the slow member's leave notice: {everyone_saw_it}")
        print(f"  member that never read: {slow_outcome[0]}")
        print(f"  chatserver RSS: {rss_before:.1f} MiB before, {rss_mib(pid):.1f} MiB after")


# -- load: the compiled generator against ours and the seed's Go server --------------------------------------

GO_DIR = Path(__file__).parent / "chat_load"
CACHE = GO_DIR / ".cache"  # gitignored: the generator's binary and the Go build cache
BUILD_TIMEOUT = 300.0  # seconds; a first build compiles grpc-go: 20 to 50 s on a busy 2-core machine
SEED_PORT = 8080  # the seed's Go chatserver listens there and nowhere else
START_TIMEOUT = 30.0  # seconds for a server to start listening
STOP_TIMEOUT = 10.0


@dataclasses.dataclass(frozen=True)
class Scenario:
    name: str  # for --only
    label: str
    members: int
    messages: int
    join_batch: int = 1  # members joining at once; 1: one after another
    rate: float = 0  # messages/s offered; 0: as fast as possible
    bound: float = 60  # seconds, for the joins and again for the deliveries

    def arguments(self) -> list[str]:
        return [
            f"-members={self.members}",
            f"-messages={self.messages}",
            f"-join-batch={self.join_batch}",
            f"-rate={self.rate}",
            f"-timeout={self.bound}s",
            f"-join-timeout={self.bound}s",
        ]


SCENARIOS = [
    Scenario("fast-100", "100 members x 2,000 messages, as fast as possible", 100, 2000),
    Scenario("fast-10", "10 members x 5,000 messages", 10, 5000),
    # 999 members and the sender make a room of 1,000.
    Scenario("sequential-999", "999 members, sequential joins, then 200 messages", 999, 200),
    # 990 and the sender: within the default 1,000 members per room.
    Scenario("batch-990", "990 members joining 100 at a time, then 200 messages", 990, 200, join_batch=100),
    Scenario("rate-100", "100 members, 1,000 messages/s offered (3,000 messages)", 100, 3000, rate=1000),
]


def go_env() -> dict[str, str]:
    return {
        **os.environ,
        "GO111MODULE": "off",
        "GOPATH": f"{GO_DIR}:/usr/share/gocode",
        "GOCACHE": str(CACHE / "go-build"),
        "GOFLAGS": "",
    }


def load_generator() -> Path:
    """The generator's binary, built once per digest of its sources and the Go toolchain."""
    go = shutil.which("go")
    if go is None:
        raise SystemExit("`go` is not installed: the load generator is a Go program")
    digest = hashlib.sha256(subprocess.run([go, "version"], capture_output=True, check=True).stdout)
    for source in sorted((GO_DIR / "src").rglob("*.go")):
        digest.update(str(source.relative_to(GO_DIR)).encode() + b"\0" + source.read_bytes() + b"\0")
    binary = CACHE / "bin" / f"chatload-{digest.hexdigest()[:16]}"
    if binary.exists():
        return binary
    binary.parent.mkdir(parents=True, exist_ok=True)
    for stale in binary.parent.glob("chatload-*"):
        stale.unlink()
    partial = binary.with_suffix(".partial")  # renamed once complete: an interrupted build leaves no binary
    build = [go, "build", "-o", str(partial), "chatload"]
    done = subprocess.run(build, capture_output=True, text=True, env=go_env(), timeout=BUILD_TIMEOUT)
    if done.returncode != 0:
        raise SystemExit(f"go build failed:\n{done.stderr}")
    partial.rename(binary)
    return binary


def pinned(core: int) -> list[str]:
    """A taskset prefix for one core, or none where there is no second core to keep the other side on."""
    if (os.cpu_count() or 1) >= 2 and shutil.which("taskset"):
        return ["taskset", "-c", str(core)]
    return []


def wait_for_line(stream: Any, pattern: bytes, what: str) -> re.Match[bytes]:
    """Read `stream` up to a line matching `pattern`, then drain it on so that the server never blocks."""
    seen = b""
    timer = threading.Timer(START_TIMEOUT, stream.close)  # unblocks the read below if the server hangs
    timer.start()
    try:
        for line in stream:
            seen += line
            if (match := re.search(pattern, line)) is not None:
                threading.Thread(target=lambda: all(stream), daemon=True).start()
                return match
    except ValueError:  # the timer closed the stream
        pass
    finally:
        timer.cancel()
    raise RuntimeError(f"{what} did not start: {seen.decode(errors='replace')}")


@contextmanager
def server(seed: Path | None) -> Iterator[tuple[int, int]]:
    """A fresh server on core 0 for one scenario: ours, or the seed's when given; yields (pid, port)."""
    if seed is None:
        command = [sys.executable, "-m", "cli.chatserver", "--host", "127.0.0.1", "--port", "0"]
        process = subprocess.Popen(pinned(0) + command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        stream, pattern = process.stderr, rb"listening on 127\.0\.0\.1:(\d+)"
    else:
        # Its per-join log lines go to /dev/null: the cost of writing them stays, that of reading them goes.
        process = subprocess.Popen([*pinned(0), str(seed)], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        stream, pattern = process.stdout, rb"Listening on (8080)"
    try:
        match = wait_for_line(stream, pattern, "chatserver" if seed is None else "the seed's chatserver")
        yield process.pid, int(match.group(1))
    finally:
        process.terminate()
        try:
            process.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def port_in_use(port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) == 0


def measure(generator: Path, scenario: Scenario, seed: Path | None) -> dict[str, Any]:
    """One scenario against one server: the generator's JSON line, or {"error": ...}."""
    with server(seed) as (pid, port):
        command = [*pinned(1), str(generator), f"-target=127.0.0.1:{port}", f"-server-pid={pid}"]
        try:
            done = subprocess.run(
                command + scenario.arguments(),
                capture_output=True,
                text=True,
                timeout=2 * scenario.bound + 30,
            )
        except subprocess.TimeoutExpired:
            return {"error": "the generator overran its bound"}
    if done.returncode != 0 or not done.stdout.strip():
        return {"error": done.stderr.strip().splitlines()[-1] if done.stderr.strip() else "no result"}
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


# (row label, key in the generator's result, format) for each figure of the table
FIGURES: list[tuple[str, str, str]] = [
    ("join time", "join_s", "{:.2f} s"),
    ("deliveries/s", "deliveries_per_s", "{:,.0f}"),
    ("p50 delivery latency", "p50_ms", "{:.1f} ms"),
    ("p99 delivery latency", "p99_ms", "{:.1f} ms"),
    ("server CPU per delivery", "server_cpu_us_per_delivery", "{:.2f} µs"),
    ("generator CPU (joins + deliveries)", "generator_cpu", "{:.2f} s"),
]


def cell(result: dict[str, Any] | None, key: str, form: str) -> str:
    if result is None:
        return "-"
    if "error" in result:
        return f"error: {result['error']}"
    if key == "join_s" and not result["join_complete"]:
        return f"{result['joined']:,} of {result['members']:,} joined in {result['join_s']:.0f} s"
    if key == "generator_cpu":
        cpu = result["generator_cpu_join_s"] + result["generator_cpu_s"]
        return f"{cpu:.2f} s ({cpu / max(result['join_s'] + result['delivery_s'], 1e-9):.0%} of a core)"
    if key != "join_s" and not result["join_complete"]:
        return "-"
    text = form.format(result[key])
    if key == "deliveries_per_s" and not result["complete"]:
        got, expected = result["deliveries"], result["expected_deliveries"]
        text += f" ({got:,} of {expected:,} in {result['delivery_s']:.0f} s)"
    return text


def ratio(ours: dict[str, Any], seed: dict[str, Any] | None, key: str) -> str:
    if (
        seed is None
        or key == "generator_cpu"
        or not (ours.get("join_complete") and seed.get("join_complete"))
    ):
        return ""
    try:
        return f"{ours[key] / seed[key]:.2f}"
    except (KeyError, ZeroDivisionError):
        return ""


def notes(result: dict[str, Any]) -> str:
    if result.get("cut_off"):
        return f"{result['cut_off']} streams ended early, the first: {result.get('first_error', '?')}"
    return ""


def print_table(rows: list[tuple[Scenario, dict[str, Any], dict[str, Any] | None]]) -> None:
    print("| scenario | figure | ours | seed Go | ratio (ours / seed) |")
    print("|---|---|---|---|---|")
    for scenario, ours, seed in rows:
        for index, (label, key, form) in enumerate(FIGURES):
            name = scenario.label if index == 0 else ""
            figures = [cell(ours, key, form), cell(seed, key, form), ratio(ours, seed, key)]
            print(f"| {name} | {label} | {' | '.join(figures)} |")
    for scenario, ours, seed in rows:
        for side, result in (("ours", ours), ("seed Go", seed)):
            if result is not None and (note := notes(result)):
                print(f"- {scenario.label}, {side}: {note}")


def load(seed: Path | None, only: list[str]) -> None:
    if seed is not None and port_in_use(SEED_PORT):
        raise SystemExit(f"something already listens on :{SEED_PORT}, where the seed's server must")
    generator = load_generator()
    rows = []
    for scenario in SCENARIOS:
        if only and scenario.name not in only:
            continue
        ours = measure(generator, scenario, None)
        theirs = measure(generator, scenario, seed) if seed is not None else None
        print(f"{scenario.name}: ours {json.dumps(ours)}", file=sys.stderr)
        print(f"{scenario.name}: seed {json.dumps(theirs)}", file=sys.stderr)
        rows.append((scenario, ours, theirs))
    print_table(rows)


def cli() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command")
    slow = commands.add_parser("slow-reader", help="trio_grpc members and one that never reads (the default)")
    for where in (parser, slow):
        where.add_argument("--members", type=int, default=50, help="members that read (default 50)")
        where.add_argument("--messages", type=int, default=5000, help="messages posted (default 5000)")
        where.add_argument("--buffer", type=int, default=256, help="chatserver --buffer (default 256)")
    loads = commands.add_parser("load", help="issue 13's scenarios, driven by the compiled generator")
    loads.add_argument("--go-seed", type=Path, help="the seed's chatserver binary, to run beside ours")
    names = [scenario.name for scenario in SCENARIOS]
    loads.add_argument("--only", nargs="+", choices=names, default=[], help="run only these scenarios")
    args = parser.parse_args()
    if args.command == "load":
        load(args.go_seed, args.only)
    else:
        trio.run(main, args.members, args.messages, args.buffer)


if __name__ == "__main__":
    cli()
