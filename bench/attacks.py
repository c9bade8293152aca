"""The attack kit of docs/hardening.md: hostile peers against a real `chatserver`, and what each one costs it.

    python -m bench.attacks                    # every case, a markdown table on stdout (a few minutes)
    python -m bench.attacks --case ping-flood  # one case (--case may be repeated); --list names them all

For each case (the attacks live in `bench.attack_cases`, over the raw HTTP/2 client of `tests.raw_h2`), a
fresh `chatserver` subprocess on 127.0.0.1 (port 0, read from its "listening on" log line) is attacked, and
the table gives:
- outcome: what the attacker saw (GOAWAY code and debug data, RST_STREAM codes, gRPC or HTTP statuses, ACKs),
  then the case's own notes; "server died: ..." with the server's last exception line if it exited;
- RSS: the server's VmRSS (/proc/PID/status) before the attack, its peak (sampled every 20 ms from the start
  of the attack until its connections are closed), and --settle seconds (5) after they are closed;
- server alive: whether the process is still running at the end; a case whose server passes --rss-cap-mib
  (3 GiB) is stopped there: the server is killed and the row says so;
- other clients served: a well-behaved grpcio client, each round on a new connection of its own
  (Health.Check, CreateChatRoom, ListChatRooms, DeleteChatRoom, 3 s deadline each), probing every 0.5 s
  during the attack, then once after the settle time.
Everything is bounded in count and in time and stops by itself. The file-descriptor soft limit of this
process, which the server inherits, is raised to the hard limit: the 5,000-connection case needs
5,000 descriptors here and, once the server accepts them all, as many there.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import itertools
import os
import re
import resource
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc  # type: ignore[import-untyped]
import trio

from bench.attack_cases import CASES, Case, Report, Target
from chat._proto.rpc import chat_pb2
from trio_grpc._proto.grpc.health.v1 import health_pb2

REPO = Path(__file__).resolve().parent.parent
MiB = 1024 * 1024
PROBE_DEADLINE = 3.0
PROBE_INTERVAL = 0.5


# -- the server under attack ------------------------------------------------------------------------------


class ChatServer:
    """`chatserver` as a subprocess; a thread drains its stderr, keeping the last lines for a post-mortem."""

    def __init__(self) -> None:
        env = {key: value for key, value in os.environ.items() if key != "HEALTH"}
        self.process = subprocess.Popen(
            [sys.executable, "-m", "cli.chatserver", "--host", "127.0.0.1", "--port", "0", "--grace", "0.5"],
            cwd=REPO,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.killed_at_cap = False
        self._lines: collections.deque[str] = collections.deque(maxlen=300)
        self._port: int | None = None
        self._listening = threading.Event()
        threading.Thread(target=self._drain, daemon=True).start()
        if not self._listening.wait(20) or self._port is None:
            self.stop()
            raise SystemExit(f"error: chatserver did not start:\n{self.stderr_tail()}")
        self.port = self._port

    def _drain(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            self._lines.append(line.rstrip("\n"))
            if self._port is None and (match := re.search(r"listening on 127\.0\.0\.1:(\d+)", line)):
                self._port = int(match.group(1))
                self._listening.set()
        self._listening.set()  # it exited before listening

    @property
    def alive(self) -> bool:
        return self.process.poll() is None

    def rss_mib(self) -> float | None:
        try:
            status = Path(f"/proc/{self.process.pid}/status").read_text()
        except OSError:
            return None
        match = re.search(r"^VmRSS:\s+(\d+) kB", status, re.MULTILINE)
        return None if match is None or not self.alive else int(match.group(1)) / 1024

    def open_fds(self) -> int | None:
        try:
            return len(os.listdir(f"/proc/{self.process.pid}/fd"))
        except OSError:
            return None

    def wait_a_little(self, seconds: float = 3) -> None:
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(seconds)

    def kill_at_cap(self) -> None:
        self.killed_at_cap = True
        self.process.kill()

    def stderr_tail(self, lines: int = 15) -> str:
        return "\n".join(list(self._lines)[-lines:])

    def last_exception(self) -> str:
        """The last exception line of the traceback it printed, e.g. "h2.exceptions.StreamClosedError: 1"."""
        for line in reversed(self._lines):
            match = re.match(r"[|+\s-]*((?:\w+\.)*\w*(?:Error|Exception|Group|Interrupt)\b.*)", line)
            if match:
                return match.group(1).strip()
        return "no exception printed"

    def state(self) -> str:
        if self.killed_at_cap:
            return "killed (RSS cap)"
        code = self.process.poll()
        return "yes" if code is None else f"died (exit {code})"

    def stop(self) -> None:
        if self.alive:
            self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


class RssMonitor(threading.Thread):
    """Samples the server's RSS (and its open descriptors); kills the server once RSS passes `cap_mib`.

    `peak` covers the attack only; `peak_fds` is sampled every 0.5 s (listing /proc/PID/fd costs more).
    """

    def __init__(self, server: ChatServer, cap_mib: float) -> None:
        super().__init__(daemon=True)
        self.server, self.cap_mib = server, cap_mib
        self.peak = 0.0
        self.peak_fds = 0
        self.recording = True  # peak is taken while the attack runs, the cap is enforced throughout
        self.done = threading.Event()

    def run(self) -> None:
        for sample in itertools.count():
            if self.done.is_set():
                return
            rss = self.server.rss_mib()
            if rss is None:
                return
            if self.recording:
                self.peak = max(self.peak, rss)
            if sample % 25 == 0:
                self.peak_fds = max(self.peak_fds, self.server.open_fds() or 0)
            if rss > self.cap_mib:
                self.server.kill_at_cap()
                return
            self.done.wait(0.02)


# -- the well-behaved client ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Round:
    ok: bool
    seconds: float
    failure: str = ""


def probe(port: int) -> Round:
    """One round of calls by grpcio on a connection of its own (a local subchannel pool: not shared)."""
    options = [("grpc.use_local_subchannel_pool", 1), ("grpc.enable_http_proxy", 0)]
    started = time.monotonic()
    with grpc.insecure_channel(f"127.0.0.1:{port}", options=options) as channel:

        def call(path: str, request: Any, response_type: Any) -> Any:
            method = channel.unary_unary(
                path,
                request_serializer=type(request).SerializeToString,
                response_deserializer=response_type.FromString,
            )
            return method(request, timeout=PROBE_DEADLINE)

        step = "Health.Check"
        try:
            call(
                "/grpc.health.v1.Health/Check",
                health_pb2.HealthCheckRequest(),
                health_pb2.HealthCheckResponse,
            )
            step = "CreateChatRoom"
            room = call(
                "/rpc.ChatService/CreateChatRoom", chat_pb2.CreateChatRoomRequest(), chat_pb2.ChatRoom
            )
            step = "ListChatRooms"
            listed = call(
                "/rpc.ChatService/ListChatRooms",
                chat_pb2.ListChatRoomsRequest(),
                chat_pb2.ListChatRoomsResponse,
            )
            if room.room_id not in {entry.room_id for entry in listed.chat_rooms}:
                return Round(False, time.monotonic() - started, "ListChatRooms lacks the new room")
            step = "DeleteChatRoom"
            call(
                "/rpc.ChatService/DeleteChatRoom",
                chat_pb2.DeleteChatRoomRequest(room_id=room.room_id),
                chat_pb2.ChatRoom,
            )
        except grpc.RpcError as exc:
            return Round(False, time.monotonic() - started, f"{step}: {exc.code().name}")
    return Round(True, time.monotonic() - started)


class Prober(threading.Thread):
    """Probe rounds, one after another with PROBE_INTERVAL between them, until `stop`."""

    def __init__(self, port: int) -> None:
        super().__init__(daemon=True)
        self.port = port
        self.rounds: list[Round] = []
        self._stopping = threading.Event()

    def run(self) -> None:
        while not self._stopping.is_set():
            self.rounds.append(probe(self.port))
            self._stopping.wait(PROBE_INTERVAL)

    def stop(self) -> list[Round]:
        self._stopping.set()
        self.join()
        return self.rounds


def served(during: list[Round], after: Round | None) -> str:
    ok = [r for r in during if r.ok]
    text = f"{len(ok)}/{len(during)} during"
    if during:
        text += f" (slowest {max(r.seconds for r in during):.1f} s)"
    failures = collections.Counter(r.failure for r in during if not r.ok)
    if failures:
        text += " [" + ", ".join(f"{name} x{n}" for name, n in failures.most_common()) + "]"
    return text + ("; after: -" if after is None else f"; after: {'yes' if after.ok else after.failure}")


# -- a case, start to finish ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Row:
    case: str
    outcome: str
    before: float
    peak: float
    after: float | None
    alive: str
    served: str


async def _attack(case: Case, target: Target, report: Report) -> None:
    with trio.move_on_after(case.timeout) as scope:
        await case.attack(target, report)
    if scope.cancelled_caught:
        report.note(f"attack cut off after {case.timeout:g} s")


def run_case(case: Case, settle: float, cap_mib: float, log: Callable[[str], None]) -> Row:
    server = ChatServer()
    try:
        warm = probe(server.port)
        if not warm.ok:
            raise SystemExit(f"error: chatserver does not answer before any attack: {warm.failure}")
        before = server.rss_mib() or 0.0
        monitor, prober = RssMonitor(server, cap_mib), Prober(server.port)
        monitor.start()
        prober.start()
        report = Report()
        target = Target(server.port, server.rss_mib)
        try:
            trio.run(_attack, case, target, report)
        except Exception as exc:  # an attack that fails is a bug of the kit: say so, go on with the others
            report.note(f"attack failed: {type(exc).__name__}: {exc}")
        monitor.recording = False
        during = prober.stop()
        time.sleep(settle)  # the "after" figure is RSS some time after the close: that wait is the measure
        after_rss = server.rss_mib()
        after = probe(server.port) if server.alive else None
        if after is not None and not after.ok:
            server.wait_a_little()  # a server that stopped answering may be exiting (printing a traceback)
        monitor.done.set()
        outcome = report.outcome()
        if not server.alive and not server.killed_at_cap:
            outcome = f"server died: {server.last_exception()}; attacker saw: {outcome}"
        elif server.killed_at_cap:
            outcome = f"server killed at RSS > {cap_mib:.0f} MiB; attacker saw: {outcome}"
        log(f"{case.name}: {outcome} (server's open descriptors: at most {monitor.peak_fds})")
        return Row(case.name, outcome, before, monitor.peak, after_rss, server.state(), served(during, after))
    finally:
        server.stop()


def markdown(rows: Sequence[Row]) -> str:
    def cell(text: str) -> str:
        return text.replace("|", "\\|")

    lines = [
        "| case | outcome | RSS before / peak / after MiB | server alive | other clients served |",
        "| --- | --- | --- | --- | --- |",
    ]
    for row in rows:
        after = "-" if row.after is None else f"{row.after:.0f}"
        rss = f"{row.before:.0f} / {row.peak:.0f} / {after}"
        lines.append(f"| {row.case} | {cell(row.outcome)} | {rss} | {row.alive} | {cell(row.served)} |")
    return "\n".join(lines)


def raise_fd_limit() -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = hard if hard != resource.RLIM_INFINITY else 65536
    if soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.attacks", description=__doc__.split("\n\n")[0])
    parser.add_argument("--case", action="append", metavar="NAME", help="run this case only (repeatable)")
    parser.add_argument("--list", action="store_true", help="list the cases and what each does")
    parser.add_argument("--settle", type=float, default=5.0, help="seconds after the attack for 'after' RSS")
    parser.add_argument("--rss-cap-mib", type=float, default=3072, help="kill the server past this RSS")
    args = parser.parse_args(argv)
    if args.list:
        for case in CASES.values():
            print(f"{case.name:28} {case.what}")
        return
    unknown = [name for name in args.case or [] if name not in CASES]
    if unknown:
        parser.error(f"unknown case {', '.join(unknown)} (see --list)")
    fd_limit = raise_fd_limit()
    cases = [CASES[name] for name in args.case] if args.case else list(CASES.values())

    def log(text: str) -> None:
        print(f"# {text}", file=sys.stderr, flush=True)

    started = time.monotonic()
    rows = [run_case(case, args.settle, args.rss_cap_mib, log) for case in cases]
    print(markdown(rows))
    print(
        f"\n{len(rows)} cases in {time.monotonic() - started:.0f} s; fd soft limit {fd_limit}; "
        f"RSS cap {args.rss_cap_mib:.0f} MiB; after = {args.settle:g} s after the attack closed its sockets."
    )


if __name__ == "__main__":
    main()
