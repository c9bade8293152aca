"""Chat rooms: the in-memory registry and the fan-out of messages to members and listeners.

Theory of operation:
- Pure Trio, no transport. `chat.service` turns wire messages into calls here; errors are raised as
  `trio_grpc.RpcError` with the status the call should end with.
- A message is published once as an `_Entry`: the message and its wire form (the framed rpc.Message), encoded
  once for every receiver. `_Room.publish` is the one way in for a room's local fan-out: it waits while the
  room holds back its publishers (below), then fans the entry out without reaching a checkpoint.
- Every member and listener is a `Subscription`. Fan-out hands the entry straight to the subscriber's call
  (its `Sink`, the call's `ServicerContext`) when the subscriber has nothing buffered and the call's stream
  takes the whole message without waiting; otherwise the entry goes into the subscriber's buffer, which its
  delivery task (`Subscription.deliver`) empties into the call as the client reads. So a member that keeps
  up costs a fan-out one queued chunk, no task switch.
- Slow readers. A buffer is full at `buffer_size` messages or `buffer_bytes` bytes. While a buffer of the room
  is full, `publish` waits: the Chat or Post handler calling it stops reading its stream, and HTTP/2 flow
  control pushes back on the sender. A full buffer holds the room back until it is down to half of both
  bounds; if it is not, `hold_back` seconds after it filled, its subscriber is cut off: removed from the room,
  its buffer freed and its cancel scope cancelled, so its `join` or `listen` block ends with
  RESOURCE_EXHAUSTED; a member's leave notice goes out. The room then carries on.
- Leave notices are published from `finally` blocks, which cannot wait: they go into every buffer at once,
  full or not (`_fan_out` without `publish`'s wait). Joins wait while a buffer is full, so a full buffer takes
  at most one leave notice per member who was in the room when it filled: that is its overflow allowance.
- Memory. Every entry held by a history or a buffer counts once (however many buffers share it) against the
  server's `max_held_bytes`; while the server is over it, publishers wait as for a full buffer, and one still
  over after `hold_back` is refused with RESOURCE_EXHAUSTED. docs/design.md ("Chat rooms") states the worst
  cases.
- Atomicity: fan-out, a join (its notice, the replay and the subscription), a leave and a close never reach a
  checkpoint, and Trio runs one task at a time, so each is atomic. A joiner's history replay and its
  subscription happen in one step, so a message published concurrently reaches it exactly once: in the replay
  or live, never both, never neither. A subscriber receives messages in the order they were fanned out.
- Closing a room (delete, server shutdown) queues nothing: it marks each subscriber closed. The subscriber
  drains what is buffered, then receives the closing message and ends. A full buffer therefore cannot lose
  the closing message, and closing never waits for a reader; a client that reads nothing at all keeps its
  call open until it reads, goes away, or shutdown's grace period ends.
- `RoomRegistry` is the in-memory backend (`chat.backend`). `chat.redis_backend` reuses `_Room` as its local
  mirror of a shared room, so that the local fan-out rules live here only. Its seams: `_attach` (replay,
  then live, in one step), `_fan_out` after `_hold_back(refuse=False)` (a message already in the room's log
  cannot be refused, only waited for), and two hooks it overrides: `_remember` (the history is kept in
  Redis) and `_announce_left` (a leave notice is published through Redis, for every process).
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import enum
import itertools
import logging
import math
import secrets
from collections.abc import AsyncIterator, Iterable, Iterator
from typing import Protocol, Self

import trio

from chat._proto.rpc import chat_pb2
from trio_grpc import RpcError, ServicerContext, StatusCode

__all__ = [
    "CLOSING_MESSAGE",
    "JOINED",
    "LEFT",
    "Member",
    "Message",
    "RoomRegistry",
    "RoomSettings",
    "Sink",
    "Subscription",
]

logger = logging.getLogger(__name__)

JOINED = "Has joined the chat"
LEFT = "Has left the chat"
MiB = 1024 * 1024


@dataclasses.dataclass(frozen=True, slots=True)
class Message:
    """One chat line: who said it and what (`rpc.Message` on the wire, where `text` is `message`)."""

    name: str
    text: str


#: The last message every member and listener of a closing room receives.
CLOSING_MESSAGE = Message("chat server", "chat room is closing")


@dataclasses.dataclass(frozen=True, kw_only=True)
class RoomSettings:
    #: Messages a member or listener may have buffered (replay included) before it holds the room back.
    buffer_size: int = 256
    #: Bytes (of encoded messages) a member or listener may have buffered before it holds the room back.
    buffer_bytes: int = 4 * MiB
    #: Seconds a full buffer may hold back the room's publishers before its subscriber is cut off.
    hold_back: float = 2.0
    #: Messages a room remembers and replays to whoever joins or listens.
    history_length: int = 10
    #: Bytes of history a room keeps (always its newest message, whatever its size).
    history_bytes: int = 1 * MiB
    #: Bytes of messages all rooms together hold in histories and buffers (each message counted once).
    max_held_bytes: int = 512 * MiB
    #: Members per room (listeners are not members); one more -> RESOURCE_EXHAUSTED.
    max_members: int = 1000
    #: Rooms at once; one more -> RESOURCE_EXHAUSTED.
    max_rooms: int = 10_000

    def __post_init__(self) -> None:
        counts = (self.buffer_size, self.buffer_bytes, self.max_held_bytes, self.max_members, self.max_rooms)
        if min(counts) < 1:
            raise ValueError(
                "buffer_size, buffer_bytes, max_held_bytes, max_members and max_rooms must be at least 1"
            )
        if self.hold_back < 0 or self.history_bytes < 0:
            raise ValueError("hold_back and history_bytes cannot be negative")
        if not 0 <= self.history_length <= self.buffer_size:
            raise ValueError("history_length must be between 0 and buffer_size: the replay is buffered")


class Sink(Protocol):
    """Where a subscription's messages go (a call's `ServicerContext`); each `data` is one encoded message."""

    def try_send_encoded(self, data: bytes) -> bool:
        """Take `data` now without waiting, or return False and take nothing."""

    async def send_encoded(self, data: bytes) -> None:
        """Take `data`, waiting as long as it takes."""


class _Entry:
    """One published message, encoded once for every receiver; `refs`: histories and buffers holding it."""

    __slots__ = ("frame", "message", "refs", "size")

    def __init__(self, message: Message) -> None:
        self.message = message
        self.frame = ServicerContext.encode(chat_pb2.Message(name=message.name, message=message.text))
        self.size = len(self.frame)
        self.refs = 0


_CLOSING_FRAME = _Entry(CLOSING_MESSAGE).frame


class _HeldBytes:
    """The bytes of the entries all rooms hold, each counted once, against `max_held_bytes`."""

    __slots__ = ("limit", "lot", "used")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0
        #: Publishers waiting for the server to be back under its limit.
        self.lot = trio.lowlevel.ParkingLot()

    def hold(self, entry: _Entry) -> None:
        if not entry.refs:
            self.used += entry.size
        entry.refs += 1

    def release(self, entry: _Entry) -> None:
        entry.refs -= 1
        if not entry.refs:
            self.used -= entry.size
            if self.lot and self.used <= self.limit:
                self.lot.unpark_all()


class _End(enum.Enum):
    LEFT = "left"
    TOO_SLOW = "too slow"
    CLOSED = "room closed"


class Subscription:
    """A listener's view of a room: `deliver` its messages to a call, or iterate them (oldest first)."""

    def __init__(self, room: _Room) -> None:
        self._room = room
        self._buffer: collections.deque[_Entry] = collections.deque()
        self._buffered_bytes = 0
        #: When a full buffer gets its subscriber cut off; None while the buffer holds nothing back.
        self._cut_off_at: float | None = None
        self._sink: Sink | None = None
        #: The consumer (delivery task or iterator) waiting for a message.
        self._lot = trio.lowlevel.ParkingLot()
        self._scope = trio.CancelScope()
        self._end: _End | None = None
        #: Why it holds the room back (and, if cut off, the RESOURCE_EXHAUSTED message): set when it fills.
        self._too_slow = ""
        self._closing_delivered = False

    @property
    def room_id(self) -> str:
        return self._room.room_id

    async def deliver(self, sink: Sink) -> None:
        """Send every message to `sink` until the subscription ends (left, or the room closed: then the
        closing message goes last). Meanwhile fan-out hands messages straight to `sink` whenever nothing
        is buffered; the buffer is emptied here, one message at a time, at the client's pace."""
        self._sink = sink
        try:
            while True:
                if self._buffer:
                    frame = self._buffer[0].frame  # taken only once sent: fan-out must not overtake it
                    if not sink.try_send_encoded(frame):
                        await sink.send_encoded(frame)
                    self._take()
                elif self._end is None:
                    await self._lot.park()
                else:
                    break
            if self._end is _End.CLOSED:
                await sink.send_encoded(_CLOSING_FRAME)
        finally:
            self._sink = None

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> Message:
        await trio.lowlevel.checkpoint()
        while not self._buffer:
            if self._end is _End.CLOSED and not self._closing_delivered:
                self._closing_delivered = True
                return CLOSING_MESSAGE
            if self._end is not None:
                raise StopAsyncIteration
            await self._lot.park()
        return self._take().message

    def _offer(self, entry: _Entry) -> None:
        """Fan-out's step for this subscriber: straight to its call, or into its buffer."""
        if self._buffer or self._sink is None or not self._sink.try_send_encoded(entry.frame):
            self._hold(entry)

    def _hold(self, entry: _Entry) -> None:
        room = self._room
        self._buffer.append(entry)
        self._buffered_bytes += entry.size
        room._held.hold(entry)
        if self._lot:
            self._lot.unpark_all()
        settings = room._settings
        if self._cut_off_at is None:
            if len(self._buffer) >= settings.buffer_size:
                self._too_slow = f"too slow: fell {settings.buffer_size} messages behind"
            elif self._buffered_bytes >= settings.buffer_bytes:
                self._too_slow = f"too slow: fell {settings.buffer_bytes} bytes behind"
            else:
                return
            self._cut_off_at = trio.current_time() + settings.hold_back
            room._full[self] = self._cut_off_at

    def _take(self) -> _Entry:
        entry = self._buffer.popleft()
        self._buffered_bytes -= entry.size
        room = self._room
        room._held.release(entry)
        if self._cut_off_at is not None:
            settings = room._settings
            if (
                len(self._buffer) <= settings.buffer_size // 2
                and self._buffered_bytes <= settings.buffer_bytes // 2
            ):
                room._stop_holding_back(self)
        return entry

    def _finish(self, end: _End) -> None:
        self._end = end
        if self._lot:
            self._lot.unpark_all()
        if end is _End.TOO_SLOW:
            self._drop_buffer()
            self._scope.cancel()

    def _drop_buffer(self) -> None:
        while self._buffer:
            self._room._held.release(self._buffer.popleft())
        self._buffered_bytes = 0


class Member(Subscription):
    """A joined chat participant: receives what others say, and says things with `say`."""

    def __init__(self, room: _Room, name: str) -> None:
        super().__init__(room)
        self.name = name

    async def say(self, text: str) -> None:
        """Publish `text` under this member's name to everyone else (waits while the room holds back its
        publishers); dropped once the member is gone."""
        await self._room.publish(Message(self.name, text), sender=self)

    def leave(self) -> None:
        """Leave now, before the `join` block ends: what is already buffered can still be read."""
        self._room.leave(self)


class _Room:
    """One room's members, listeners, history and fan-out.

    `publish(message, sender=None)` is its one entry point for messages from anywhere (members, Post, or
    another process's copy of the room): it waits while the room holds back its publishers, then delivers
    `message` to every member and listener but `sender`, and appends it to the history.
    """

    def __init__(self, room_id: str, private: bool, settings: RoomSettings, held: _HeldBytes) -> None:
        self.room_id = room_id
        self.private = private
        self._settings = settings
        self._held = held
        self._history: collections.deque[_Entry] = collections.deque()
        self._history_bytes = 0
        self._members: dict[str, Member] = {}
        self._listeners: dict[Subscription, None] = {}  # an insertion-ordered set
        #: Full buffers, and when each gets its subscriber cut off.
        self._full: dict[Subscription, float] = {}
        #: Publishers held back until a full buffer drains (or is cut off).
        self._drained = trio.lowlevel.ParkingLot()
        self._closed = False

    async def publish(self, message: Message, *, sender: Member | None = None) -> None:
        """Deliver `message` to everyone but `sender` once no buffer of the room is full (or the full ones
        were cut off). Dropped if `sender` has left, or the room closed, by then."""
        await self._hold_back()
        if self._closed or (sender is not None and self._members.get(sender.name) is not sender):
            return
        self._fan_out(_Entry(message), sender)

    async def join(self, name: str) -> Member:
        self._check_joinable(name)
        await self._hold_back()  # a join notice is a message like any other
        self._check_joinable(name)  # again: the room may have changed meanwhile
        self._fan_out(_Entry(Message(name, JOINED)))
        member = Member(self, name)
        self._attach(member, self._history)
        logger.info("%r joined room %s", name, self.room_id)
        return member

    def listen(self) -> Subscription:
        listener = Subscription(self)
        self._attach(listener, self._history)
        return listener

    def leave(self, subscription: Subscription) -> None:
        """Detach a subscriber that is done, unless it is gone already (cut off, or the room closed)."""
        if self._detach(subscription):
            subscription._finish(_End.LEFT)
            if isinstance(subscription, Member):
                logger.info("%r left room %s", subscription.name, self.room_id)
                self._announce_left(subscription)

    def close(self) -> None:
        self._closed = True
        for subscription in self._subscribers():
            subscription._finish(_End.CLOSED)
        self._members.clear()
        self._listeners.clear()
        self._full.clear()
        self._drained.unpark_all()  # held publishers: their messages are dropped
        while self._history:
            self._held.release(self._history.popleft())
        self._history_bytes = 0

    def _check_joinable(self, name: str) -> None:
        if self._closed:
            raise no_such_room(self.room_id)
        if name in self._members:
            raise name_taken(self.room_id, name)
        if len(self._members) >= self._settings.max_members:
            raise room_full(self.room_id, self._settings.max_members)

    def _fan_out(self, entry: _Entry, sender: Member | None = None) -> None:
        self._remember(entry)
        for subscription in self._subscribers():
            if subscription is not sender:
                subscription._offer(entry)

    def _announce_left(self, member: Member) -> None:
        self._fan_out(_Entry(Message(member.name, LEFT)))  # cannot wait: see the module doc

    def _remember(self, entry: _Entry) -> None:
        settings = self._settings
        if not settings.history_length:
            return
        history = self._history
        history.append(entry)
        self._history_bytes += entry.size
        self._held.hold(entry)
        while len(history) > settings.history_length or (
            self._history_bytes > settings.history_bytes and len(history) > 1
        ):
            oldest = history.popleft()
            self._history_bytes -= oldest.size
            self._held.release(oldest)

    def _attach(self, subscription: Subscription, replay: Iterable[_Entry]) -> None:
        """Give a new member or listener its replay and start its live messages, in one step."""
        for entry in replay:  # fits: history_length <= buffer_size
            subscription._hold(entry)
        if isinstance(subscription, Member):
            self._members[subscription.name] = subscription
        else:
            self._listeners[subscription] = None

    async def _hold_back(self, *, refuse: bool = True) -> None:
        """Wait while a buffer of the room is full, cutting off those full for `hold_back`; and while the
        server holds more than `max_held_bytes`, refusing the message if that lasts `hold_back` (or, with
        `refuse` False, waiting as long as it lasts)."""
        await trio.lowlevel.checkpoint_if_cancelled()
        over_since: float | None = None
        while self._full or self._held.used > self._held.limit:
            now = trio.current_time()
            if self._full:
                lot, deadline = self._drained, min(self._full.values())
                if now >= deadline:
                    self._cut_off_expired(now)
                    continue
            else:
                if over_since is None:
                    over_since = now
                lot, deadline = self._held.lot, over_since + self._settings.hold_back
                if now >= deadline:
                    if refuse:
                        raise RpcError(
                            StatusCode.RESOURCE_EXHAUSTED,
                            "the chat server holds too many undelivered messages; try again later",
                        )
                    deadline = math.inf
            with trio.move_on_at(deadline):
                await lot.park()

    def _cut_off_expired(self, now: float) -> None:
        for subscription, deadline in list(self._full.items()):
            if deadline > now:
                continue
            attached = self._detach(subscription)
            self._stop_holding_back(subscription)  # also if it was not attached: `_hold_back` loops on these
            if attached:
                subscription._finish(_End.TOO_SLOW)
                if isinstance(subscription, Member):
                    logger.info("%r left room %s: too slow, cut off", subscription.name, self.room_id)
                    self._announce_left(subscription)

    def _stop_holding_back(self, subscription: Subscription) -> None:
        subscription._cut_off_at = None
        if self._full.pop(subscription, None) is not None and self._drained:
            self._drained.unpark_all()

    def _subscribers(self) -> Iterator[Subscription]:
        return itertools.chain(self._members.values(), self._listeners)

    def _detach(self, subscription: Subscription) -> bool:
        if isinstance(subscription, Member):
            if self._members.get(subscription.name) is not subscription:
                return False
            del self._members[subscription.name]
        elif subscription in self._listeners:
            del self._listeners[subscription]
        else:
            return False
        self._stop_holding_back(subscription)
        return True


class RoomRegistry:
    """Every room of one server: create, list, join, listen, post, delete, close all on shutdown."""

    def __init__(self, settings: RoomSettings | None = None) -> None:
        self.settings = settings or RoomSettings()
        self._rooms: dict[str, _Room] = {}
        self._held = _HeldBytes(self.settings.max_held_bytes)

    def create(self, *, private: bool = False) -> str:
        """Create a room and return its id (20 lowercase hex characters)."""
        if len(self._rooms) >= self.settings.max_rooms:
            raise too_many_rooms(self.settings.max_rooms)
        room_id = secrets.token_hex(10)
        while room_id in self._rooms:
            room_id = secrets.token_hex(10)
        self._rooms[room_id] = _Room(room_id, private, self.settings, self._held)
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

    async def post(self, room_id: str, message: Message) -> None:
        """Publish `message` as is to every member and listener of the room (waits while it holds back)."""
        room = self._room(room_id)
        check_poster(message)
        await room.publish(message)

    @contextlib.asynccontextmanager
    async def join(self, room_id: str, name: str) -> AsyncIterator[Member]:
        """Be a member of the room for the duration of the block.

        Joining waits while the room holds back its publishers (its join notice is a message). The block
        ends with RESOURCE_EXHAUSTED if the member is cut off as too slow (its body is cancelled); leaving the
        block any other way announces the member's leave.
        """
        check_joiner(name)
        room = self._room(room_id)
        member = await room.join(name)
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
        subscription._drop_buffer()  # what the client never read no longer counts
    if subscription._end is _End.TOO_SLOW:
        raise RpcError(StatusCode.RESOURCE_EXHAUSTED, subscription._too_slow)


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
