"""chatter as a subprocess against a running chatserver: rooms, the prompts, two people chatting through
pipes, leaving (end of input, Ctrl-C), the room being deleted, a terminal (pty), and every error line."""

from __future__ import annotations

import codecs
import concurrent.futures
import fcntl
import os
import re
import signal
import socket
import struct
import subprocess
import termios
import threading
import time
from collections.abc import Iterator

import grpc
import pytest

from chat._proto.rpc import chat_pb2
from cli._common import with_default_port
from cli.chatter import DEFAULT_PORT, LEAVE_WAIT
from cli.chatter import main as chatter_main
from tests.grpcio_stubs import chat_pb2_grpc
from tests.test_cli_chatserver import (
    TIMEOUT,
    ChatServer,
    Proc,
    Result,
    clean_env,
    cli,
    command,
    create_room,
    in_process,
    running_chatserver,
)


def chatter(server: ChatServer, *args: str, input: str | None = None) -> Result:
    return cli("chatter", "--insecure", "--host", server.target, *args, input=input)


def member(server: ChatServer, room: str, *args: str) -> Proc:
    return Proc(
        command("chatter", "--insecure", "--host", server.target, "--room", room, *args), env=clean_env()
    )


@pytest.fixture
def chatserver() -> Iterator[ChatServer]:
    yield from running_chatserver()


@pytest.fixture
def procs() -> Iterator[list[Proc]]:
    """Programs a test starts; stopped whatever happens."""
    started: list[Proc] = []
    yield started
    for proc in started:
        proc.stop()


def test_help_names_every_option(capsys: pytest.CaptureFixture[str]) -> None:
    assert in_process(chatter_main, "--help") == 0
    help_text = capsys.readouterr().out
    for option in (
        "--create",
        "--host",
        "--insecure",
        "--cacert",
        "--private",
        "--list",
        "--delete",
        "--room",
    ):
        assert option in help_text
    assert "--name" in help_text and "--listen" in help_text


@pytest.mark.parametrize(
    "args",
    [
        ["--private"],
        ["--create", "--room", "x"],
        ["--insecure", "--cacert", "ca.pem"],
        ["--listen", "--name", "A"],
    ],
)
def test_usage_errors_exit_2(args: list[str]) -> None:
    assert in_process(chatter_main, *args) == 2


def test_malformed_host_is_one_line() -> None:
    result = cli("chatter", "--insecure", "--host", "localhost:http", "--list")
    assert result.code == 1
    assert result.error_line() == "error: --host 'localhost:http' is not HOST:PORT (or unix:PATH)"


@pytest.mark.parametrize(
    ("host", "target"),
    [
        ("localhost", "localhost:8080"),
        ("10.0.0.1", "10.0.0.1:8080"),
        ("[::1]", "[::1]:8080"),
        ("::1", "[::1]:8080"),
        ("example.com:443", "example.com:443"),
        ("[::1]:443", "[::1]:443"),
        ("unix:/run/chat.sock", "unix:/run/chat.sock"),
    ],
)
def test_host_without_a_port_means_8080(host: str, target: str) -> None:
    # Checked without connecting: the test suite never touches the default port.
    assert with_default_port(host, DEFAULT_PORT) == target


@pytest.mark.parametrize("program", ["chatter", "chatserver"])
def test_version(program: str) -> None:
    result = cli(program, "--version")
    assert (result.code, result.stderr) == (0, "")
    assert re.fullmatch(rf"{program} \(trio-grpc \d+\.\d+\.\d+\S*\)\n", result.stdout), result


def test_create_list_delete(chatserver: ChatServer) -> None:
    empty = chatter(chatserver, "--list")
    assert (empty.code, empty.stdout) == (0, "")
    assert empty.stderr == (
        f"No public chat rooms; create one with `chatter --create --host {chatserver.target} --insecure`.\n"
    )
    public = create_room(chatserver)
    private = create_room(chatserver, "--private")
    listed = chatter(chatserver, "--list")
    assert (listed.code, listed.stdout) == (0, f"{public}\n")

    deleted = chatter(chatserver, "--delete", public)
    assert (deleted.code, deleted.stdout) == (0, f"Chat room deleted: {public}\n")
    assert chatter(chatserver, "--list").stdout == ""
    assert chatter(chatserver, "--delete", private).code == 0

    again = chatter(chatserver, "--delete", public)
    assert again.code == 1
    assert again.error_line() == (
        f"error: room {public} does not exist (NOT_FOUND); see the rooms with `chatter --list`"
    )


def test_no_rooms_to_pick_says_how_to_create_one(chatserver: ChatServer) -> None:
    result = chatter(chatserver, input="1\n")
    assert result.code == 1
    assert result.error_line() == (
        "error: there are no public chat rooms; create one with "
        f"`chatter --create --host {chatserver.target} --insecure`, or join a private one with --room ID"
    )


def test_prompts_reprompt_on_bad_answers(chatserver: ChatServer) -> None:
    room = create_room(chatserver)
    result = chatter(chatserver, input="x\n7\n1\n\nAnn\n")
    assert result.code == 0, result
    assert result.stdout.splitlines() == [
        "Chat rooms:",
        f"[1]: {room}",
        "Pick a room: x",
        "Please enter 1, or a room id.",
        "Pick a room: 7",
        "Please enter 1, or a room id.",
        "Pick a room: 1",
        "Enter Name tag: ",
        "The name tag cannot be empty.",
        "Enter Name tag: Ann",
        "Ann: Has joined the chat",
    ]
    assert result.stderr == ""


def test_a_room_id_that_does_not_exist_is_asked_again(chatserver: ChatServer) -> None:
    room = create_room(chatserver)
    missing = "0" * 20
    result = chatter(chatserver, input=f"{missing}\nAnn\n1\n")
    assert result.code == 0, result
    assert result.stdout.splitlines() == [
        "Chat rooms:",
        f"[1]: {room}",
        f"Pick a room: {missing}",
        "Enter Name tag: Ann",
        f"There is no room {missing} (any more); pick another.",
        "Chat rooms:",
        f"[1]: {room}",
        "Pick a room: 1",
        "Ann: Has joined the chat",  # the name tag is kept
    ]


def test_end_of_input_at_a_prompt(chatserver: ChatServer) -> None:
    create_room(chatserver)
    result = chatter(chatserver, input="")
    assert result.code == 1
    assert result.error_line() == "error: input ended at the prompt 'Pick a room:'"


def test_two_people_chat_and_leave(chatserver: ChatServer, procs: list[Proc]) -> None:
    room = create_room(chatserver)
    listener = member(chatserver, room, "--listen")
    ann = member(chatserver, room, "--name", "Ann")
    procs += [listener, ann]
    ann.expect("^Ann: Has joined the chat$")
    listener.expect("^Ann: Has joined the chat$")

    bob = member(chatserver, room)  # no --name: asked for it
    procs.append(bob)
    bob.send("Bob\n")
    bob.expect("^Enter Name tag: Bob$")
    bob.expect("^Ann: Has joined the chat$")  # the room's history
    bob.expect("^Bob: Has joined the chat$")
    ann.expect("^Bob: Has joined the chat$")

    bob.send("hello Ann\n")
    ann.expect("^Bob: hello Ann$")
    ann.send("hi Bob\n")
    bob.expect("^Ann: hi Bob$")

    bob.close_stdin()  # end of input: Bob leaves
    assert bob.wait() == 0
    ann.expect("^Bob: Has left the chat$")

    ann.signal(signal.SIGINT)  # Ctrl-C: Ann leaves just as politely, and says she was interrupted
    assert ann.wait() == 130
    listener.expect("^Ann: Has left the chat$")

    # pipes get plain lines: no prompt redraws, one's own lines not echoed
    assert ann.lines() == ["Ann: Has joined the chat", "Bob: Has joined the chat", "Bob: hello Ann",
                           "Bob: Has left the chat"]  # fmt: skip
    assert "Bob: hello Ann" not in bob.lines()
    assert ann.lines("stderr") == [] and bob.lines("stderr") == []

    listener.signal(signal.SIGINT)
    assert listener.wait() == 130


def test_deleting_the_room_ends_the_chat(chatserver: ChatServer, procs: list[Proc]) -> None:
    room = create_room(chatserver)
    ann = member(chatserver, room, "--name", "Ann")
    listener = member(chatserver, room, "--listen")
    procs += [ann, listener]
    ann.expect("^Ann: Has joined the chat$")
    listener.expect("^Ann: Has joined the chat$")
    assert chatter(chatserver, "--delete", room).code == 0
    for proc in (ann, listener):
        proc.expect("^chat server: chat room is closing$")
        proc.expect(f"^Room {room} was deleted.$")
        assert proc.wait() == 0
        assert proc.lines("stderr") == []


def test_name_taken(chatserver: ChatServer, procs: list[Proc]) -> None:
    room = create_room(chatserver)
    ann = member(chatserver, room, "--name", "Ann")
    procs.append(ann)
    ann.expect("^Ann: Has joined the chat$")

    given = chatter(chatserver, "--room", room, "--name", "Ann")
    assert given.code == 1
    assert (
        given.error_line()
        == f"error: 'Ann' is already in room {room} (ALREADY_EXISTS); choose another --name"
    )

    asked = chatter(chatserver, "--room", room, input="Ann\nBea\n")  # asked for: asked again
    assert asked.code == 0, asked
    assert "The name tag 'Ann' is taken in this room; choose another." in asked.stdout
    assert "Bea: Has joined the chat" in asked.stdout


@pytest.mark.parametrize("mode", [["--name", "Ann"], ["--listen"]])
def test_room_not_found(chatserver: ChatServer, mode: list[str]) -> None:
    result = chatter(chatserver, "--room", "0" * 20, *mode)
    assert result.code == 1
    assert (
        result.error_line()
        == f"error: room {'0' * 20} does not exist (NOT_FOUND); see the rooms with `chatter --list`"
    )


def test_server_not_reachable() -> None:
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    result = cli("chatter", "--insecure", "--host", f"127.0.0.1:{port}", "--list")
    assert result.code == 1
    assert result.error_line() == (
        f"error: cannot connect to 127.0.0.1:{port} (UNAVAILABLE); "
        "is a server running there? (--host sets the address; `chatserver` starts one)"
    )


def test_tls_against_a_plaintext_server(chatserver: ChatServer) -> None:
    result = cli("chatter", "--host", chatserver.target, "--create")
    assert result.code == 1
    assert result.error_line() == (
        f"error: TLS handshake with {chatserver.target} failed: the server speaks plaintext (UNAVAILABLE); "
        "add --insecure"
    )


class Terminal:
    """A pseudo-terminal for chatter's stdin/stdout; what it writes is collected by a thread."""

    def __init__(self, columns: int = 80) -> None:
        self.master, self.slave = os.openpty()
        fcntl.ioctl(self.slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, columns, 0, 0))
        self.mode = termios.tcgetattr(self.slave)
        self._output = ""
        self._decoder = codecs.getincrementaldecoder("utf-8")()  # a read may end inside a character
        self._changed = threading.Condition()
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        while True:
            try:
                data = os.read(self.master, 4096)
            except OSError:
                return
            if not data:
                return
            with self._changed:
                self._output += self._decoder.decode(data)
                self._changed.notify_all()

    def expect(self, text: str) -> None:
        deadline = time.monotonic() + TIMEOUT
        with self._changed:
            while text not in self._output:
                if not self._changed.wait(deadline - time.monotonic()):
                    raise AssertionError(f"{text!r} not in terminal output {self._output!r}")
            self._output = self._output[self._output.index(text) + len(text) :]

    def type(self, keys: bytes) -> None:
        os.write(self.master, keys)

    def close(self) -> None:
        os.close(self.slave)
        os.close(self.master)


def test_terminal_keeps_the_typed_line_intact(chatserver: ChatServer, procs: list[Proc]) -> None:
    room = create_room(chatserver)
    terminal = Terminal()
    process = subprocess.Popen(
        command("chatter", "--insecure", "--host", chatserver.target, "--room", room),
        stdin=terminal.slave,
        stdout=terminal.slave,
        stderr=terminal.slave,
        env=clean_env(TERM="xterm"),
    )
    try:
        terminal.expect("Enter Name tag: ")
        terminal.type(b"Ann\r")
        terminal.expect("Ann\r\nAnn: Has joined the chat\r\n")
        terminal.type(b"hel")
        terminal.expect("Ann: hel")

        bob = member(chatserver, room, "--name", "Bob")
        procs.append(bob)
        bob.expect("^Bob: Has joined the chat$")
        bob.send("hi there\n")
        # Bob's line goes above the one being typed, which is drawn again with the partial input
        terminal.expect("\r\x1b[JBob: hi there\r\nAnn: hel")

        terminal.type(b"p\x7flo\r")  # backspace is handled by chatter, not the terminal
        bob.expect("^Ann: hello$")
        terminal.type(b"\x04")  # Ctrl-D on an empty line: leave
        bob.expect("^Ann: Has left the chat$")
        assert process.wait(TIMEOUT) == 0
        assert termios.tcgetattr(terminal.slave) == terminal.mode  # echo and line mode are back
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        terminal.close()


def test_terminal_wide_characters_and_emoji_joiners(chatserver: ChatServer, procs: list[Proc]) -> None:
    room = create_room(chatserver)
    terminal = Terminal(columns=10)
    process = subprocess.Popen(
        command("chatter", "--insecure", "--host", chatserver.target, "--room", room, "--name", "Ann"),
        stdin=terminal.slave,
        stdout=terminal.slave,
        stderr=terminal.slave,
        env=clean_env(TERM="xterm"),
    )
    try:
        terminal.expect("Ann: Has joined the chat\r\n")
        bob = member(chatserver, room, "--name", "Bob")
        procs.append(bob)
        terminal.expect("Bob: Has joined the chat\r\n")
        terminal.type("你好世界".encode())
        terminal.expect("Ann: 你好世界")  # 5 + 8 columns: two rows of 10
        bob.send("hi\n")
        terminal.expect("\x1b[1A\r\x1b[JBob: hi\r\nAnn: 你好世界")  # up one row, then erase
        terminal.type(b"\x15")  # Ctrl-U
        terminal.expect("\x1b[1A\r\x1b[JAnn: ")

        woman_technologist = "\U0001f469\u200d\U0001f4bb"
        terminal.type(f"{woman_technologist}\r".encode())
        bob.expect(f"^Ann: {woman_technologist}$")  # the joiner is kept
        terminal.type(f"e\u0301{woman_technologist}\x7f\x7fok\r".encode())  # backspace: one character as seen
        bob.expect("^Ann: ok$")
        terminal.type(b"\x04")
        assert process.wait(TIMEOUT) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        terminal.close()


def test_pipe_output_has_no_escape_sequences(chatserver: ChatServer) -> None:
    room = create_room(chatserver)
    result = chatter(chatserver, "--room", room, "--name", "Ann", input="one\ntwo\n")
    assert result.code == 0
    assert "\x1b" not in result.stdout and "\r" not in result.stdout
    assert re.fullmatch(r"Ann: Has joined the chat\n", result.stdout)


class StubbornChatServer(chat_pb2_grpc.ChatServiceServicer):
    """The seed's Go server's habit, in grpcio: a half-closed Chat call is never ended by the server."""

    def __init__(self) -> None:
        self.half_closed = threading.Event()
        self.cancelled = threading.Event()

    def Chat(
        self, requests: Iterator[chat_pb2.ChatMessage], context: grpc.ServicerContext
    ) -> Iterator[chat_pb2.Message]:
        context.add_callback(self.cancelled.set)
        for request in requests:
            if request.HasField("join"):
                yield chat_pb2.Message(name=request.join.name, message="Has joined the chat")
        self.half_closed.set()
        self.cancelled.wait(TIMEOUT)  # only the client's cancel ends the call


@pytest.fixture
def stubborn_server() -> Iterator[tuple[str, StubbornChatServer]]:
    server = grpc.server(concurrent.futures.ThreadPoolExecutor(max_workers=4))
    servicer = StubbornChatServer()
    chat_pb2_grpc.add_ChatServiceServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    yield f"127.0.0.1:{port}", servicer
    server.stop(grace=None)


def test_leaves_a_server_that_never_ends_the_call(
    stubborn_server: tuple[str, StubbornChatServer], procs: list[Proc]
) -> None:
    target, servicer = stubborn_server
    ann = Proc(command("chatter", "--insecure", "--host", target, "--room", "0" * 20, "--name", "Ann"))
    procs.append(ann)
    ann.expect("^Ann: Has joined the chat$")
    ann.close_stdin()
    assert servicer.half_closed.wait(TIMEOUT)
    left = time.monotonic()
    assert ann.wait() == 0
    assert LEAVE_WAIT - 0.5 <= time.monotonic() - left <= LEAVE_WAIT + 5  # waited, then gave up
    assert servicer.cancelled.wait(TIMEOUT)  # the call was cancelled, not left hanging
    assert ann.lines("stderr") == []


def _controlling_terminal() -> None:
    """In the child: a session of its own with stdin (the pty) as its terminal, so Ctrl-Z reaches it."""
    os.setsid()
    fcntl.ioctl(0, termios.TIOCSCTTY, 0)


def _wait_stopped(pid: int) -> None:
    """Until the child is stopped (waitpid reports that without reaping it), at most TIMEOUT seconds."""
    status: list[int] = []
    waiter = threading.Thread(target=lambda: status.append(os.waitpid(pid, os.WUNTRACED)[1]), daemon=True)
    waiter.start()
    waiter.join(TIMEOUT)
    assert status and os.WIFSTOPPED(status[0]), f"process {pid} did not stop: {status}"


def test_terminal_after_ctrl_z_and_fg(chatserver: ChatServer, procs: list[Proc]) -> None:
    room = create_room(chatserver)
    terminal = Terminal()
    process = subprocess.Popen(
        command("chatter", "--insecure", "--host", chatserver.target, "--room", room, "--name", "Ann"),
        stdin=terminal.slave,
        stdout=terminal.slave,
        stderr=terminal.slave,
        env=clean_env(TERM="xterm"),
        preexec_fn=_controlling_terminal,
    )
    try:
        terminal.expect("Ann: Has joined the chat\r\n")
        terminal.type(b"hel")
        terminal.expect("Ann: hel")
        terminal.type(b"\x1a")  # Ctrl-Z: the terminal sends SIGTSTP
        _wait_stopped(process.pid)
        assert termios.tcgetattr(terminal.slave) == terminal.mode  # the shell gets its terminal back

        process.send_signal(signal.SIGCONT)  # fg
        terminal.expect("\r\x1b[JAnn: hel")  # the prompt and the partial line, drawn again
        assert not termios.tcgetattr(terminal.slave)[3] & termios.ECHO  # no double echo
        bob = member(chatserver, room, "--name", "Bob")
        procs.append(bob)
        bob.expect("^Bob: Has joined the chat$")
        terminal.type(b"lo\r")
        bob.expect("^Ann: hello$")
        terminal.type(b"\x04")
        assert process.wait(TIMEOUT) == 0
        assert termios.tcgetattr(terminal.slave) == terminal.mode
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        terminal.close()
