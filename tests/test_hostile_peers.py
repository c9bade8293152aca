"""Peers that break the rules, against our server (hostile servers against our client: test_client_hostile).

The client here is tests/raw_h2.py's RawClient: h2 driven by hand, with h2's own checks of what it sends
turned off, so that it can send what no real client would. Each test asserts the exact HTTP/2 or gRPC
answer, and that the connection (or the server) goes on serving the calls that did nothing wrong.
"""

from __future__ import annotations

import base64
import contextlib
import gzip
import socket as stdlib_socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from functools import partial
from typing import Any

import h2.connection
import h2.errors
import h2.events
import h2.settings
import pytest
import trio
import trio.testing

import trio_grpc
from tests.interop._proto.grpc.testing import messages_pb2, test_pb2
from tests.raw_h2 import PREFACE, ErrorCodes, Frames, RawClient, Response, grpc_message
from tests.support import CancellationProbe
from trio_grpc import ServerSettings, StatusCode

SERVICE = test_pb2.DESCRIPTOR.services_by_name["TestService"]
TIMEOUT = 10
KiB = 1024
MiB = 1024 * KiB
UNARY = "/grpc.testing.TestService/UnaryCall"
SERVER_STREAMING = "/grpc.testing.TestService/StreamingOutputCall"
CLIENT_STREAMING = "/grpc.testing.TestService/StreamingInputCall"

Context = trio_grpc.ServicerContext


def unary_request(body: bytes = b"hi", response_size: int = 0) -> bytes:
    request = messages_pb2.SimpleRequest(payload=messages_pb2.Payload(body=body), response_size=response_size)
    return grpc_message(request.SerializeToString())


class Service(CancellationProbe):
    """Records how each handler ended; `response_size` picks the reply's size (or blocks when negative)."""

    def __init__(self) -> None:
        super().__init__()
        self.requests: list[messages_pb2.SimpleRequest] = []
        self.metadata: list[tuple[tuple[str, Any], ...]] = []
        self.contexts: list[Context] = []
        self.sent = 0

    async def UnaryCall(
        self, request: messages_pb2.SimpleRequest, context: Context
    ) -> messages_pb2.SimpleResponse:
        self.requests.append(request)
        self.metadata.append(context.invocation_metadata)
        self.contexts.append(context)
        if request.response_size < 0:
            await self.block_until_cancelled()
        if request.response_compressed.value:
            context.set_compression("gzip")
        return messages_pb2.SimpleResponse(payload=messages_pb2.Payload(body=b"r" * request.response_size))

    async def StreamingOutputCall(
        self, request: messages_pb2.StreamingOutputCallRequest, context: Context
    ) -> None:
        """Sends messages of the first response size until cancelled."""
        self.contexts.append(context)
        message = messages_pb2.StreamingOutputCallResponse(
            payload=messages_pb2.Payload(body=b"s" * request.response_parameters[0].size)
        )
        self.started.set()
        with self.watching():
            while True:
                await context.send(message)
                self.sent += 1

    async def StreamingInputCall(
        self, requests: Any, context: Context
    ) -> messages_pb2.StreamingInputCallResponse:
        total = 0
        async for request in requests:
            total += len(request.payload.body)
        return messages_pb2.StreamingInputCallResponse(aggregated_payload_size=total)


@dataclass
class Running:
    server: trio_grpc.Server
    port: int
    service: Service

    def connection(self) -> Any:
        (connection,) = self.server._connections
        return connection


@asynccontextmanager
async def serving(settings: ServerSettings | None = None) -> AsyncIterator[Running]:
    service = Service()
    server = trio_grpc.Server([trio_grpc.bind_service(SERVICE, service)], settings=settings)
    async with trio.open_nursery() as nursery:
        port = await nursery.start(partial(server.serve_tcp, 0, host="127.0.0.1"))
        yield Running(server, port, service)
        await server.shutdown(grace=0.5)
    assert not server._connections


async def assert_still_serving(client: RawClient) -> None:
    """A well-formed call on the same connection gets its answer."""
    response = await client.response(await client.request(UNARY, unary_request(response_size=3)))
    assert response.header(b":status") == b"200"
    assert response.grpc_status == StatusCode.OK
    assert response.messages() == [
        (0, messages_pb2.SimpleResponse(payload=messages_pb2.Payload(body=b"rrr")).SerializeToString())
    ]


# -- requests that are not gRPC, or not quite --------------------------------------------------------------


async def test_wrong_content_type_gets_http_415() -> None:
    with trio.fail_after(TIMEOUT):
        async with serving() as running, RawClient.connect(running.port) as client:
            for content_type in (b"text/plain", b"application/json", b"application/grpcx"):
                stream_id = await client.request(
                    body=unary_request(), set_headers={b"content-type": content_type}
                )
                response = await client.response(stream_id)
                assert response.header(b":status") == b"415"
                assert response.ended
            stream_id = await client.request(body=unary_request(), drop=(b"content-type",))
            assert (await client.response(stream_id)).header(b":status") == b"415"
            await assert_still_serving(client)
            assert running.service.requests == [
                messages_pb2.SimpleRequest(payload=messages_pb2.Payload(body=b"hi"), response_size=3)
            ]


async def test_missing_te_is_reset_as_grpc_core_does() -> None:
    """grpcio's server answers a request without `te` with RST_STREAM(INTERNAL_ERROR) and no headers."""
    with trio.fail_after(TIMEOUT):
        async with serving() as running, RawClient.connect(running.port) as client:
            response = await client.response(await client.request(body=unary_request(), drop=(b"te",)))
            assert (response.headers, response.reset) == (None, ErrorCodes.INTERNAL_ERROR)
            await assert_still_serving(client)
            assert len(running.service.requests) == 1


async def test_odd_te_gets_internal() -> None:
    """grpcio's server answers `te: foo` with a Trailers-Only INTERNAL."""
    with trio.fail_after(TIMEOUT):
        async with serving() as running, RawClient.connect(running.port) as client:
            response = await client.response(
                await client.request(body=unary_request(), set_headers={b"te": b"gzip"})
            )
            assert response.header(b":status") == b"200"
            assert response.grpc_status == StatusCode.INTERNAL
            await assert_still_serving(client)


async def test_get_is_refused_with_405() -> None:
    with trio.fail_after(TIMEOUT):
        async with serving() as running, RawClient.connect(running.port) as client:
            response = await client.response(await client.request(set_headers={b":method": b"GET"}))
            assert response.header(b":status") == b"405"
            await assert_still_serving(client)


@pytest.mark.parametrize(
    ("change", "extra"),
    [
        ({b":path": None}, []),
        ({b":scheme": None}, []),
        ({}, [(b":path", b"/again")]),
        ({}, [(b":status", b"200")]),
        ({}, [(b"X-Upper", b"a")]),
        ({}, [(b"connection", b"keep-alive")]),
        ({}, [(b"bad value", b"a")]),
        ({}, [(b"x-newline", b"a\r\nb")]),
    ],
)
async def test_malformed_request_resets_only_its_stream(
    change: dict[bytes, bytes | None], extra: list[tuple[bytes, bytes]]
) -> None:
    """Malformed HTTP/2 is a stream error (RFC 9113 8.1.1): RST_STREAM(PROTOCOL_ERROR), others carry on."""
    with trio.fail_after(TIMEOUT):
        async with serving() as running, RawClient.connect(running.port) as client:
            drop = tuple(name for name, value in change.items() if value is None)
            response = await client.response(
                await client.request(body=unary_request(), drop=drop, extra=extra)
            )
            assert (response.headers, response.reset) == (None, ErrorCodes.PROTOCOL_ERROR)
            await assert_still_serving(client)
            assert len(running.service.requests) == 1


@pytest.mark.parametrize("raw_timeout", [b"abc", b"1", b"S", b"123456789S", b"-1S", b"1.5S", b"1s"])
async def test_malformed_grpc_timeout_gets_internal(raw_timeout: bytes) -> None:
    """As grpcio's server does (Trailers-Only INTERNAL); the handler is never called."""
    with trio.fail_after(TIMEOUT):
        async with serving() as running, RawClient.connect(running.port) as client:
            response = await client.response(
                await client.request(body=unary_request(), set_headers={b"grpc-timeout": raw_timeout})
            )
            assert response.grpc_status == StatusCode.INTERNAL
            assert "grpc-timeout" in response.grpc_message
            await assert_still_serving(client)
            assert len(running.service.requests) == 1


async def test_unknown_path_gets_unimplemented() -> None:
    with trio.fail_after(TIMEOUT):
        async with serving() as running, RawClient.connect(running.port) as client:
            for path in ("/grpc.testing.TestService/Nope", "/no.Such/Service", "/", "x"):
                response = await client.response(await client.request(path, unary_request()))
                assert response.header(b":status") == b"200"
                assert response.grpc_status == StatusCode.UNIMPLEMENTED
                assert path in response.grpc_message
            await assert_still_serving(client)


async def test_oversized_metadata_fails_the_call_or_past_the_hard_limit_the_connection() -> None:
    with trio.fail_after(TIMEOUT):
        async with serving() as running, RawClient.connect(running.port) as other:
            async with RawClient.connect(running.port) as client:
                # Over max_header_list_size (16 KiB): RESOURCE_EXHAUSTED for this call, as grpc-core answers.
                stream_id = await client.request(body=unary_request(), extra=[(b"x-big", b"a" * 20_000)])
                response = await client.response(stream_id)
                assert response.grpc_status == StatusCode.RESOURCE_EXHAUSTED
                assert "metadata larger than max" in response.grpc_message
                await assert_still_serving(client)
                # Far over it, still only this call: 10,000 small headers (test_hardening: a 1 MiB value).
                extra = [(b"x-%d" % n, b"v") for n in range(10_000)]
                stream_id = await client.request(body=unary_request(), extra=extra)
                response = await client.response(stream_id)
                assert response.grpc_status == StatusCode.RESOURCE_EXHAUSTED
                await assert_still_serving(client)
                # Past the hard limit (2 MiB decoded, a few KiB on the wire thanks to HPACK indexing: a bomb),
                # decoding stops half-way, HPACK state is lost: the connection goes, with ENHANCE_YOUR_CALM.
                await client.request(body=unary_request(), extra=[(b"x-same", b"b" * 4000)] * 600)
                await client.until_closed()
                assert client.goaway is not None and client.goaway.error_code == ErrorCodes.ENHANCE_YOUR_CALM
            await assert_still_serving(other)
            assert len(running.service.requests) == 3


# -- messages ----------------------------------------------------------------------------------------------


async def test_bad_compressed_flag_gets_internal() -> None:
    with trio.fail_after(TIMEOUT):
        async with serving() as running, RawClient.connect(running.port) as client:
            response = await client.response(await client.request(body=grpc_message(b"", flag=2)))
            assert response.grpc_status == StatusCode.INTERNAL
            assert "compressed flag" in response.grpc_message
            await assert_still_serving(client)
            assert len(running.service.requests) == 1


async def test_compressed_message_without_grpc_encoding_gets_internal() -> None:
    body = gzip.compress(messages_pb2.SimpleRequest(response_size=1).SerializeToString())
    with trio.fail_after(TIMEOUT):
        async with serving() as running, RawClient.connect(running.port) as client:
            for headers in ({}, {b"grpc-encoding": b"identity"}):
                response = await client.response(
                    await client.request(body=grpc_message(body, flag=1), set_headers=headers)
                )
                assert response.grpc_status == StatusCode.INTERNAL
                assert "grpc-encoding" in response.grpc_message
            # With the encoding declared, the same message is fine.
            response = await client.response(
                await client.request(body=grpc_message(body, flag=1), set_headers={b"grpc-encoding": b"gzip"})
            )
            assert response.grpc_status == StatusCode.OK
            await assert_still_serving(client)


async def test_unsupported_grpc_encoding_gets_unimplemented_with_accept_encoding() -> None:
    with trio.fail_after(TIMEOUT):
        async with serving() as running, RawClient.connect(running.port) as client:
            response = await client.response(
                await client.request(
                    body=grpc_message(b"x", flag=1), set_headers={b"grpc-encoding": b"snappy"}
                )
            )
            assert response.grpc_status == StatusCode.UNIMPLEMENTED
            assert "snappy" in response.grpc_message
            accepted = response.status_field(b"grpc-accept-encoding")
            assert accepted is not None
            assert set(accepted.split(b",")) == {b"identity", b"gzip", b"deflate"}
            await assert_still_serving(client)


async def test_compressed_response_on_the_wire() -> None:
    """The server's gzip is real: flag 1, `grpc-encoding: gzip`, and a body gzip can inflate."""
    request = messages_pb2.SimpleRequest(
        response_size=10_000, response_compressed=messages_pb2.BoolValue(value=True)
    )
    with trio.fail_after(TIMEOUT):
        async with serving() as running, RawClient.connect(running.port) as client:
            headers = {b"grpc-accept-encoding": b"identity,gzip"}
            response = await client.response(
                await client.request(body=grpc_message(request.SerializeToString()), set_headers=headers)
            )
            assert response.grpc_status == StatusCode.OK
            assert response.header(b"grpc-encoding") == b"gzip"
            [(flag, body)] = response.messages()
            assert flag == 1 and len(body) < 1000
            assert messages_pb2.SimpleResponse.FromString(gzip.decompress(body)).payload.body == b"r" * 10_000
            # A client that does not accept gzip gets it uncompressed.
            response = await client.response(
                await client.request(body=grpc_message(request.SerializeToString()))
            )
            assert response.header(b"grpc-encoding") is None
            [(flag, body)] = response.messages()
            assert flag == 0 and len(body) > 10_000


async def test_corrupt_compressed_message_gets_internal() -> None:
    with trio.fail_after(TIMEOUT):
        async with serving() as running, RawClient.connect(running.port) as client:
            response = await client.response(
                await client.request(
                    body=grpc_message(b"not gzip at all", flag=1), set_headers={b"grpc-encoding": b"gzip"}
                )
            )
            assert response.grpc_status == StatusCode.INTERNAL
            await assert_still_serving(client)


async def test_truncated_message_at_end_of_stream_gets_internal() -> None:
    with trio.fail_after(TIMEOUT):
        async with serving() as running, RawClient.connect(running.port) as client:
            for body in (unary_request()[:-1], unary_request()[:3]):
                response = await client.response(await client.request(body=body))
                assert response.grpc_status == StatusCode.INTERNAL
                assert "middle of a message" in response.grpc_message
            await assert_still_serving(client)
            assert len(running.service.requests) == 1


async def test_unparseable_message_gets_internal() -> None:
    with trio.fail_after(TIMEOUT):
        async with serving() as running, RawClient.connect(running.port) as client:
            response = await client.response(await client.request(body=grpc_message(b"\xff\xff\xff")))
            assert response.grpc_status == StatusCode.INTERNAL
            await assert_still_serving(client)


async def test_oversized_length_prefix_is_refused_before_the_body_is_sent() -> None:
    """Only the 5-byte prefix of a 5 MiB message goes out: the status comes back at once."""
    piece = grpc_message(
        messages_pb2.StreamingInputCallRequest(payload=messages_pb2.Payload(body=b"p")).SerializeToString()
    )
    with trio.fail_after(TIMEOUT):
        async with serving() as running, RawClient.connect(running.port) as client:
            for path in (UNARY, CLIENT_STREAMING):
                other = await client.request(CLIENT_STREAMING, piece, end_stream=False)
                big = await client.request(path, b"\0" + (5 * MiB).to_bytes(4, "big"), end_stream=False)
                response = await client.response(big)
                assert response.grpc_status == StatusCode.RESOURCE_EXHAUSTED
                assert response.grpc_message == f"received message larger than max ({5 * MiB} vs. {4 * MiB})"
                # The server tells us to stop sending with RST_STREAM(NO_ERROR) after its trailers.
                while response.reset is None:
                    assert await client.receive()
                assert response.reset == ErrorCodes.NO_ERROR
                # The other stream on the connection carries on.
                await client.send(other, piece, end_stream=True)
                response = await client.response(other)
                assert response.grpc_status == StatusCode.OK
                [(_, body)] = response.messages()
                assert messages_pb2.StreamingInputCallResponse.FromString(body).aggregated_payload_size == 2
            assert running.service.requests == []


async def test_binary_metadata_padded_or_not_and_bad_metadata_ignored() -> None:
    value = b"\x00\x01\xfe\xff\x10"
    padded = base64.b64encode(value)
    assert padded.endswith(b"=")
    with trio.fail_after(TIMEOUT):
        async with serving() as running, RawClient.connect(running.port) as client:
            extra = [
                (b"padded-bin", padded),
                (b"unpadded-bin", padded.rstrip(b"=")),
                (b"broken-bin", b"!!not base64!!"),
                (b"ascii", b"plain value"),
                (b"control", b"bell\x07"),
            ]
            response = await client.response(await client.request(body=unary_request(), extra=extra))
            assert response.grpc_status == StatusCode.OK
            (metadata,) = running.service.metadata
            assert ("padded-bin", value) in metadata and ("unpadded-bin", value) in metadata
            assert ("ascii", "plain value") in metadata
            assert not [key for key, _ in metadata if key in ("broken-bin", "control")]


# -- deadlines and resets ----------------------------------------------------------------------------------


async def test_grpc_timeout_is_a_cancel_scope_on_the_handler() -> None:
    """No RST_STREAM from this client: the server's own deadline cancels the handler and answers."""
    with trio.fail_after(TIMEOUT):
        async with serving() as running, RawClient.connect(running.port) as client:
            stream_id = await client.request(
                body=unary_request(response_size=-1), set_headers={b"grpc-timeout": b"200m"}
            )
            response = await client.response(stream_id)
            assert (response.grpc_status, response.grpc_message) == (
                StatusCode.DEADLINE_EXCEEDED,
                "Deadline Exceeded",
            )
            assert running.service.cancelled.is_set() and running.service.cleaned_up.is_set()
            assert running.service.contexts[0].deadline < trio.current_time()
            await assert_still_serving(client)


async def test_rst_stream_cancels_the_handler() -> None:
    with trio.fail_after(TIMEOUT):
        async with serving() as running, RawClient.connect(running.port) as client:
            stream_id = await client.request(body=unary_request(response_size=-1))
            await running.service.started.wait()
            await client.reset(stream_id, ErrorCodes.CANCEL)
            await running.service.cancelled.wait()
            await running.service.cleaned_up.wait()
            await assert_still_serving(client)
            # Nothing was sent on the reset stream.
            assert client.responses[stream_id] == Response()


async def test_client_that_never_sends_window_update_blocks_the_handler() -> None:
    """The peer reads its socket but grants no credit: the handler waits in send(), nothing piles up."""
    request = messages_pb2.StreamingOutputCallRequest(
        response_parameters=[messages_pb2.ResponseParameters(size=1000)]
    )
    one_response = messages_pb2.StreamingOutputCallResponse(payload=messages_pb2.Payload(body=b"s" * 1000))
    message_size = len(grpc_message(one_response.SerializeToString()))
    with trio.fail_after(TIMEOUT):
        async with serving() as running, RawClient.connect(running.port, acknowledge_data=False) as client:
            stream_id = await client.request(SERVER_STREAMING, grpc_message(request.SerializeToString()))
            response = client.responses[stream_id]
            while len(response.data) < 65535:  # the default initial window: the last message half sent
                await client.receive()
            await trio.testing.wait_all_tasks_blocked()
            assert len(response.data) == 65535
            sent = running.service.sent
            assert sent == 65535 // message_size  # the messages that fitted whole; the next one waits
            assert running.connection()._outgoing_size == 0
            # Still blocked: it does not busy-loop, nor buffer what it cannot send.
            await trio.testing.wait_all_tasks_blocked()
            assert running.service.sent == sent and not running.service.cancelled.is_set()
            # Going away cancels it.
            await client.reset(stream_id)
            await running.service.cancelled.wait()
            await running.service.cleaned_up.wait()
            # The handler filled the connection's window too (a message is sent as far as it allows).
            client.h2.increment_flow_control_window(65535)
            await assert_still_serving(client)


async def test_client_that_never_reads_its_socket_does_not_grow_server_memory() -> None:
    """Huge windows, and a socket nobody reads: the queue stops at write_buffer_size plus one send."""
    write_buffer_size = 64 * KiB
    request = messages_pb2.StreamingOutputCallRequest(
        response_parameters=[messages_pb2.ResponseParameters(size=16 * KiB)]
    )
    settings = ServerSettings(write_buffer_size=write_buffer_size)
    big_window = {h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 2**31 - 1}
    with trio.fail_after(TIMEOUT):
        async with (
            serving(settings) as running,
            RawClient.connect(running.port, settings=big_window) as client,
        ):
            client.h2.increment_flow_control_window(2**31 - 1 - 65535)
            await client.flush()
            await client.receive()  # the server's SETTINGS and its ACK of ours
            stream_id = await client.request(SERVER_STREAMING, grpc_message(request.SerializeToString()))
            await running.service.started.wait()
            connection = running.connection()
            # Now never read again. The handler stops once the socket buffers and our queue are full.
            await trio.testing.wait_all_tasks_blocked()
            sent = running.service.sent
            assert connection._outgoing_size > write_buffer_size  # the writer is stuck on the socket ...
            assert connection._outgoing_size <= write_buffer_size + 17 * KiB  # ... and the queue is bounded
            await trio.testing.wait_all_tasks_blocked()
            assert running.service.sent == sent
            assert not running.service.cancelled.is_set()
            await client.reset(stream_id)
            await running.service.cancelled.wait()
            with trio.move_on_after(0):  # nothing left for this connection to do
                await running.server.shutdown(grace=0)


async def test_ping_flood_is_answered_and_bounded() -> None:
    # With PINGs not limited (tests/test_server_limits.py has the limit): the answers' own bound.
    settings = ServerSettings(write_buffer_size=16 * KiB, max_ping_strikes=None)
    with trio.fail_after(TIMEOUT):
        async with serving(settings) as running:
            # A reader gets every answer, and calls go on.
            async with RawClient.connect(running.port) as client:
                for index in range(2000):
                    client.h2.ping(index.to_bytes(8, "big"))
                await client.flush()
                while client.ping_acks < 2000:
                    assert await client.receive()
                await assert_still_serving(client)

            # A flooder that never reads is cut off once its answers pile up; others are not disturbed.
            stream = await trio.open_tcp_stream("127.0.0.1", running.port)
            stream.setsockopt(stdlib_socket.SOL_SOCKET, stdlib_socket.SO_RCVBUF, 4096)
            flooder = RawClient(stream)
            flooder.h2.initiate_connection()
            pings = 0
            with pytest.raises(trio.BrokenResourceError):
                while pings < 2_000_000:
                    for _ in range(1000):
                        flooder.h2.ping(pings.to_bytes(8, "big"))
                        pings += 1
                    await flooder.flush()
            await stream.aclose()
            assert pings < 2_000_000
            async with RawClient.connect(running.port) as client:
                await assert_still_serving(client)


# -- connections -------------------------------------------------------------------------------------------


async def test_garbage_instead_of_the_preface_closes_that_connection_only() -> None:
    with trio.fail_after(TIMEOUT):
        async with (
            serving(ServerSettings(handshake_timeout=1)) as running,
            RawClient.connect(running.port) as good,
        ):
            await assert_still_serving(good)
            for garbage in (
                b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
                b"\x00" * 100,
                PREFACE + b"\x00\x00\x03\x06\x00\x00\x00\x00\x00abc",  # a PING of 3 bytes
                PREFACE
                + b"\xff" * 50,  # a 16 MiB frame announced: h2 waits for it, the handshake timeout not
            ):
                stream = await trio.open_tcp_stream("127.0.0.1", running.port)
                async with stream:
                    await stream.send_all(garbage)
                    with contextlib.suppress(trio.BrokenResourceError):  # closed with our bytes unread
                        while await stream.receive_some(65536):  # the server answers (GOAWAY) and closes
                            pass
            await assert_still_serving(good)
            await trio.testing.wait_all_tasks_blocked()
            assert len(running.server._connections) == 1  # the garbage connections are gone


async def test_silent_connection_is_closed_after_handshake_timeout() -> None:
    with trio.fail_after(TIMEOUT):
        async with serving(ServerSettings(handshake_timeout=0.3)) as running:
            stream = await trio.open_tcp_stream("127.0.0.1", running.port)
            async with stream:
                start = trio.current_time()
                while await stream.receive_some(65536):  # our SETTINGS come, then the close
                    pass
                assert 0.25 <= trio.current_time() - start < 3
            # One that did speak HTTP/2 stays open past the timeout.
            async with RawClient.connect(running.port) as client:
                await assert_still_serving(client)
                with trio.move_on_after(0.6):
                    await client.until_closed()
                assert not client.eof
                await assert_still_serving(client)


async def test_streams_over_max_concurrent_streams_are_refused_not_the_connection() -> None:
    settings = ServerSettings(max_concurrent_streams=2)
    with trio.fail_after(TIMEOUT):
        async with serving(settings) as running, RawClient.connect(running.port) as client:
            blocked = [await client.request(body=unary_request(response_size=-1)) for _ in range(2)]
            extra = await client.request(body=unary_request(response_size=1))
            response = await client.response(extra)
            assert (response.headers, response.reset) == (None, ErrorCodes.REFUSED_STREAM)
            for stream_id in blocked:
                await client.reset(stream_id)
            await running.service.cancelled.wait()
            await trio.testing.wait_all_tasks_blocked()
            await assert_still_serving(client)


async def test_goaway_from_the_client_lets_its_calls_finish() -> None:
    with trio.fail_after(TIMEOUT):
        async with serving() as running, RawClient.connect(running.port) as client:
            stream_id = await client.request(CLIENT_STREAMING, end_stream=False)
            # Written by hand: h2 would refuse to go on after sending its own GOAWAY.
            await client.socket.send_all(Frames.goaway(last_stream_id=0))
            await client.send(stream_id, b"", end_stream=True)
            assert (await client.response(stream_id)).grpc_status == StatusCode.OK
            # Then, with nothing left in flight, the server closes the connection.
            await client.until_closed()


async def test_rapid_reset_gets_enhance_your_calm_and_other_connections_carry_on() -> None:
    settings = ServerSettings(max_stream_resets_per_second=50)
    with trio.fail_after(TIMEOUT):
        async with serving(settings) as running, RawClient.connect(running.port) as other:
            async with RawClient.connect(running.port) as client:
                for _ in range(20):  # a client that cancels calls now and then is fine
                    await client.reset(await client.request(body=unary_request(response_size=-1)))
                await assert_still_serving(client)
                with contextlib.suppress(trio.BrokenResourceError):  # the server hangs up mid-loop
                    for _ in range(100):
                        await client.reset(await client.request(body=unary_request(response_size=-1)))
                await client.until_closed()
                assert client.goaway is not None and client.goaway.error_code == ErrorCodes.ENHANCE_YOUR_CALM
            await assert_still_serving(other)
