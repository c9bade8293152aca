"""Chat rooms: the in-memory registry and the fan-out of messages to members and listeners.

Theory of operation:
- Pure Trio, no transport. `chat.service` turns wire messages into calls here; errors are raised as
  `trio_grpc.RpcError` with the status the call should end with.
- Every member and listener is a `Subscription`: a bounded memory channel that the room fills with
  `send_nowait`. A publisher never waits for a reader. A subscriber whose buffer is full is cut off on
  the spot: removed from the room, its channel closed and its cancel scope cancelled, so its `join` or
  `listen` block ends with RESOURCE_EXHAUSTED even if it is stuck sending to its client; a member's leave
  notice goes out at once.
- Room operations (join, say, post, leave, close) are synchronous: they never reach a checkpoint, and
  Trio runs one task at a time, so each one is atomic. A joiner's history replay and its subscription
  happen in the same step, so a message published concurrently reaches it exactly once: in the replay
  or live, never both, never neither.
- Closing a room (delete, server shutdown) queues nothing: it marks each subscriber closed and closes
  its channel. The subscriber drains what is buffered, then its iterator yields the closing message and
  ends. A full buffer therefore cannot lose the closing message, and closing never waits for a reader;
  a client that reads nothing at all keeps its call open until it reads, goes away, or shutdown's grace
  period ends.
- `RoomRegistry` is the in-memory backend (`chat.backend`). `chat.redis_backend` reuses `_Room` as its
  local mirror of a shared room through two seams: `fan_out` (offer one message, cut off the full) and
  `attach` (replay, then live), so the local fan-out rules live here only.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import enum
import itertools
import logging
import secrets
from collections.abc import AsyncIterator, Iterable, Iterator
from typing import Self

import trio

from trio_grpc import RpcError, StatusCode

__all__ = [
    "CLOSING_MESSAGE",
    "JOINED",
    "LEFT",
    "Member",
    "Message",
    "RoomRegistry",
    "RoomSettings",
    "Subscription",
]

logger = logging.getLogger(__name__)

JOINED = "Has joined the chat"
LEFT = "Has left the chat"


@dataclasses.dataclass(frozen=True, slots=True)
class Message:
    """One chat line: who said it and what (`rpc.Message` on the wire, where `text` is `message`)."""

    name: str
    text: str


#: The last message every member and listener of a closing room receives.
CLOSING_MESSAGE = Message("chat server", "chat room is closing")


@dataclasses.dataclass(frozen=True, kw_only=True)
class RoomSettings:
    #: Messages a member or listener may have unread (replay included) before it is cut off.
    buffer_size: int = 256
    #: Messages a room remembers and replays to whoever joins or listens.
    history_length: int = 10
    #: Members per room (listeners are not members); one more -> RESOURCE_EXHAUSTED.
    max_members: int = 1000
    #: Rooms at once; one more -> RESOURCE_EXHAUSTED.
    max_rooms: int = 10_000

    def __post_init__(self) -> None:
        if self.buffer_size < 1 or self.max_members < 1 or self.max_rooms < 1:
            raise ValueError("buffer_size, max_members and max_rooms must be at least 1")
        if not 0 <= self.history_length <= self.buffer_size:
            raise ValueError("history_length must be between 0 and buffer_size: the replay is buffered")


class _End(enum.Enum):
    LEFT = "left"
    TOO_SLOW = "too slow"
    CLOSED = "room closed"


class Subscription:
    """A listener's view of a room: iterate it for messages, oldest first, until the room closes."""

    def __init__(self, room: _Room, capacity: int) -> None:
        self._room = room
        self._send, self._receive = trio.open_memory_channel[Message](capacity)
        self._scope = trio.CancelScope()
        self._end: _End | None = None
        self._closing_delivered = False

    @property
    def room_id(self) -> str:
        return self._room.room_id

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> Message:
        try:
            return await self._receive.receive()
        except trio.EndOfChannel:
            if self._end is _End.CLOSED and not self._closing_delivered:
                self._closing_delivered = True
                return CLOSING_MESSAGE
            raise StopAsyncIteration from None

    def _offer(self, message: Message) -> bool:
        """Queue `message` without waiting; False when the buffer is full."""
        try:
            self._send.send_nowait(message)
        except trio.WouldBlock:
            return False
        return True

    def _finish(self, end: _End) -> None:
        self._end = end
        self._send.close()
        if end is _End.TOO_SLOW:
            self._scope.cancel()


class Member(Subscription):
    """A joined chat participant: receives what others say, and says things with `say`."""

    def __init__(self, room: _Room, capacity: int, name: str) -> None:
        super().__init__(room, capacity)
        self.name = name

    def say(self, text: str) -> None:
        """Publish `text` under this member's name to everyone else; dropped once the member is gone."""
        self._room.say(self, text)

    def leave(self) -> None:
        """Leave now, before the `join` block ends: what is already buffered can still be read."""
        self._room.leave(self)


class _Room:
    def __init__(self, room_id: str, private: bool, settings: RoomSettings) -> None:
        self.room_id = room_id
        self.private = private
        self.settings = settings
        self._history: collections.deque[Message] = collections.deque(maxlen=settings.history_length)
        self._members: dict[str, Member] = {}
        self._listeners: dict[Subscription, None] = {}  # an insertion-ordered set

    def join(self, name: str) -> Member:
        if name in self._members:
            raise name_taken(self.room_id, name)
        if len(self._members) >= self.settings.max_members:
            raise room_full(self.room_id, self.settings.max_members)
        self._publish(Message(name, JOINED))
        member = Member(self, self.settings.buffer_size, name)
        self.attach(member, self._history)
        logger.info("%r joined room %s", name, self.room_id)
        return member

    def listen(self) -> Subscription:
        listener = Subscription(self, self.settings.buffer_size)
        self.attach(listener, self._history)
        return listener

    def attach(self, subscription: Subscription, replay: Iterable[Message]) -> None:
        """Give a new member or listener its replay and start its live messages, in one step."""
        for message in replay:  # fits: history_length <= buffer_size
            subscription._offer(message)
        if isinstance(subscription, Member):
            self._members[subscription.name] = subscription
        else:
            self._listeners[subscription] = None

    def say(self, member: Member, text: str) -> None:
        if self._members.get(member.name) is member:
            self._publish(Message(member.name, text), sender=member)

    def post(self, message: Message) -> None:
        self._publish(message)

    def leave(self, subscription: Subscription) -> None:
        """Detach a subscriber that is done, unless it is gone already (cut off, or the room closed)."""
        if self._detach(subscription):
            subscription._finish(_End.LEFT)
            if isinstance(subscription, Member):
                logger.info("%r left room %s", subscription.name, self.room_id)
                self._publish(Message(subscription.name, LEFT))

    def close(self) -> None:
        for subscription in self._subscribers():
            subscription._finish(_End.CLOSED)
        self._members.clear()
        self._listeners.clear()

    def _subscribers(self) -> Iterator[Subscription]:
        return itertools.chain(self._members.values(), self._listeners)

    def _detach(self, subscription: Subscription) -> bool:
        if isinstance(subscription, Member):
            if self._members.get(subscription.name) is subscription:
                del self._members[subscription.name]
                return True
            return False
        if subscription in self._listeners:
            del self._listeners[subscription]
            return True
        return False

    def _publish(self, message: Message, *, sender: Member | None = None) -> None:
        # Leave notices of members cut off by one message are published after it, in order.
        pending = collections.deque([message])
        while pending:
            message = pending.popleft()
            self._history.append(message)
            pending.extend(Message(member.name, LEFT) for member in self.fan_out(message, sender=sender))
            sender = None

    def fan_out(self, message: Message, *, sender: Member | None = None) -> list[Member]:
        """Offer `message` to every subscriber but `sender`; cut off those whose buffer is full.

        Returns the members cut off, whose leave notices are the caller's to publish."""
        too_slow = [s for s in self._subscribers() if s is not sender and not s._offer(message)]
        for subscription in too_slow:
            self._detach(subscription)
            subscription._finish(_End.TOO_SLOW)
            if isinstance(subscription, Member):
                logger.info("%r left room %s: too slow, cut off", subscription.name, self.room_id)
        return [s for s in too_slow if isinstance(s, Member)]


class RoomRegistry:
    """Every room of one server: create, list, join, listen, post, delete, close all on shutdown."""

    def __init__(self, settings: RoomSettings | None = None) -> None:
        self.settings = settings or RoomSettings()
        self._rooms: dict[str, _Room] = {}

    def create(self, *, private: bool = False) -> str:
        """Create a room and return its id (20 lowercase hex characters)."""
        if len(self._rooms) >= self.settings.max_rooms:
            raise too_many_rooms(self.settings.max_rooms)
        room_id = secrets.token_hex(10)
        while room_id in self._rooms:
            room_id = secrets.token_hex(10)
        self._rooms[room_id] = _Room(room_id, private, self.settings)
        logger.info("room %s created%s", room_id, " (private)" if private else "")
        return room_id

    def public_room_ids(self) -> list[str]:
        return [room.room_id for room in self._rooms.values() if not room.private]

    def delete(self, room_id: str) -> None:
        """Remove the room; its members and listeners get the closing message, then their streams end."""
        self._room(room_id).close()
        del self._rooms[room_id]
        logger.info("room %s deleted", room_id)

    def close_all(self) -> None:
        """Close every room as `delete` does: for graceful server shutdown."""
        for room in self._rooms.values():
            room.close()
        if self._rooms:
            logger.info("%d rooms closed for shutdown", len(self._rooms))
        self._rooms.clear()

    def post(self, room_id: str, message: Message) -> None:
        """Publish `message` as is to every member and listener of the room."""
        room = self._room(room_id)
        check_poster(message)
        room.post(message)

    @contextlib.asynccontextmanager
    async def join(self, room_id: str, name: str) -> AsyncIterator[Member]:
        """Be a member of the room for the duration of the block.

        The block ends with RESOURCE_EXHAUSTED if the member falls `buffer_size` messages behind
        (its body is cancelled); leaving the block any other way announces the member's leave.
        """
        check_joiner(name)
        room = self._room(room_id)
        member = room.join(name)
        async with attached(room, member):
            yield member

    @contextlib.asynccontextmanager
    async def listen(self, room_id: str) -> AsyncIterator[Subscription]:
        """Receive the room's replay and live messages for the duration of the block (not a member)."""
        room = self._room(room_id)
        listener = room.listen()
        async with attached(room, listener):
            yield listener

    def _room(self, room_id: str) -> _Room:
        try:
            return self._rooms[room_id]
        except KeyError:
            raise no_such_room(room_id) from None


@contextlib.asynccontextmanager
async def attached(room: _Room, subscription: Subscription) -> AsyncIterator[None]:
    """Run the block as the subscription's lifetime: a cut-off cancels it and ends it with
    RESOURCE_EXHAUSTED; however it ends, the subscription leaves the room."""
    try:
        with subscription._scope:
            yield
    finally:
        room.leave(subscription)
    if subscription._end is _End.TOO_SLOW:
        raise RpcError(
            StatusCode.RESOURCE_EXHAUSTED,
            f"too slow: fell {room.settings.buffer_size} messages behind",
        )


# -- the errors of room operations, whichever backend keeps the rooms ------------------------------


def check_joiner(name: str) -> None:
    if not name:
        raise RpcError(StatusCode.INVALID_ARGUMENT, "joining a chat room needs a non-empty name")


def check_poster(message: Message) -> None:
    if not message.name:
        raise RpcError(StatusCode.INVALID_ARGUMENT, "a posted message needs a non-empty name")


def no_such_room(room_id: str) -> RpcError:
    return RpcError(StatusCode.NOT_FOUND, f"room {room_id or '(empty id)'} does not exist")


def name_taken(room_id: str, name: str) -> RpcError:
    return RpcError(StatusCode.ALREADY_EXISTS, f"{name!r} is already in room {room_id}")


def room_full(room_id: str, max_members: int) -> RpcError:
    return RpcError(StatusCode.RESOURCE_EXHAUSTED, f"room {room_id} is full ({max_members} members)")


def too_many_rooms(max_rooms: int) -> RpcError:
    return RpcError(StatusCode.RESOURCE_EXHAUSTED, f"too many chat rooms ({max_rooms}); delete one first")
