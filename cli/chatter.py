"""chatter: the interactive chat client (create, list and delete rooms; chat in one; or only listen).

Owns the command line and the chat flow: pick a room, pick a name tag, then typing and receiving run as
two tasks in one nursery. End of input (Ctrl-D) or Ctrl-C half-closes the call, so the others see "Has
left the chat", and waits LEAVE_WAIT seconds at most for the server to end it; the room being deleted
ends the program with the server's closing message and exit code 0.
Terminal handling lives in `cli._console`, error lines in `cli._common`.
"""

from __future__ import annotations

import argparse
import contextlib
import re
import signal
import sys
from collections.abc import AsyncIterator
from typing import cast

import trio

from chat._proto.rpc import chat_pb2
from trio_grpc import Call, Channel, RpcError, StatusCode, Stub
from trio_grpc._proto.grpc.health.v1 import health_pb2

from ._common import (
    CliError,
    add_tls_arguments,
    add_version_argument,
    client_tls,
    open_channel,
    rpc_error,
    run,
    sole_exception,
    with_default_port,
)
from ._console import Console, open_console, printable

CHAT_SERVICE = chat_pb2.DESCRIPTOR.services_by_name["ChatService"]
HEALTH_SERVICE = health_pb2.DESCRIPTOR.services_by_name["Health"]
#: What a server sends every member and listener of a room before it ends their calls: on DeleteChatRoom and
#: on shutdown alike, so we ask its health which one it was.
CLOSING = chat_pb2.Message(name="chat server", message="chat room is closing")
_ROOM_ID = re.compile(r"[0-9a-f]{20}")
DEFAULT_PORT = 8080
DEFAULT_HOST = f"localhost:{DEFAULT_PORT}"
#: Seconds the server gets to end the call after we half-close. The seed's Go server never does; then we
#: cancel, which the others see as the same "Has left the chat".
LEAVE_WAIT = 2.0

DESCRIPTION = """\
Chat in the rooms of a chat server.

Without --create, --list or --delete, chatter lists the rooms, asks which one to join ("Pick a room:",
a number or a room id) and your name tag, then shows every message as "name: message" while you type
yours. Ctrl-D or Ctrl-C leaves the room (Ctrl-C with exit code 130); the others see "Has left the
chat". Leaving ends our side of the call and gives the server 2 seconds to end it; a server that does
not is then cut off. When the room closes, chatter says whether it was deleted or the server is
shutting down. Input may come from a pipe as well: one answer per prompt, then one message per line.
"""

EPILOG = """\
examples:
  chatter --insecure --create            create a room on a plaintext server on localhost:8080
  chatter --insecure                     pick a room and a name tag, then chat
  chatter --insecure --room ID --name Me join without the prompts
  chatter --insecure --room ID --listen  only read the room
  chatter --host chat.example.com:443    TLS, checked against the system trust store
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="chatter",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--host",
        default=DEFAULT_HOST,
        metavar="HOST[:PORT]",
        help=f"chat server; the port defaults to {DEFAULT_PORT} (default: %(default)s)",
    )
    add_version_argument(parser)
    add_tls_arguments(parser)
    action = parser.add_mutually_exclusive_group()
    action.add_argument(
        "--create", action="store_true", help="create a room and print `Chat room created: ID`"
    )
    action.add_argument("--list", action="store_true", help="print the id of every public room, one a line")
    action.add_argument("--delete", metavar="ID", help="delete a room (its members get a closing message)")
    parser.add_argument(
        "--private", action="store_true", help="with --create: a room that is joinable by id but not listed"
    )
    parser.add_argument("--room", metavar="ID", help="join this room instead of picking one from the list")
    parser.add_argument("--name", metavar="NAME", help="your name tag, instead of being asked for it")
    parser.add_argument(
        "--listen", action="store_true", help="only read the room's messages (you are not a member)"
    )
    return parser


def main(argv: list[str] | None = None) -> None:
    parser = build_parser()
    args = parser.parse_args(argv)
    args.host = with_default_port(args.host, DEFAULT_PORT)
    if args.private and not args.create:
        parser.error("--private goes with --create")
    if (args.create or args.list or args.delete) and (args.room or args.name or args.listen):
        parser.error("--room, --name and --listen are for chatting, not with --create, --list or --delete")
    if args.listen and args.name:
        parser.error("--listen reads without a name tag: drop --name")
    run(lambda: _main(args))


async def _main(args: argparse.Namespace) -> int:
    tls = client_tls(args)
    async with open_channel(args.host, tls, "--host") as channel:
        try:
            return await _command(channel, args)
        except Exception as exc:
            error = sole_exception(exc)
            if isinstance(error, RpcError):
                raise _chat_error(error, args) from None
            raise


async def _command(channel: Channel, args: argparse.Namespace) -> int:
    """Run what the options ask for; the exit code (130 when Ctrl-C ended the chat)."""
    stub = Stub(channel, CHAT_SERVICE)
    if args.create:
        room = await stub.CreateChatRoom(chat_pb2.CreateChatRoomRequest(private=args.private))
        print(f"Chat room created: {room.room_id}")
    elif args.list:
        rooms = await _public_rooms(stub)
        if rooms:
            print("\n".join(rooms))
        else:
            print(f"No public chat rooms; create one with `{_create_command(args)}`.", file=sys.stderr)
    elif args.delete:
        await stub.DeleteChatRoom(chat_pb2.DeleteChatRoomRequest(room_id=args.delete))
        print(f"Chat room deleted: {args.delete}")
    else:
        async with open_console() as console:
            room, interrupted = await _session(stub, args, console)
            if interrupted is None:  # the server ended the call with the closing message
                console.show(await _why_closed(channel, room))
        if interrupted:
            return 130
    return 0


def _chat_error(exc: RpcError, args: argparse.Namespace) -> CliError:
    if exc.code == StatusCode.NOT_FOUND and "room" in exc.message:
        return CliError(f"{exc.message} (NOT_FOUND)", "see the rooms with `chatter --list`")
    if exc.code == StatusCode.ALREADY_EXISTS:
        return CliError(f"{exc.message} (ALREADY_EXISTS)", "choose another --name")
    return rpc_error(exc, args.host, args.insecure)


async def _public_rooms(stub: Stub) -> list[str]:
    response = await stub.ListChatRooms(chat_pb2.ListChatRoomsRequest())
    return [room.room_id for room in response.chat_rooms]


def _create_command(args: argparse.Namespace) -> str:
    """The chatter command line that creates a room on the same server, with the same options."""
    words = ["chatter", "--create"]
    if args.host != DEFAULT_HOST:
        words += ["--host", args.host]
    if args.insecure:
        words.append("--insecure")
    if args.cacert:
        words += ["--cacert", args.cacert]
    return " ".join(words)


async def _session(stub: Stub, args: argparse.Namespace, console: Console) -> tuple[str, bool | None]:
    """Pick a room and chat or listen: the room, and True if Ctrl-C ended it, None if it closed, else False.

    Answers that turn out wrong are asked again: a picked room that does not exist, a name tag taken."""
    room = args.room or await _pick_room(stub, console, args)
    name = args.name
    while True:
        try:
            if args.listen:
                return room, await _listen(stub, room, console)
            name = name or await _ask_name(console)
            return room, await _chat(stub, room, name, console)
        except Exception as exc:
            error = sole_exception(exc)
            if not isinstance(error, RpcError):
                raise
            if error.code == StatusCode.NOT_FOUND and not args.room:
                console.show(f"There is no room {room} (any more); pick another.")
                room = await _pick_room(stub, console, args)
            elif error.code == StatusCode.ALREADY_EXISTS and not args.name:
                console.show(f"The name tag {name!r} is taken in this room; choose another.")
                name = await _ask_name(console)
            else:
                raise error from None


async def _ask(console: Console, prompt: str) -> str:
    answer = await console.read_line(prompt)
    if answer is None:
        raise CliError(f"input ended at the prompt {prompt.strip()!r}")
    return answer.strip()


async def _pick_room(stub: Stub, console: Console, args: argparse.Namespace) -> str:
    rooms = await _public_rooms(stub)
    if not rooms:
        hint = f"create one with `{_create_command(args)}`, or join a private one with --room ID"
        raise CliError("there are no public chat rooms", hint)
    console.show("Chat rooms:")
    for number, room_id in enumerate(rooms, 1):
        console.show(f"[{number}]: {room_id}")
    while True:
        answer = await _ask(console, "Pick a room: ")
        if answer.isdigit() and 1 <= int(answer) <= len(rooms):
            return rooms[int(answer) - 1]
        if _ROOM_ID.fullmatch(answer):  # a private room's id works too
            return answer
        numbers = "1" if len(rooms) == 1 else f"a number from 1 to {len(rooms)}"
        console.show(f"Please enter {numbers}, or a room id.")


async def _ask_name(console: Console) -> str:
    while True:
        name = await _ask(console, "Enter Name tag: ")
        if name:
            return name
        console.show("The name tag cannot be empty.")


def _show(console: Console, message: chat_pb2.Message) -> None:
    console.show(f"{printable(message.name)}: {printable(message.message)}")


async def _show_all(call: Call, console: Console) -> bool | None:
    """Show every message until the server ends the call; None if it ended with the closing message."""
    last = None
    async for received in call:
        last = cast(chat_pb2.Message, received)  # Chat and Listen answer with rpc.Message
        _show(console, last)
    return None if last == CLOSING else False


async def _listen(stub: Stub, room_id: str, console: Console) -> bool | None:
    with trio.open_signal_receiver(signal.SIGINT) as interrupts:
        with trio.CancelScope() as listening:  # cancelled by Ctrl-C only
            async with trio.open_nursery() as nursery:
                nursery.start_soon(_cancel_on_signal, interrupts, listening)
                async with stub.Listen(chat_pb2.ListenRequest(room_id=room_id)) as call:
                    ended = await _show_all(call, console)
                nursery.cancel_scope.cancel()
                return ended
        return True


async def _chat(stub: Stub, room_id: str, name: str, console: Console) -> bool | None:
    with trio.open_signal_receiver(signal.SIGINT) as interrupts:  # from here on, Ctrl-C means "leave"
        async with stub.Chat() as call:
            await call.send(chat_pb2.ChatMessage(join=chat_pb2.JoinChat(room_id=room_id, name=name)))
            first = await call.receive()  # the join notice, or the reason there is none (NOT_FOUND...)
            if first is None:
                return False
            _show(console, first)
            typing = trio.CancelScope()  # cancelled by Ctrl-C only
            ended: bool | None = False
            async with trio.open_nursery() as nursery:
                nursery.start_soon(_on_interrupts, interrupts, typing, nursery.cancel_scope)
                nursery.start_soon(_type_messages, call, name, console, typing, nursery.cancel_scope)
                ended = await _show_all(call, console)
                nursery.cancel_scope.cancel()  # the server ended the call: the room closed, or we left
            return True if typing.cancel_called else ended


async def _why_closed(channel: Channel, room_id: str) -> str:
    """Why the room closed: a server still serving deleted it; one that is not, or is gone, is stopping.

    A server without the health service (the seed's Go server) answered, so it is still up."""
    try:
        health = await Stub(channel, HEALTH_SERVICE).Check(health_pb2.HealthCheckRequest(), timeout=1)
        serving = health.status == health_pb2.HealthCheckResponse.SERVING
    except RpcError as exc:
        serving = exc.code == StatusCode.UNIMPLEMENTED
    return f"Room {room_id} was deleted." if serving else "The server is shutting down."


async def _on_interrupts(
    interrupts: AsyncIterator[int], typing: trio.CancelScope, chat: trio.CancelScope
) -> None:
    """The first Ctrl-C stops typing, so that we leave the room politely; a second one stops at once."""
    async for _ in interrupts:
        if typing.cancel_called:
            chat.cancel()
            return
        typing.cancel()


async def _type_messages(
    call: Call, name: str, console: Console, typing: trio.CancelScope, chat: trio.CancelScope
) -> None:
    """Send typed lines until end of input or Ctrl-C, then half-close: the server should end the call.

    One that does not within LEAVE_WAIT seconds is cut off (cancelling `chat`), so that we always exit."""
    with typing:
        await _send_lines(call, name, console)
    with contextlib.suppress(RpcError):  # the call already ended: receiving reports how
        await call.done_writing()
    await trio.sleep(LEAVE_WAIT)
    chat.cancel()


async def _send_lines(call: Call, name: str, console: Console) -> None:
    while (line := await console.read_line(f"{name}: ", echo=False)) is not None:
        if line.strip():
            message = chat_pb2.Message(name=name, message=line)
            try:
                await call.send(chat_pb2.ChatMessage(message=message))
            except RpcError:
                return


async def _cancel_on_signal(signals: AsyncIterator[int], scope: trio.CancelScope) -> None:
    async for _ in signals:
        scope.cancel()
        return


if __name__ == "__main__":
    main()
