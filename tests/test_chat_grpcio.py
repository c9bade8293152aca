"""grpcio clients, and nothing of trio_grpc, against `chatserver` run as a subprocess.

The scenario of chat-api.md end to end with grpcio's sync and grpc.aio clients (stubs generated from
proto/rpc/chat.proto): create, list, two members chatting, a listener, a poster, a leave, a delete. Then
grpcio's own health and reflection clients. Every call carries a grpcio deadline, so a hang fails the test
with DEADLINE_EXCEEDED instead of stalling the run.
"""

from __future__ import annotations

import asyncio
import queue
from collections.abc import Iterator

import grpc
import pytest
from google.protobuf.descriptor_pool import DescriptorPool
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase

from chat._proto.rpc import chat_pb2
from tests.grpcio_stubs import chat_pb2_grpc
from tests.test_cli_chatserver import ChatServer, running_chatserver

DEADLINE = 15
Message = chat_pb2.Message


@pytest.fixture(scope="module")
def chatserver() -> Iterator[ChatServer]:
    yield from running_chatserver()


def join(room: str, name: str) -> chat_pb2.ChatMessage:
    return chat_pb2.ChatMessage(join=chat_pb2.JoinChat(room_id=room, name=name))


def say(text: str) -> chat_pb2.ChatMessage:
    # The name in the message is the client's to fill; the server stamps the member's own.
    return chat_pb2.ChatMessage(message=Message(name="someone else", message=text))


def post(room: str, name: str, text: str) -> chat_pb2.PostRequest:
    return chat_pb2.PostRequest(room_id=room, message=Message(name=name, message=text))


def test_grpcio_sync_client_full_scenario(chatserver: ChatServer) -> None:
    with grpc.insecure_channel(chatserver.target) as channel:
        stub = chat_pb2_grpc.ChatServiceStub(channel)
        room = stub.CreateChatRoom(chat_pb2.CreateChatRoomRequest(), timeout=DEADLINE).room_id
        hidden = stub.CreateChatRoom(chat_pb2.CreateChatRoomRequest(private=True), timeout=DEADLINE).room_id
        listed = {
            r.room_id
            for r in stub.ListChatRooms(chat_pb2.ListChatRoomsRequest(), timeout=DEADLINE).chat_rooms
        }
        assert room in listed and hidden not in listed

        listener = stub.Listen(chat_pb2.ListenRequest(room_id=room), timeout=DEADLINE)
        alice_out: queue.SimpleQueue[chat_pb2.ChatMessage | None] = queue.SimpleQueue()
        bob_out: queue.SimpleQueue[chat_pb2.ChatMessage | None] = queue.SimpleQueue()
        alice = stub.Chat(iter(alice_out.get, None), timeout=DEADLINE)  # None in the queue: half-close
        bob = stub.Chat(iter(bob_out.get, None), timeout=DEADLINE)

        alice_out.put(join(room, "alice"))
        assert next(alice) == Message(name="alice", message="Has joined the chat")
        bob_out.put(join(room, "bob"))
        assert [next(bob), next(bob)] == [  # the history replay, own join notice last
            Message(name="alice", message="Has joined the chat"),
            Message(name="bob", message="Has joined the chat"),
        ]
        assert next(alice) == Message(name="bob", message="Has joined the chat")

        alice_out.put(say("hi bob"))
        assert next(bob) == Message(name="alice", message="hi bob")
        summary = stub.Post(iter([post(room, "poster", "news")]), timeout=DEADLINE)
        assert summary.accepted == 1
        assert next(alice) == next(bob) == Message(name="poster", message="news")

        alice_out.put(None)  # alice leaves by half-closing: her call ends OK
        assert list(alice) == []
        assert alice.code() == grpc.StatusCode.OK
        assert next(bob) == Message(name="alice", message="Has left the chat")

        assert (
            stub.DeleteChatRoom(chat_pb2.DeleteChatRoomRequest(room_id=room), timeout=DEADLINE).room_id
            == room
        )
        closing = Message(name="chat server", message="chat room is closing")
        assert list(bob) == [closing]
        assert bob.code() == grpc.StatusCode.OK
        bob_out.put(None)
        assert list(listener) == [
            Message(name="alice", message="Has joined the chat"),
            Message(name="bob", message="Has joined the chat"),
            Message(name="alice", message="hi bob"),
            Message(name="poster", message="news"),
            Message(name="alice", message="Has left the chat"),
            closing,
        ]
        assert listener.code() == grpc.StatusCode.OK

        with pytest.raises(grpc.RpcError) as gone:
            stub.DeleteChatRoom(chat_pb2.DeleteChatRoomRequest(room_id=room), timeout=DEADLINE)
        assert gone.value.code() == grpc.StatusCode.NOT_FOUND
        listed = {
            r.room_id
            for r in stub.ListChatRooms(chat_pb2.ListChatRoomsRequest(), timeout=DEADLINE).chat_rooms
        }
        assert room not in listed


async def aio_scenario(target: str) -> None:
    async with grpc.aio.insecure_channel(target) as channel:
        stub = chat_pb2_grpc.ChatServiceStub(channel)
        room = (await stub.CreateChatRoom(chat_pb2.CreateChatRoomRequest(), timeout=DEADLINE)).room_id
        listed = await stub.ListChatRooms(chat_pb2.ListChatRoomsRequest(), timeout=DEADLINE)
        assert room in {r.room_id for r in listed.chat_rooms}

        listener = stub.Listen(chat_pb2.ListenRequest(room_id=room), timeout=DEADLINE)
        alice = stub.Chat(timeout=DEADLINE)
        bob = stub.Chat(timeout=DEADLINE)
        await alice.write(join(room, "alice"))
        assert await alice.read() == Message(name="alice", message="Has joined the chat")
        await bob.write(join(room, "bob"))
        assert (await bob.read()).name == "alice"
        assert await bob.read() == Message(name="bob", message="Has joined the chat")
        assert await alice.read() == Message(name="bob", message="Has joined the chat")

        await bob.write(say("hello alice"))
        assert await alice.read() == Message(name="bob", message="hello alice")
        summary = await stub.Post(
            iter([post(room, "poster", "one"), post(room, "poster", "two")]), timeout=DEADLINE
        )
        assert summary.accepted == 2
        for member in (alice, bob):
            assert [await member.read(), await member.read()] == [
                Message(name="poster", message="one"),
                Message(name="poster", message="two"),
            ]

        bob.cancel()  # bob's client goes away without a goodbye: the others still see him leave
        assert await alice.read() == Message(name="bob", message="Has left the chat")

        with pytest.raises(grpc.aio.AioRpcError) as unknown:
            await stub.Post(iter([post("0" * 20, "poster", "lost")]), timeout=DEADLINE)
        assert unknown.value.code() == grpc.StatusCode.NOT_FOUND

        await stub.DeleteChatRoom(chat_pb2.DeleteChatRoomRequest(room_id=room), timeout=DEADLINE)
        assert await alice.read() == Message(name="chat server", message="chat room is closing")
        assert await alice.read() is grpc.aio.EOF
        assert await alice.code() == grpc.StatusCode.OK
        heard = [message async for message in listener]
        assert heard[-1] == Message(name="chat server", message="chat room is closing")
        assert Message(name="bob", message="Has left the chat") in heard
        assert await listener.code() == grpc.StatusCode.OK


def test_grpcio_aio_client_full_scenario(chatserver: ChatServer) -> None:
    asyncio.run(aio_scenario(chatserver.target))


def test_grpcio_health_client(chatserver: ChatServer) -> None:
    with grpc.insecure_channel(chatserver.target) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        for service in ("", "rpc.ChatService", "rpc.Catalog", "grpc.health.v1.Health"):
            response = health.Check(health_pb2.HealthCheckRequest(service=service), timeout=DEADLINE)
            assert response.status == health_pb2.HealthCheckResponse.SERVING, service
        with pytest.raises(grpc.RpcError) as unknown:
            health.Check(health_pb2.HealthCheckRequest(service="no.Such"), timeout=DEADLINE)
        assert unknown.value.code() == grpc.StatusCode.NOT_FOUND


def test_grpcio_reflection_client(chatserver: ChatServer) -> None:
    with grpc.insecure_channel(chatserver.target) as channel:
        database = ProtoReflectionDescriptorDatabase(channel)
        assert set(database.get_services()) == {
            "rpc.ChatService",
            "rpc.Catalog",
            "grpc.health.v1.Health",
            "grpc.reflection.v1.ServerReflection",
            "grpc.reflection.v1alpha.ServerReflection",
        }
        pool = DescriptorPool(database)
        chat = pool.FindServiceByName("rpc.ChatService")
        assert chat.file.name == "rpc/chat.proto"
        assert [method.name for method in chat.methods] == [
            "Chat",
            "CreateChatRoom",
            "ListChatRooms",
            "DeleteChatRoom",
            "Listen",
            "Post",
        ]
        assert pool.FindServiceByName("rpc.Catalog").file.name == "rpc/catalog.proto"
