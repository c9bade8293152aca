"""rpc.ChatService on trio_grpc: protobuf messages in, `chat.rooms` operations out.

Owns the translation between wire messages and room calls, and the concurrency of one Chat call: reading
the client and delivering room messages run side by side in one nursery. When the room closes, delivery
ends and stops the reading; when the client half-closes, the member leaves and delivery sends what was
already buffered for it, then ends. Room semantics and room errors live in `chat.rooms`, behind the
backend of `chat.backend` (in memory, or shared through Redis): this module does not know which one it
talks to, and adds only the checks on the shape of requests."""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterable, Awaitable, Callable
from typing import TypeVar

import trio

from chat._proto.rpc import chat_pb2, chat_trio_grpc
from chat.backend import MemoryBackend, RoomBackend
from chat.rooms import Message
from trio_grpc import RpcError, ServicerContext, StatusCode

__all__ = ["ChatService"]

_Request = TypeVar("_Request", chat_pb2.ChatMessage, chat_pb2.PostRequest)


class ChatService(chat_trio_grpc.ChatServiceBase):
    """Handlers for every rpc.ChatService method, over one room backend (`rooms`)."""

    def __init__(self, rooms: RoomBackend | None = None) -> None:
        self.rooms: RoomBackend = rooms or MemoryBackend()

    async def CreateChatRoom(
        self, request: chat_pb2.CreateChatRoomRequest, context: ServicerContext
    ) -> chat_pb2.ChatRoom:
        return chat_pb2.ChatRoom(room_id=await self.rooms.create(private=request.private))

    async def ListChatRooms(
        self, request: chat_pb2.ListChatRoomsRequest, context: ServicerContext
    ) -> chat_pb2.ListChatRoomsResponse:
        rooms = [chat_pb2.ChatRoom(room_id=room_id) for room_id in await self.rooms.public_room_ids()]
        return chat_pb2.ListChatRoomsResponse(chat_rooms=rooms)

    async def DeleteChatRoom(
        self, request: chat_pb2.DeleteChatRoomRequest, context: ServicerContext
    ) -> chat_pb2.ChatRoom:
        await self.rooms.delete(request.room_id)
        return chat_pb2.ChatRoom(room_id=request.room_id)

    async def Listen(self, request: chat_pb2.ListenRequest, context: ServicerContext) -> None:
        async with self.rooms.listen(request.room_id) as listener:
            await listener.deliver(context)

    async def Post(
        self, requests: AsyncIterable[chat_pb2.PostRequest], context: ServicerContext
    ) -> chat_pb2.PostSummary:
        accepted = 0

        async def post(burst: list[chat_pb2.PostRequest]) -> None:
            nonlocal accepted
            for room_id, requests in itertools.groupby(burst, key=lambda request: request.room_id):
                messages = [Message(request.message.name, request.message.message) for request in requests]
                await self.rooms.post(room_id, messages)
                accepted += len(messages)

        await _in_bursts(requests, context, post)
        return chat_pb2.PostSummary(accepted=accepted)

    async def Chat(self, requests: AsyncIterable[chat_pb2.ChatMessage], context: ServicerContext) -> None:
        incoming = aiter(requests)
        first = await anext(incoming, None)
        if first is None or not first.HasField("join"):
            raise RpcError(
                StatusCode.INVALID_ARGUMENT,
                "the first message of a chat must be a join with a room id and a name",
            )
        join = first.join
        async with self.rooms.join(join.room_id, join.name) as member, trio.open_nursery() as nursery:

            async def deliver_then_stop() -> None:
                await member.deliver(context)  # until the member left or the room closed
                nursery.cancel_scope.cancel()  # the room closed: stop reading the client

            async def say(burst: list[chat_pb2.ChatMessage]) -> None:
                texts: list[str] = []
                for request in burst:
                    if request.HasField("join"):
                        await self.rooms.say(member, texts)  # what came before it
                        raise RpcError(
                            StatusCode.INVALID_ARGUMENT,
                            f"already joined room {join.room_id} as {join.name!r}; send messages only",
                        )
                    if request.HasField("message"):
                        texts.append(request.message.message)
                await self.rooms.say(member, texts)  # waits while the room holds back

            nursery.start_soon(deliver_then_stop)
            await _in_bursts(incoming, context, say)
            # The client half-closed: announce the leave now; the delivery task still sends what was
            # buffered (the replay, at least, for a client that joins and half-closes at once), then ends.
            await self.rooms.leave(member)
        # Any other way out of the block (cancellation, error) announces the leave as it exits.


#: Requests taken together without a checkpoint, when they have arrived already: at most this many...
_BURST = 32
#: ... and, past the first, while they come to fewer bytes than this.
_BURST_BYTES = 256 * 1024


async def _in_bursts(
    requests: AsyncIterable[_Request],
    context: ServicerContext,
    handle: Callable[[list[_Request]], Awaitable[None]],
) -> None:
    """`handle` the requests in bursts: each one as it arrives, with those that have arrived already behind
    it (`receive_nowait`, no checkpoint between them), up to `_BURST` and `_BURST_BYTES`. Each message a room
    publishes is queued on every receiver's stream at once, and the connections' writers frame what is queued
    when they next run: a burst makes that many messages per frame and per write, where yielding after each
    request would make one; a shared room appends a burst to its log in one round trip."""
    async for request in requests:
        burst, size = [request], request.ByteSize()
        while len(burst) < _BURST and size < _BURST_BYTES:
            ready = context.receive_nowait()
            if ready is None:
                break
            burst.append(ready)  # type: ignore[arg-type]  # the same stream: a _Request
            size += ready.ByteSize()
        await handle(burst)
