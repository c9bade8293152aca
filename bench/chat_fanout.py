"""Room fan-out through a real `chatserver`: N members, one poster, M messages, one member that never reads.

    python -m bench.chat_fanout [--members 50] [--messages 5000] [--buffer 256]

Prints how long the N members took to receive all M messages (N x M deliveries), what became of the member
that never reads (cut off with RESOURCE_EXHAUSTED once its server-side buffer and its stream window are full),
whether the others saw its leave notice, and the server's RSS before and after.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
from pathlib import Path

import trio

import trio_grpc
from chat._proto.rpc import chat_pb2

SERVICE = chat_pb2.DESCRIPTOR.services_by_name["ChatService"]
POSTER = "poster"


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


async def start_chatserver(buffer: int) -> tuple[trio.Process, int]:
    command = [sys.executable, "-m", "cli.chatserver", "--host", "127.0.0.1", "--port", "0"]
    command += ["--buffer", str(buffer)]
    process = await trio.lowlevel.open_process(command, stderr=subprocess.PIPE)
    assert process.stderr is not None
    seen = b""
    while (match := re.search(rb"listening on 127\.0\.0\.1:(\d+)", seen)) is None:
        chunk = await process.stderr.receive_some()
        if not chunk:
            raise RuntimeError(f"chatserver did not start: {seen.decode(errors='replace')}")
        seen += chunk
    return process, int(match.group(1))


def join(room: str, name: str) -> chat_pb2.ChatMessage:
    return chat_pb2.ChatMessage(join=chat_pb2.JoinChat(room_id=room, name=name))


async def drain(stream: trio.abc.ReceiveStream) -> None:
    """Read the server's log so that it never blocks writing it."""
    while await stream.receive_some():
        pass


async def main(members: int, messages: int, buffer: int) -> None:
    with trio.fail_after(120):
        process, port = await start_chatserver(buffer)
        assert process.stderr is not None
        async with trio.open_nursery() as nursery:
            nursery.start_soon(drain, process.stderr)
            try:
                await run(port, process.pid, members, messages, buffer)
            finally:
                process.terminate()
                await process.wait()


async def run(port: int, pid: int, members: int, messages: int, buffer: int) -> None:
    target = f"127.0.0.1:{port}"
    # The member that never reads takes little in before its window closes (16 KiB, and no read buffer to
    # speak of), so that it falls behind within this run.
    slow_settings = trio_grpc.ChannelSettings(stream_window_size=16 * 1024, stream_read_buffer_size=1)
    async with (
        trio_grpc.Channel(target) as channel,
        trio_grpc.Channel(target, settings=slow_settings) as slow,
    ):
        stub, slow_stub = trio_grpc.Stub(channel, SERVICE), trio_grpc.Stub(slow, SERVICE)
        room = (await stub.CreateChatRoom(chat_pb2.CreateChatRoomRequest())).room_id
        rss_before = rss_mib(pid)
        joined, done = trio.Semaphore(0), trio.Semaphore(0)
        left_seen: list[bool] = []
        finished: list[float] = []

        async def member(index: int) -> None:
            name = f"member-{index}"
            async with stub.Chat() as call:
                await call.send(join(room, name))
                async for message in call:
                    if message.name == name:  # the replay ends with our own join notice
                        break
                joined.release()
                received, saw_leave = 0, False
                async for message in call:
                    if message.name == POSTER:
                        received += 1
                    elif message.name == "slow" and message.message == "Has left the chat":
                        saw_leave = True
                    if received == messages and saw_leave:
                        break
                finished.append(trio.current_time())
                left_seen.append(saw_leave)
                done.release()

        slow_outcome: list[str] = []

        async def slow_member() -> None:
            async with slow_stub.Chat() as call:
                await call.send(join(room, "slow"))
                joined.release()
                await done.acquire()  # read nothing until every other member is through
                done.release()
                count = 0
                try:
                    async for message in call:
                        count += 1 if message.name == POSTER else 0
                except trio_grpc.RpcError as error:
                    slow_outcome.append(f"{error.code.name} after {count} of the messages: {error.message}")
                else:
                    slow_outcome.append(f"ended OK after {count} messages")

        async with trio.open_nursery() as nursery:
            for index in range(members):
                nursery.start_soon(member, index)
            nursery.start_soon(slow_member)
            for _ in range(members + 1):
                await joined.acquire()
            started = trio.current_time()
            requests = (
                chat_pb2.PostRequest(room_id=room, message=chat_pb2.Message(name=POSTER, message=f"m{i}"))
                for i in range(messages)
            )
            summary = await stub.Post(requests)
        elapsed = max(finished) - started
        deliveries = members * messages
        print(f"members {members}, messages {messages}, buffer {buffer}: posted {summary.accepted}")
        print(f"  all {deliveries:,} deliveries in {elapsed:.2f} s: {deliveries / elapsed:,.0f} deliveries/s")
        everyone_saw_it = len(left_seen) == members and all(left_seen)
        print(f"  every member saw the slow member's leave notice: {everyone_saw_it}")
        print(f"  member that never read: {slow_outcome[0]}")
        print(f"  chatserver RSS: {rss_before:.1f} MiB before, {rss_mib(pid):.1f} MiB after")


def cli() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--members", type=int, default=50, help="members that read (default 50)")
    parser.add_argument("--messages", type=int, default=5000, help="messages posted (default 5000)")
    parser.add_argument("--buffer", type=int, default=256, help="chatserver --buffer (default 256)")
    args = parser.parse_args()
    trio.run(main, args.members, args.messages, args.buffer)


if __name__ == "__main__":
    cli()
