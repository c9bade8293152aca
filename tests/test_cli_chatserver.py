"""chatserver as a subprocess: listening, logging, health (HEALTH env), TLS, limits, graceful shutdown.

Also the helpers the other CLI tests import: `Proc` (a program whose output lines are collected by
threads and waited for with a timeout: output lines are the synchronisation, never sleeps), `cli` (run
a program to completion) and `start_chatserver` (on 127.0.0.1, port 0, reading the bound port from the
"listening on" log line).
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO

import pytest
import trustme

from cli.chatserver import main as chatserver_main

TIMEOUT = 15


class Proc:
    """A program running as a subprocess, stdin a pipe (unless given), stdout and stderr read by threads."""

    def __init__(
        self, args: list[str], *, env: dict[str, str] | None = None, stdin: int | None = None
    ) -> None:
        self.args = args
        self.process = subprocess.Popen(
            args,
            stdin=subprocess.PIPE if stdin is None else stdin,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        self._changed = threading.Condition()
        self._lines: dict[str, list[str]] = {"stdout": [], "stderr": []}
        self._seen = {"stdout": 0, "stderr": 0}
        self._open = {"stdout": True, "stderr": True}
        assert self.process.stdout is not None and self.process.stderr is not None
        self._threads = [
            threading.Thread(target=self._drain, args=(name, stream), daemon=True)
            for name, stream in (("stdout", self.process.stdout), ("stderr", self.process.stderr))
        ]
        for thread in self._threads:
            thread.start()

    def _drain(self, name: str, stream: IO[str]) -> None:
        for line in stream:
            with self._changed:
                self._lines[name].append(line.rstrip("\n"))
                self._changed.notify_all()
        with self._changed:
            self._open[name] = False
            self._changed.notify_all()

    def expect(self, pattern: str, stream: str = "stdout", timeout: float = TIMEOUT) -> re.Match[str]:
        """The next line of `stream` (after those already matched) that contains `pattern`."""
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                lines = self._lines[stream]
                for index in range(self._seen[stream], len(lines)):
                    match = regex.search(lines[index])
                    if match:
                        self._seen[stream] = index + 1
                        return match
                if not self._open[stream]:
                    break
                if not self._changed.wait(deadline - time.monotonic()):
                    break
        raise AssertionError(f"no line matching {pattern!r} on {stream} of {self.args}:\n{self.output()}")

    def lines(self, stream: str = "stdout") -> list[str]:
        with self._changed:
            return list(self._lines[stream])

    def output(self) -> str:
        return f"stdout:\n{chr(10).join(self.lines('stdout'))}\nstderr:\n{chr(10).join(self.lines('stderr'))}"

    def send(self, text: str) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(text)
        self.process.stdin.flush()

    def close_stdin(self) -> None:
        assert self.process.stdin is not None
        self.process.stdin.close()

    def signal(self, signum: int) -> None:
        self.process.send_signal(signum)

    def wait(self, timeout: float = TIMEOUT) -> int:
        code = self.process.wait(timeout)
        for thread in self._threads:
            thread.join(timeout)
        return code

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.wait()
        if self.process.stdin is not None:
            self.process.stdin.close()


def command(program: str, *args: str) -> list[str]:
    return [sys.executable, "-m", f"cli.{program}", *args]


def clean_env(**overrides: str) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if key != "HEALTH"}
    env.update(overrides)
    return env


def cli(program: str, *args: str, input: str | None = None, env: dict[str, str] | None = None) -> Result:
    completed = subprocess.run(
        command(program, *args),
        input=input,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        env=env or clean_env(),
        stdin=None if input is not None else subprocess.DEVNULL,
    )
    return Result(completed.returncode, completed.stdout, completed.stderr)


class Result:
    def __init__(self, code: int, stdout: str, stderr: str) -> None:
        self.code, self.stdout, self.stderr = code, stdout, stderr

    def error_line(self) -> str:
        """The program's one error line (and no traceback)."""
        assert "Traceback" not in self.stderr, self.stderr
        lines = self.stderr.strip().splitlines()
        assert len(lines) == 1, self.stderr
        return lines[0]

    def __repr__(self) -> str:
        return f"Result({self.code}, stdout={self.stdout!r}, stderr={self.stderr!r})"


class ChatServer:
    def __init__(self, proc: Proc, port: int) -> None:
        self.proc, self.port = proc, port
        self.target = f"127.0.0.1:{port}"

    def stop(self) -> int:
        if self.proc.process.poll() is None:
            self.proc.signal(signal.SIGTERM)
        try:
            return self.proc.wait()
        finally:
            self.proc.stop()


def start_chatserver(*args: str, env: dict[str, str] | None = None) -> ChatServer:
    proc = Proc(command("chatserver", "--host", "127.0.0.1", "--port", "0", *args), env=env or clean_env())
    try:
        port = int(proc.expect(r"listening on 127\.0\.0\.1:(\d+)", "stderr").group(1))
    except BaseException:
        proc.stop()
        raise
    return ChatServer(proc, port)


def running_chatserver() -> Iterator[ChatServer]:
    """The body of the `chatserver` fixture of each CLI test module."""
    server = start_chatserver("--grace", "0.5")
    yield server
    server.stop()


@pytest.fixture
def chatserver() -> Iterator[ChatServer]:
    yield from running_chatserver()


def create_room(server: ChatServer, *flags: str) -> str:
    result = cli("chatter", "--insecure", "--host", server.target, "--create", *flags)
    assert result.code == 0, result
    match = re.fullmatch(r"Chat room created: ([0-9a-f]{20})\n", result.stdout)
    assert match, result
    return match.group(1)


# -- tests ------------------------------------------------------------------------------------------


def in_process(main: Callable[[list[str]], None], *args: str) -> object:
    """The exit code of a program's `main` that exits before doing anything (--help, usage errors)."""
    with pytest.raises(SystemExit) as exit:
        main(list(args))
    return exit.value.code


def test_help_names_every_option(capsys: pytest.CaptureFixture[str]) -> None:
    assert in_process(chatserver_main, "--help") == 0
    help_text = capsys.readouterr().out
    for option in (
        "--host",
        "--port",
        "--tls-cert",
        "--tls-key",
        "--max-members",
        "--history",
        "--buffer",
        "--buffer-bytes",
        "--hold-back",
        "--max-held-bytes",
        "--log-level",
    ):
        assert option in help_text
    assert "HEALTH" in help_text


def test_usage_errors_exit_2() -> None:
    assert in_process(chatserver_main, "--tls-cert", "cert.pem") == 2
    assert in_process(chatserver_main, "--max-members", "0") == 2
    assert in_process(chatserver_main, "--history", "20", "--buffer", "10") == 2
    assert in_process(chatserver_main, "--hold-back", "-1") == 2
    assert in_process(chatserver_main, "--buffer-bytes", "0") == 2


@pytest.mark.parametrize(
    ("port", "expected"),
    [
        ("99999", "must be 0 to 65535, not 99999"),
        ("-1", "must be 0 to 65535, not -1"),
        ("http", "not a port number: 'http'"),
    ],
)
def test_port_out_of_range_is_a_usage_error(port: str, expected: str) -> None:
    result = cli("chatserver", "--host", "127.0.0.1", "--port", port)
    assert result.code == 2
    assert "Traceback" not in result.stderr and "listening" not in result.stderr
    assert result.stderr.splitlines()[-1] == f"chatserver: error: argument --port: {expected}"


def test_port_in_use_is_one_line(chatserver: ChatServer) -> None:
    result = cli("chatserver", "--host", "127.0.0.1", "--port", str(chatserver.port))
    assert result.code == 1
    assert result.error_line().startswith(f"error: cannot listen on 127.0.0.1:{chatserver.port}:")


def test_logs_one_line_per_connection(chatserver: ChatServer) -> None:
    room = create_room(chatserver)
    chatserver.proc.expect(rf"INFO chat\.rooms: room {room} created", "stderr")  # after the connection's line
    connected = r"INFO trio_grpc\.server: ipv4:127\.0\.0\.1:\d+: connected"
    assert any(re.search(connected, line) for line in chatserver.proc.lines("stderr")), (
        chatserver.proc.output()
    )


def test_logs_room_events(chatserver: ChatServer) -> None:
    room = create_room(chatserver)
    chatserver.proc.expect(rf"INFO chat\.rooms: room {room} created", "stderr")
    member = Proc(
        command("chatter", "--insecure", "--host", chatserver.target, "--room", room, "--name", "Ann")
    )
    try:
        member.expect("Ann: Has joined the chat")
        chatserver.proc.expect(rf"INFO chat\.rooms: 'Ann' joined room {room}", "stderr")
        member.close_stdin()
        assert member.wait() == 0
        chatserver.proc.expect(rf"INFO chat\.rooms: 'Ann' left room {room}", "stderr")
    finally:
        member.stop()
    assert cli("chatter", "--insecure", "--host", chatserver.target, "--delete", room).code == 0
    chatserver.proc.expect(rf"INFO chat\.rooms: room {room} deleted", "stderr")


def health_check(server: ChatServer, service: str = "") -> Result:
    request = json.dumps({"service": service})
    return cli(
        "from_descriptors",
        "--insecure",
        "--target",
        server.target,
        "--rpc",
        "grpc.health.v1.Health/Check",
        "-d",
        request,
    )


@pytest.mark.parametrize(
    ("health", "status"), [("Not_Serving", "NOT_SERVING"), ("3", "SERVICE_UNKNOWN"), ("bogus", "NOT_SERVING")]
)  # unset: SERVING, as test_graceful_shutdown sees
def test_health_env_sets_the_initial_status(health: str, status: str) -> None:
    server = start_chatserver(env=clean_env(HEALTH=health))
    try:
        for service in ("", "rpc.ChatService"):
            result = health_check(server, service)
            assert result.code == 0, result
            assert json.loads(result.stdout) == {"status": status}
        if health == "bogus":  # logged before the listening line
            assert any(re.search(r"WARNING .*'bogus'", line) for line in server.proc.lines("stderr"))
    finally:
        assert server.stop() == 0


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_graceful_shutdown(chatserver: ChatServer, signum: int) -> None:
    """Health turns NOT_SERVING, rooms close with the closing message, members end with OK, exit 0."""
    room = create_room(chatserver)
    member = Proc(
        command("chatter", "--insecure", "--host", chatserver.target, "--room", room, "--name", "Ann")
    )
    watch = Proc(
        command(
            "from_descriptors", "--insecure", "--target", chatserver.target,
            "--rpc", "grpc.health.v1.Health/Watch", "-d", "{}",
        )
    )  # fmt: skip
    try:
        member.expect("Ann: Has joined the chat")
        watch.expect('"status": "SERVING"')
        chatserver.proc.signal(signum)
        watch.expect('"status": "NOT_SERVING"')
        member.expect("chat server: chat room is closing")
        member.expect("^The server is shutting down.$")
        assert member.wait() == 0
        assert chatserver.proc.wait() == 0
        chatserver.proc.expect(f"{signal.Signals(signum).name}: shutting down", "stderr")
        chatserver.proc.expect("stopped", "stderr")
        assert "Traceback" not in chatserver.proc.output()
    finally:
        member.stop()
        watch.stop()


def test_max_members_limit() -> None:
    server = start_chatserver("--max-members", "1")
    try:
        room = create_room(server)
        member = Proc(
            command("chatter", "--insecure", "--host", server.target, "--room", room, "--name", "Ann")
        )
        try:
            member.expect("Ann: Has joined the chat")
            result = cli("chatter", "--insecure", "--host", server.target, "--room", room, "--name", "Bob")
            assert result.code == 1
            assert result.error_line() == f"error: room {room} is full (1 members) (RESOURCE_EXHAUSTED)"
        finally:
            member.stop()
    finally:
        server.stop()


def test_history_limit() -> None:
    server = start_chatserver("--history", "2")
    try:
        room = create_room(server)
        posts = "".join(
            json.dumps({"room_id": room, "message": {"name": "bot", "message": f"m{n}"}}) for n in range(5)
        )
        target = server.target
        post = cli(
            "from_descriptors", "--insecure", "--target", target, "--rpc", "rpc.ChatService.Post", "-d", posts
        )
        assert post.code == 0, post
        listener = Proc(command("chatter", "--insecure", "--host", server.target, "--room", room, "--listen"))
        try:
            listener.expect("bot: m3")
            listener.expect("bot: m4")
            assert listener.lines() == ["bot: m3", "bot: m4"]
        finally:
            listener.stop()
    finally:
        server.stop()


@pytest.fixture(scope="module")
def certificates(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    directory = tmp_path_factory.mktemp("tls")
    ca = trustme.CA()
    cert = ca.issue_cert("localhost", "127.0.0.1")
    paths = {"ca": directory / "ca.pem", "cert": directory / "cert.pem", "key": directory / "key.pem"}
    ca.cert_pem.write_to_path(str(paths["ca"]))
    cert.private_key_and_cert_chain_pem.write_to_path(str(paths["cert"]))
    cert.private_key_pem.write_to_path(str(paths["key"]))
    return {name: str(path) for name, path in paths.items()}


def test_tls(certificates: dict[str, str]) -> None:
    server = start_chatserver("--tls-cert", certificates["cert"], "--tls-key", certificates["key"])
    try:
        assert any("(TLS)" in line for line in server.proc.lines("stderr"))
        created = cli("chatter", "--host", server.target, "--cacert", certificates["ca"], "--create")
        assert created.code == 0, created
        assert created.stdout.startswith("Chat room created: ")

        untrusted = cli("chatter", "--host", server.target, "--create")
        assert untrusted.code == 1
        line = untrusted.error_line()
        assert line.startswith(f"error: TLS handshake with {server.target} failed:")
        assert "(UNAVAILABLE); pass the server's CA certificate with --cacert FILE" in line

        plaintext = cli("chatter", "--host", server.target, "--insecure", "--create")
        assert plaintext.code == 1
        assert plaintext.error_line() == (
            f"error: {server.target} did not answer in plaintext HTTP/2 (UNAVAILABLE); "
            "if the server uses TLS, drop --insecure"
        )
    finally:
        server.stop()


def test_bad_certificate_files(tmp_path: Path) -> None:
    missing = str(tmp_path / "missing.pem")
    result = cli("chatserver", "--tls-cert", missing, "--tls-key", missing)
    assert result.code == 1
    assert result.error_line().startswith("error: cannot load --tls-cert/--tls-key:")


def test_interop_server_exits_quietly_on_ctrl_c() -> None:
    server = Proc([sys.executable, "-m", "tests.interop.server", "--port", "0", "--host", "127.0.0.1"])
    try:
        server.expect(r"interop server listening on port \d+")
        server.signal(signal.SIGINT)
        assert server.wait() == 130
        assert server.lines("stderr") == []
    finally:
        server.stop()


@pytest.mark.parametrize("wire", [False, True], ids=["DEBUG", "DEBUG --log-wire"])
def test_debug_log_keeps_the_wire_out_unless_asked_and_never_shows_metadata(wire: bool) -> None:
    server = start_chatserver("--log-level", "DEBUG", *(["--log-wire"] if wire else []))
    try:
        created = cli(
            "from_descriptors", "--insecure", "--target", server.target,
            "--rpc", "rpc.ChatService/CreateChatRoom", "-d", "{}", "-H", "authorization: Bearer s3cret-token",
        )  # fmt: skip
        assert created.code == 0, created
        server.proc.expect(r"INFO chat\.rooms: room [0-9a-f]{20} created", "stderr")
    finally:
        assert server.stop() == 0
    log = server.proc.lines("stderr")
    hpack = [line for line in log if " hpack." in line]
    assert bool(hpack) == wire, log
    assert not any("s3cret" in line for line in log), log
    if wire:  # the protocol's headers are still readable, the caller's metadata is not
        assert any("b'content-type'" in line and "application/grpc" in line for line in hpack), hpack
        assert any("b'authorization'" in line and "<hidden>" in line for line in hpack), hpack
