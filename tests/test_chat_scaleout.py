"""Scale-out: several `chatserver --backend redis://...` processes share rooms through a real redis-server.

One redis-server per test run, on a free port, without persistence, stopped by its PID; each test uses
its own database number so that tests do not see each other's rooms. The clients are grpcio's, spread
over the processes. Output lines and message streams are the synchronisation, never sleeps.
"""

from __future__ import annotations

import queue
import shutil
import signal
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
import trio
import trustme

from chat._proto.rpc import chat_pb2
from chat.backend import RedisSettings
from chat.redis_backend import RedisBackend
from chat.rooms import Message as RoomMessage
from chat.rooms import RoomSettings
from tests.grpcio_stubs import chat_pb2_grpc
from tests.interop.harness import Tls
from tests.test_chat_load import HOLD_BACK, check_burst
from tests.test_cli_chatserver import ChatServer, Proc, cli, start_chatserver
from trio_grpc import RpcError, StatusCode

DEADLINE = 15
LEASE = 1.5  # --member-lease of the processes a test kills
Message = chat_pb2.Message
CLOSING = Message(name="chat server", message="chat room is closing")

pytestmark = pytest.mark.skipif(
    shutil.which("redis-server") is None, reason="redis-server is not installed (Debian: redis-server)"
)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Redis:
    def __init__(self, port: int, *extra: str) -> None:
        self.port = port
        self.proc = Proc(["redis-server", "--port", str(port), "--bind", "127.0.0.1", *extra])
        self.proc.expect("Ready to accept connections")

    def url(self, db: int) -> str:
        return f"redis://127.0.0.1:{self.port}/{db}"

    def stop(self) -> None:
        self.proc.stop()


@pytest.fixture(scope="session")
def redis() -> Iterator[Redis]:
    server = Redis(free_port(), "--save", "", "--appendonly", "no")
    yield server
    server.stop()


_databases = iter(range(1, 16))


@pytest.fixture
def backend(redis: Redis) -> str:
    """A fresh database of the shared redis-server, for one test."""
    return redis.url(next(_databases))


def chatservers(count: int, backend: str, *args: str) -> list[ChatServer]:
    servers: list[ChatServer] = []
    try:
        for _ in range(count):
            servers.append(start_chatserver("--grace", "0.5", "--backend", backend, *args))
    except BaseException:
        stop_all(servers)
        raise
    return servers


def stop_all(servers: list[ChatServer]) -> None:
    for server in servers:
        server.stop()


@pytest.fixture
def three(backend: str) -> Iterator[list[ChatServer]]:
    servers = chatservers(3, backend)
    yield servers
    stop_all(servers)


def stub(server: ChatServer, channels: list[grpc.Channel]) -> chat_pb2_grpc.ChatServiceStub:
    channel = grpc.insecure_channel(server.target)
    channels.append(channel)
    return chat_pb2_grpc.ChatServiceStub(channel)


@pytest.fixture
def channels() -> Iterator[list[grpc.Channel]]:
    opened: list[grpc.Channel] = []
    yield opened
    for channel in opened:
        channel.close()


class Chat:
    """A grpcio Chat call fed from a queue: `send`, `next`, `close` (half-close)."""

    def __init__(self, service: chat_pb2_grpc.ChatServiceStub, room: str, name: str) -> None:
        self._out: queue.SimpleQueue[chat_pb2.ChatMessage | None] = queue.SimpleQueue()
        self._out.put(chat_pb2.ChatMessage(join=chat_pb2.JoinChat(room_id=room, name=name)))
        self.call = service.Chat(iter(self._out.get, None), timeout=DEADLINE)

    def say(self, text: str) -> None:
        self._out.put(chat_pb2.ChatMessage(message=Message(message=text)))

    def next(self) -> chat_pb2.Message:
        return next(self.call)

    def close(self) -> None:
        self._out.put(None)


def create(service: chat_pb2_grpc.ChatServiceStub, private: bool = False) -> str:
    return service.CreateChatRoom(chat_pb2.CreateChatRoomRequest(private=private), timeout=DEADLINE).room_id


def listed(service: chat_pb2_grpc.ChatServiceStub) -> set[str]:
    rooms = service.ListChatRooms(chat_pb2.ListChatRoomsRequest(), timeout=DEADLINE).chat_rooms
    return {room.room_id for room in rooms}


def post(service: chat_pb2_grpc.ChatServiceStub, room: str, *texts: str, name: str = "poster") -> int:
    requests = [chat_pb2.PostRequest(room_id=room, message=Message(name=name, message=t)) for t in texts]
    return service.Post(iter(requests), timeout=DEADLINE).accepted


def joined(name: str) -> chat_pb2.Message:
    return Message(name=name, message="Has joined the chat")


def left(name: str) -> chat_pb2.Message:
    return Message(name=name, message="Has left the chat")


def test_every_rule_holds_across_three_processes(
    three: list[ChatServer], channels: list[grpc.Channel]
) -> None:
    a, b, c = (stub(server, channels) for server in three)
    room, hidden = create(a), create(a, private=True)
    assert room in listed(b) and hidden not in listed(c)

    listener = c.Listen(chat_pb2.ListenRequest(room_id=room), timeout=DEADLINE)
    alice = Chat(b, room, "alice")
    assert alice.next() == joined("alice")
    bob = Chat(c, room, "bob")
    assert [bob.next(), bob.next()] == [joined("alice"), joined("bob")]  # the shared history
    assert alice.next() == joined("bob")

    with pytest.raises(grpc.RpcError) as taken:  # names are unique across processes
        Chat(a, room, "alice").next()
    assert taken.value.code() == grpc.StatusCode.ALREADY_EXISTS

    alice.say("hi bob")
    assert bob.next() == Message(name="alice", message="hi bob")  # stamped, not echoed to alice
    assert post(a, room, "news") == 1
    assert alice.next() == bob.next() == Message(name="poster", message="news")
    alice.close()
    assert list(alice.call) == [] and alice.call.code() == grpc.StatusCode.OK
    assert bob.next() == left("alice")

    private_member = Chat(c, hidden, "carol")  # joinable by id on any process
    assert private_member.next() == joined("carol")
    b.DeleteChatRoom(chat_pb2.DeleteChatRoomRequest(room_id=hidden), timeout=DEADLINE)
    assert list(private_member.call) == [CLOSING]

    a.DeleteChatRoom(chat_pb2.DeleteChatRoomRequest(room_id=room), timeout=DEADLINE)
    assert list(bob.call) == [CLOSING] and bob.call.code() == grpc.StatusCode.OK
    bob.close()
    assert list(listener) == [
        joined("alice"),
        joined("bob"),
        Message(name="alice", message="hi bob"),
        Message(name="poster", message="news"),
        left("alice"),
        CLOSING,
    ]
    for service in (a, b, c):
        with pytest.raises(grpc.RpcError) as gone:
            service.DeleteChatRoom(chat_pb2.DeleteChatRoomRequest(room_id=room), timeout=DEADLINE)
        assert gone.value.code() == grpc.StatusCode.NOT_FOUND
        assert room not in listed(service)
    with pytest.raises(grpc.RpcError) as unknown:
        post(b, "0" * 20, "lost")
    assert unknown.value.code() == grpc.StatusCode.NOT_FOUND


def test_joiners_on_other_processes_get_each_message_exactly_once(
    three: list[ChatServer], channels: list[grpc.Channel]
) -> None:
    """Members join on two processes while a third posts: each gets a gapless, duplicate-free run."""
    a, b, c = (stub(server, channels) for server in three)
    room = create(a)
    total = 300
    posting = threading.Thread(target=lambda: [post(a, room, str(i)) for i in range(total)])
    posting.start()
    members = [Chat((b, c)[i % 2], room, f"m{i}") for i in range(6)]
    posting.join(DEADLINE)
    assert post(a, room, "end") == 1
    for member in members:
        numbers = []
        while (message := member.next()) != Message(name="poster", message="end"):
            if message.name == "poster":
                numbers.append(int(message.message))
        member.close()
        assert numbers and numbers == list(range(numbers[0], total)), numbers


def test_a_burst_across_processes_never_cuts_off_readers_and_cuts_off_the_member_that_never_reads(
    backend: str,
) -> None:
    """test_chat_load's burst, spread: the sender on one process, readers on it and another, the member that
    never reads on the other. Its process's mirror of the room holds back (the burst waits in Redis) and
    then cuts it off, without losing or reordering a message for the readers there."""
    servers = chatservers(2, backend, "--hold-back", str(HOLD_BACK), "--no-access-log")
    try:
        check_burst(sender_at=servers[0], readers_at=servers, never_reader_at=servers[1])
    finally:
        stop_all(servers)


@pytest.mark.parametrize("shared", [False, True], ids=["memory", "redis"])
def test_a_post_burst_keeps_its_order_across_rooms_and_stops_at_a_bad_message(
    shared: bool, backend: str, channels: list[grpc.Channel]
) -> None:
    """Requests that arrive together are published together (one log append per room and burst when
    shared): still each in order, to its own room, and those after a refused one are not published."""
    servers = chatservers(2, backend) if shared else [start_chatserver("--grace", "0.5")]
    try:
        poster, reader = stub(servers[0], channels), stub(servers[-1], channels)
        room_a, room_b = create(poster), create(poster)
        a, b = Chat(reader, room_a, "a"), Chat(reader, room_b, "b")
        assert (a.next(), b.next()) == (joined("a"), joined("b"))
        burst = [("a", "1"), ("a", "2"), ("b", "3"), ("a", "4"), ("a", ""), ("a", "5")]  # "": no name
        requests = [
            chat_pb2.PostRequest(
                room_id={"a": room_a, "b": room_b}[room], message=Message(name=text, message=text)
            )
            for room, text in burst
        ]
        with pytest.raises(grpc.RpcError) as refused:
            poster.Post(iter(requests), timeout=DEADLINE)
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert post(poster, room_a, "end") == post(poster, room_b, "end") == 1
        heard: dict[str, list[str]] = {"a": [], "b": []}
        for name, chat in (("a", a), ("b", b)):
            while (message := chat.next()) != Message(name="poster", message="end"):
                heard[name].append(message.message)
        assert heard == {"a": ["1", "2", "4"], "b": ["3"]}
        a.close()
        b.close()
    finally:
        stop_all(servers)


async def test_a_mirror_the_log_was_trimmed_past_cuts_off_its_subscribers(redis: Redis) -> None:
    """A process's reader that falls more than the log's length behind cannot deliver what was trimmed: its
    subscribers are cut off with RESOURCE_EXHAUSTED, never left with a gap they cannot see."""
    settings = RoomSettings(buffer_size=4, history_length=0)
    received: list[str] = []
    with trio.fail_after(DEADLINE):
        async with RedisBackend.open(
            redis.url(next(_databases)), settings, RedisSettings(stream_length=10)
        ) as rooms:
            room = await rooms.create()
            with pytest.raises(RpcError) as cut_off:
                async with rooms.listen(room) as listener:
                    # One script call: the log is trimmed (to about 10, a node of 100 at a time) before the
                    # mirror reads any of it.
                    await rooms.post(room, [RoomMessage("p", str(i)) for i in range(300)])
                    async for message in listener:
                        received.append(message.text)
    assert cut_off.value.code is StatusCode.RESOURCE_EXHAUSTED
    assert cut_off.value.message == "too slow: this server fell more than 10 messages behind the room"
    assert received == [str(i) for i in range(len(received))]  # what it got has no gap


def test_a_killed_process_leaves_no_ghosts(backend: str, channels: list[grpc.Channel]) -> None:
    servers = chatservers(3, backend, "--member-lease", str(LEASE))
    try:
        a, b, c = (stub(server, channels) for server in servers)
        room = create(a)
        doomed = Chat(a, room, "alice")
        assert doomed.next() == joined("alice")
        bob = Chat(b, room, "bob")
        assert [bob.next(), bob.next()] == [joined("alice"), joined("bob")]

        servers[0].proc.signal(signal.SIGKILL)
        killed = time.monotonic()
        assert bob.next() == left("alice")
        # The lease expires, then a survivor's next renewal (every lease/3) reaps it.
        assert time.monotonic() - killed < LEASE * 4 / 3 + 1.5

        again = Chat(c, room, "alice")  # the name is free again, the room and history survived
        assert [again.next() for _ in range(4)] == [
            joined("alice"),
            joined("bob"),
            left("alice"),
            joined("alice"),
        ]
        assert room in listed(c)
        again.close()
        bob.close()
    finally:
        stop_all(servers)


def test_redis_stopped_and_restarted_under_a_running_server(
    tmp_path: Path, channels: list[grpc.Channel]
) -> None:
    """Calls fail with UNAVAILABLE and one log line while Redis is away; then all recovers by itself."""
    port = free_port()
    persistent = ("--dir", str(tmp_path), "--save", "", "--appendonly", "yes", "--appendfsync", "always")
    redis = Redis(port, *persistent)
    server = start_chatserver("--grace", "0.5", "--backend", f"redis://127.0.0.1:{port}/0")
    try:
        service = stub(server, channels)
        room = create(service)
        member = Chat(service, room, "alice")
        assert member.next() == joined("alice")

        redis.stop()
        for _ in range(3):
            with pytest.raises(grpc.RpcError) as away:
                create(service)
            assert away.value.code() == grpc.StatusCode.UNAVAILABLE
        server.proc.expect("unavailable .*calls fail with UNAVAILABLE, retrying", "stderr")

        redis = Redis(port, *persistent)
        server.proc.expect("is back", "stderr")
        assert room in listed(service)  # acknowledged before the outage: still there
        assert post(service, room, "after the outage") == 1
        assert member.next() == Message(name="poster", message="after the outage")  # the reader resumed
        assert [line for line in server.proc.lines("stderr") if "unavailable" in line][1:] == []
        member.close()
    finally:
        server.stop()
        redis.stop()


def test_workers_share_one_port_and_stop_together(backend: str, channels: list[grpc.Channel]) -> None:
    server = start_chatserver("--grace", "0.5", "--backend", backend, "--workers", "2")
    try:
        for _ in range(2):
            server.proc.expect(r"\[(\d+)\]: listening on 127\.0\.0\.1:\d+ \(plaintext\)", "stderr")
        rooms = {create(stub(server, channels)) for _ in range(4)}  # a connection each
        assert rooms <= listed(stub(server, channels))
        server.proc.signal(signal.SIGTERM)
        assert server.proc.wait() == 0
        assert sum("stopped" in line for line in server.proc.lines("stderr")) == 3
    finally:
        server.stop()


def test_workers_stop_when_their_parent_is_killed(backend: str) -> None:
    server = start_chatserver("--grace", "0.5", "--backend", backend, "--workers", "2")
    try:
        for _ in range(2):
            server.proc.expect(r"\[(\d+)\]: listening on 127\.0\.0\.1:\d+ \(plaintext\)", "stderr")
        server.proc.signal(signal.SIGKILL)
        for _ in range(2):  # each worker is told (SIGTERM) and shuts down as usual
            server.proc.expect(r"\[\d+\]: stopped", "stderr")
    finally:
        server.stop()


def test_a_backend_url_with_tls_and_a_password(tmp_path: Path, channels: list[grpc.Channel]) -> None:
    ca = trustme.CA()
    files = Tls(ca, ca.issue_cert("127.0.0.1")).write_files(tmp_path)
    port = free_port()
    tls = [
        "--tls-cert-file",
        str(files.cert),
        "--tls-key-file",
        str(files.key),
        "--tls-ca-cert-file",
        str(files.ca),
    ]
    redis = Redis(0, "--tls-port", str(port), "--tls-auth-clients", "no", "--requirepass", "secret", *tls)
    try:
        url = f"rediss://:secret@127.0.0.1:{port}/0?ssl_ca_certs={files.ca}"
        servers = chatservers(2, url)
        try:
            room = create(stub(servers[0], channels))
            assert room in listed(stub(servers[1], channels))
        finally:
            stop_all(servers)
        refused = cli("chatserver", "--port", "0", "--backend", url.replace("secret", "wrong"))
        assert refused.code == 1
        assert refused.error_line() == (
            f"error: rediss://***@127.0.0.1:{port}/0?ssl_ca_certs={files.ca} refused to let us in: "
            "invalid username-password pair or user is disabled (UNAUTHENTICATED)"
        )
    finally:
        redis.stop()


def test_workers_without_a_shared_backend_is_one_line_error() -> None:
    result = cli("chatserver", "--workers", "2")
    assert result.code == 1
    assert (
        result.error_line() == "error: --workers needs a shared backend: add --backend redis://HOST:PORT/DB"
    )


def test_unreachable_redis_at_start_is_one_line_error() -> None:
    url = f"redis://:secret@127.0.0.1:{free_port()}/0"
    result = cli("chatserver", "--port", "0", "--backend", url)
    assert result.code == 1
    line = result.error_line()
    assert line.startswith(f"error: cannot reach {url.replace(':secret', '***')}: "), line  # no password
    assert line.endswith("(UNAVAILABLE)")
