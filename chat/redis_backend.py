"""Rooms shared by every chat server process that uses the same Redis (or Valkey), through coredis.

Theory of operation:
- Redis holds what the processes must agree on; each room's keys share the hash tag `{room id}`, so a
  Redis Cluster keeps a room on one shard:
    chat:{R}:meta        hash: private = 0|1. Exists exactly while the room does.
    chat:{R}:log         stream: every message of the room, in the room's one order. Fields n (name),
                         t (text), k (kind: p = to everyone, s = said by member n: not to n, c = closing).
    chat:{R}:members     hash: member name -> holder: "P:T", process id P and a token T of the member.
    chat:rooms           hash: room id -> public|private, to list and count rooms.
    chat:process:P       a process's lease (a key with a TTL its owner renews).
    chat:process:P:rooms set: the rooms where process P has had members, for whoever reaps it.
    chat:processes       set: the ids of the processes, live or not yet reaped.
- What must be atomic is one Lua script on one room's keys: joining (room exists, name free, room not
  full, join notice appended, history read, all in one step), saying and posting (room still exists),
  leaving (the name is still ours), deleting (room gone, closing entry appended).
- A process mirrors each room it has members or listeners in with a `chat.rooms` room, fed by ONE task
  that reads the room's stream (XREAD BLOCK): Redis traffic grows with processes x rooms, not members.
  Local subscribers get messages only from the stream, whichever process published them, so every one
  sees the room's order; publishing is an XADD, nothing more.
- The join race, across processes: a join's replay is the history up to its own join notice, whose
  stream id J the script returns; the mirror attaches the member right after it has fanned out J, so
  what comes after J is live. If the mirror is already past J, the entries after J are added to the
  replay from the mirror's recent entries. The mirror starts reading at the stream's end as it was
  before any of its subscribers joined, so no J is ever behind where it started.
- No ghosts: a process holds its members' names under its lease. Every process renews its own and
  reaps dead ones: for each room of a process whose lease expired, its members' names are freed and
  their leave notices appended (idempotent, so two reapers are harmless).
- Redis away: calls fail with UNAVAILABLE, one log line says so (and one when it is back); readers,
  renewal and pending leaves retry with backoff; local subscribers stay and resume where they were.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import functools
import logging
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping, Sequence
from typing import Any

import coredis
import coredis.exceptions
import trio
from coredis.retry import NoRetryPolicy

from chat.backend import RedisSettings, redacted
from chat.rooms import (
    CLOSING_MESSAGE,
    JOINED,
    LEFT,
    Member,
    Message,
    RoomSettings,
    Subscription,
    _End,
    _Entry,
    _HeldBytes,
    _Room,
    attached,
    check_joiner,
    check_poster,
    name_taken,
    no_such_room,
    room_full,
    too_many_rooms,
)
from trio_grpc import RpcError, StatusCode

__all__ = ["RedisBackend"]

logger = logging.getLogger(__name__)

#: What a lost or refused connection raises (the pool reconnects by itself on the next command).
REDIS_DOWN = (coredis.exceptions.ConnectionError, TimeoutError, OSError)

REGISTRY = "chat:rooms"
PROCESSES = "chat:processes"


def _room_keys(room_id: str) -> list[str]:
    return [f"chat:{{{room_id}}}:meta", f"chat:{{{room_id}}}:members", f"chat:{{{room_id}}}:log"]


# KEYS: meta, members, log. Every script that appends trims the log to about ARGV[1] entries.
# Field i numbers the room's entries 1, 2, 3...: a reader that sees a number skipped knows that the log was
# trimmed past it (the counter is in meta, so only a room that exists can be appended to).
_APPEND = (
    "redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[1], '*', 'n', %s, 't', %s, 'k', %s, "
    "'i', redis.call('HINCRBY', KEYS[1], 'seq', 1))"
)

# The last N entries, newest first (COUNT 0 would mean all of them).
_HISTORY = "(tonumber(%s) > 0 and redis.call('XREVRANGE', KEYS[3], '+', '-', 'COUNT', %s) or {})"

# ARGV: maxlen, name, holder, max members, history length, join text.
JOIN = f"""
if redis.call('EXISTS', KEYS[1]) == 0 then return {{'missing'}} end
if redis.call('HEXISTS', KEYS[2], ARGV[2]) == 1 then return {{'taken'}} end
if redis.call('HLEN', KEYS[2]) >= tonumber(ARGV[4]) then return {{'full'}} end
redis.call('HSET', KEYS[2], ARGV[2], ARGV[3])
local id = {_APPEND % ("ARGV[2]", "ARGV[6]", "'p'")}
return {{'ok', id, {_HISTORY % ("ARGV[5]", "ARGV[5]")}}}
"""

# ARGV: maxlen, history length. The newest id, then the history.
LISTEN = """
if redis.call('EXISTS', KEYS[1]) == 0 then return {'missing'} end
local newest = redis.call('XREVRANGE', KEYS[3], '+', '-', 'COUNT', 1)
local id = '0-0'
if newest[1] then id = newest[1][1] end
return {'ok', id, %s}
""" % (_HISTORY % ("ARGV[2]", "ARGV[2]"))

# ARGV: maxlen, kind, holder ('' for a post: no membership to check), then name and text pairs (a member's
# own name in each pair of a say). All of them or none, in one step: a burst costs one round trip.
APPEND = f"""
if redis.call('EXISTS', KEYS[1]) == 0 then return 'missing' end
if ARGV[3] ~= '' and redis.call('HGET', KEYS[2], ARGV[4]) ~= ARGV[3] then return 'gone' end
for i = 4, #ARGV, 2 do
  {_APPEND % ("ARGV[i]", "ARGV[i + 1]", "ARGV[2]")}
end
return 'ok'
"""

# ARGV: maxlen, leave text, then name and holder pairs. Frees each name its holder still holds, with
# its leave notice (a name taken again since, by another member, stays taken).
RELEASE = f"""
local freed = {{}}
for i = 3, #ARGV, 2 do
  if redis.call('HGET', KEYS[2], ARGV[i]) == ARGV[i + 1] then
    redis.call('HDEL', KEYS[2], ARGV[i])
    {_APPEND % ("ARGV[i]", "ARGV[2]", "'p'")}
    table.insert(freed, ARGV[i])
  end
end
return freed
"""

# ARGV: maxlen, leave text, "P:" of a dead process. Frees every name it held, with its leave notice.
REAP = f"""
local held = redis.call('HGETALL', KEYS[2])
for i = 1, #held, 2 do
  if string.sub(held[i + 1], 1, #ARGV[3]) == ARGV[3] then
    redis.call('HDEL', KEYS[2], held[i])
    {_APPEND % ("held[i]", "ARGV[2]", "'p'")}
  end
end
return 1
"""

# ARGV: maxlen, closing text, seconds the closed log stays readable for mirrors that lag behind.
DELETE = f"""
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
{_APPEND % ("'chat server'", "ARGV[2]", "'c'")}
redis.call('DEL', KEYS[1], KEYS[2])
redis.call('EXPIRE', KEYS[3], ARGV[3])
return 1
"""


@dataclasses.dataclass(frozen=True, order=True, slots=True)
class _StreamId:
    ms: int
    seq: int

    @classmethod
    def parse(cls, text: str) -> _StreamId:
        ms, _, seq = text.partition("-")
        return cls(int(ms), int(seq or 0))

    def __str__(self) -> str:
        return f"{self.ms}-{self.seq}"


_START = _StreamId(0, 0)


@dataclasses.dataclass(slots=True)
class _StreamEntry:
    id: _StreamId
    message: Message
    kind: str  # p, s or c, as in the stream
    number: int  # i in the stream: 1 for the room's first entry

    @classmethod
    def decode(cls, entry_id: str, fields: Mapping[Any, Any]) -> _StreamEntry:
        message = Message(fields["n"], fields["t"])
        return cls(_StreamId.parse(entry_id), message, fields["k"], int(fields["i"]))

    def reaches(self, member_name: str | None) -> bool:
        return not (self.kind == "s" and self.message.name == member_name)


class _SharedMember(Member):
    """A member whose name is held in Redis under `holder` ("process id:token")."""

    def __init__(self, room: _Room, name: str, holder: str) -> None:
        super().__init__(room, name)
        self.holder = holder


class _SharedRoom(_Room):
    """A process's mirror of a room: the local fan-out of `chat.rooms`, fed by the room's stream."""

    def __init__(self, backend: RedisBackend, room_id: str, position: _StreamId, number: int) -> None:
        super().__init__(room_id, False, backend.settings, backend._held)
        self._backend = backend
        self.position = position  # the last entry fanned out here...
        self.number = number  # ... and its number
        self.users = 0  # calls that hold the mirror open: subscribers, and joins in flight
        self.reader = trio.CancelScope()
        #: The entries fanned out lately, for joins that the mirror has overtaken (`attach_at`).
        self._recent: collections.deque[tuple[_StreamEntry, _Entry]] = collections.deque()
        self._recent_bytes = 0
        self._horizon = position  # every entry after this one, up to `position`, is in _recent
        self._waiting: list[tuple[_StreamId, Subscription, list[Message]]] = []

    def attach_at(self, at: _StreamId, subscription: Subscription, replay: list[Message]) -> None:
        """Attach once entry `at` (the last one `replay` covers) has been fanned out here."""
        if at > self.position:
            self._waiting.append((at, subscription, replay))
            return
        name = subscription.name if isinstance(subscription, Member) else None
        history = [_Entry(message) for message in replay]
        while len(history) > 1 and sum(entry.size for entry in history) > self._settings.history_bytes:
            del history[0]  # the history's byte bound, as a room of this process keeps it
        missed = [entry for stream, entry in self._recent if stream.id > at and stream.reaches(name)]
        self._attach(subscription, history + missed)
        if at < self._horizon or len(replay) + len(missed) > self._settings.buffer_size:
            # It cannot have every message: it fell behind before it started.
            self._cut_off(subscription, f"too slow: fell {self._settings.buffer_size} messages behind")

    async def deliver(self, stream: _StreamEntry) -> bool:
        """Fan out one entry of the room's stream, once no local buffer holds the room back (the entry
        waits in Redis meanwhile); False once the room has closed."""
        if stream.number != self.number + 1:
            self._fell_behind()
        self.number = stream.number
        if stream.kind == "c":
            self.close()
            return False
        await self._hold_back(refuse=False)
        if self._closed:
            return False
        sender = self._members.get(stream.message.name) if stream.kind == "s" else None
        entry = _Entry(stream.message)
        self._fan_out(entry, sender)
        self._keep_recent(stream, entry)
        self.position = stream.id
        if self._waiting:
            waiting, self._waiting = self._waiting, []
            for at, subscription, replay in waiting:
                self.attach_at(at, subscription, replay)
        return True

    def close(self) -> None:
        super().close()
        for _, subscription, _ in self._waiting:
            subscription._finish(_End.CLOSED)
        self._waiting.clear()
        while self._recent:
            self._held.release(self._recent.popleft()[1])

    def _remember(self, entry: _Entry) -> None:
        """Nothing: the room's history is its stream in Redis."""

    def _announce_left(self, member: Member) -> None:
        """Through Redis, for every process: free the name with its leave notice."""
        if isinstance(member, _SharedMember):
            self._backend._release_later(self.room_id, member.name, member.holder)

    def _keep_recent(self, stream: _StreamEntry, entry: _Entry) -> None:
        """Keep the last `buffer_size` entries, within `buffer_bytes`, counted against `max_held_bytes`."""
        self._recent.append((stream, entry))
        self._recent_bytes += entry.size
        self._held.hold(entry)
        settings = self._settings
        while len(self._recent) > settings.buffer_size or self._recent_bytes > settings.buffer_bytes:
            oldest_stream, oldest = self._recent.popleft()
            self._recent_bytes -= oldest.size
            self._held.release(oldest)
            self._horizon = oldest_stream.id

    def _fell_behind(self) -> None:
        """Entries were trimmed from the log before this mirror read them: cut off everyone here
        (RESOURCE_EXHAUSTED) rather than let them miss messages unknowingly."""
        kept = self._backend.redis_settings.stream_length
        why = f"too slow: this server fell more than {kept} messages behind the room"
        logger.warning(
            "room %s: the log moved on past this server's reader; its subscribers are cut off", self.room_id
        )
        waiting, self._waiting = self._waiting, []
        for subscription in [*self._subscribers(), *(subscription for _, subscription, _ in waiting)]:
            self._cut_off(subscription, why)

    def _cut_off(self, subscription: Subscription, why: str) -> None:
        subscription._too_slow = why
        self._detach(subscription)
        if subscription._end is None:
            subscription._finish(_End.TOO_SLOW)
            if isinstance(subscription, Member):
                self._announce_left(subscription)


class RedisBackend:
    """Rooms in Redis, shared by every process that uses it. Open with `RedisBackend.open(url)`."""

    def __init__(
        self,
        url: str,
        settings: RoomSettings,
        redis_settings: RedisSettings,
        nursery: trio.Nursery,
        commands: coredis.Redis[str],
        reads: coredis.Redis[str],
    ) -> None:
        self.url = redacted(url)
        self.settings = settings
        self.redis_settings = redis_settings
        self.process_id = secrets.token_hex(6)
        self._nursery = nursery
        self._commands = commands
        self._reads = reads  # blocking XREADs, one connection per mirrored room, apart from commands
        self._mirrors: dict[str, _SharedRoom] = {}
        self._held = _HeldBytes(settings.max_held_bytes)
        self._opening = trio.Lock()
        self._unreleased: dict[str, dict[str, str]] = collections.defaultdict(dict)  # room: name: holder
        self._release_wanted = trio.Event()
        self._down = False
        self._registered = False
        self._scripts = {
            name: commands.register_script(source)
            for name, source in [
                ("join", JOIN),
                ("listen", LISTEN),
                ("append", APPEND),
                ("release", RELEASE),
                ("reap", REAP),
                ("delete", DELETE),
            ]
        }

    @classmethod
    @contextlib.asynccontextmanager
    async def open(
        cls, url: str, settings: RoomSettings | None = None, redis_settings: RedisSettings | None = None
    ) -> AsyncIterator[RedisBackend]:
        """Connect (UNAVAILABLE if Redis does not answer now) and keep the lease and the readers
        running in the block; on leaving it, free this process's names at once, with leave notices."""
        redis_settings = redis_settings or RedisSettings()
        settings = settings or RoomSettings()
        options: dict[str, Any] = {
            "decode_responses": True,
            "connect_timeout": 5,
            "retry_policy": NoRetryPolicy(),  # a retried XADD could append a message twice
        }
        commands = coredis.Redis.from_url(url, stream_timeout=10, **options)
        reads = coredis.Redis.from_url(
            url, stream_timeout=redis_settings.block + 10, max_connections=settings.max_rooms, **options
        )
        async with commands, reads, trio.open_nursery() as nursery:
            backend = cls(url, settings, redis_settings, nursery, commands, reads)
            await backend._register()  # also loads the scripts, so that none is sent whole later
            nursery.start_soon(backend._forever, backend._keep_lease, redis_settings.lease / 3)
            nursery.start_soon(backend._forever, backend._release_pending, 0)
            try:
                yield backend
            finally:
                nursery.cancel_scope.cancel()
                with trio.move_on_after(2, shield=True):
                    await backend._retire()

    # -- the RoomBackend operations ------------------------------------------------------------------

    async def create(self, *, private: bool = False) -> str:
        with self._call():
            if await self._commands.hlen(REGISTRY) >= self.settings.max_rooms:
                raise too_many_rooms(self.settings.max_rooms)
            room_id = secrets.token_hex(10)
            while not await self._commands.hsetnx(_room_keys(room_id)[0], "private", str(int(private))):
                room_id = secrets.token_hex(10)  # taken (2^-80): draw again
            await self._commands.hset(REGISTRY, {room_id: "private" if private else "public"})
        logger.info("room %s created%s", room_id, " (private)" if private else "")
        return room_id

    async def public_room_ids(self) -> list[str]:
        with self._call():
            rooms = await self._commands.hgetall(REGISTRY)
        return [room_id for room_id, kind in rooms.items() if kind == "public"]

    async def delete(self, room_id: str) -> None:
        args: list[str | int] = [
            self.redis_settings.stream_length,
            CLOSING_MESSAGE.text,
            self.redis_settings.closed_log_ttl,
        ]
        with self._call():
            deleted = await self._script("delete", room_id, args)
            await self._commands.hdel(REGISTRY, [room_id])
        if not deleted:
            raise no_such_room(room_id)
        logger.info("room %s deleted", room_id)

    async def post(self, room_id: str, messages: Sequence[Message]) -> None:
        valid = next((i for i, message in enumerate(messages) if not message.name), len(messages))
        if valid and await self._append(room_id, messages[:valid], "p", holder="") == "missing":
            raise no_such_room(room_id)
        if valid < len(messages):
            if not valid:  # the room is checked first, as everywhere
                with self._call():
                    exists = await self._commands.exists([_room_keys(room_id)[0]])
                if not exists:
                    raise no_such_room(room_id)
            check_poster(messages[valid])

    async def say(self, member: Member, texts: Sequence[str]) -> None:
        assert isinstance(member, _SharedMember)
        if not texts:
            return
        said = [Message(member.name, text) for text in texts]
        await self._append(member.room_id, said, "s", holder=member.holder)

    async def leave(self, member: Member) -> None:
        assert isinstance(member, _SharedMember)
        member.leave()  # detaches it here, and queues the release that this one makes at once
        with self._call():
            await self._release(member.room_id, {member.name: member.holder})

    @contextlib.asynccontextmanager
    async def join(self, room_id: str, name: str) -> AsyncIterator[Member]:
        check_joiner(name)
        holder = f"{self.process_id}:{secrets.token_hex(4)}"
        args: list[str | int] = [
            self.redis_settings.stream_length,
            name,
            holder,
            self.settings.max_members,
            self.settings.history_length,
            JOINED,
        ]
        async with self._mirror(room_id) as room:
            with self._call():
                await self._commands.sadd(f"chat:process:{self.process_id}:rooms", [room_id])  # reap it
                status, *result = await self._script("join", room_id, args)
            if status == "missing":
                raise no_such_room(room_id)
            if status == "taken":
                raise name_taken(room_id, name)
            if status == "full":
                raise room_full(room_id, self.settings.max_members)
            member = _SharedMember(room, name, holder)
            room.attach_at(_StreamId.parse(result[0]), member, _history(result[1]))
            logger.info("%r joined room %s", name, room_id)
            async with attached(room, member):
                yield member

    @contextlib.asynccontextmanager
    async def listen(self, room_id: str) -> AsyncIterator[Subscription]:
        args: list[str | int] = [self.redis_settings.stream_length, self.settings.history_length]
        async with self._mirror(room_id) as room:
            with self._call():
                status, *result = await self._script("listen", room_id, args)
            if status == "missing":
                raise no_such_room(room_id)
            listener = Subscription(room)
            room.attach_at(_StreamId.parse(result[0]), listener, _history(result[1]))
            async with attached(room, listener):
                yield listener

    def close_all(self) -> None:
        """Close this process's subscribers, for shutdown; the rooms stay, for the other processes."""
        for room in self._mirrors.values():
            room.close()
            room.reader.cancel()
        if self._mirrors:
            logger.info("%d rooms closed here for shutdown", len(self._mirrors))
        self._mirrors.clear()

    # -- mirrors: one reader per room per process ----------------------------------------------------

    @contextlib.asynccontextmanager
    async def _mirror(self, room_id: str) -> AsyncIterator[_SharedRoom]:
        """This process's mirror of the room, held open for the block (the last one out stops it)."""
        async with self._opening:
            room = self._mirrors.get(room_id)
            if room is None:
                with self._call():
                    newest = await self._commands.xrevrange(_room_keys(room_id)[2], count=1)
                start, number = _START, 0  # no entry yet: the first is number 1
                if newest:
                    last = _StreamEntry.decode(str(newest[0].identifier), newest[0].field_values)
                    start, number = last.id, last.number
                room = self._mirrors[room_id] = _SharedRoom(self, room_id, start, number)
                self._nursery.start_soon(self._run_reader, room)
            room.users += 1
        try:
            yield room
        finally:
            room.users -= 1
            if room.users == 0 and self._mirrors.get(room_id) is room:
                del self._mirrors[room_id]
                room.reader.cancel()
                room.close()  # nobody left to close, but what it holds for late joins is freed

    async def _run_reader(self, room: _SharedRoom) -> None:
        with room.reader:  # cancelled when the last subscriber here leaves, and on shutdown
            await self._forever(functools.partial(self._read, room), 0)

    async def _read(self, room: _SharedRoom) -> bool:
        """Fan out what the room's stream has after the mirror's position; False once it is closed."""
        meta, _, log = _room_keys(room.room_id)
        block_ms = int(self.redis_settings.block * 1000)
        count = self.settings.buffer_size
        response = await self._reads.xread({log: str(room.position)}, count=count, block=block_ms)
        if response is not None:
            entries = [_StreamEntry.decode(str(e.identifier), e.field_values) for e in response[log]]
        elif not await self._commands.exists([meta]):
            # Deleted while this process could not read, and the closed stream has expired since.
            entries = [_StreamEntry(room.position, CLOSING_MESSAGE, "c", room.number + 1)]
        else:
            return True
        for entry in entries:
            if not await room.deliver(entry):
                if self._mirrors.get(room.room_id) is room:  # not a newer mirror of the same room
                    del self._mirrors[room.room_id]
                return False
        return True

    # -- leases: no ghosts ----------------------------------------------------------------------------

    async def _register(self) -> None:
        try:
            for source in (JOIN, LISTEN, APPEND, RELEASE, REAP, DELETE):
                await self._commands.script_load(source)
            await self._renew()
        except REDIS_DOWN as exc:  # at start-up: the program's error, not an outage to log
            raise RpcError(StatusCode.UNAVAILABLE, f"cannot reach {self.url}: {exc}") from None
        except coredis.exceptions.AuthenticationError as exc:  # no password, or a wrong one
            raise RpcError(
                StatusCode.UNAUTHENTICATED, f"{self.url} refused to let us in: {str(exc).rstrip('.')}"
            ) from None
        logger.info("chat backend %s: this is process %s", self.url, self.process_id)

    async def _renew(self) -> None:
        lease_ms = int(self.redis_settings.lease * 1000)
        lease = f"chat:process:{self.process_id}"
        if await self._commands.set(lease, "1", px=lease_ms, get=True) is None and self._registered:
            logger.error(
                "the lease of process %s expired while Redis was unreachable: other processes may have "
                "announced its members as gone",
                self.process_id,
            )
        self._registered = True
        await self._commands.sadd(PROCESSES, [self.process_id])

    async def _keep_lease(self) -> bool:
        """Renew this process's lease, and reap the processes whose lease expired."""
        await self._renew()
        for process in await self._commands.smembers(PROCESSES):
            if process != self.process_id and not await self._commands.exists([f"chat:process:{process}"]):
                await self._reap(process)
        return True

    async def _reap(self, process: str) -> None:
        rooms_key = f"chat:process:{process}:rooms"
        for room_id in await self._commands.smembers(rooms_key):
            args: list[str | int] = [self.redis_settings.stream_length, LEFT, f"{process}:"]
            await self._script("reap", room_id, args)
        await self._commands.delete([rooms_key])
        await self._commands.srem(PROCESSES, [process])
        if process != self.process_id:
            logger.info("process %s stopped renewing its lease: its members' names are free", process)

    async def _retire(self) -> None:
        """Free every name this process still holds, with leave notices, and give up the lease."""
        with contextlib.suppress(*REDIS_DOWN):
            await self._reap(self.process_id)
            await self._commands.delete([f"chat:process:{self.process_id}"])

    # -- leaving from synchronous places, and while Redis is away ------------------------------------

    def _release_later(self, room_id: str, name: str, holder: str) -> None:
        self._unreleased[room_id][name] = holder
        self._release_wanted.set()

    async def _release_pending(self) -> bool:
        await self._release_wanted.wait()
        self._release_wanted = trio.Event()
        while self._unreleased:
            room_id, held = next(iter(self._unreleased.items()))
            await self._release(room_id, dict(held))
        return True

    async def _release(self, room_id: str, held: dict[str, str]) -> None:
        """Free the names if their holders still hold them, with leave notices (idempotent)."""
        pairs = [value for name, holder in held.items() for value in (name, holder)]
        freed = await self._script("release", room_id, [self.redis_settings.stream_length, LEFT, *pairs])
        pending = self._unreleased.get(room_id, {})
        for name, holder in held.items():
            if pending.get(name) == holder:
                del pending[name]
        if not pending:
            self._unreleased.pop(room_id, None)
        for name in freed:
            logger.info("%r left room %s", name, room_id)

    # -- Redis away ----------------------------------------------------------------------------------

    async def _append(self, room_id: str, messages: Sequence[Message], kind: str, *, holder: str) -> str:
        args: list[str | int] = [self.redis_settings.stream_length, kind, holder]
        for message in messages:
            args += (message.name, message.text)
        with self._call():
            result: str = await self._script("append", room_id, args)
        return result

    async def _script(self, name: str, room_id: str, args: list[str | int]) -> Any:
        """Run one of the Lua scripts on the room's keys; what it returns is the script's to say."""
        return await self._scripts[name](keys=_room_keys(room_id), args=args)

    @contextlib.contextmanager
    def _call(self) -> Iterator[None]:
        """Turn Redis being away into UNAVAILABLE for the call, and log the outage once."""
        try:
            yield
        except REDIS_DOWN as exc:
            self._went_down(exc)
            raise RpcError(StatusCode.UNAVAILABLE, "the chat backend is unavailable; try again") from None
        self._came_back()

    async def _forever(self, step: Callable[[], Awaitable[bool]], pause: float) -> None:
        """Run `step` until it returns False, `pause` apart; while Redis is away, back off."""
        backoff = 0.1
        while True:
            try:
                again = await step()
            except REDIS_DOWN as exc:
                self._went_down(exc)
                await trio.sleep(backoff)
                backoff = min(backoff * 2, self.redis_settings.max_backoff)
                continue
            if not again:
                return
            self._came_back()
            backoff = 0.1
            await trio.sleep(pause)

    def _went_down(self, exc: BaseException) -> None:
        if not self._down:
            self._down = True
            logger.error(
                "chat backend %s unavailable (%s): calls fail with UNAVAILABLE, retrying", self.url, exc
            )

    def _came_back(self) -> None:
        if self._down:
            self._down = False
            logger.info("chat backend %s is back", self.url)


def _history(entries: list[list[Any]]) -> list[Message]:
    """The replay from XREVRANGE's newest-first [id, [field, value, ...]] entries: oldest first."""
    messages = []
    for _, flat in reversed(entries):
        fields = dict(zip(flat[::2], flat[1::2], strict=True))
        messages.append(Message(fields["n"], fields["t"]))
    return messages
