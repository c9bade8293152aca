"""The loads h2load cannot make: ping-pong on one bidirectional stream, and gRPC clients under load.

    python -m bench.loads pingpong PORT [--rounds N]      # p50/p99 round trip on one FullDuplexCall
    python -m bench.loads client STACK PORT [--calls N]   # a client stack's CPU per unary call

`bench.run` starts these as processes pinned to core 1 (the server under test has core 0) and parses the
one line each prints:
- pingpong: a blocking h2 client (the same for every server) opens one FullDuplexCall and sends one small
  request at a time, each only once the answer to the previous one is in: `PINGPONG p50_us p99_us`.
  The client's own cost (Python h2, about the same per round trip whatever the server) is in the figure.
- client: 64 concurrent unary callers of STACK (trio_grpc, grpc_aio or grpclib) against grpcio's sync
  server (`bench.servers grpc_sync`), every answer checked: `CLIENT calls_per_s cpu_us_per_call`, the
  CPU being this process's own (user + system, all threads) during the timed calls.
"""

from __future__ import annotations

import argparse
import os
import resource
import socket
import time
from typing import Any

import h2.config
import h2.connection
import h2.events

from bench.servers import DUPLEX_PATH, UNARY_PATH, SimpleRequest, SimpleResponse, StreamRequest, frame
from tests.interop._proto.grpc.testing import messages_pb2

CLIENT_STACKS = ("trio_grpc", "grpc_aio", "grpclib")
_CONCURRENCY = 64
_PAYLOAD = messages_pb2.Payload(body=b"x" * 16)


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _measure_start() -> tuple[float, float]:
    return time.perf_counter(), _cpu_seconds()


def _measured(started: tuple[float, float]) -> tuple[float, float]:
    """(wall seconds, CPU seconds of this process) since `_measure_start`."""
    return time.perf_counter() - started[0], _cpu_seconds() - started[1]


# -- ping-pong -------------------------------------------------------------------------------------------


def pingpong(port: int, rounds: int) -> list[float]:
    """Round-trip times (s) of `rounds` request/answer pairs on one FullDuplexCall, after a warm-up."""
    sock = socket.create_connection(("127.0.0.1", port))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True, header_encoding=None))
    conn.initiate_connection()
    stream_id = conn.get_next_available_stream_id()
    headers = [
        (b":method", b"POST"),
        (b":scheme", b"http"),
        (b":path", DUPLEX_PATH.encode()),
        (b":authority", b"127.0.0.1"),
        (b"content-type", b"application/grpc"),
        (b"te", b"trailers"),
    ]
    conn.send_headers(stream_id, headers)
    sock.sendall(conn.data_to_send())
    request = frame(
        StreamRequest(response_parameters=[messages_pb2.ResponseParameters(size=16)]).SerializeToString()
    )
    answer = bytearray()

    def one_round() -> None:
        conn.send_data(stream_id, request)
        sock.sendall(conn.data_to_send())
        while len(answer) < 5 or len(answer) < 5 + int.from_bytes(answer[1:5], "big"):
            data = sock.recv(65536)
            if not data:
                raise SystemExit("error: the server closed the ping-pong connection")
            for event in conn.receive_data(data):
                if isinstance(event, h2.events.DataReceived):
                    answer.extend(event.data)
                    conn.acknowledge_received_data(event.flow_controlled_length, stream_id)
                elif isinstance(event, h2.events.StreamReset | h2.events.TrailersReceived):
                    raise SystemExit(f"error: the ping-pong call ended: {event}")
            if out := conn.data_to_send():
                sock.sendall(out)
        del answer[: 5 + int.from_bytes(answer[1:5], "big")]

    for _ in range(max(rounds // 10, 10)):
        one_round()
    times = []
    for _ in range(rounds):
        started = time.perf_counter()
        one_round()
        times.append(time.perf_counter() - started)
    sock.close()
    return sorted(times)


# -- clients ---------------------------------------------------------------------------------------------


def _check(response: Any) -> None:
    if response.payload != _PAYLOAD:
        raise SystemExit("error: wrong answer to a unary call")


def _run_trio_grpc(port: int, calls: int) -> tuple[float, float]:
    import trio

    import trio_grpc
    from tests.interop._proto.grpc.testing import test_pb2

    async def main() -> tuple[float, float]:
        async with trio_grpc.Channel(f"127.0.0.1:{port}") as channel:
            stub = trio_grpc.Stub(channel, test_pb2.DESCRIPTOR.services_by_name["TestService"])
            call = stub.UnaryCall
            request = SimpleRequest(payload=_PAYLOAD)

            async def caller(count: int) -> None:
                for _ in range(count):
                    _check(await call(request))

            await caller(_CONCURRENCY)  # warm up: the connection is open
            started = _measure_start()
            async with trio.open_nursery() as nursery:
                for _ in range(_CONCURRENCY):
                    nursery.start_soon(caller, calls // _CONCURRENCY)
            return _measured(started)

    return trio.run(main)


def _run_grpc_aio(port: int, calls: int) -> tuple[float, float]:
    os.environ.setdefault("GRPC_VERBOSITY", "NONE")
    import asyncio

    import grpc

    async def main() -> tuple[float, float]:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            call = channel.unary_unary(
                UNARY_PATH,
                request_serializer=SimpleRequest.SerializeToString,
                response_deserializer=SimpleResponse.FromString,
            )
            request = SimpleRequest(payload=_PAYLOAD)

            async def caller(count: int) -> None:
                for _ in range(count):
                    _check(await call(request))

            await caller(_CONCURRENCY)
            started = _measure_start()
            await asyncio.gather(*(caller(calls // _CONCURRENCY) for _ in range(_CONCURRENCY)))
            return _measured(started)

    return asyncio.run(main())


def _run_grpclib(port: int, calls: int) -> tuple[float, float]:
    import asyncio

    from grpclib.client import Channel
    from grpclib.const import Cardinality

    async def main() -> tuple[float, float]:
        channel = Channel("127.0.0.1", port)
        method: Any = channel.request  # typed loosely: grpclib's generics are not worth spelling out here
        request = SimpleRequest(payload=_PAYLOAD)

        async def caller(count: int) -> None:
            for _ in range(count):
                async with method(
                    UNARY_PATH, Cardinality.UNARY_UNARY, SimpleRequest, SimpleResponse
                ) as stream:
                    await stream.send_message(request, end=True)
                    _check(await stream.recv_message())

        try:
            await caller(_CONCURRENCY)
            started = _measure_start()
            await asyncio.gather(*(caller(calls // _CONCURRENCY) for _ in range(_CONCURRENCY)))
            return _measured(started)
        finally:
            channel.close()

    return asyncio.run(main())


_CLIENTS = {"trio_grpc": _run_trio_grpc, "grpc_aio": _run_grpc_aio, "grpclib": _run_grpclib}


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.loads", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="load", required=True)
    ping = sub.add_parser("pingpong", help="round trips on one FullDuplexCall")
    ping.add_argument("port", type=int)
    ping.add_argument("--rounds", type=int, default=5000)
    client = sub.add_parser("client", help="a client stack's CPU per unary call")
    client.add_argument("stack", choices=CLIENT_STACKS)
    client.add_argument("port", type=int)
    client.add_argument("--calls", type=int, default=20000)
    args = parser.parse_args()
    if args.load == "pingpong":
        times = pingpong(args.port, args.rounds)
        print(f"PINGPONG {times[len(times) // 2] * 1e6:.1f} {times[len(times) * 99 // 100] * 1e6:.1f}")
        return
    calls = args.calls // _CONCURRENCY * _CONCURRENCY
    elapsed, cpu = _CLIENTS[args.stack](args.port, calls)
    print(f"CLIENT {calls / elapsed:.1f} {cpu * 1e6 / calls:.1f}")


if __name__ == "__main__":
    main()
