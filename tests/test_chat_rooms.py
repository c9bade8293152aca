"""chat.rooms (registry, join/leave, fan-out, slow-reader cut-off, closing: no transport), then chat.service
and chat.catalog over the wire, with trio_grpc and grpcio clients."""

from __future__ import annotations

import dataclasses
import functools
import logging
import re
from collections.abc import AsyncIterator

import grpc  # type: ignore[import-untyped]
import pytest
import trio
import trio.testing

import trio_grpc
from chat._proto.rpc import catalog_pb2, chat_pb2
from chat.catalog import CatalogService
from chat.rooms import (
    CLOSING_MESSAGE,
    JOINED,
    LEFT,
    Message,
    RoomRegistry,
    RoomSettings,
    Subscription,
)
from chat.service import ChatService
from trio_grpc import RpcError, StatusCode

TIMEOUT = 10


async def rest(subscription: Subscription) -> list[Message]:
    """Everything still to come on a subscription whose room has been closed."""
    return [message async for message in subscription]


def joined(name: str) -> Message:
    return Message(name, JOINED)


def left(name: str) -> Message:
    return Message(name, LEFT)


async def test_create_list_and_private_rooms() -> None:
    with trio.fail_after(TIMEOUT):
        registry = RoomRegistry()
        public = [registry.create() for _ in range(3)]
        private = registry.create(private=True)
        assert all(re.fullmatch(r"[0-9a-f]{20}", room_id) for room_id in [*public, private])
        assert len({*public, private}) == 4
        assert sorted(registry.public_room_ids()) == sorted(public)
        async with registry.join(private, "a") as a:  # joinable by id although never listed
            registry.delete(private)
            assert await rest(a) == [joined("a"), CLOSING_MESSAGE]


async def test_join_errors() -> None:
    with trio.fail_after(TIMEOUT):
        registry = RoomRegistry(RoomSettings(max_members=2))
        room = registry.create()
        with pytest.raises(RpcError) as info:
            async with registry.join(room, ""):
                pass
        assert info.value.code is StatusCode.INVALID_ARGUMENT
        with pytest.raises(RpcError) as info:
            async with registry.join("0" * 20, "a"):
                pass
        assert info.value.code is StatusCode.NOT_FOUND
        assert info.value.message == f"room {'0' * 20} does not exist"
        async with registry.join(room, "a") as a:
            with pytest.raises(RpcError) as info:
                async with registry.join(room, "a"):
                    pass
            assert info.value.code is StatusCode.ALREADY_EXISTS
            async with registry.join(room, "b"):
                with pytest.raises(RpcError) as info:
                    async with registry.join(room, "c"):
                        pass
                assert info.value.code is StatusCode.RESOURCE_EXHAUSTED
                assert "full" in info.value.message
            async with registry.join(room, "b"):  # the name is free again once its holder left
                pass
            registry.delete(room)
            # Refused joins announced nothing.
            assert await rest(a) == [
                joined("a"),
                joined("b"),
                left("b"),
                joined("b"),
                left("b"),
                CLOSING_MESSAGE,
            ]


async def test_joiner_gets_last_history_oldest_first_and_others_get_join_notice() -> None:
    with trio.fail_after(TIMEOUT):
        registry = RoomRegistry()
        room = registry.create()
        async with registry.listen(room) as listener, registry.join(room, "a") as a:
            for i in range(15):
                await a.say(f"m{i}")
            async with registry.join(room, "b") as b:
                registry.delete(room)
                expected_replay = [Message("a", f"m{i}") for i in range(6, 15)] + [joined("b")]
                assert await rest(b) == [*expected_replay, CLOSING_MESSAGE]
                assert await rest(a) == [joined("a"), joined("b"), CLOSING_MESSAGE]
                said = [Message("a", f"m{i}") for i in range(15)]
                assert await rest(listener) == [joined("a"), *said, joined("b"), CLOSING_MESSAGE]


async def test_history_length_is_configurable() -> None:
    with trio.fail_after(TIMEOUT):
        registry = RoomRegistry(RoomSettings(history_length=3))
        room = registry.create()
        for text in "123":
            await registry.post(room, Message("x", text))
        async with registry.join(room, "a") as a, registry.listen(room) as listener:
            registry.delete(room)
            replay = [Message("x", "2"), Message("x", "3"), joined("a")]
            assert await rest(a) == [*replay, CLOSING_MESSAGE]
            assert await rest(listener) == [*replay, CLOSING_MESSAGE]


async def test_say_is_stamped_never_echoed_and_reaches_members_and_listeners() -> None:
    with trio.fail_after(TIMEOUT):
        registry = RoomRegistry()
        room = registry.create()
        async with (
            registry.join(room, "a") as a,
            registry.join(room, "b") as b,
            registry.listen(room) as listener,
        ):
            await a.say("hello")
            await b.say("hi a")
            async with registry.join(room, "c") as c:  # history has both lines
                registry.delete(room)
                assert await rest(a) == [
                    joined("a"),
                    joined("b"),
                    Message("b", "hi a"),
                    joined("c"),
                    CLOSING_MESSAGE,
                ]
                assert await rest(b) == [
                    joined("a"),
                    joined("b"),
                    Message("a", "hello"),
                    joined("c"),
                    CLOSING_MESSAGE,
                ]
                lines = [Message("a", "hello"), Message("b", "hi a"), joined("c")]
                assert await rest(listener) == [joined("a"), joined("b"), *lines, CLOSING_MESSAGE]
                assert await rest(c) == [joined("a"), joined("b"), *lines, CLOSING_MESSAGE]


async def test_leaving_announces_once_however_the_block_ends() -> None:
    with trio.fail_after(TIMEOUT):
        registry = RoomRegistry()
        room = registry.create()
        async with registry.join(room, "a") as a, registry.listen(room) as listener:
            async with registry.join(room, "normal"):
                pass
            with pytest.raises(ValueError):
                async with registry.join(room, "failing"):
                    raise ValueError

            async def stays_until_cancelled(task_status: trio.TaskStatus[None]) -> None:
                async with registry.join(room, "cancelled"):
                    task_status.started()
                    await trio.sleep_forever()

            async with trio.open_nursery() as nursery:
                await nursery.start(stays_until_cancelled)
                nursery.cancel_scope.cancel()

            async with registry.join(room, "gone") as gone:
                await gone.say("before")
            await gone.say("after leaving")  # dropped: no longer a member

            registry.delete(room)
            names = ["normal", "failing", "cancelled"]
            notices = [m for name in names for m in (joined(name), left(name))]
            expected = [*notices, joined("gone"), Message("gone", "before"), left("gone"), CLOSING_MESSAGE]
            assert await rest(a) == [joined("a"), *expected]
            assert await rest(listener) == [joined("a"), *expected]


async def test_leave_announces_at_once_and_leaves_the_buffer_readable() -> None:
    with trio.fail_after(TIMEOUT):
        registry = RoomRegistry()
        room = registry.create()
        async with registry.join(room, "a") as a:
            async with registry.join(room, "b") as b:
                await a.say("before")
                b.leave()
                await a.say("after")  # b no longer receives
                await b.say("dropped")
                async with registry.join(room, "b"):  # the name is free at once
                    pass
                assert await rest(b) == [joined("a"), joined("b"), Message("a", "before")]
            registry.delete(room)
            assert await rest(a) == [
                joined("a"),
                joined("b"),
                left("b"),
                joined("b"),
                left("b"),
                CLOSING_MESSAGE,
            ]


async def test_listener_is_not_a_member() -> None:
    with trio.fail_after(TIMEOUT):
        registry = RoomRegistry(RoomSettings(max_members=1))
        room = registry.create()
        async with (
            registry.listen(room) as listener,
            registry.join(room, "a") as a,  # a listener does not take a member's place
        ):
            async with registry.listen(room) as second:
                pass  # listeners come and go without a notice
            registry.delete(room)
            assert await rest(a) == [joined("a"), CLOSING_MESSAGE]
            assert await rest(listener) == [joined("a"), CLOSING_MESSAGE]
            assert await rest(second) == []  # its block ended: no closing message, its buffer freed
        with pytest.raises(RpcError) as info:
            async with registry.listen(room):
                pass
        assert info.value.code is StatusCode.NOT_FOUND


async def test_post_reaches_everyone_and_checks_room_first() -> None:
    with trio.fail_after(TIMEOUT):
        registry = RoomRegistry()
        room = registry.create()
        with pytest.raises(RpcError) as info:
            await registry.post("f" * 20, Message("", "x"))
        assert info.value.code is StatusCode.NOT_FOUND
        with pytest.raises(RpcError) as info:
            await registry.post(room, Message("", "x"))
        assert info.value.code is StatusCode.INVALID_ARGUMENT
        async with registry.join(room, "a") as a, registry.listen(room) as listener:
            await registry.post(
                room, Message("a", "posted under a's name")
            )  # members get posts, even "their own"
            await registry.post(room, Message("bot", ""))
            registry.delete(room)
            posted = [Message("a", "posted under a's name"), Message("bot", "")]
            assert await rest(a) == [joined("a"), *posted, CLOSING_MESSAGE]
            assert await rest(listener) == [joined("a"), *posted, CLOSING_MESSAGE]


async def test_delete() -> None:
    with trio.fail_after(TIMEOUT):
        registry = RoomRegistry()
        room, other = registry.create(), registry.create()
        with pytest.raises(RpcError) as info:
            registry.delete("nope")
        assert info.value.code is StatusCode.NOT_FOUND
        async with registry.join(room, "a") as a:
            registry.delete(room)
            assert registry.public_room_ids() == [other]
            await a.say("into the void")  # dropped, no error
            assert await rest(a) == [joined("a"), CLOSING_MESSAGE]
            assert await rest(a) == []
        # The block ended without error and without a leave notice into a closed room.
        with pytest.raises(RpcError) as info:
            async with registry.join(room, "a"):
                pass
        assert info.value.code is StatusCode.NOT_FOUND
        with pytest.raises(RpcError) as info:
            registry.delete(room)
        assert info.value.code is StatusCode.NOT_FOUND


async def test_delete_delivers_closing_message_through_a_full_buffer() -> None:
    with trio.fail_after(TIMEOUT):
        registry = RoomRegistry(RoomSettings(buffer_size=4, history_length=2))
        room = registry.create()
        async with (
            registry.join(room, "a") as a,
            registry.join(room, "b") as b,
            registry.listen(room) as listener,
        ):
            for i in range(2):
                await a.say(f"m{i}")  # b: 2 replayed + 2 = full; listener: 2 replayed + 2 = full
            registry.delete(room)
            said = [Message("a", "m0"), Message("a", "m1")]
            assert await rest(b) == [joined("a"), joined("b"), *said, CLOSING_MESSAGE]
            assert await rest(listener) == [joined("a"), joined("b"), *said, CLOSING_MESSAGE]


async def test_close_all_closes_every_room_like_delete() -> None:
    with trio.fail_after(TIMEOUT):
        registry = RoomRegistry()
        rooms = [registry.create(), registry.create(private=True)]
        async with registry.join(rooms[0], "a") as a, registry.listen(rooms[1]) as listener:
            registry.close_all()
            assert registry.public_room_ids() == []
            assert await rest(a) == [joined("a"), CLOSING_MESSAGE]
            assert await rest(listener) == [CLOSING_MESSAGE]
        with pytest.raises(RpcError) as info:
            async with registry.join(rooms[1], "a"):
                pass
        assert info.value.code is StatusCode.NOT_FOUND


async def test_slow_member_holds_the_room_back_then_is_cut_off(autojump_clock: trio.abc.Clock) -> None:
    with trio.fail_after(TIMEOUT):
        registry = RoomRegistry()  # default buffer: 256 messages, hold-back 2 s
        room = registry.create()
        slow_error: list[RpcError] = []
        slow_ended = trio.Event()
        received: dict[str, list[Message]] = {}

        async def slow(task_status: trio.TaskStatus[None]) -> None:
            # Stands for a handler stuck sending to a client that stopped reading.
            with pytest.raises(RpcError) as info:
                async with registry.join(room, "slow"):
                    task_status.started()
                    await trio.sleep_forever()
            slow_error.append(info.value)
            slow_ended.set()

        async def reader(name: str, task_status: trio.TaskStatus[None]) -> None:
            async with registry.join(room, name) as member:
                task_status.started()
                received[name] = [message async for message in member]

        async with trio.open_nursery() as nursery:
            await nursery.start(slow)
            names = [f"reader{i}" for i in range(50)]
            for name in names:
                await nursery.start(reader, name)
            async with registry.join(room, "speaker") as speaker:
                # slow holds its own join notice and 50 others + the speaker's: 52; 204 more fill it.
                for i in range(204):
                    await speaker.say(f"m{i}")
                filled = trio.current_time()
                await speaker.say("m204")  # held back until slow is cut off
                assert trio.current_time() - filled == pytest.approx(2.0)
                for i in range(205, 300):  # the others carry on at once
                    await speaker.say(f"m{i}")
                assert trio.current_time() - filled == pytest.approx(2.0)
                await trio.testing.wait_all_tasks_blocked()
                assert slow_ended.is_set()
                registry.delete(room)

        assert slow_error[0].code is StatusCode.RESOURCE_EXHAUSTED
        assert slow_error[0].message == "too slow: fell 256 messages behind"
        said = [Message("speaker", f"m{i}") for i in range(300)]
        for name in names:
            messages = received[name]
            assert [m for m in messages if m.name == "speaker" and m.text != JOINED] == said
            assert messages.count(left("slow")) == 1
            assert messages.index(left("slow")) == messages.index(said[204]) - 1  # cut off, then m204
            assert messages[-1] == CLOSING_MESSAGE


async def test_a_reader_that_catches_up_within_the_hold_back_is_never_cut_off(
    autojump_clock: trio.abc.Clock,
) -> None:
    with trio.fail_after(TIMEOUT):
        registry = RoomRegistry(RoomSettings(buffer_size=8, history_length=2))
        room = registry.create()
        async with registry.join(room, "late") as late, registry.join(room, "speaker") as speaker:
            got: list[Message] = []

            async def read_late() -> None:
                await trio.sleep(1.5)  # after the buffer filled: the speaker waits meanwhile
                async for message in late:
                    got.append(message)
                    if message == Message("speaker", "m99"):
                        return

            async with trio.open_nursery() as nursery:
                nursery.start_soon(read_late)
                start = trio.current_time()
                for i in range(100):
                    await speaker.say(f"m{i}")
                # Held back once, while the late reader slept; never long enough to cut it off.
                assert trio.current_time() - start == pytest.approx(1.5)
        said = [Message("speaker", f"m{i}") for i in range(100)]
        assert [m for m in got if m.text != JOINED] == said


async def test_buffers_are_bounded_in_bytes_too(autojump_clock: trio.abc.Clock) -> None:
    with trio.fail_after(TIMEOUT):
        registry = RoomRegistry(RoomSettings(buffer_bytes=10_000, hold_back=0.5))
        room = registry.create()
        async with registry.join(room, "speaker") as speaker:
            with pytest.raises(RpcError) as info:
                async with registry.listen(room):
                    start = trio.current_time()
                    for _ in range(5):
                        await speaker.say("x" * 3000)  # the 4th makes 12,000 bytes buffered: full
                    await trio.sleep_forever()
            assert info.value.code is StatusCode.RESOURCE_EXHAUSTED
            assert info.value.message == "too slow: fell 10000 bytes behind"
            assert trio.current_time() - start == pytest.approx(0.5)


async def test_slow_listener_is_cut_off_without_a_notice(autojump_clock: trio.abc.Clock) -> None:
    with trio.fail_after(TIMEOUT):
        registry = RoomRegistry(RoomSettings(buffer_size=3, history_length=1))
        room = registry.create()
        async with registry.join(room, "a") as a:
            with pytest.raises(RpcError) as info:
                async with registry.listen(room):  # replay: a's join notice
                    await a.say("1")
                    await a.say("2")  # full
                    await a.say("3")  # waits 2 s, cuts the listener off, goes out
                    await trio.sleep_forever()  # the block's body was cancelled: ends here
            assert info.value.code is StatusCode.RESOURCE_EXHAUSTED
            assert info.value.message == "too slow: fell 3 messages behind"
            registry.delete(room)
            assert await rest(a) == [joined("a"), CLOSING_MESSAGE]


async def test_leave_notices_never_wait_for_a_full_buffer() -> None:
    with trio.fail_after(TIMEOUT):
        registry = RoomRegistry(RoomSettings(buffer_size=2, history_length=0))
        room = registry.create()
        async with registry.listen(room) as listener:
            async with registry.join(room, "a"), registry.join(room, "b"):
                pass  # the listener's buffer is full with the two join notices: the leaves go in anyway
            registry.delete(room)
            notices = [joined("a"), joined("b"), left("b"), left("a"), CLOSING_MESSAGE]
            assert await rest(listener) == notices


async def race_join_with_say(speak_delay: int, join_delay: int) -> list[Message]:
    """a says "raced" while b joins, each after some checkpoints; what b received until the room closed."""
    registry = RoomRegistry()
    room = registry.create()
    received: list[Message] = []
    said = trio.Event()
    async with registry.join(room, "a") as a:

        async def speak() -> None:
            for _ in range(speak_delay):
                await trio.lowlevel.checkpoint()
            await a.say("raced")
            said.set()

        async def join() -> None:
            for _ in range(join_delay):
                await trio.lowlevel.checkpoint()
            async with registry.join(room, "b") as b:
                await said.wait()
                registry.delete(room)
                received.extend(await rest(b))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(speak)
            nursery.start_soon(join)
    return received


async def test_message_published_during_a_join_reaches_the_joiner_exactly_once() -> None:
    with trio.fail_after(TIMEOUT):
        orders_seen = set()
        for i in range(300):
            received = await race_join_with_say(speak_delay=i % 5, join_delay=i // 5 % 5)
            assert received.count(Message("a", "raced")) == 1
            # In the replay (said before the join) or live (after): the test saw both.
            orders_seen.add(received.index(Message("a", "raced")) < received.index(joined("b")))
        assert orders_seen == {True, False}


async def test_room_and_member_events_are_logged(caplog: pytest.LogCaptureFixture) -> None:
    with trio.fail_after(TIMEOUT):
        caplog.set_level(logging.INFO, logger="chat.rooms")
        registry = RoomRegistry()
        room = registry.create()
        async with registry.join(room, "a"):
            pass
        registry.delete(room)
        assert [r.getMessage() for r in caplog.records] == [
            f"room {room} created",
            f"'a' joined room {room}",
            f"'a' left room {room}",
            f"room {room} deleted",
        ]


def test_limits() -> None:
    registry = RoomRegistry(RoomSettings(max_rooms=2))
    registry.create()
    registry.create(private=True)
    with pytest.raises(RpcError) as info:
        registry.create()
    assert info.value.code is StatusCode.RESOURCE_EXHAUSTED
    for bad in [
        {"buffer_size": 0},
        {"max_members": 0},
        {"max_rooms": 0},
        {"history_length": -1},
        {"buffer_size": 5, "history_length": 6},
    ]:
        with pytest.raises(ValueError):
            RoomSettings(**bad)


# chat.service and chat.catalog over the wire: a trio_grpc server on 127.0.0.1, trio_grpc and grpcio clients.

CHAT = chat_pb2.DESCRIPTOR.services_by_name["ChatService"]
CATALOG = catalog_pb2.DESCRIPTOR.services_by_name["Catalog"]


@dataclasses.dataclass
class Served:
    service: ChatService
    server: trio_grpc.Server
    address: str


@pytest.fixture
async def served(nursery: trio.Nursery) -> Served:
    service = ChatService()
    server = trio_grpc.Server(
        [trio_grpc.bind_service(CHAT, service), trio_grpc.bind_service(CATALOG, CatalogService())]
    )
    server.on_shutdown(service.rooms.close_all)
    port = await nursery.start(functools.partial(server.serve_tcp, 0, host="127.0.0.1"))
    return Served(service, server, f"127.0.0.1:{port}")


@pytest.fixture
async def channel(served: Served) -> AsyncIterator[trio_grpc.Channel]:
    async with trio_grpc.Channel(served.address) as channel:
        yield channel


@pytest.fixture
def chat(channel: trio_grpc.Channel) -> trio_grpc.Stub:
    return trio_grpc.Stub(channel, CHAT)


@pytest.fixture
def catalog(channel: trio_grpc.Channel) -> trio_grpc.Stub:
    return trio_grpc.Stub(channel, CATALOG)


def wire(name: str, text: str) -> chat_pb2.Message:
    return chat_pb2.Message(name=name, message=text)


def join_request(room_id: str, name: str) -> chat_pb2.ChatMessage:
    return chat_pb2.ChatMessage(join=chat_pb2.JoinChat(room_id=room_id, name=name))


def say_request(text: str, name: str = "") -> chat_pb2.ChatMessage:
    return chat_pb2.ChatMessage(message=chat_pb2.Message(name=name, message=text))


async def expect_status(code: StatusCode, call: trio_grpc.Call) -> RpcError:
    with pytest.raises(RpcError) as info:
        async for _ in call:
            pass
    assert info.value.code is code, info.value
    return info.value


async def test_service_create_list_delete(chat: trio_grpc.Stub) -> None:
    with trio.fail_after(TIMEOUT):
        public = await chat.CreateChatRoom(chat_pb2.CreateChatRoomRequest())
        private = await chat.CreateChatRoom(chat_pb2.CreateChatRoomRequest(private=True))
        assert all(re.fullmatch(r"[0-9a-f]{20}", room.room_id) for room in [public, private])
        listed = await chat.ListChatRooms(chat_pb2.ListChatRoomsRequest())
        assert [room.room_id for room in listed.chat_rooms] == [public.room_id]
        deleted = await chat.DeleteChatRoom(chat_pb2.DeleteChatRoomRequest(room_id=public.room_id))
        assert deleted.room_id == public.room_id
        assert (await chat.ListChatRooms(chat_pb2.ListChatRoomsRequest())).chat_rooms == []
        with pytest.raises(RpcError) as info:
            await chat.DeleteChatRoom(chat_pb2.DeleteChatRoomRequest(room_id=public.room_id))
        assert info.value.code is StatusCode.NOT_FOUND
        assert info.value.message == f"room {public.room_id} does not exist"


async def test_service_chat_join_errors(chat: trio_grpc.Stub) -> None:
    with trio.fail_after(TIMEOUT):
        room_id = (await chat.CreateChatRoom(chat_pb2.CreateChatRoomRequest())).room_id
        async with chat.Chat() as call:  # half-closed before anything was sent
            await call.done_writing()
            await expect_status(StatusCode.INVALID_ARGUMENT, call)
        for first, code in [
            (say_request("hello", "a"), StatusCode.INVALID_ARGUMENT),
            (join_request(room_id, ""), StatusCode.INVALID_ARGUMENT),
            (join_request("0" * 20, "a"), StatusCode.NOT_FOUND),
        ]:
            async with chat.Chat() as call:
                await call.send(first)
                await expect_status(code, call)
        async with chat.Chat() as a:
            await a.send(join_request(room_id, "a"))
            assert await a.receive() == wire("a", JOINED)
            async with chat.Chat() as again:
                await again.send(join_request(room_id, "a"))
                await expect_status(StatusCode.ALREADY_EXISTS, again)
            await a.send(join_request(room_id, "a"))  # a second join on the same call
            error = await expect_status(StatusCode.INVALID_ARGUMENT, a)
            assert "already joined" in error.message


async def test_service_chat_conversation_and_leaving(chat: trio_grpc.Stub) -> None:
    with trio.fail_after(TIMEOUT):
        room_id = (await chat.CreateChatRoom(chat_pb2.CreateChatRoomRequest())).room_id
        async with chat.Listen(chat_pb2.ListenRequest(room_id=room_id)) as listener:
            async with chat.Chat() as a:
                await a.send(join_request(room_id, "a"))
                assert await a.receive() == wire("a", JOINED)
                async with chat.Chat() as b:
                    await b.send(join_request(room_id, "b"))
                    assert [await b.receive(), await b.receive()] == [wire("a", JOINED), wire("b", JOINED)]
                    assert await a.receive() == wire("b", JOINED)
                    await b.send(say_request("hi a", name="spoofed"))
                    assert await a.receive() == wire("b", "hi a")  # stamped with b's name
                    await a.send(say_request("hi b"))
                    assert await b.receive() == wire("a", "hi b")
                    await b.done_writing()  # half-close: leave, and the call ends with OK
                    assert [m async for m in b] == []  # nothing echoed
                    assert b.code is StatusCode.OK
                    assert await a.receive() == wire("b", LEFT)
                # Leaving the block before the call ended cancels it: the server announces the leave.
            expected = [
                wire("a", JOINED),
                wire("b", JOINED),
                wire("b", "hi a"),
                wire("a", "hi b"),
                wire("b", LEFT),
                wire("a", LEFT),
            ]
            assert [await listener.receive() for _ in expected] == expected


async def test_service_join_and_half_close_at_once_still_gets_the_replay(chat: trio_grpc.Stub) -> None:
    with trio.fail_after(TIMEOUT):
        room_id = (await chat.CreateChatRoom(chat_pb2.CreateChatRoomRequest())).room_id
        await chat.Post([chat_pb2.PostRequest(room_id=room_id, message=wire("bot", "hello"))])
        async with chat.Chat() as call:  # as grpcurl -d '{"join": ...}' does
            await call.send(join_request(room_id, "a"))
            await call.done_writing()
            assert [m async for m in call] == [wire("bot", "hello"), wire("a", JOINED)]
            assert call.code is StatusCode.OK


async def test_service_listen_post_and_delete(chat: trio_grpc.Stub) -> None:
    with trio.fail_after(TIMEOUT):
        room_id = (await chat.CreateChatRoom(chat_pb2.CreateChatRoomRequest())).room_id
        with pytest.raises(RpcError) as info:
            async with chat.Listen(chat_pb2.ListenRequest(room_id="f" * 20)) as call:
                await call.receive()
        assert info.value.code is StatusCode.NOT_FOUND
        posts = [chat_pb2.PostRequest(room_id=room_id, message=wire(f"p{i}", str(i))) for i in range(3)]
        assert (await chat.Post(posts)).accepted == 3
        async with chat.Listen(chat_pb2.ListenRequest(room_id=room_id)) as listener:
            assert [await listener.receive() for _ in range(3)] == [p.message for p in posts]
            async with chat.Chat() as member:
                await member.send(join_request(room_id, "m"))
                replay = [p.message for p in posts] + [wire("m", JOINED)]
                assert [await member.receive() for _ in replay] == replay
                assert await listener.receive() == wire("m", JOINED)
                # Checked per request, room first: the call ends with the first failure, earlier posts stay.
                for bad, code in [
                    (chat_pb2.PostRequest(room_id="f" * 20, message=wire("", "x")), StatusCode.NOT_FOUND),
                    (
                        chat_pb2.PostRequest(room_id=room_id, message=wire("", "x")),
                        StatusCode.INVALID_ARGUMENT,
                    ),
                ]:
                    with pytest.raises(RpcError) as info:
                        await chat.Post([posts[0], bad, posts[1]])
                    assert info.value.code is code
                    assert await member.receive() == posts[0].message
                    assert await listener.receive() == posts[0].message
                await chat.DeleteChatRoom(chat_pb2.DeleteChatRoomRequest(room_id=room_id))
                closing = wire(CLOSING_MESSAGE.name, CLOSING_MESSAGE.text)
                assert [m async for m in member] == [closing]
                assert member.code is StatusCode.OK
                assert [m async for m in listener] == [closing]
                assert listener.code is StatusCode.OK


async def test_service_shutdown_closes_every_room(served: Served, chat: trio_grpc.Stub) -> None:
    with trio.fail_after(TIMEOUT):
        room_id = (await chat.CreateChatRoom(chat_pb2.CreateChatRoomRequest(private=True))).room_id
        closing = wire(CLOSING_MESSAGE.name, CLOSING_MESSAGE.text)
        async with chat.Chat() as member, chat.Listen(chat_pb2.ListenRequest(room_id=room_id)) as listener:
            await member.send(join_request(room_id, "m"))
            assert await member.receive() == wire("m", JOINED)
            assert await listener.receive() == wire("m", JOINED)
            # A grace far beyond the test's bound: the streams must end by themselves, with OK.
            async with trio.open_nursery() as nursery:
                nursery.start_soon(functools.partial(served.server.shutdown, grace=10 * TIMEOUT))
                assert [m async for m in member] == [closing]
                assert [m async for m in listener] == [closing]
            assert member.code is StatusCode.OK and listener.code is StatusCode.OK


async def test_grpcio_client_chats_listens_and_posts(served: Served) -> None:
    with trio.fail_after(TIMEOUT), grpc.insecure_channel(served.address) as channel:
        create = channel.unary_unary(
            "/rpc.ChatService/CreateChatRoom",
            request_serializer=chat_pb2.CreateChatRoomRequest.SerializeToString,
            response_deserializer=chat_pb2.ChatRoom.FromString,
        )
        chat = channel.stream_stream(
            "/rpc.ChatService/Chat",
            request_serializer=chat_pb2.ChatMessage.SerializeToString,
            response_deserializer=chat_pb2.Message.FromString,
        )
        listen = channel.unary_stream(
            "/rpc.ChatService/Listen",
            request_serializer=chat_pb2.ListenRequest.SerializeToString,
            response_deserializer=chat_pb2.Message.FromString,
        )
        post = channel.stream_unary(
            "/rpc.ChatService/Post",
            request_serializer=chat_pb2.PostRequest.SerializeToString,
            response_deserializer=chat_pb2.PostSummary.FromString,
        )
        room_id = (await trio.to_thread.run_sync(create, chat_pb2.CreateChatRoomRequest())).room_id
        listening = await trio.to_thread.run_sync(listen, chat_pb2.ListenRequest(room_id=room_id))
        said = await trio.to_thread.run_sync(
            lambda: list(chat(iter([join_request(room_id, "g"), say_request("from grpcio")])))
        )
        assert said == [wire("g", JOINED)]  # joined, said, half-closed: replay delivered, call OK
        summary = await trio.to_thread.run_sync(
            post, iter([chat_pb2.PostRequest(room_id=room_id, message=wire("p", "posted"))])
        )
        assert summary.accepted == 1
        await served.service.rooms.delete(room_id)
        heard = await trio.to_thread.run_sync(list, listening)
        assert heard == [
            wire("g", JOINED),
            wire("g", "from grpcio"),
            wire("g", LEFT),
            wire("p", "posted"),
            wire("chat server", "chat room is closing"),
        ]
        with pytest.raises(grpc.RpcError) as info:
            await trio.to_thread.run_sync(lambda: list(chat(iter([join_request(room_id, "g")]))))
        assert info.value.code() is grpc.StatusCode.NOT_FOUND


async def test_catalog(catalog: trio_grpc.Stub) -> None:
    with trio.fail_after(TIMEOUT):
        rice = catalog_pb2.Product(product_id=123, name="Rice Cooker")
        assert await catalog.GetProduct(catalog_pb2.GetProductRequest(product_id=123)) == rice
        created = await catalog.CreateProduct(
            catalog_pb2.CreateProductRequest(product=catalog_pb2.Product(name="Kettle"))
        )
        assert created == catalog_pb2.Product(product_id=124, name="Kettle")
        explicit = catalog_pb2.Product(product_id=7, name="Pan", description="cast iron")
        assert await catalog.CreateProduct(catalog_pb2.CreateProductRequest(product=explicit)) == explicit
        for call, request, code in [
            (
                catalog.CreateProduct,
                catalog_pb2.CreateProductRequest(product=explicit),
                StatusCode.ALREADY_EXISTS,
            ),
            (catalog.GetProduct, catalog_pb2.GetProductRequest(product_id=999), StatusCode.NOT_FOUND),
            (catalog.DeleteProduct, catalog_pb2.DeleteProductRequest(product_id=999), StatusCode.NOT_FOUND),
        ]:
            with pytest.raises(RpcError) as info:
                await call(request)
            assert info.value.code is code
        assert await catalog.DeleteProduct(catalog_pb2.DeleteProductRequest(product_id=7)) == explicit
        for _ in range(120):
            await catalog.CreateProduct(
                catalog_pb2.CreateProductRequest(product=catalog_pb2.Product(name="x"))
            )
        # 122 products now: 123..244, listed by id.

        async def page(index: int, page_size: int) -> list[int]:
            parameters = catalog_pb2.PaginationParameters(index=index, page_size=page_size)
            products = await catalog.ListProducts(
                catalog_pb2.ListProductsRequest(pagination_parameters=parameters)
            )
            return [product.product_id for product in products.products]

        assert (await catalog.ListProducts(catalog_pb2.ListProductsRequest())).products[0] == rice
        assert await page(0, 0) == list(range(123, 133))  # 0 -> 10
        assert await page(2, 5) == list(range(133, 138))
        assert await page(0, 500) == list(range(123, 223))  # above 100 -> 100
        assert await page(1, 500) == list(range(223, 245))
        assert await page(99, 10) == []
        for index, page_size in [(-1, 10), (0, -1)]:
            with pytest.raises(RpcError) as info:
                await page(index, page_size)
            assert info.value.code is StatusCode.INVALID_ARGUMENT


async def test_service_cuts_off_a_slow_member_while_others_keep_receiving(
    served: Served, chat: trio_grpc.Stub
) -> None:
    with trio.fail_after(TIMEOUT):
        room_id = (await chat.CreateChatRoom(chat_pb2.CreateChatRoomRequest())).room_id
        # The slow client grants small flow-control windows and reads nothing: the server's sends to it
        # block after a few messages, and the room buffers the rest until 256 are waiting.
        small_windows = trio_grpc.ChannelSettings(
            stream_window_size=8 * 1024, stream_read_buffer_size=8 * 1024
        )
        async with (
            chat.Listen(chat_pb2.ListenRequest(room_id=room_id)) as listener,
            trio_grpc.Channel(served.address, settings=small_windows) as slow_channel,
            trio_grpc.Stub(slow_channel, CHAT).Chat() as slow,
        ):
            await slow.send(join_request(room_id, "slow"))
            assert await listener.receive() == wire("slow", JOINED)
            posted: list[chat_pb2.Message] = []
            heard: list[chat_pb2.Message] = []
            while wire("slow", LEFT) not in heard:
                assert len(posted) < 2000, "the slow member was never cut off"
                batch = [wire("poster", f"{len(posted) + i} " + "x" * 1000) for i in range(50)]
                await chat.Post([chat_pb2.PostRequest(room_id=room_id, message=m) for m in batch])
                posted += batch
                while not heard or heard[-1] != batch[-1]:  # the listener keeps up, batch by batch
                    heard.append(await listener.receive())
            assert [m for m in heard if m.name == "poster"] == posted
            assert heard.count(wire("slow", LEFT)) == 1
            error = await expect_status(StatusCode.RESOURCE_EXHAUSTED, slow)
            assert error.message == "too slow: fell 256 messages behind"
