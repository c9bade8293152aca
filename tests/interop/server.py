"""The gRPC interop TestService on trio_grpc, as doc/interop-test-descriptions.md ("Server") describes it.

Run it for other stacks' interop clients:

    python -m tests.interop.server --port=8080 [--use_tls=true --tls_cert_file=... --tls_key_file=...]

Implemented server features: EmptyCall, UnaryCall, CacheableUnaryCall, StreamingInputCall,
StreamingOutputCall, FullDuplexCall, HalfDuplexCall, CompressedRequest, CompressedResponse, Echo Status,
Echo Metadata and ResponseParameters.interval_us. UnimplementedCall is left out on purpose: the
unimplemented_method case expects UNIMPLEMENTED for it.
"""

from __future__ import annotations

import argparse
import functools
import logging
import ssl
import sys
import time
from collections.abc import AsyncIterator

import trio

import trio_grpc
from tests.interop._flags import add_bool_flag
from tests.interop._proto.grpc.testing import empty_pb2, messages_pb2, test_pb2

TEST_SERVICE = test_pb2.DESCRIPTOR.services_by_name["TestService"]
INITIAL_METADATA_KEY = "x-grpc-test-echo-initial"
TRAILING_METADATA_KEY = "x-grpc-test-echo-trailing-bin"
#: very_large_request sends 10 MiB (grpc-java's unaryPayloadLength()); the default limit is 4 MiB.
MAX_MESSAGE_SIZE = 16 * 1024 * 1024
SERVER_SETTINGS = trio_grpc.ServerSettings(max_receive_message_size=MAX_MESSAGE_SIZE)


def _payload(payload_type: messages_pb2.PayloadType, size: int) -> messages_pb2.Payload:
    if payload_type != messages_pb2.COMPRESSABLE:
        raise trio_grpc.RpcError(
            trio_grpc.StatusCode.INVALID_ARGUMENT, f"unsupported response_type {payload_type}"
        )
    return messages_pb2.Payload(type=payload_type, body=bytes(size))


def _check_compressed(expect_compressed: messages_pb2.BoolValue, context: trio_grpc.ServicerContext) -> None:
    """CompressedRequest: a request marked expect_compressed must have come with the compressed flag."""
    if expect_compressed.value and not context.request_compressed:
        raise trio_grpc.RpcError(
            trio_grpc.StatusCode.INVALID_ARGUMENT, "expected a compressed request, got an uncompressed one"
        )


def _raise_echo_status(status: messages_pb2.EchoStatus) -> None:
    """Echo Status: end the call with the requested code and message."""
    try:
        code = trio_grpc.StatusCode(status.code)
    except ValueError:
        code = trio_grpc.StatusCode.UNKNOWN
    if code != trio_grpc.StatusCode.OK:
        raise trio_grpc.RpcError(code, status.message)


def _offer_compression(context: trio_grpc.ServicerContext) -> None:
    """CompressedResponse for streams: gzip for the call, then each response opts in (`compressed`) or out."""
    context.set_compression("gzip")


async def _echo_metadata(context: trio_grpc.ServicerContext) -> None:
    """Echo Metadata: the echo-initial key back as initial metadata, the echo-trailing-bin key as trailers."""
    received = dict(context.invocation_metadata)
    if INITIAL_METADATA_KEY in received:
        await context.send_initial_metadata([(INITIAL_METADATA_KEY, received[INITIAL_METADATA_KEY])])
    if TRAILING_METADATA_KEY in received:
        context.set_trailing_metadata([(TRAILING_METADATA_KEY, received[TRAILING_METADATA_KEY])])


class TestService:
    """grpc.testing.TestService; each method follows its section of the spec."""

    async def EmptyCall(
        self, request: empty_pb2.Empty, context: trio_grpc.ServicerContext
    ) -> empty_pb2.Empty:
        await _echo_metadata(context)
        return empty_pb2.Empty()

    async def UnaryCall(
        self, request: messages_pb2.SimpleRequest, context: trio_grpc.ServicerContext
    ) -> messages_pb2.SimpleResponse:
        _check_compressed(request.expect_compressed, context)
        if request.response_compressed.value:
            context.set_compression("gzip")
        await _echo_metadata(context)
        if request.HasField("response_status"):
            _raise_echo_status(request.response_status)
        return messages_pb2.SimpleResponse(payload=_payload(request.response_type, request.response_size))

    async def CacheableUnaryCall(
        self, request: messages_pb2.SimpleRequest, context: trio_grpc.ServicerContext
    ) -> messages_pb2.SimpleResponse:
        await context.send_initial_metadata([("cache-control", "max-age=60, public")])
        timestamp = str(time.time_ns()).encode()
        return messages_pb2.SimpleResponse(payload=messages_pb2.Payload(body=timestamp))

    async def StreamingInputCall(
        self,
        requests: AsyncIterator[messages_pb2.StreamingInputCallRequest],
        context: trio_grpc.ServicerContext,
    ) -> messages_pb2.StreamingInputCallResponse:
        total = 0
        async for request in requests:
            _check_compressed(request.expect_compressed, context)
            total += len(request.payload.body)
        return messages_pb2.StreamingInputCallResponse(aggregated_payload_size=total)

    async def StreamingOutputCall(
        self, request: messages_pb2.StreamingOutputCallRequest, context: trio_grpc.ServicerContext
    ) -> None:
        _offer_compression(context)
        await _echo_metadata(context)
        await self._respond(request, context)

    async def FullDuplexCall(
        self,
        requests: AsyncIterator[messages_pb2.StreamingOutputCallRequest],
        context: trio_grpc.ServicerContext,
    ) -> None:
        _offer_compression(context)
        await _echo_metadata(context)
        async for request in requests:
            await self._respond(request, context)

    async def HalfDuplexCall(
        self,
        requests: AsyncIterator[messages_pb2.StreamingOutputCallRequest],
        context: trio_grpc.ServicerContext,
    ) -> None:
        """Like FullDuplexCall, but answers only after the client half-closed (as the C++ server does)."""
        _offer_compression(context)
        await _echo_metadata(context)
        received = [request async for request in requests]
        for request in received:
            await self._respond(request, context)

    async def _respond(
        self, request: messages_pb2.StreamingOutputCallRequest, context: trio_grpc.ServicerContext
    ) -> None:
        """One response per ResponseParameters, each after its interval_us, compressed as asked."""
        if request.HasField("response_status"):
            _raise_echo_status(request.response_status)
        for parameters in request.response_parameters:
            if parameters.interval_us:
                await trio.sleep(parameters.interval_us / 1_000_000)
            response = messages_pb2.StreamingOutputCallResponse(
                payload=_payload(request.response_type, parameters.size)
            )
            await context.send(response, compress=parameters.compressed.value)


def service_binding() -> trio_grpc.ServiceBinding:
    return trio_grpc.bind_service(TEST_SERVICE, TestService())


def make_server() -> trio_grpc.Server:
    return trio_grpc.Server([service_binding()], settings=SERVER_SETTINGS)


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m tests.interop.server", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--port", type=int, required=True, help="port to listen on (0: any free port)")
    parser.add_argument("--host", default=None, help="address to bind (default: all interfaces)")
    add_bool_flag(parser, "--use_tls", "serve TLS (with ALPN h2)")
    parser.add_argument("--tls_cert_file", help="PEM certificate chain (the spec suggests server1.pem)")
    parser.add_argument("--tls_key_file", help="PEM private key of --tls_cert_file")
    args = parser.parse_args(argv)
    if args.use_tls and not (args.tls_cert_file and args.tls_key_file):
        parser.error("--use_tls=true needs --tls_cert_file and --tls_key_file")
    return args


async def _serve(args: argparse.Namespace) -> None:
    tls = None
    if args.use_tls:
        tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        tls.load_cert_chain(args.tls_cert_file, args.tls_key_file)
    server = make_server()
    async with trio.open_nursery() as nursery:
        port = await nursery.start(functools.partial(server.serve_tcp, host=args.host, tls=tls), args.port)
        print(f"interop server listening on port {port} ({'TLS' if tls else 'plaintext'})", flush=True)


def main(argv: list[str] | None = None) -> None:
    args = _parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    try:
        trio.run(_serve, args)
    except (KeyboardInterrupt, BaseExceptionGroup) as exc:
        # Ctrl-C comes out of the nursery wrapped in an exception group: quietly exit 130 all the same
        if isinstance(exc, BaseExceptionGroup) and exc.split(KeyboardInterrupt)[1] is not None:
            raise
        sys.exit(130)
    except OSError as exc:
        sys.exit(f"error: cannot serve on port {args.port}: {exc}")


if __name__ == "__main__":
    main()
