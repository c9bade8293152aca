"""The room backend `chat.service` talks to, chosen at start-up: rooms in this process, or shared.

`RoomBackend` is every room operation a call needs. Two implementations:
- `MemoryBackend` (the default): the rooms of `chat.rooms.RoomRegistry`, in this process only.
- `chat.redis_backend.RedisBackend`: rooms shared by every server process that uses the same Redis.
Both keep the local fan-out (buffers, cut-off, closing) of `chat.rooms`, and raise its errors.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from contextlib import AbstractAsyncContextManager
from typing import Protocol

from chat.rooms import Member, Message, RoomRegistry, RoomSettings, Subscription

__all__ = ["MemoryBackend", "RedisSettings", "RoomBackend", "redacted"]


class RoomBackend(Protocol):
    """Where rooms live. Errors are `trio_grpc.RpcError`s with the status the call ends with."""

    settings: RoomSettings

    async def create(self, *, private: bool = False) -> str:
        """A new room's id (20 lowercase hex characters); private rooms are never listed."""
        ...

    async def public_room_ids(self) -> list[str]: ...

    async def delete(self, room_id: str) -> None:
        """Close the room everywhere: its members and listeners get the closing message."""
        ...

    async def post(self, room_id: str, messages: Sequence[Message]) -> None:
        """Publish `messages` as they are, in order, to every member and listener of the room (waits while
        it holds back). A message without a name is refused (INVALID_ARGUMENT) after those before it."""
        ...

    def join(self, room_id: str, name: str) -> AbstractAsyncContextManager[Member]:
        """Be a member for the duration of the block (see `RoomRegistry.join`)."""
        ...

    def listen(self, room_id: str) -> AbstractAsyncContextManager[Subscription]:
        """Receive the replay and live messages for the duration of the block."""
        ...

    async def say(self, member: Member, texts: Sequence[str]) -> None:
        """Publish `texts`, in order, under the member's name to everyone else (waits while the room holds
        back); dropped once the member is gone."""
        ...

    async def leave(self, member: Member) -> None:
        """Leave before the `join` block ends: what is already buffered can still be read."""
        ...

    def close_all(self) -> None:
        """Close this process's subscribers as `delete` would, for shutdown (the rooms stay)."""
        ...


class MemoryBackend:
    """The rooms of one process, in `RoomRegistry`: the embedded default."""

    def __init__(self, registry: RoomRegistry | None = None) -> None:
        self.registry = registry or RoomRegistry()
        self.settings = self.registry.settings

    async def create(self, *, private: bool = False) -> str:
        return self.registry.create(private=private)

    async def public_room_ids(self) -> list[str]:
        return self.registry.public_room_ids()

    async def delete(self, room_id: str) -> None:
        self.registry.delete(room_id)

    async def post(self, room_id: str, messages: Sequence[Message]) -> None:
        for message in messages:
            await self.registry.post(room_id, message)

    def join(self, room_id: str, name: str) -> AbstractAsyncContextManager[Member]:
        return self.registry.join(room_id, name)

    def listen(self, room_id: str) -> AbstractAsyncContextManager[Subscription]:
        return self.registry.listen(room_id)

    async def say(self, member: Member, texts: Sequence[str]) -> None:
        for text in texts:
            await member.say(text)

    async def leave(self, member: Member) -> None:
        member.leave()

    def close_all(self) -> None:
        self.registry.close_all()


@dataclasses.dataclass(frozen=True, kw_only=True)
class RedisSettings:
    #: A process's members keep their names this long after it stops renewing them (it died).
    lease: float = 6.0
    #: Entries a room's stream keeps (about): how far a mirror may lag before it loses messages.
    stream_length: int = 10_000
    #: Seconds a deleted room's stream stays readable, for mirrors that were cut off from Redis.
    closed_log_ttl: int = 60
    #: How long one XREAD blocks before it asks again (a dead connection shows within this).
    block: float = 5.0
    #: Longest wait between two reconnection attempts.
    max_backoff: float = 5.0

    def __post_init__(self) -> None:
        if self.lease <= 0 or self.stream_length < 1:
            raise ValueError("lease must be positive and stream_length at least 1")


def redacted(url: str) -> str:
    """The URL without its password, for log lines."""
    scheme, sep, rest = url.partition("://")
    credentials, at, location = rest.rpartition("@")
    if not at:
        return url
    user = credentials.partition(":")[0]
    return f"{scheme}{sep}{user + ':' if user else ''}***@{location}"
