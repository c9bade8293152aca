"""The same echo service served four ways, one process each, for `bench.run` and `bench.memory` to load.

    python -m bench.servers {trio_grpc,grpc_aio,grpclib,bare_h2} [--port N] [--profile FILE]

Every server answers, on 127.0.0.1, the methods of the interop `grpc.testing.TestService` used here:
- `UnaryCall`: SimpleRequest -> SimpleResponse carrying the request's payload back (echo);
- `StreamingOutputCall`: StreamingOutputCallRequest -> one StreamingOutputCallResponse per entry of
  `response_parameters`, each with a payload of `size` zero bytes;
- `FullDuplexCall`: the same answer to each request of the stream, as soon as it arrives (ping-pong).
`grpc_sync` (grpcio's thread-pool server) is not among the servers compared: it is the fixed target of
the client load (`bench.loads client`).
The application work (protobuf parse, build, serialize) is the same functions everywhere, so only the
gRPC stack differs. `bare_h2` is the ceiling: Trio and h2 with nothing else, answering in the read loop,
no task per call, no limits, no validation beyond what h2 does, and no backpressure: it holds a whole
response in memory until the peer's windows let it out (one DATA frame per message, as a send(message)
API would).

Once listening, a server prints `READY <port>` on stdout. SIGINT stops it (and writes the profile).
Logging is off. Each server is one process; `bench.run` pins it to one core.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import functools
import importlib.util
import logging
import os
import signal
import socket
import sys
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

from tests.interop._proto.grpc.testing import messages_pb2, test_pb2

SERVICE = "grpc.testing.TestService"
UNARY_PATH = f"/{SERVICE}/UnaryCall"
STREAM_PATH = f"/{SERVICE}/StreamingOutputCall"
DUPLEX_PATH = f"/{SERVICE}/FullDuplexCall"
SERVERS = ("trio_grpc", "grpc_aio", "grpclib", "bare_h2")
#: The module each server needs beyond trio_grpc's own dependencies (peers may not be installed).
_NEEDS = {"grpc_aio": "grpc", "grpclib": "grpclib"}


def installed_servers() -> list[str]:
    """The servers whose gRPC stack is importable here."""
    return [name for name in SERVERS if name not in _NEEDS or importlib.util.find_spec(_NEEDS[name])]


SimpleRequest = messages_pb2.SimpleRequest
SimpleResponse = messages_pb2.SimpleResponse
StreamRequest = messages_pb2.StreamingOutputCallRequest
StreamResponse = messages_pb2.StreamingOutputCallResponse


# -- the application work, shared by every server -------------------------------------------------------


def echo(request: Any) -> Any:
    return SimpleResponse(payload=request.payload)


def stream_responses(request: Any) -> Iterator[Any]:
    for parameters in request.response_parameters:
        yield StreamResponse(payload=messages_pb2.Payload(body=bytes(parameters.size)))


def frame(body: bytes) -> bytes:
    """A gRPC length-prefixed, uncompressed message."""
    return b"\x00" + len(body).to_bytes(4, "big") + body


def _ready(port: int) -> None:
    print(f"READY {port}", flush=True)


# -- (a) trio_grpc ---------------------------------------------------------------------------------------


def serve_trio_grpc(port: int) -> None:
    import trio

    import trio_grpc

    class EchoService:
        async def UnaryCall(self, request: Any, context: trio_grpc.ServicerContext) -> Any:
            return echo(request)

        async def StreamingOutputCall(self, request: Any, context: trio_grpc.ServicerContext) -> None:
            for response in stream_responses(request):
                await context.send(response)

        async def FullDuplexCall(self, requests: Any, context: trio_grpc.ServicerContext) -> None:
            async for request in requests:
                for response in stream_responses(request):
                    await context.send(response)

    binding = trio_grpc.bind_service(test_pb2.DESCRIPTOR.services_by_name["TestService"], EchoService())

    async def main() -> None:
        server = trio_grpc.Server([binding])
        async with trio.open_nursery() as nursery:
            bound = await nursery.start(functools.partial(server.serve_tcp, port, host="127.0.0.1"))
            _ready(bound)

    trio.run(main)


# -- (b) grpc.aio (grpcio) -------------------------------------------------------------------------------


def serve_grpc_aio(port: int) -> None:
    os.environ.setdefault("GRPC_VERBOSITY", "NONE")
    import asyncio

    import grpc  # type: ignore[import-untyped]

    async def unary(request: Any, context: Any) -> Any:
        return echo(request)

    async def streaming(request: Any, context: Any) -> AsyncIterator[Any]:
        for response in stream_responses(request):
            yield response

    async def duplex(requests: Any, context: Any) -> AsyncIterator[Any]:
        async for request in requests:
            for response in stream_responses(request):
                yield response

    handler = grpc.method_handlers_generic_handler(
        SERVICE,
        {
            "UnaryCall": grpc.unary_unary_rpc_method_handler(
                unary,
                request_deserializer=SimpleRequest.FromString,
                response_serializer=SimpleResponse.SerializeToString,
            ),
            "StreamingOutputCall": grpc.unary_stream_rpc_method_handler(
                streaming,
                request_deserializer=StreamRequest.FromString,
                response_serializer=StreamResponse.SerializeToString,
            ),
            "FullDuplexCall": grpc.stream_stream_rpc_method_handler(
                duplex,
                request_deserializer=StreamRequest.FromString,
                response_serializer=StreamResponse.SerializeToString,
            ),
        },
    )

    async def main() -> None:
        server = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
        server.add_generic_rpc_handlers((handler,))
        bound = server.add_insecure_port(f"127.0.0.1:{port}")
        await server.start()
        _ready(bound)
        try:
            await server.wait_for_termination()
        finally:
            await server.stop(None)

    asyncio.run(main())


# -- (c) grpclib -----------------------------------------------------------------------------------------


def serve_grpclib(port: int) -> None:
    import asyncio

    from grpclib.const import Cardinality, Handler
    from grpclib.server import Server, Stream

    class EchoService:
        async def unary(self, stream: Stream[Any, Any]) -> None:
            request = await stream.recv_message()
            await stream.send_message(echo(request))

        async def streaming(self, stream: Stream[Any, Any]) -> None:
            request = await stream.recv_message()
            for response in stream_responses(request):
                await stream.send_message(response)

        async def duplex(self, stream: Stream[Any, Any]) -> None:
            async for request in stream:
                for response in stream_responses(request):
                    await stream.send_message(response)

        def __mapping__(self) -> dict[str, Handler]:
            return {
                UNARY_PATH: Handler(self.unary, Cardinality.UNARY_UNARY, SimpleRequest, SimpleResponse),
                STREAM_PATH: Handler(self.streaming, Cardinality.UNARY_STREAM, StreamRequest, StreamResponse),
                DUPLEX_PATH: Handler(self.duplex, Cardinality.STREAM_STREAM, StreamRequest, StreamResponse),
            }

    async def main() -> None:
        # IPPROTO_TCP explicitly: asyncio sets TCP_NODELAY on accepted sockets only when the listening
        # socket's proto says TCP; with proto 0, Nagle plus delayed ACKs add ~40 ms to every call.
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", port))
        server = Server([EchoService()])
        await server.start(sock=sock)
        _ready(sock.getsockname()[1])
        try:
            await server.wait_closed()
        finally:
            server.close()

    asyncio.run(main())


# -- (d) bare Trio + h2: the ceiling ---------------------------------------------------------------------

_RESPONSE_HEADERS = [(b":status", b"200"), (b"content-type", b"application/grpc")]
_OK_TRAILERS = [(b"grpc-status", b"0")]
_UNIMPLEMENTED = [*_RESPONSE_HEADERS, (b"grpc-status", b"12")]


def _bare_answer(path: bytes, body: bytes) -> list[bytes] | None:
    """The framed response messages for a request body (one framed message), or None if unknown path."""
    if path == UNARY_PATH.encode():
        return [frame(echo(SimpleRequest.FromString(body[5:])).SerializeToString())]
    if path == STREAM_PATH.encode():
        responses = stream_responses(StreamRequest.FromString(body[5:]))
        return [frame(response.SerializeToString()) for response in responses]
    return None


def serve_bare_h2(port: int) -> None:
    import h2.config
    import h2.connection
    import h2.events
    import h2.settings
    import trio

    # The same h2 configuration as trio_grpc's server: no header validation or normalization by h2.
    config = h2.config.H2Configuration(
        client_side=False,
        header_encoding=None,
        validate_inbound_headers=False,
        validate_outbound_headers=False,
        normalize_outbound_headers=False,
    )

    async def handle(sock: trio.SocketStream) -> None:
        conn = h2.connection.H2Connection(config)
        conn.local_settings = h2.settings.Settings(
            client=False,
            initial_values={
                h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 1 << 20,
                h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS: 256,
            },
        )
        conn.initiate_connection()
        conn.increment_flow_control_window((16 << 20) - 65535)
        paths: dict[int, bytes] = {}
        bodies: dict[int, bytearray] = collections.defaultdict(bytearray)
        # stream -> (response messages not fully sent, offset into the first one)
        unsent: dict[int, tuple[collections.deque[bytes], int]] = {}

        def pump(stream_id: int) -> None:
            """Send what the windows allow, a DATA frame per message as a send(message) API does; then
            the trailers."""
            messages, offset = unsent[stream_id]
            while messages:
                data = messages[0]
                size = min(
                    len(data) - offset,
                    conn.local_flow_control_window(stream_id),
                    conn.max_outbound_frame_size,
                )
                if size <= 0:
                    unsent[stream_id] = (messages, offset)
                    return
                conn.send_data(stream_id, data[offset : offset + size])
                offset += size
                if offset == len(data):
                    messages.popleft()
                    offset = 0
            del unsent[stream_id]
            conn.send_headers(stream_id, _OK_TRAILERS, end_stream=True)

        duplex: set[int] = set()  # FullDuplexCall streams whose response headers are out

        def answer_duplex(stream_id: int) -> None:
            """Answer every complete request message of a FullDuplexCall at once, in one DATA frame each.
            Made for ping-pong: small answers, a peer that returns credit; no wait for window."""
            body = bodies[stream_id]
            if stream_id not in duplex:
                conn.send_headers(stream_id, _RESPONSE_HEADERS)
                duplex.add(stream_id)
            while len(body) >= 5 and len(body) >= 5 + (length := int.from_bytes(body[1:5], "big")):
                request = StreamRequest.FromString(bytes(body[5 : 5 + length]))
                del body[: 5 + length]
                for response in stream_responses(request):
                    conn.send_data(stream_id, frame(response.SerializeToString()))

        await sock.send_all(conn.data_to_send())
        with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
            while data := await sock.receive_some(65536):
                for event in conn.receive_data(data):
                    if isinstance(event, h2.events.DataReceived):
                        bodies[event.stream_id] += event.data
                        if event.flow_controlled_length:
                            conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
                        if paths.get(event.stream_id) == DUPLEX_PATH.encode():
                            answer_duplex(event.stream_id)
                    elif isinstance(event, h2.events.RequestReceived):
                        paths[event.stream_id] = dict(event.headers)[b":path"]
                    elif isinstance(event, h2.events.StreamEnded) and event.stream_id in duplex:
                        duplex.discard(event.stream_id)  # every request was answered as it came
                        paths.pop(event.stream_id, None)
                        bodies.pop(event.stream_id, None)
                        conn.send_headers(event.stream_id, _OK_TRAILERS, end_stream=True)
                    elif isinstance(event, h2.events.StreamEnded):
                        stream_id = event.stream_id
                        response = _bare_answer(paths.pop(stream_id), bytes(bodies.pop(stream_id, b"")))
                        if response is None:
                            conn.send_headers(stream_id, _UNIMPLEMENTED, end_stream=True)
                        else:
                            conn.send_headers(stream_id, _RESPONSE_HEADERS)
                            unsent[stream_id] = (collections.deque(response), 0)
                            pump(stream_id)
                    elif isinstance(event, h2.events.WindowUpdated | h2.events.RemoteSettingsChanged):
                        for stream_id in list(unsent):
                            pump(stream_id)
                    elif isinstance(event, h2.events.StreamReset):
                        duplex.discard(event.stream_id)
                        unsent.pop(event.stream_id, None)
                        paths.pop(event.stream_id, None)
                        bodies.pop(event.stream_id, None)
                out = conn.data_to_send()
                if out:
                    await sock.send_all(out)

    async def main() -> None:
        listeners = await trio.open_tcp_listeners(port, host="127.0.0.1")
        _ready(listeners[0].socket.getsockname()[1])
        await trio.serve_listeners(handle, listeners)

    trio.run(main)


# -- (e) grpcio's sync server: the fixed target of the client load ---------------------------------------


def serve_grpc_sync(port: int) -> None:
    os.environ.setdefault("GRPC_VERBOSITY", "NONE")
    import concurrent.futures

    import grpc

    handler = grpc.method_handlers_generic_handler(
        SERVICE,
        {
            "UnaryCall": grpc.unary_unary_rpc_method_handler(
                lambda request, context: echo(request),
                request_deserializer=SimpleRequest.FromString,
                response_serializer=SimpleResponse.SerializeToString,
            )
        },
    )
    server = grpc.server(concurrent.futures.ThreadPoolExecutor(8), options=[("grpc.so_reuseport", 0)])
    server.add_generic_rpc_handlers((handler,))
    bound = server.add_insecure_port(f"127.0.0.1:{port}")
    server.start()
    _ready(bound)
    try:
        server.wait_for_termination()
    finally:
        server.stop(None)


SERVE: dict[str, Callable[[int], None]] = {
    "trio_grpc": serve_trio_grpc,
    "grpc_aio": serve_grpc_aio,
    "grpclib": serve_grpclib,
    "bare_h2": serve_bare_h2,
    "grpc_sync": serve_grpc_sync,
}


def _until_interrupted(serve: Callable[[int], None], port: int) -> None:
    """Serve until SIGINT; the KeyboardInterrupt may come wrapped in a Trio nursery's exception group."""
    try:
        serve(port)
    except BaseException as exc:
        if isinstance(exc, BaseExceptionGroup):
            _, rest = exc.split(KeyboardInterrupt)
            if rest is None:
                return
        if not isinstance(exc, KeyboardInterrupt):
            raise


def main() -> None:
    parser = argparse.ArgumentParser(
        prog="python -m bench.servers",
        description="Serve the benchmark echo service (grpc.testing.TestService UnaryCall and "
        "StreamingOutputCall) on 127.0.0.1 with one gRPC stack; prints 'READY <port>' once listening.",
    )
    parser.add_argument("server", choices=SERVE)
    parser.add_argument("--port", type=int, default=0, help="TCP port (default: any free port)")
    parser.add_argument("--profile", metavar="FILE", help="run under cProfile; write pstats on SIGINT")
    args = parser.parse_args()
    logging.disable(logging.CRITICAL)
    signal.signal(signal.SIGINT, signal.default_int_handler)  # even when started in the background
    serve = SERVE[args.server]
    if args.profile is None:
        _until_interrupted(serve, args.port)
        return
    import cProfile

    profiler = cProfile.Profile()
    try:
        profiler.runcall(_until_interrupted, serve, args.port)
    finally:
        profiler.dump_stats(args.profile)
        print(f"profile written to {args.profile}", file=sys.stderr)


if __name__ == "__main__":
    main()
