"""Servers that break the rules, against our client: never a hang, never a traceback, always an RpcError.

Each hostile server is h2 driven by hand (tests/raw_h2.py). It answers UnaryCall (and the other methods a
test names) badly and EmptyCall well, so each test can check that the same Channel still makes a good call
after the bad one, on the same connection or, when the bad answer cost the connection, on a new one.
"""

from __future__ import annotations

import gzip
import http
import os
import ssl
from functools import partial
from typing import Any

import h2.connection
import h2.errors
import pytest
import trio
import trio.testing
from hyperframe.frame import GoAwayFrame, SettingsFrame
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import trio_grpc
from tests.interop._proto.grpc.testing import empty_pb2, messages_pb2, test_pb2
from tests.raw_h2 import Answer, ServerPeer, grpc_message, permissive_config, raw_server
from trio_grpc import ChannelSettings, RpcError, StatusCode
from trio_grpc._timeout import parse_timeout

SERVICE = test_pb2.DESCRIPTOR.services_by_name["TestService"]
TIMEOUT = 10
MiB = 1024 * 1024
ErrorCodes = h2.errors.ErrorCodes
GOOD_PATH = b"/grpc.testing.TestService/EmptyCall"
GRPC_HEADERS = [(b":status", b"200"), (b"content-type", b"application/grpc")]
OK_TRAILERS = [(b"grpc-status", b"0")]
RESPONSE = messages_pb2.SimpleResponse(payload=messages_pb2.Payload(body=b"pong"))
HTML = b"<html><body><h1>503 Service Unavailable</h1>No server is available.</body></html>"


def answering(bad: Answer) -> Answer:
    """`bad` for every method but EmptyCall, which gets a proper answer."""

    async def answer(peer: ServerPeer, stream_id: int, headers: dict[bytes, bytes]) -> None:
        if headers[b":path"] != GOOD_PATH:
            await bad(peer, stream_id, headers)
            return
        peer.h2.send_headers(stream_id, GRPC_HEADERS)
        peer.h2.send_data(stream_id, grpc_message(b""))
        peer.h2.send_headers(stream_id, OK_TRAILERS, end_stream=True)

    return answer


def sending(*parts: tuple[list[tuple[bytes, bytes]] | bytes, bool]) -> Answer:
    """An answer that sends each (headers or DATA payload, end_stream) in turn."""

    async def answer(peer: ServerPeer, stream_id: int, headers: dict[bytes, bytes]) -> None:
        for part, end_stream in parts:
            if isinstance(part, bytes):
                size = peer.h2.max_outbound_frame_size
                for offset in range(0, len(part), size):
                    peer.h2.send_data(stream_id, part[offset : offset + size])
                if end_stream:
                    peer.h2.end_stream(stream_id)
            else:
                peer.h2.send_headers(stream_id, part, end_stream=end_stream)

    return answer


async def assert_good_call(channel: trio_grpc.Channel) -> None:
    assert await trio_grpc.Stub(channel, SERVICE).EmptyCall(empty_pb2.Empty()) == empty_pb2.Empty()


async def hostile_unary_call(bad: Answer, **options: Any) -> tuple[RpcError, list[tuple[int, int]]]:
    """One UnaryCall answered by `bad`, then a good call on the same Channel.

    Returns the error the call raised and the RST_STREAMs the server received for it.
    """
    async with raw_server(answering(bad)) as server, trio_grpc.Channel(server.target) as channel:
        with pytest.raises(RpcError) as caught:
            await trio_grpc.Stub(channel, SERVICE).UnaryCall(messages_pb2.SimpleRequest(), **options)
        await assert_good_call(channel)
        await trio.testing.wait_all_tasks_blocked()  # the server has read what the client sent
        return caught.value, server.resets


# -- the number of response messages -------------------------------------------------------------------


async def test_ok_without_a_response_message_is_internal() -> None:
    """grpc-go: INTERNAL "cardinality violation"; before, Call.response() raised TypeError."""
    with trio.fail_after(TIMEOUT):
        error, _ = await hostile_unary_call(sending((GRPC_HEADERS, False), (OK_TRAILERS, True)))
    assert error.code == StatusCode.INTERNAL
    assert error.message == "cardinality violation: the server ended the call with OK and no response message"


async def test_trailers_only_ok_on_a_client_streaming_call_is_internal() -> None:
    answer = answering(sending(([*GRPC_HEADERS, *OK_TRAILERS], True)))
    with trio.fail_after(TIMEOUT):
        async with raw_server(answer) as server, trio_grpc.Channel(server.target) as channel:
            stub = trio_grpc.Stub(channel, SERVICE)
            with pytest.raises(RpcError) as caught:
                await stub.StreamingInputCall([messages_pb2.StreamingInputCallRequest()])
            await assert_good_call(channel)
    assert caught.value.code == StatusCode.INTERNAL
    assert caught.value.message.startswith("cardinality violation: ")


async def test_two_response_messages_are_internal_and_the_call_records_it() -> None:
    body = grpc_message(RESPONSE.SerializeToString())
    answer = answering(sending((GRPC_HEADERS, False), (body + body, False), (OK_TRAILERS, True)))
    with trio.fail_after(TIMEOUT):
        async with raw_server(answer) as server, trio_grpc.Channel(server.target) as channel:
            method = trio_grpc.Stub(channel, SERVICE).UnaryCall
            async with method.open(messages_pb2.SimpleRequest()) as call:
                with pytest.raises(RpcError) as caught:
                    await call.response()
            assert (call.code, call.message) == (caught.value.code, caught.value.message)
            await assert_good_call(channel)
    assert caught.value.code == StatusCode.INTERNAL
    assert caught.value.message == "cardinality violation: the server sent more than one response message"


async def test_a_second_message_is_refused_without_waiting_for_the_status() -> None:
    """Like grpc-go: the call fails when the extra message arrives, and the stream is reset."""
    body = grpc_message(RESPONSE.SerializeToString())
    with trio.fail_after(TIMEOUT):
        error, resets = await hostile_unary_call(sending((GRPC_HEADERS, False), (body + body, False)))
    assert error.code == StatusCode.INTERNAL
    assert resets == [(1, ErrorCodes.CANCEL)]


# -- the status --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("trailers", "code", "message"),
    [
        ([(b"x-trace", b"1")], StatusCode.UNKNOWN, "server ended the call without a grpc-status"),
        ([(b"grpc-message", b"lost")], StatusCode.UNKNOWN, "server ended the call without a grpc-status"),
        ([(b"grpc-status", b"abc")], StatusCode.UNKNOWN, "invalid grpc-status 'abc'"),
        (
            [(b"grpc-status", b"abc"), (b"grpc-message", b"boom")],
            StatusCode.UNKNOWN,
            "invalid grpc-status 'abc': boom",
        ),
        ([(b"grpc-status", b"99")], StatusCode.UNKNOWN, "invalid grpc-status '99'"),
        ([(b"grpc-status", b"-1")], StatusCode.UNKNOWN, "invalid grpc-status '-1'"),
        ([(b"grpc-status", b"")], StatusCode.UNKNOWN, "invalid grpc-status ''"),
        ([(b"grpc-status", b"\xff")], StatusCode.UNKNOWN, "invalid grpc-status '\ufffd'"),
        ([(b"grpc-status", b"5"), (b"grpc-message", b"caf%C3%A9%zz%")], StatusCode.NOT_FOUND, "café%zz%"),
        ([(b"grpc-status", b"5"), (b"grpc-message", b"%FF%FE\xff")], StatusCode.NOT_FOUND, "\ufffd" * 3),
        ([(b"grpc-status", b"7"), (b"grpc-status-details-bin", b"!!")], StatusCode.PERMISSION_DENIED, ""),
    ],
)
async def test_missing_or_garbled_status_fields_still_give_the_right_code(
    trailers: list[tuple[bytes, bytes]], code: StatusCode, message: str
) -> None:
    body = grpc_message(RESPONSE.SerializeToString())
    with trio.fail_after(TIMEOUT):
        error, _ = await hostile_unary_call(sending((GRPC_HEADERS, False), (body, False), (trailers, True)))
    assert (error.code, error.message, error.details) == (code, message, None)


async def test_data_ending_the_stream_without_trailers_is_unknown() -> None:
    body = grpc_message(RESPONSE.SerializeToString())
    with trio.fail_after(TIMEOUT):
        error, _ = await hostile_unary_call(sending((GRPC_HEADERS, False), (body, True)))
    assert (error.code, error.message) == (StatusCode.UNKNOWN, "server ended the call without a grpc-status")


# -- responses that are not gRPC ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("http_status", "content_type", "code"),
    [
        (503, b"text/html", StatusCode.UNAVAILABLE),
        (502, b"text/html", StatusCode.UNAVAILABLE),
        (404, b"text/plain", StatusCode.UNIMPLEMENTED),
        (401, b"text/html", StatusCode.UNAUTHENTICATED),
        (500, b"text/html", StatusCode.UNKNOWN),
        (200, b"text/html", StatusCode.UNKNOWN),
        (200, b"application/json", StatusCode.UNKNOWN),
        (200, b"application/grpcx", StatusCode.UNKNOWN),
        (503, b"application/grpc", StatusCode.UNAVAILABLE),  # a gRPC content-type and no grpc-status
    ],
)
async def test_http_error_page_gets_the_mapped_status_and_its_body_is_not_parsed(
    http_status: int, content_type: bytes, code: StatusCode
) -> None:
    """The body starts with '<' (60): parsed as gRPC, it used to give INTERNAL "invalid compressed flag"."""
    headers = [(b":status", str(http_status).encode()), (b"content-type", content_type)]
    with trio.fail_after(TIMEOUT):
        error, resets = await hostile_unary_call(sending((headers, False), (HTML, False)))
    phrase = http.HTTPStatus(http_status).phrase
    assert error.code == code
    assert (
        error.message
        == f"HTTP {http_status} {phrase}, content-type {content_type.decode()!r}: not a gRPC response"
    )
    assert resets == [(1, ErrorCodes.CANCEL)]  # nothing more of that body is wanted


@pytest.mark.parametrize(
    ("http_status", "phrase"), [(b"429", "Too Many Requests"), (b"503", "Service Unavailable")]
)
async def test_http_error_without_body_or_content_type(http_status: bytes, phrase: str) -> None:
    with trio.fail_after(TIMEOUT):
        error, resets = await hostile_unary_call(sending(([(b":status", http_status)], True)))
    assert error.code == StatusCode.UNAVAILABLE
    assert error.message == f"HTTP {http_status.decode()} {phrase}, no content-type: not a gRPC response"
    assert resets == []  # the server ended the stream: nothing to reset


async def test_unknown_http_status_is_unknown() -> None:
    with trio.fail_after(TIMEOUT):
        error, _ = await hostile_unary_call(sending(([(b":status", b"999")], True)))
    assert (error.code, error.message) == (
        StatusCode.UNKNOWN,
        "HTTP status '999', no content-type: not a gRPC response",
    )


async def test_trailers_only_with_grpc_status_is_used_whatever_the_http_status() -> None:
    """The spec: the HTTP mapping is only for responses without grpc-status."""
    answer = sending(([(b":status", b"503"), (b"grpc-status", b"8"), (b"grpc-message", b"busy")], True))
    with trio.fail_after(TIMEOUT):
        error, _ = await hostile_unary_call(answer)
    assert (error.code, error.message) == (StatusCode.RESOURCE_EXHAUSTED, "busy")


async def test_html_answer_on_a_streaming_call_fails_initial_metadata_and_sending() -> None:
    answer = answering(
        sending(([(b":status", b"503"), (b"content-type", b"text/html")], False), (HTML, False))
    )
    with trio.fail_after(TIMEOUT):
        async with raw_server(answer) as server, trio_grpc.Channel(server.target) as channel:
            async with trio_grpc.Stub(channel, SERVICE).FullDuplexCall() as call:
                with pytest.raises(RpcError) as caught:
                    await call.initial_metadata()
                assert caught.value.code == StatusCode.UNAVAILABLE
                with pytest.raises(RpcError) as caught_sending:
                    await call.send(messages_pb2.StreamingOutputCallRequest())
                # The same status (a copy: the stored exception, raised again, would tie its traceback)
                assert (caught_sending.value.code, caught_sending.value.message) == (
                    caught.value.code,
                    caught.value.message,
                )
            await assert_good_call(channel)


# -- responses too large -----------------------------------------------------------------------------------


async def test_100_mib_response_is_refused_from_its_length_prefix() -> None:
    """The server sends as much of 100 MiB as the windows let it: the client takes no more than a window."""
    sent = 0

    async def huge(peer: ServerPeer, stream_id: int, headers: dict[bytes, bytes]) -> None:
        nonlocal sent
        peer.h2.send_headers(stream_id, GRPC_HEADERS)
        peer.h2.send_data(stream_id, b"\0" + (100 * MiB).to_bytes(4, "big"))
        chunk = bytes(peer.h2.max_outbound_frame_size)
        while sent < 100 * MiB:
            window = peer.h2.local_flow_control_window(stream_id)  # StreamClosedError once reset
            if window == 0:
                await peer.wait_for_window()
                continue
            peer.h2.send_data(stream_id, chunk[:window])
            sent += min(window, len(chunk))
            await peer.flush()

    with trio.fail_after(TIMEOUT):
        error, resets = await hostile_unary_call(huge)
    assert error.code == StatusCode.RESOURCE_EXHAUSTED
    assert error.message == f"received message larger than max ({100 * MiB} vs. {4 * MiB})"
    assert resets == [(1, ErrorCodes.CANCEL)]
    assert sent <= 2 * MiB  # the stream window (1 MiB), and credit for what arrived before the reset


async def test_response_compressed_with_an_unsupported_encoding_is_internal() -> None:
    headers = [*GRPC_HEADERS, (b"grpc-encoding", b"snappy")]
    answer = sending((headers, False), (grpc_message(b"\x01\x02", flag=1), False), (OK_TRAILERS, True))
    with trio.fail_after(TIMEOUT):
        error, _ = await hostile_unary_call(answer)
    assert (error.code, error.message) == (
        StatusCode.INTERNAL,
        "received a message compressed with unsupported 'snappy'",
    )


async def test_compressed_response_inflating_to_100_mib_is_refused() -> None:
    bomb = gzip.compress(bytes(100 * MiB), compresslevel=9)
    headers = [*GRPC_HEADERS, (b"grpc-encoding", b"gzip")]
    with trio.fail_after(TIMEOUT):
        error, _ = await hostile_unary_call(
            sending((headers, False), (grpc_message(bomb, 1), False), (OK_TRAILERS, True))
        )
    assert (error.code, error.message) == (
        StatusCode.RESOURCE_EXHAUSTED,
        f"decompressed message larger than max ({4 * MiB})",
    )


# -- the connection going away -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("error_code", "debug", "reason"),
    [
        (ErrorCodes.NO_ERROR, b"", "GOAWAY NO_ERROR"),
        (ErrorCodes.ENHANCE_YOUR_CALM, b"too_many_pings", "GOAWAY ENHANCE_YOUR_CALM: too_many_pings"),
        (0x99, b"\xff", "GOAWAY error code 153: \ufffd"),
    ],
)
async def test_goaway_mid_call_refuses_the_streams_above_last_stream_id_and_finishes_the_others(
    error_code: int, debug: bytes, reason: str
) -> None:
    """The refused call is sent again, once, on a new connection (transparent retry); refused there too, it
    fails with the reason."""

    async def answer(peer: ServerPeer, stream_id: int, headers: dict[bytes, bytes]) -> None:
        if peer is not server.peers[0]:  # the second call, sent again: refused again, before any of it
            goaway = GoAwayFrame(stream_id=0, last_stream_id=0, error_code=error_code, additional_data=debug)
            await peer.send_raw(goaway.serialize())
        elif stream_id == 3:  # both calls are in flight: promise to finish stream 1 only, then do
            goaway = GoAwayFrame(stream_id=0, last_stream_id=1, error_code=error_code, additional_data=debug)
            await peer.send_raw(goaway.serialize())
            peer.h2.send_headers(1, GRPC_HEADERS)
            peer.h2.send_data(1, grpc_message(RESPONSE.SerializeToString()))
            peer.h2.send_headers(1, OK_TRAILERS, end_stream=True)

    outcomes: dict[str, Any] = {}

    async def call(name: str, stub: trio_grpc.Stub) -> None:
        try:
            outcomes[name] = await stub.UnaryCall(messages_pb2.SimpleRequest())
        except RpcError as exc:
            outcomes[name] = exc

    with trio.fail_after(TIMEOUT):
        async with raw_server(answering(answer)) as server, trio_grpc.Channel(server.target) as channel:
            stub = trio_grpc.Stub(channel, SERVICE)
            async with trio.open_nursery() as nursery:
                nursery.start_soon(call, "first", stub)
                await server.wait_for_requests(1)
                nursery.start_soon(call, "second", stub)
            await assert_good_call(channel)  # on a new connection: the others are draining
            assert [stream_id for stream_id, _ in server.requests] == [1, 3, 1, 1]
            assert len(server.peers) == 3
    assert outcomes["first"] == RESPONSE
    second = outcomes["second"]
    assert isinstance(second, RpcError)
    assert (second.code, second.message) == (
        StatusCode.UNAVAILABLE,
        f"the server refused the call ({reason})",
    )


def refusing_first(*then: tuple[list[tuple[bytes, bytes]] | bytes, bool], delay: float = 0) -> Answer:
    """RST_STREAM(REFUSED_STREAM) for the first request (after `then`'s parts, `delay` seconds late), a
    proper answer after."""
    proper = sending(
        (GRPC_HEADERS, False), (grpc_message(RESPONSE.SerializeToString()), False), (OK_TRAILERS, True)
    )
    refused: list[int] = []

    async def answer(peer: ServerPeer, stream_id: int, headers: dict[bytes, bytes]) -> None:
        if refused:
            await proper(peer, stream_id, headers)
            return
        refused.append(stream_id)
        await sending(*then)(peer, stream_id, headers)
        await trio.sleep(delay)  # time the call spends before its refusal: its deadline counts it
        peer.h2.reset_stream(stream_id, ErrorCodes.REFUSED_STREAM)

    return answer


@pytest.mark.parametrize("kind", ["unary", "server-streaming"])
async def test_refused_stream_is_sent_again_once_on_the_same_connection(kind: str) -> None:
    """REFUSED_STREAM says the server did none of the call (RFC 9113 8.7): transparent retry, on the
    connection still in use; the deadline is the call's own, not a new one."""
    with trio.fail_after(TIMEOUT):
        async with (
            raw_server(answering(refusing_first(delay=0.3))) as server,
            trio_grpc.Channel(server.target) as channel,
        ):
            stub = trio_grpc.Stub(channel, SERVICE)
            if kind == "unary":
                assert await stub.UnaryCall(messages_pb2.SimpleRequest(), timeout=5) == RESPONSE
            else:
                request = messages_pb2.StreamingOutputCallRequest()
                async with stub.StreamingOutputCall(request, timeout=5) as call:
                    assert [response.payload async for response in call] == [RESPONSE.payload]
            assert [stream_id for stream_id, _ in server.requests] == [1, 3]
            assert len(server.peers) == 1
            first, second = (parse_timeout(headers[b"grpc-timeout"]) for _, headers in server.requests)
            assert second <= first - 0.3 and first <= 5


@pytest.mark.parametrize("kind", ["after response headers", "client-streaming"])
async def test_refused_stream_is_not_sent_again_after_headers_or_when_requests_are_gone(kind: str) -> None:
    """Response headers say the server's application saw the call; a client-streaming call's messages are not
    kept to send again. Either way the refusal is the call's outcome (UNAVAILABLE)."""
    answer = refusing_first((GRPC_HEADERS, False)) if kind == "after response headers" else refusing_first()
    with trio.fail_after(TIMEOUT):
        async with raw_server(answering(answer)) as server, trio_grpc.Channel(server.target) as channel:
            stub = trio_grpc.Stub(channel, SERVICE)
            with pytest.raises(RpcError) as caught:
                if kind == "client-streaming":
                    await stub.StreamingInputCall([messages_pb2.StreamingInputCallRequest()])
                else:
                    await stub.UnaryCall(messages_pb2.SimpleRequest())
            assert caught.value.code == StatusCode.UNAVAILABLE
            await assert_good_call(channel)
            assert len(server.requests) == 2  # the refused call once, then the good one


async def test_connection_dropped_mid_call_is_unavailable() -> None:
    async def drop(peer: ServerPeer, stream_id: int, headers: dict[bytes, bytes]) -> None:
        peer.h2.send_headers(stream_id, GRPC_HEADERS)
        peer.h2.send_data(stream_id, grpc_message(RESPONSE.SerializeToString())[:4])
        await peer.flush()
        await peer.drop()

    with trio.fail_after(TIMEOUT):
        error, _ = await hostile_unary_call(drop)
    assert error.code == StatusCode.UNAVAILABLE
    assert error.message == "connection closed by peer" or error.message.startswith("connection lost: ")


async def test_status_before_our_end_of_stream_frees_the_stream() -> None:
    """Trailers before the client's END_STREAM: the client answers RST_STREAM(NO_ERROR) (spec)."""
    answer = answering(sending(([*GRPC_HEADERS, *OK_TRAILERS], True)))
    with trio.fail_after(TIMEOUT):
        async with raw_server(answer) as server, trio_grpc.Channel(server.target) as channel:
            async with trio_grpc.Stub(channel, SERVICE).FullDuplexCall() as call:
                assert await call.receive() is None
            assert call.code == StatusCode.OK
            await assert_good_call(channel)
            await trio.testing.wait_all_tasks_blocked()
            assert server.resets == [(1, ErrorCodes.NO_ERROR)]


MALFORMED_HEADERS = [
    pytest.param([(b"content-type", b"application/grpc")], "no :status", id="no-status"),
    pytest.param(
        [(b"content-type", b"application/grpc"), (b":status", b"200")], "no :status", id="status-late"
    ),
    pytest.param([*GRPC_HEADERS, (b":status", b"200")], "pseudo-header", id="status-twice"),
    pytest.param(
        [*GRPC_HEADERS[:1], (b":path", b"/"), *GRPC_HEADERS[1:]], "pseudo-header", id="request-pseudo"
    ),
    pytest.param([*GRPC_HEADERS, (b"X-Upper", b"1")], "invalid header name", id="uppercase-name"),
    pytest.param([*GRPC_HEADERS, (b"x bad", b"1")], "invalid header name", id="space-in-name"),
    pytest.param([*GRPC_HEADERS, (b"", b"1")], "invalid header name", id="empty-name"),
    pytest.param([*GRPC_HEADERS, (b"connection", b"close")], "invalid header name", id="connection"),
    pytest.param(
        [*GRPC_HEADERS, (b"transfer-encoding", b"chunked")], "invalid header name", id="transfer-enc"
    ),
    pytest.param([*GRPC_HEADERS, (b"te", b"gzip")], "invalid te", id="te-not-trailers"),
    pytest.param([*GRPC_HEADERS, (b"x-v", b"a\x00b")], "invalid header value", id="nul-in-value"),
    pytest.param([*GRPC_HEADERS, (b"x-v", b"a\nb")], "invalid header value", id="lf-in-value"),
    pytest.param([*GRPC_HEADERS, (b"x-v", b" padded")], "invalid header value", id="leading-space"),
    pytest.param([*GRPC_HEADERS, (b"x-v", b"padded\t")], "invalid header value", id="trailing-tab"),
]


@pytest.mark.parametrize(("headers", "why"), MALFORMED_HEADERS)
async def test_malformed_response_headers_fail_the_call_and_only_the_call(
    headers: list[tuple[bytes, bytes]], why: str
) -> None:
    """RFC 9113 8.1.1: a stream error. h2's own validation used to close the whole connection instead."""
    with trio.fail_after(TIMEOUT):  # headers alone: the server waits for what the client does about them
        error, resets = await hostile_unary_call(sending((headers, False)))
    assert error.code == StatusCode.INTERNAL
    assert error.message.startswith("malformed response headers") and why in error.message
    assert resets == [(1, ErrorCodes.PROTOCOL_ERROR)]


@pytest.mark.parametrize(
    "trailers",
    [
        pytest.param([(b":status", b"200"), *OK_TRAILERS], id="pseudo-header"),
        pytest.param([*OK_TRAILERS, (b"Grpc-Message", b"x")], id="uppercase-name"),
        pytest.param([*OK_TRAILERS, (b"keep-alive", b"1")], id="connection-specific"),
        pytest.param([*OK_TRAILERS, (b"grpc-message", b"\r")], id="cr-in-value"),
    ],
)
async def test_malformed_trailers_fail_the_call_and_only_the_call(
    trailers: list[tuple[bytes, bytes]],
) -> None:
    answer = sending(
        (GRPC_HEADERS, False), (grpc_message(RESPONSE.SerializeToString()), False), (trailers, True)
    )
    with trio.fail_after(TIMEOUT):
        async with raw_server(answering(answer)) as server, trio_grpc.Channel(server.target) as channel:
            with pytest.raises(RpcError) as caught:
                await trio_grpc.Stub(channel, SERVICE).UnaryCall(messages_pb2.SimpleRequest())
            await assert_good_call(channel)
            assert len(server.peers) == 1  # the same connection carried the good call
    assert caught.value.code == StatusCode.INTERNAL
    assert caught.value.message.startswith("malformed trailers")


async def test_malformed_headers_cost_no_other_call_on_the_connection() -> None:
    """A call in flight on the same connection finishes while the malformed answer fails its own call."""
    released = trio.Event()

    async def answer(peer: ServerPeer, stream_id: int, headers: dict[bytes, bytes]) -> None:
        if headers[b":path"] == GOOD_PATH:
            await released.wait()
            peer.h2.send_headers(stream_id, GRPC_HEADERS)
            peer.h2.send_data(stream_id, grpc_message(b""))
            peer.h2.send_headers(stream_id, OK_TRAILERS, end_stream=True)
        else:
            peer.h2.send_headers(stream_id, [*GRPC_HEADERS, (b"Bad", b"1")])
            released.set()

    with trio.fail_after(TIMEOUT):
        async with raw_server(answer) as server, trio_grpc.Channel(server.target) as channel:
            stub = trio_grpc.Stub(channel, SERVICE)
            async with trio.open_nursery() as nursery:
                nursery.start_soon(assert_good_call, channel)
                await server.wait_for_requests(1)
                with pytest.raises(RpcError) as caught:
                    await stub.UnaryCall(messages_pb2.SimpleRequest())
            assert len(server.peers) == 1
    assert caught.value.code == StatusCode.INTERNAL


# Answers by the request's x-answer metadata, and what the call gets: (code, message, initial, trailing).
MESSAGE = grpc_message(RESPONSE.SerializeToString())
VARIED_ANSWERS: list[tuple[list[Any], tuple[Any, ...]]] = [
    (
        [([*GRPC_HEADERS, (b"x-a", b"1")], False), (MESSAGE, False), ([*OK_TRAILERS, (b"x-t", b"1")], True)],
        (StatusCode.OK, "", (("x-a", "1"),), (("x-t", "1"),)),
    ),
    ([([*GRPC_HEADERS, (b"Bad", b"1")], False)], (StatusCode.INTERNAL, "malformed response headers", (), ())),
    (
        [(GRPC_HEADERS, False), (MESSAGE, False), ([(b"grpc-status", b"5"), (b"grpc-message", b"a")], True)],
        (StatusCode.NOT_FOUND, "a", (), ()),
    ),
    (
        [(GRPC_HEADERS, False), (MESSAGE, False), ([(b"grpc-status", b"5"), (b"grpc-message", b"b")], True)],
        (StatusCode.NOT_FOUND, "b", (), ()),
    ),
    (
        [(GRPC_HEADERS, False), (MESSAGE, False), ([*OK_TRAILERS, (b"X-T", b"1")], True)],
        (StatusCode.INTERNAL, "malformed trailers", (), ()),
    ),
    ([([(b":status", b"200"), *OK_TRAILERS], True)], (StatusCode.INTERNAL, "cardinality violation", (), ())),
]


async def test_each_response_is_judged_on_its_own_however_often_it_came_before() -> None:
    """The client keeps its checks and parses of the header lists a server repeats (one connection)."""

    async def answer(peer: ServerPeer, stream_id: int, headers: dict[bytes, bytes]) -> None:
        await sending(*VARIED_ANSWERS[int(headers[b"x-answer"])][0])(peer, stream_id, headers)

    async def outcome(stub: trio_grpc.Stub, index: int) -> tuple[Any, ...]:
        call = stub.UnaryCall.open(messages_pb2.SimpleRequest(), metadata=[("x-answer", str(index))])
        try:
            async with call:
                await call.response()
        except RpcError:
            pass
        initial = call._initial_metadata or ()
        return (call.code, call.message.split(":")[0], initial, call.trailing_metadata)

    with trio.fail_after(TIMEOUT):
        async with raw_server(answer) as server, trio_grpc.Channel(server.target) as channel:
            stub = trio_grpc.Stub(channel, SERVICE)
            for _ in range(3):
                for index, (_, expected) in enumerate(VARIED_ANSWERS):
                    assert await outcome(stub, index) == expected
            assert len(server.peers) == 1


async def test_kept_checks_and_parses_are_bounded() -> None:
    """A server that sends ever new trailers, or large ones, fills no memory of ours."""
    from trio_grpc._client import _MEMO_ENTRIES

    async def answer(peer: ServerPeer, stream_id: int, headers: dict[bytes, bytes]) -> None:
        trailers = [*OK_TRAILERS, (b"x-n", headers[b"x-n"])]
        await sending((GRPC_HEADERS, False), (MESSAGE, False), (trailers, True))(peer, stream_id, headers)

    with trio.fail_after(TIMEOUT):
        async with raw_server(answer) as server, trio_grpc.Channel(server.target) as channel:
            stub = trio_grpc.Stub(channel, SERVICE)
            await stub.UnaryCall(messages_pb2.SimpleRequest(), metadata=[("x-n", "x" * 2000)])
            connection = await channel.connection()
            assert not any(b"x-n" in dict(headers) for _, headers in connection._memo)  # too large to keep
            for n in range(2 * _MEMO_ENTRIES):
                _, call = await stub.UnaryCall.with_call(
                    messages_pb2.SimpleRequest(), metadata=[("x-n", str(n))]
                )
                assert call.trailing_metadata == (("x-n", str(n)),)
            assert len(connection._memo) == _MEMO_ENTRIES
            assert len(server.peers) == 1


async def test_informational_response_before_the_real_one_is_skipped() -> None:
    answer = sending(
        ([(b":status", b"100")], False),
        (GRPC_HEADERS, False),
        (grpc_message(RESPONSE.SerializeToString()), False),
        (OK_TRAILERS, True),
    )
    with trio.fail_after(TIMEOUT):
        async with raw_server(answering(answer)) as server, trio_grpc.Channel(server.target) as channel:
            assert await trio_grpc.Stub(channel, SERVICE).UnaryCall(messages_pb2.SimpleRequest()) == RESPONSE


@pytest.mark.parametrize("where", ["headers", "trailers"])
async def test_metadata_over_max_header_list_size_fails_the_call_and_keeps_the_connection(where: str) -> None:
    """Over the 16 KiB we advertise, below what hpack may decode: RESOURCE_EXHAUSTED, as grpc-core answers."""
    fields = [*(GRPC_HEADERS if where == "headers" else OK_TRAILERS), (b"x-big", b"a" * 20_000)]
    size = sum(32 + len(name) + len(value) for name, value in fields)  # as RFC 9113 6.5.2 counts

    async def answer(peer: ServerPeer, stream_id: int, headers: dict[bytes, bytes]) -> None:
        if where == "trailers":
            peer.h2.send_headers(stream_id, GRPC_HEADERS)
            peer.h2.send_data(stream_id, grpc_message(RESPONSE.SerializeToString()))
        await peer.send_raw_headers(stream_id, fields, end_stream=where == "trailers")

    with trio.fail_after(TIMEOUT):
        async with raw_server(answering(answer)) as server, trio_grpc.Channel(server.target) as channel:
            with pytest.raises(RpcError) as caught:
                await trio_grpc.Stub(channel, SERVICE).UnaryCall(messages_pb2.SimpleRequest())
            await assert_good_call(channel)
            assert len(server.peers) == 1
    assert (caught.value.code, caught.value.message) == (
        StatusCode.RESOURCE_EXHAUSTED,
        f"received metadata larger than max ({size} vs. {16 * 1024})",
    )


@pytest.mark.parametrize(
    ("extra", "why"),
    [
        # 600 copies of one 4 KB header: a few KiB on the wire (HPACK indexes it), 2.3 MiB decoded.
        (
            [(b"x-same", b"b" * 4000)] * 600,
            "Oversized header block: A header list larger than 2097152 has been received",
        ),
        # 5 MiB in 64 KiB frames: h2's cap on CONTINUATION frames comes first.
        ([(b"x-big", b"a" * 5 * MiB)], "Too many continuation frames received."),
    ],
    ids=["hpack-bomb", "5MiB-value"],
)
async def test_response_headers_past_hpacks_hard_limit_lose_the_connection_not_the_channel(
    extra: list[tuple[bytes, bytes]], why: str
) -> None:
    """Past what hpack may decode (2 MiB), HPACK state cannot be kept in sync: the connection is closed,
    the call is UNAVAILABLE, and the next call gets a new connection."""

    async def huge_headers(peer: ServerPeer, stream_id: int, headers: dict[bytes, bytes]) -> None:
        await peer.send_raw_headers(stream_id, [*GRPC_HEADERS, *extra])

    with trio.fail_after(TIMEOUT):
        async with raw_server(answering(huge_headers)) as server, trio_grpc.Channel(server.target) as channel:
            with pytest.raises(RpcError) as caught:
                await trio_grpc.Stub(channel, SERVICE).UnaryCall(messages_pb2.SimpleRequest())
            await assert_good_call(channel)
            assert len(server.peers) == 2
    assert (caught.value.code, caught.value.message) == (
        StatusCode.UNAVAILABLE,
        f"HTTP/2 protocol error: {why}",
    )


# -- servers that say nothing ------------------------------------------------------------------------------


async def never(peer: ServerPeer, stream_id: int, headers: dict[bytes, bytes]) -> None:
    await trio.sleep_forever()


@pytest.mark.parametrize("tls", [False, True], ids=["plaintext", "tls-handshake-never-answered"])
async def test_server_that_never_sends_settings_hits_the_connect_timeout(tls: bool) -> None:
    settings = ChannelSettings(connect_timeout=0.3)
    context = ssl.create_default_context() if tls else None
    with trio.fail_after(TIMEOUT):
        async with (
            raw_server(never, send_settings=False) as server,
            trio_grpc.Channel(server.target, tls=context, settings=settings) as channel,
        ):
            with pytest.raises(RpcError) as caught:
                await trio_grpc.Stub(channel, SERVICE).UnaryCall(messages_pb2.SimpleRequest())
            assert (caught.value.code, caught.value.message) == (
                StatusCode.UNAVAILABLE,
                f"timed out connecting to {server.target}",
            )
            await trio.testing.wait_all_tasks_blocked()
            assert server.peers[0].closed_by_client  # the Channel did not keep the socket open


async def test_server_that_never_sends_settings_within_the_call_deadline() -> None:
    with trio.fail_after(TIMEOUT):
        async with (
            raw_server(never, send_settings=False) as server,
            trio_grpc.Channel(server.target) as channel,  # connect_timeout: 20 s
        ):
            with pytest.raises(RpcError) as caught:
                await trio_grpc.Stub(channel, SERVICE).UnaryCall(messages_pb2.SimpleRequest(), timeout=0.3)
            assert (caught.value.code, caught.value.message) == (
                StatusCode.DEADLINE_EXCEEDED,
                "Deadline Exceeded",
            )
            await trio.testing.wait_all_tasks_blocked()
            assert server.peers[0].closed_by_client


@pytest.mark.parametrize(
    "silence",
    [
        pytest.param(never, id="no-headers"),
        pytest.param(sending((GRPC_HEADERS, False)), id="no-trailers"),
    ],
)
async def test_server_that_never_answers_is_bounded_by_the_deadline(silence: Answer) -> None:
    async def answer(peer: ServerPeer, stream_id: int, headers: dict[bytes, bytes]) -> None:
        await silence(peer, stream_id, headers)
        await peer.flush()
        await trio.sleep_forever()

    with trio.fail_after(TIMEOUT):
        error, resets = await hostile_unary_call(answer, timeout=0.3)
    assert (error.code, error.message) == (StatusCode.DEADLINE_EXCEEDED, "Deadline Exceeded")
    assert resets == [(1, ErrorCodes.CANCEL)]


async def test_http2_protocol_error_from_the_server_is_unavailable() -> None:
    """SETTINGS_ENABLE_PUSH=2 is a connection error (RFC 9113 6.5.2): the call is UNAVAILABLE."""

    async def bad_settings(peer: ServerPeer, stream_id: int, headers: dict[bytes, bytes]) -> None:
        await peer.send_raw(SettingsFrame(0, settings={SettingsFrame.ENABLE_PUSH: 2}).serialize())

    with trio.fail_after(TIMEOUT):
        error, _ = await hostile_unary_call(bad_settings)
    assert error.code == StatusCode.UNAVAILABLE
    assert error.message.startswith("HTTP/2 protocol error: ")


async def test_keepalive_closes_a_connection_whose_server_stopped_answering() -> None:
    """The server speaks HTTP/2 (SETTINGS) and then never reads again: our PINGs go unanswered."""

    async def mute_server(stream: trio.SocketStream) -> None:
        connection = h2.connection.H2Connection(permissive_config(client_side=False))
        connection.initiate_connection()
        connection.receive_data(await stream.receive_some(65536))
        await stream.send_all(connection.data_to_send())
        await trio.sleep_forever()

    settings = ChannelSettings(keepalive_time=0.05, keepalive_timeout=0.2)
    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            (listener,) = await nursery.start(partial(trio.serve_tcp, mute_server, 0, host="127.0.0.1"))
            port = listener.socket.getsockname()[1]
            async with trio_grpc.Channel(f"127.0.0.1:{port}", settings=settings) as channel:
                with pytest.raises(RpcError) as caught:
                    await trio_grpc.Stub(channel, SERVICE).UnaryCall(messages_pb2.SimpleRequest())
                assert (caught.value.code, caught.value.message) == (
                    StatusCode.UNAVAILABLE,
                    "keepalive timeout",
                )
            nursery.cancel_scope.cancel()


# -- anything at all ---------------------------------------------------------------------------------------

_FIELDS = st.sampled_from(
    [
        (b":status", b"200"),
        (b":status", b"503"),
        (b":status", b"404"),
        (b":status", b"x"),
        (b"content-type", b"application/grpc"),
        (b"content-type", b"text/html"),
        (b"grpc-encoding", b"gzip"),
        (b"grpc-encoding", b"snappy"),
        (b"grpc-status", b"0"),
        (b"grpc-status", b"13"),
        (b"grpc-status", b"abc"),
        (b"grpc-message", b"%zz%C3"),
        (b"grpc-status-details-bin", b"!!"),
        (b"x-bin", b"not base64"),
    ]
)
_PAYLOADS = st.one_of(
    st.binary(max_size=64),
    st.just(grpc_message(RESPONSE.SerializeToString())),
    st.just(grpc_message(b"\xff\xff")),  # not a SimpleResponse
    st.just(grpc_message(gzip.compress(RESPONSE.SerializeToString()), flag=1)),
    st.just(b"\0" + (100 * MiB).to_bytes(4, "big")),
)
_PARTS = st.one_of(
    st.tuples(st.just("headers"), st.lists(_FIELDS, min_size=1, max_size=5), st.booleans()),
    st.tuples(st.just("data"), _PAYLOADS, st.booleans()),
)
_ENDINGS = st.one_of(
    st.tuples(st.just("headers"), st.lists(_FIELDS, min_size=1, max_size=5), st.just(True)),
    st.tuples(st.just("reset"), st.sampled_from([0, 1, 2, 7, 8, 11, 0x99]), st.just(True)),
    st.tuples(st.just("goaway"), st.sampled_from([0, 1, 11]), st.just(True)),
    st.tuples(st.just("drop"), st.just(None), st.just(True)),
)


# The suite runs a short profile; a longer one: CLIENT_FUZZ_EXAMPLES=2000 pytest tests/test_client_hostile.py
# -k anything (2,000 examples pass in about 80 s).
@settings(
    max_examples=int(os.environ.get("CLIENT_FUZZ_EXAMPLES", "150")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(parts=st.lists(_PARTS, max_size=5), ending=_ENDINGS, streaming=st.booleans())
def test_anything_the_server_sends_ends_the_call_in_a_response_or_an_rpc_error(
    parts: list[tuple[str, Any, bool]], ending: tuple[str, Any, bool], streaming: bool
) -> None:
    """Never another exception, never a hang, no stream left behind, and the Channel serves the next call."""

    async def answer(peer: ServerPeer, stream_id: int, headers: dict[bytes, bytes]) -> None:
        for kind, value, end_stream in [*parts, ending]:
            if kind == "headers":
                peer.h2.send_headers(stream_id, value, end_stream=end_stream)
            elif kind == "data":
                peer.h2.send_data(stream_id, value, end_stream=end_stream)
            elif kind == "reset":
                peer.h2.reset_stream(stream_id, value)
            elif kind == "goaway":
                goaway = GoAwayFrame(stream_id=0, last_stream_id=0, error_code=value)
                await peer.send_raw(goaway.serialize())
            else:
                await peer.flush()
                await peer.drop()

    async def main() -> None:
        with trio.fail_after(TIMEOUT):
            async with raw_server(answering(answer)) as server, trio_grpc.Channel(server.target) as channel:
                stub = trio_grpc.Stub(channel, SERVICE)
                try:
                    if streaming:
                        request = messages_pb2.StreamingOutputCallRequest()
                        async with stub.StreamingOutputCall(request, timeout=1) as call:
                            async for response in call:
                                assert response.payload.body == b"pong"
                    else:
                        response = await stub.UnaryCall(messages_pb2.SimpleRequest(), timeout=1)
                        assert response == RESPONSE
                except RpcError as exc:
                    assert exc.code != StatusCode.OK
                connection = channel._connection
                assert connection is not None and not connection.streams
                # The peer may send its GOAWAY in a write of its own after the answer: once every task
                # waits, it has been read, and the next call goes to a new connection. Without this, the
                # next call could leave before the GOAWAY arrives and be refused by it (UNAVAILABLE).
                await trio.testing.wait_all_tasks_blocked()
                await assert_good_call(channel)

    trio.run(main)  # one run per example: hypothesis drives the examples from a synchronous test
