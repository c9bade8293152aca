"""The gRPC server: listeners, connections, and one task per call.

A `Server` owns its connections (in the nursery of the `serve_*` call that accepted them); a connection
owns its calls' tasks. Each call runs its handler inside a cancel scope: the `grpc-timeout` deadline is that
scope's deadline, and a RST_STREAM from the client, or the connection going away, cancels it. Whatever way
the handler ends, exactly one status goes back (unless the client is gone).
"""

from __future__ import annotations

import collections
import contextlib
import logging
import math
import os
import re
import socket as stdlib_socket
import ssl
from collections.abc import Callable, Coroutine, Iterable, Sequence
from contextlib import AbstractAsyncContextManager
from typing import Any, NoReturn

import h2.config
import h2.errors
import h2.events
import h2.settings
import trio
from google.protobuf.message import Message

from ._codec import deserialize, is_grpc_content_type, serialize, status_headers
from ._compression import ACCEPT_ENCODING, is_supported, parse_accept_encoding
from ._metadata import Headers, Metadata, decode_metadata, encode_metadata
from ._service import Handler, MethodSpec, ServiceBinding
from ._settings import ServerSettings
from ._status import RpcError, StatusCode
from ._timeout import parse_timeout
from ._transport import Connection, ErrorCodes, SharedMemoryBudget, Stream, StreamClosed, close_at_once

log = logging.getLogger("trio_grpc.server")

_GRPC_CONTENT_TYPE = b"application/grpc"
# What grpc-core and grpc-go allow between PINGs while no stream is open, unless told to permit them.
_PING_INTERVAL_WITHOUT_CALLS = 2 * 60 * 60.0
# Seconds an idle connection closed by us has to take its GOAWAY before the socket is closed regardless.
_GOODBYE_TIME = 1.0
_SEND = "a streaming handler sends its responses with `await context.send(response)` and returns None"

_Status = tuple[StatusCode, str, bytes | None]  # code, message, details

# The header lists every call sends, whose HPACK blocks the connection reuses (see _headers.py).
_HTTP_OK = ((b":status", b"200"), (b"content-type", _GRPC_CONTENT_TYPE))
_RESPONSE_HEADERS = (*_HTTP_OK, (b"grpc-accept-encoding", ACCEPT_ENCODING))
_STATUS = {code: tuple(status_headers(code, "", None)) for code in StatusCode}  # grpc-status alone
_TRAILERS_ONLY = {code: _HTTP_OK + _STATUS[code] for code in StatusCode}
_OK: _Status = (StatusCode.OK, "", None)
# One name for every call's task and every connection's: trio would otherwise format one string per task.
_CALL_TASK_NAME = "trio_grpc call"
_CONNECTION_TASK_NAME = "trio_grpc connection"
# h2 takes a malformed request for a connection error; `_on_headers` checks requests itself
# (`_inspect_headers`) and resets just that stream, as RFC 9113 8.1.1 asks: other calls carry on.
# h2 only reads its configuration: one serves every connection.
_H2_CONFIG = h2.config.H2Configuration(
    client_side=False,
    header_encoding=None,
    validate_inbound_headers=False,
    validate_outbound_headers=False,
    normalize_outbound_headers=False,
)


class ServicerContext:
    """What a handler knows about its call, and how it answers beyond returning a value."""

    # One per call in flight: slots keep it to a third of the size of an instance dict.
    __slots__ = (
        "__weakref__",
        "_accepted_encodings",
        "_added_initial",
        "_cancel_requested",
        "_code",
        "_connection",
        "_details",
        "_headers_sent",
        "_invocation_metadata",
        "_raw_headers",
        "_request_compressed",
        "_request_encoding",
        "_response_encoding",
        "_scope",
        "_shutting_down",
        "_spec",
        "_stream",
        "_trailing",
        "deadline",
        "method",
        "peer",
        "status_code",
        "status_message",
    )

    def __init__(
        self,
        connection: ServerConnection,
        stream: Stream,
        spec: MethodSpec,
        headers: dict[bytes, bytes],
        deadline: float,
    ) -> None:
        self._connection = connection
        self._stream = stream
        self._spec = spec
        encoding = headers.get(b"grpc-encoding")  # one string less per call when there is none
        self._request_encoding = "identity" if encoding is None else encoding.decode("ascii", "replace")
        self._accepted_encodings = parse_accept_encoding(headers.get(b"grpc-accept-encoding", b"identity"))
        self._response_encoding: str | None = None
        self._request_compressed = False
        self._raw_headers = stream.headers or []
        self._invocation_metadata: tuple[tuple[str, str | bytes], ...] | None = None
        self._headers_sent = False
        self._trailing: Headers = []
        self._scope: trio.CancelScope | None = None  # of the level running: the handler, or an interceptor
        self._cancel_requested = False
        self._shutting_down = False
        self._code: StatusCode | None = None
        self._details = ""
        self._added_initial: Headers | None = None
        #: The status the call ends with, once known: what an interceptor reads after its `yield`.
        self.status_code: StatusCode | None = None
        self.status_message = ""
        self.deadline = deadline
        self.method = spec.path
        self.peer = connection.peer

    @property
    def invocation_metadata(self) -> tuple[tuple[str, str | bytes], ...]:
        if self._invocation_metadata is None:  # decoded on demand: most handlers never look
            self._invocation_metadata = decode_metadata(self._raw_headers)
        return self._invocation_metadata

    def time_remaining(self) -> float | None:
        if self.deadline == math.inf:
            return None
        return max(0.0, self.deadline - trio.current_time())

    @property
    def cancelled(self) -> bool:
        return self._stream.closed is not None or (self._scope is not None and self._scope.cancel_called)

    @property
    def request_compressed(self) -> bool:
        """Whether the request message received last came compressed (its compressed flag was set)."""
        return self._request_compressed

    def set_compression(self, encoding: str) -> None:
        """Compress responses with `encoding`, if the client accepts it (else they go uncompressed)."""
        if not is_supported(encoding):
            raise ValueError(f"unsupported compression {encoding!r}")
        if self._headers_sent:
            raise RuntimeError("set_compression() must come before the first response is sent")
        accepted = encoding != "identity" and encoding in self._accepted_encodings
        self._response_encoding = encoding if accepted else None

    async def send_initial_metadata(self, metadata: Metadata) -> None:
        if self._headers_sent:
            raise RuntimeError("initial metadata was already sent")
        self._send_headers(encode_metadata(metadata))
        await trio.lowlevel.checkpoint()

    def add_initial_metadata(self, metadata: Metadata) -> None:
        """Add to the initial metadata, sent with the response headers whenever they go (interceptors)."""
        if self._headers_sent:
            raise RuntimeError("initial metadata was already sent")
        if self._added_initial is None:
            self._added_initial = []
        self._added_initial.extend(encode_metadata(metadata))

    def set_trailing_metadata(self, metadata: Metadata) -> None:
        self._trailing = encode_metadata(metadata)

    def set_code(self, code: StatusCode) -> None:
        """grpcio's way to end with a status: a handler that then returns ends with `code` (not OK)."""
        self._code = code

    def set_details(self, details: str) -> None:
        """The status message that goes with `set_code()` (grpcio's name for it)."""
        self._details = details

    def add_trailing_metadata(self, metadata: Metadata) -> None:
        """Add to the trailing metadata without replacing what the handler set (interceptors)."""
        self._trailing.extend(encode_metadata(metadata))

    def abort(self, code: StatusCode, message: str = "", details: bytes | None = None) -> NoReturn:
        raise RpcError(code, message, details=details)

    async def send(self, message: Message, *, compress: bool = True) -> None:
        """Send one response message; waits while the client's flow-control window is full.

        `compress=False` sends this message uncompressed even when the call compresses its responses.
        Cancelled, it raises before anything of the message is sent.
        """
        await trio.lowlevel.checkpoint_if_cancelled()
        encoding = self._response_encoding if compress else None
        if not self._headers_sent:  # first: a message refused as too large still follows the headers
            self._send_headers([])
        waiting = self._queue_framed(
            serialize(message, encoding, self._connection.limits.max_send_message_size)
        )
        if waiting is not None:
            await waiting

    def _queue_framed(self, data: bytes) -> Coroutine[Any, Any, None] | None:
        """Queue one framed message, after the response headers if they have not gone yet; what the caller
        must then await, if anything (the caller has checked for cancellation).

        This runs once per message, so the common case makes no coroutine: a message that the windows and
        the write buffer take whole is queued here, and only once a batch is full does the sender await a
        turn for the writer. Anything else returns `_send_waiting`, which waits in `send_data`.
        """
        if not self._headers_sent:
            self._send_headers([])
        connection = self._connection
        if not connection.try_queue_message(self._stream, data):
            return self._send_waiting(data)
        if connection.batch_is_full():
            # Returned, not awaited here: the caller awaits it at once (what ASYNC105 checks for).
            return trio.lowlevel.cancel_shielded_checkpoint()  # noqa: ASYNC105
        return None

    async def _send_waiting(self, data: bytes) -> None:
        try:
            await self._connection.send_data(self._stream, data)
        except StreamClosed:
            await trio.lowlevel.checkpoint()  # our scope was cancelled with the stream: raise Cancelled
            raise

    # One response sent to many calls (a chat room's fan-out): encoded once with `encode`, then handed to
    # each call with `try_send_encoded` (no wait, no task switch) or, when that cannot take it,
    # `send_encoded`. The frame is uncompressed, as with `send(compress=False)`: valid whatever compression
    # the call chose.

    @staticmethod
    def encode(message: Message) -> bytes:
        """`message` as one framed, uncompressed gRPC message, for `send_encoded` and `try_send_encoded`."""
        return serialize(message, None, 2**31 - 1)

    def try_send_encoded(self, data: bytes) -> bool:
        """Queue one message made by `encode` if that needs no wait: the windows and write buffer take all
        of it now and no other send is half-way. False: nothing was queued (use `send_encoded`)."""
        if len(data) - 5 > self._connection.limits.max_send_message_size or self._stream.closed is not None:
            return False  # send_encoded refuses it, or raises what closed the stream
        if not self._headers_sent:
            try:
                self._send_headers([])
            except StreamClosed:
                return False
        return self._connection.try_queue_message(self._stream, data)

    async def send_encoded(self, data: bytes) -> None:
        """Send one message made by `encode`, as `send` does: waits while the client's window is full."""
        await trio.lowlevel.checkpoint_if_cancelled()
        limit = self._connection.limits.max_send_message_size
        if len(data) - 5 > limit:
            raise RpcError(
                StatusCode.RESOURCE_EXHAUSTED, f"sent message larger than max ({len(data) - 5} vs. {limit})"
            )
        waiting = self._queue_framed(data)
        if waiting is not None:
            await waiting

    async def _receive(self, schedule_point: bool = True) -> Message:
        """The next request; StopAsyncIteration once the client has ended its stream (what `async for`
        over a `_RequestStream` takes, without a frame of its own in every waiting call's task)."""
        try:
            item = await self._stream.receive_message(schedule_point)
        except StreamClosed:
            await trio.lowlevel.checkpoint()
            raise
        if item is None:
            raise StopAsyncIteration
        return self._decode(item)

    def receive_nowait(self) -> Message | None:
        """The next request of a streaming call if it has arrived already, else None; never waits, and is
        not a checkpoint. A handler can so take a burst of requests in one go (a chat room fans them out
        before the connections' writers run, so that they go out many to a frame). None also when the
        stream has ended or failed: the next `async for` step says which."""
        try:
            item = self._stream.take_message()
        except (RpcError, StreamClosed):
            return None
        return None if item is None else self._decode(item)

    def _decode(self, item: tuple[bool, bytes | memoryview]) -> Message:
        self._request_compressed = item[0]
        return deserialize(
            item[0],
            item[1],
            self._request_encoding,
            self._spec.request_type,
            self._connection.limits.max_receive_message_size,
        )

    def _send_headers(self, metadata: Headers) -> None:
        headers = metadata
        if self._response_encoding is not None or self._added_initial is not None:
            headers = [*(self._added_initial or ()), *metadata]
            if self._response_encoding is not None:
                headers.insert(0, (b"grpc-encoding", self._response_encoding.encode()))
        self._connection.send_headers(self._stream, headers, constant=_RESPONSE_HEADERS)
        self._headers_sent = True

    def _cancel(self) -> None:
        """The client reset the stream, or the server is shutting down: end the call."""
        self._cancel_requested = True
        if self._scope is not None:
            self._scope.cancel()

    def _finish(self, code: StatusCode, message: str, details: bytes | None) -> None:
        trailers = status_headers(code, message, details)[1:]  # grpc-status is in `constant`
        trailers.extend(self._trailing)
        # Trailers-Only when no headers went out: the status then comes with the response headers.
        constant = _STATUS[code] if self._headers_sent else _TRAILERS_ONLY[code]
        self._connection.send_headers(self._stream, trailers, end_stream=True, constant=constant)


#: Called with each call's context; the async context manager it returns wraps the call (docs/api.md).
ServerInterceptor = Callable[[ServicerContext], AbstractAsyncContextManager[object]]


class _RequestStream:
    """The requests of a client-streaming call, as an async iterator."""

    __slots__ = ("_context",)

    def __init__(self, context: ServicerContext) -> None:
        self._context = context

    def __aiter__(self) -> _RequestStream:
        return self

    def __anext__(self) -> Coroutine[Any, Any, Message]:
        return self._context._receive()


def _rpc_error_in(exc: BaseException) -> RpcError | None:
    """The RpcError a handler ended with, also from inside a nursery's exception group."""
    if isinstance(exc, RpcError):
        return exc
    if isinstance(exc, BaseExceptionGroup):
        matched, rest = exc.split(RpcError)
        if matched is not None and rest is None:
            leaf: BaseException = matched
            while isinstance(leaf, BaseExceptionGroup):
                leaf = leaf.exceptions[0]
            return leaf if isinstance(leaf, RpcError) else None
    return None


def _status_of_failure(context: ServicerContext, exc: Exception) -> tuple[StatusCode, str, bytes | None]:
    """The status a handler that raised `exc` ends with."""
    error = _rpc_error_in(exc)
    if error is not None:
        try:
            context._trailing.extend(encode_metadata(error.trailing_metadata))
        except Exception:
            log.exception("%s: unusable trailing metadata in the handler's RpcError", context.method)
        else:
            return error.code, error.message, error.details
    elif context._stream.closed is None:
        log.error("%s: unexpected error in handler", context.method, exc_info=exc)
    return StatusCode.UNKNOWN, "Unexpected error in handler", None


_REQUEST_PSEUDO_HEADERS = frozenset({b":method", b":scheme", b":path", b":authority"})
_CONNECTION_SPECIFIC_HEADERS = frozenset(
    {b"connection", b"keep-alive", b"proxy-connection", b"transfer-encoding", b"upgrade"}
)
_TOKEN = rb"[!#$%&'*+\-.^_`|~0-9a-z]+"
_FIELD_NAME = re.compile(_TOKEN)
_FIELD_NAMES = re.compile(rb"(?:%s(?:\n%s)*)?" % (_TOKEN, _TOKEN))  # names joined with newlines
_FORBIDDEN_IN_VALUE = re.compile(rb"[\x00\r\n]")
_REQUIRED_PSEUDO_HEADERS = frozenset({b":method", b":scheme", b":path"})


def _inspect_headers(headers: list[tuple[bytes, bytes]]) -> tuple[str | None, int]:
    """(Why a request header block is malformed HTTP/2 (RFC 9113 8.2, 8.3), or None; its size as
    SETTINGS_MAX_HEADER_LIST_SIZE counts it).

    This runs for every request, so the valid case is decided by a few C-level passes over the whole block;
    `_why_malformed` walks the headers one by one only to name what is wrong. `te` is left to `_refusal`,
    which answers it the way grpc-core does.
    """
    if not headers:
        return "empty header block", 0
    names, values = zip(*headers, strict=True)
    size = 32 * len(names) + sum(map(len, names)) + sum(map(len, values))
    pseudo = [name for name in names if name[:1] == b":"]
    pseudo_set = set(pseudo)
    valid = (
        names[: len(pseudo)] == tuple(pseudo)  # pseudo-headers first
        and len(pseudo_set) == len(pseudo)
        and _REQUIRED_PSEUDO_HEADERS <= pseudo_set <= _REQUEST_PSEUDO_HEADERS
        and _FIELD_NAMES.fullmatch(b"\n".join(names[len(pseudo) :])) is not None
        and _CONNECTION_SPECIFIC_HEADERS.isdisjoint(names)
        and _FORBIDDEN_IN_VALUE.search(b"".join(values)) is None
    )
    return (None if valid else _why_malformed(headers)), size


def _why_malformed(headers: list[tuple[bytes, bytes]]) -> str:
    pseudo: set[bytes] = set()
    regular = False
    for name, value in headers:
        if name.startswith(b":"):
            if regular or name in pseudo or name not in _REQUEST_PSEUDO_HEADERS:
                return f"misplaced, repeated or unknown pseudo-header {name!r}"
            pseudo.add(name)
        else:
            regular = True
            if not _FIELD_NAME.fullmatch(name) or name in _CONNECTION_SPECIFIC_HEADERS:
                return f"invalid header name {name!r}"
        if _FORBIDDEN_IN_VALUE.search(value):
            return f"invalid value of header {name!r}"
    return "missing pseudo-header (:method, :scheme and :path are required)"


class ServerConnection(Connection):
    __slots__ = (
        "_deadline_scope",
        "_draining",
        "_handshake_done",
        "_interrupted_sends",
        "_last_ping",
        "_ping_strikes",
        "_reset_window_end",
        "_resets_in_window",
        "_sent_at_last_ping",
        "_server",
        "calls",
        "idle_since",
        "peer",
    )
    _EVENT_HANDLERS = {**Connection._EVENT_HANDLERS, h2.events.PingReceived: "_on_ping"}

    def __init__(self, server: Server, socket: trio.abc.Stream, peer: str) -> None:
        super().__init__(socket, _H2_CONFIG, server.settings, server._memory_budget)
        self._server = server
        self.peer = peer
        self.calls: dict[int, ServicerContext] = {}
        #: The unsent rest of a message, by stream id, whose send the handler's end interrupted.
        self._interrupted_sends: dict[int, memoryview] = {}
        self._draining = False
        #: The peer's first SETTINGS arrived: it speaks HTTP/2.
        self._handshake_done = False
        #: Around the whole connection. Its deadline bounds the handshake (TLS, preface, SETTINGS), counted
        #: from the accept; later, the goodbye of an idle connection closed by us.
        self._deadline_scope = trio.CancelScope()
        self._deadline_scope.deadline = trio.current_time() + server.settings.handshake_timeout
        self._resets_in_window = 0
        self._reset_window_end = 0.0
        #: When the last stream ended (or the connection was accepted): the server's idle timer counts
        #: max_connection_idle from it (`Server._expire_idle_connections`).
        self.idle_since = trio.current_time()
        self._ping_strikes = 0
        self._last_ping = -math.inf
        self._sent_at_last_ping = 0

    async def run(self) -> None:
        settings = self._server.settings
        with self._deadline_scope:
            if isinstance(self.socket, trio.SSLStream) and not await self._tls_handshake(self.socket):
                return
            self._local_settings(
                {h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS: settings.max_concurrent_streams}
            )
            # h2 takes a stream over the advertised limit for a connection error; `_on_headers` refuses it
            # with REFUSED_STREAM instead (RFC 9113 5.1.2 allows both), so that the calls in flight carry on.
            self.h2.local_settings[h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS] = 2**31 - 1
            self.h2.local_settings.acknowledge()  # in effect at once, and never sent to the peer
            await super().run()  # the calls' tasks run in its nursery, beside the writer
        if self._deadline_scope.cancelled_caught and not self._draining:
            log.info(
                "%s: no TLS handshake and HTTP/2 SETTINGS within %.1fs; closed",
                self.peer,
                settings.handshake_timeout,
            )

    async def _tls_handshake(self, tls_stream: trio.SSLStream[trio.abc.Stream]) -> bool:
        """Whether the TLS handshake succeeded and chose HTTP/2; the deadline scope bounds it."""
        try:
            await tls_stream.do_handshake()
        except trio.BrokenResourceError as exc:
            log.info("%s: TLS handshake failed: %s", self.peer, exc.__cause__ or exc)
            return False
        if tls_stream.selected_alpn_protocol() != "h2":
            log.info("%s: refused: TLS peer did not negotiate HTTP/2 (ALPN h2)", self.peer)
            return False
        return True

    def _on_remote_settings(self, event: h2.events.RemoteSettingsChanged) -> None:
        if not self._handshake_done:  # the peer speaks HTTP/2: no more handshake deadline
            self._handshake_done = True
            self._deadline_scope.deadline = math.inf
        super()._on_remote_settings(event)

    def _on_goaway(self, event: h2.events.ConnectionTerminated) -> None:
        self._draining = True

    def _on_stream_reset(self, event: h2.events.StreamReset) -> None:
        super()._on_stream_reset(event)
        # Opening and at once resetting streams costs the peer nothing and us a handler each: bound the rate.
        now = trio.current_time()
        if now >= self._reset_window_end:
            self._reset_window_end = now + 1.0
            self._resets_in_window = 0
        self._resets_in_window += 1
        limit = self._server.settings.max_stream_resets_per_second
        if self._resets_in_window > limit and self.lost is None:
            log.warning(
                "%s: more than %d stream resets in a second; closing the connection", self.peer, limit
            )
            self._enhance_your_calm(b"too many stream resets")

    def _on_ping(self, event: h2.events.PingReceived) -> None:
        """h2 has queued the ACK. As grpc does, a PING too soon after the last one is a strike, unless we
        sent HEADERS or DATA in between: then the peer has reason to ping (BDP probes), and strikes clear."""
        now = trio.current_time()
        sent = self.headers_and_data_sent
        if sent != self._sent_at_last_ping:
            self._sent_at_last_ping = sent
            self._ping_strikes = 0
        elif now - self._last_ping < self._min_ping_interval():
            self._ping_strikes += 1
        self._last_ping = now
        limit = self._server.settings.max_ping_strikes
        if limit is not None and self._ping_strikes > limit and self.lost is None:
            log.warning("%s: PINGs too often (%d strikes); closing the connection", self.peer, limit + 1)
            self._enhance_your_calm(b"too_many_pings")

    def _min_ping_interval(self) -> float:
        settings = self._server.settings
        if self.streams or settings.keepalive_permit_without_calls:
            return settings.min_ping_interval_without_data
        return max(settings.min_ping_interval_without_data, _PING_INTERVAL_WITHOUT_CALLS)

    def _enhance_your_calm(self, debug: bytes) -> None:
        """Close a connection whose peer abuses it: GOAWAY(ENHANCE_YOUR_CALM), after what is queued."""
        self.flush_soon()  # answers h2 queued already go first: the GOAWAY is the last frame
        self.send_goaway(self.h2.highest_inbound_stream_id, ErrorCodes.ENHANCE_YOUR_CALM, debug)
        self._connection_lost(debug.decode())

    def _on_headers(self, event: h2.events.RequestReceived) -> None:
        stream_id = event.stream_id
        if not self._h2_stream_open(stream_id):
            return  # the peer reset it in the same batch of frames: nothing to answer
        if self._draining or len(self.streams) >= self._server.settings.max_concurrent_streams:
            self._reset_stream_id(stream_id, ErrorCodes.REFUSED_STREAM)
            return
        malformed, header_list_size = _inspect_headers(event.headers)
        if malformed is not None:
            log.debug("%s: malformed request on stream %d: %s", self.peer, stream_id, malformed)
            self._reset_stream_id(stream_id, ErrorCodes.PROTOCOL_ERROR)
            return
        stream = Stream(self, stream_id)
        stream.headers = event.headers
        self.streams[stream_id] = stream
        headers = dict(event.headers)
        refusal = self._refusal(headers, header_list_size)
        if refusal is not None:
            http_status, code, message = refusal
            if http_status is None:
                self.reset(stream, ErrorCodes.INTERNAL_ERROR)
                self.release(stream)
                return
            response = [(b":status", http_status), (b"content-type", _GRPC_CONTENT_TYPE)]
            response += status_headers(code, message, None)
            if code == StatusCode.UNIMPLEMENTED:
                response.append((b"grpc-accept-encoding", ACCEPT_ENCODING))
            self._answer_and_release(stream, response)
            return
        spec, handler = self._server._methods[headers[b":path"].decode()]
        deadline = math.inf
        raw_timeout = headers.get(b"grpc-timeout")
        if raw_timeout is not None:
            deadline = trio.current_time() + parse_timeout(raw_timeout)  # validated by _refusal
        context = ServicerContext(self, stream, spec, headers, deadline)
        self.calls[stream_id] = context
        assert self.nursery is not None  # events are handled only while `run` reads
        self.nursery.start_soon(self._run_call, context, handler, name=_CALL_TASK_NAME)

    def _refusal(
        self, headers: dict[bytes, bytes], header_list_size: int
    ) -> tuple[bytes | None, StatusCode, str] | None:
        """Why the request cannot reach a handler, as (HTTP status, gRPC status, message); None if it can.

        HTTP status None: no response at all, RST_STREAM(INTERNAL_ERROR) instead.
        """
        content_type = headers.get(b"content-type", b"")
        if not is_grpc_content_type(content_type):
            return b"415", StatusCode.INVALID_ARGUMENT, f"invalid gRPC request content-type {content_type!r}"
        if headers.get(b":method") != b"POST":
            return b"405", StatusCode.INTERNAL, "gRPC requires the POST method"
        te = headers.get(b"te")
        if te is None:  # what grpc-core does: the request came through something that drops `te`
            return None, StatusCode.INTERNAL, "missing te: trailers header"
        if te != b"trailers":
            return b"200", StatusCode.INTERNAL, "bad te header"
        limit = self._server.settings.max_header_list_size
        if header_list_size > limit:  # hpack's hard limit is higher (see _local_settings): this call only
            return (
                b"200",
                StatusCode.RESOURCE_EXHAUSTED,
                f"received metadata larger than max ({header_list_size} vs. {limit})",
            )
        raw_timeout = headers.get(b"grpc-timeout")
        if raw_timeout is not None:
            try:
                parse_timeout(raw_timeout)
            except ValueError:
                return b"200", StatusCode.INTERNAL, f"malformed grpc-timeout {raw_timeout!r}"
        path = headers.get(b":path", b"").decode("utf-8", "replace")
        if path not in self._server._methods:
            return b"200", StatusCode.UNIMPLEMENTED, f"Method not found: {path}"
        encoding = headers.get(b"grpc-encoding", b"identity").decode("ascii", "replace")
        if not is_supported(encoding):
            return b"200", StatusCode.UNIMPLEMENTED, f"grpc-encoding {encoding!r} is not supported"
        return None

    def _abandon(self, stream: Stream) -> None:
        if stream.id not in self.calls:
            self.release(stream)

    def _answer_and_release(self, stream: Stream, headers: Headers) -> None:
        self.send_headers(stream, headers, end_stream=True)
        if not stream.ended:
            self.reset(stream, ErrorCodes.NO_ERROR)  # the client may still be sending: tell it to stop
        self.release(stream)

    async def _run_call(self, context: ServicerContext, handler: Handler) -> None:
        stream = context._stream
        stream.on_reset = context._cancel
        try:
            if self._server._interceptors:
                status = await self._run_level(context, self._intercepted(context, handler, 0))
            else:
                status = await self._run_level(context, self._call_handler(context, handler))
            rest = self._interrupted_sends.pop(stream.id, None)
            if rest is not None and not await self._finish_interrupted_send(context, rest):
                return
            self._answer(context, *status)
        except StreamClosed:
            pass  # the client is gone
        except Exception:  # a fault of ours costs this call, never the connection
            log.exception("%s: internal error answering the call", context.method)
            self.reset(stream, ErrorCodes.INTERNAL_ERROR)
        finally:
            del self.calls[stream.id]
            self._interrupted_sends.pop(stream.id, None)
            self.release(stream)

    def _interrupted_mid_message(self, stream: Stream, rest: memoryview) -> None:
        self._interrupted_sends[stream.id] = rest  # the call's task sends it before the status

    async def _finish_interrupted_send(self, context: ServicerContext, rest: memoryview) -> bool:
        """Send the rest of a message a handler's send left half-way, so that its status can follow (a chat
        member cut off while its window was full still learns why); False if it had to be reset instead.

        Past the call's deadline the client has given up: the stream is reset at once."""
        stream = context._stream
        with trio.move_on_at(
            min(context.deadline, trio.current_time() + self._server.settings.finish_message_timeout)
        ):
            await self.finish_message(stream, rest)
            return True
        self.reset(stream, ErrorCodes.CANCEL)
        return False

    async def _run_level(
        self, context: ServicerContext, body: Coroutine[Any, Any, _Status | None]
    ) -> _Status:
        """Run `body` in a cancel scope that holds the call's deadline and cancellation; its status. (A
        coroutine not yet started rather than a function and its arguments: a waiting call holds less.)

        Without interceptors there is one level: the handler. Each interceptor adds one around the levels
        inside it: while an inner level runs, it holds the deadline and is what a reset or shutdown cancels,
        and the outer one takes them back when it ends. So an interceptor's own code is bounded by the
        deadline, and it still sees the status of what it wraps (a Cancelled caught by an outer scope would
        end the outer levels before they could look).
        """
        outer = context._scope
        if outer is not None:
            if outer.cancel_called:  # reset or shut down before this level began
                body.close()  # never started
                return self._cancelled_status(context)
            outer.deadline = math.inf
        scope = context._scope = trio.CancelScope(deadline=context.deadline)
        try:
            with scope:
                status = await body or _OK
        # Outside the scope: an exception group from a handler's nursery that also held our scope's
        # Cancelled comes out of the scope without it, and must not escape into the connection.
        except Exception as exc:
            # In a function of its own: a local here holding the exception would hold, through its traceback,
            # this very frame, a cycle that keeps the call's stream alive until the cyclic GC runs.
            status = _status_of_failure(context, exc)
        finally:
            if outer is not None:
                context._scope = outer
                outer.deadline = context.deadline
                if context._cancel_requested:
                    outer.cancel()
        return self._cancelled_status(context) if scope.cancelled_caught else status

    @staticmethod
    def _cancelled_status(context: ServicerContext) -> _Status:
        if context._stream.closed is not None:
            return StatusCode.CANCELLED, "the client cancelled the call", None  # not sent: nobody to hear it
        if context._shutting_down:
            return StatusCode.UNAVAILABLE, "server is shutting down", None
        return StatusCode.DEADLINE_EXCEEDED, "Deadline Exceeded", None

    async def _intercepted(self, context: ServicerContext, handler: Handler, index: int) -> _Status:
        """Interceptor `index` around the levels inside it (the next interceptors, then the handler)."""
        interceptors = self._server._interceptors
        async with interceptors[index](context):
            if index + 1 < len(interceptors):
                status = await self._run_level(context, self._intercepted(context, handler, index + 1))
            else:
                status = await self._run_level(context, self._call_handler(context, handler))
            context.status_code, context.status_message = status[0], status[1]
        return status

    async def _call_handler(self, context: ServicerContext, handler: Handler) -> _Status | None:
        """Receive the request (unary kinds), run the handler, send its response (unary responses); the
        status a handler set with `set_code()`, if any."""
        kind = context._spec.kind
        if kind.client_streaming:
            request: Any = _RequestStream(context)
        else:
            # No schedule point: this task has only just started, it has no one to be fair to.
            try:
                request = await context._receive(schedule_point=False)
            except StopAsyncIteration:
                raise RpcError(StatusCode.INTERNAL, "the client sent no request message") from None
        response = await handler(request, context)
        if context._code is not None and context._code != StatusCode.OK:  # set_code(), as in grpcio
            return context._code, context._details, None
        if kind.server_streaming and response is not None:
            raise RpcError(StatusCode.INTERNAL, f"{context.method} handler returned a value: {_SEND}")
        if not kind.server_streaming:
            if response is None:
                raise RpcError(StatusCode.INTERNAL, f"{context.method} handler returned no response")
            await context.send(response)
        return None

    def _answer(
        self, context: ServicerContext, code: StatusCode, message: str, details: bytes | None
    ) -> None:
        """Send the call's status, unless nobody can receive it."""
        stream = context._stream
        if stream.closed is not None:
            return  # the client is gone, or a send cut off mid-message reset the stream
        context._finish(code, message, details)
        if not stream.ended:
            self.reset(stream, ErrorCodes.NO_ERROR)

    def _stream_released(self) -> None:
        if self.streams:
            return
        if self._draining:
            self.close()
            return
        self.idle_since = trio.current_time()
        self._server._connection_went_idle(self)

    @property
    def is_idle(self) -> bool:
        """No stream open, and not going away: what eviction at the cap may close."""
        return not self.streams and not self._draining and self.lost is None

    def close_idle(self, reason: str) -> None:
        """GOAWAY and close a connection without streams; the peer gets a moment to read the GOAWAY."""
        log.info("%s: %s; closing", self.peer, reason)
        if not self.streams:  # bounded: a peer that does not read must not keep its place for long
            goodbye_end = trio.current_time() + _GOODBYE_TIME
            self._deadline_scope.deadline = min(self._deadline_scope.deadline, goodbye_end)
        self.begin_graceful_close()

    def begin_graceful_close(self) -> None:
        """GOAWAY: the streams the peer opened so far finish, no new ones are taken."""
        if self._draining:
            return
        self._draining = True
        if not self._handshake_done:  # it has not spoken HTTP/2: no one to say goodbye to
            self._deadline_scope.cancel()
            return
        self.send_goaway(self.h2.highest_inbound_stream_id)
        if not self.streams:
            self.close()

    def cancel_calls(self) -> None:
        for context in list(self.calls.values()):
            context._shutting_down = True
            context._cancel()


def _peer_name(stream: trio.abc.Stream) -> str:
    while isinstance(stream, trio.SSLStream):
        stream = stream.transport_stream
    if not isinstance(stream, trio.SocketStream):
        return "unknown"
    sock = stream.socket
    if sock.family == stdlib_socket.AF_UNIX:
        return f"unix:{sock.getsockname() or 'unknown'}"
    address = sock.getpeername()
    if sock.family == stdlib_socket.AF_INET6:
        return f"ipv6:[{address[0]}]:{address[1]}"
    return f"ipv4:{address[0]}:{address[1]}"


class Server:
    """A gRPC server for the services bound to it.

    Serve with `await nursery.start(server.serve_tcp, port)` (it reports the bound port) or `serve_unix`;
    stop with `await server.shutdown()`.
    """

    def __init__(
        self,
        services: Iterable[ServiceBinding] = (),
        *,
        settings: ServerSettings | None = None,
        interceptors: Sequence[ServerInterceptor] = (),
    ) -> None:
        self.settings = settings or ServerSettings()
        self._interceptors = tuple(interceptors)  # the first wraps all the others
        self._methods: dict[str, tuple[MethodSpec, Handler]] = {}
        self._services: dict[str, ServiceBinding] = {}
        #: Every accepted connection, from the accept (before its TLS handshake) until its socket is closed.
        self._connections: set[ServerConnection] = set()
        self._memory_budget = SharedMemoryBudget(self.settings.server_memory_budget)
        #: Connections in the order they last went idle, oldest first. One that got a stream since stays in
        #: place until `_longest_idle` meets it (`_on_headers` pays nothing); it rejoins at the end.
        self._idle_order: collections.OrderedDict[ServerConnection, None] = collections.OrderedDict()
        #: Woken when a connection ends or goes idle: what a new connection waits for at the cap.
        self._vacancy = trio.lowlevel.ParkingLot()
        #: Where the idle timer waits while no connection is idle.
        self._no_idle_connection = trio.lowlevel.ParkingLot()
        self._shutdown_started = trio.Event()
        self._shutdown_callbacks: list[Callable[[], None]] = []
        self._serving = 0
        self._all_stopped = trio.Event()
        for binding in services:
            self.add_service(binding)

    def add_service(self, binding: ServiceBinding) -> None:
        if binding.name in self._services:
            raise ValueError(f"service {binding.name} is already registered")
        self._services[binding.name] = binding
        self._methods.update(binding.handlers)

    @property
    def services(self) -> dict[str, ServiceBinding]:
        """Registered services by full name (what reflection lists)."""
        return dict(self._services)

    def on_shutdown(self, callback: Callable[[], None]) -> None:
        """Run `callback` when graceful shutdown starts, before the GOAWAY (health flips to NOT_SERVING)."""
        self._shutdown_callbacks.append(callback)

    async def serve_tcp(
        self,
        port: int,
        host: str | None = None,
        *,
        tls: ssl.SSLContext | None = None,
        task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Serve on TCP until shutdown; reports the bound port (useful with port 0) through task_status.

        `host` is positional too, as `nursery.start` passes no keywords: `nursery.start(serve_tcp, 0, host)`.
        """
        listeners = await trio.open_tcp_listeners(port, host=host)
        bound_port = listeners[0].socket.getsockname()[1]
        await self.serve_listeners(listeners, tls=tls, task_status=task_status, started=bound_port)

    async def serve_unix(
        self,
        path: str,
        *,
        tls: ssl.SSLContext | None = None,
        task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        sock = trio.socket.socket(stdlib_socket.AF_UNIX, stdlib_socket.SOCK_STREAM)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)  # a socket file left by an earlier run
        await sock.bind(path)
        sock.listen()
        try:
            await self.serve_listeners(
                [trio.SocketListener(sock)], tls=tls, task_status=task_status, started=path
            )
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)

    async def serve_listeners(
        self,
        listeners: list[trio.SocketListener],
        *,
        tls: ssl.SSLContext | None = None,
        task_status: trio.TaskStatus[Any] = trio.TASK_STATUS_IGNORED,
        started: object = None,
    ) -> None:
        if tls is not None:
            tls.set_alpn_protocols(["h2"])
        self._serving += 1
        try:
            async with trio.open_nursery() as nursery:
                async with trio.open_nursery() as accept_nursery:
                    for listener in listeners:
                        accept_nursery.start_soon(self._accept_loop, listener, tls, nursery)
                    # One per serve_* call, all over the same connections: a second one changes nothing.
                    if self.settings.max_connection_idle is not None:
                        accept_nursery.start_soon(
                            self._expire_idle_connections, self.settings.max_connection_idle
                        )
                    task_status.started(started)
                    await self._shutdown_started.wait()
                    accept_nursery.cancel_scope.cancel()
                # Refuse new connections now rather than leave them in the backlog until the calls end.
                for listener in listeners:
                    await trio.aclose_forcefully(listener)
        finally:
            for listener in listeners:
                await close_at_once(listener)
            self._serving -= 1
            if self._serving == 0 and self._shutdown_started.is_set():
                self._all_stopped.set()

    async def _accept_loop(
        self, listener: trio.SocketListener, tls: ssl.SSLContext | None, nursery: trio.Nursery
    ) -> None:
        while True:
            try:
                socket_stream = await listener.accept()
            except OSError as exc:  # out of file descriptors (EMFILE, ENFILE) or of kernel memory
                victim = self._longest_idle()
                if victim is None:
                    log.warning("accept failed: %s", exc)
                    await trio.sleep(0.1)  # back off instead of spinning
                else:
                    await self._evict(victim, f"idle the longest, closed to make room: accept failed ({exc})")
                continue
            try:
                await self._make_room()
            except BaseException:
                await close_at_once(socket_stream)
                raise
            self._start_connection(socket_stream, tls, nursery)

    def _start_connection(
        self, socket_stream: trio.SocketStream, tls: ssl.SSLContext | None, nursery: trio.Nursery
    ) -> None:
        """Counted at once, before its task runs: the next accept must see it. (A function of its own, so
        that no local of the accept loop keeps a closed connection alive until the next accept.)"""
        peer = _peer_name(socket_stream)
        stream = socket_stream if tls is None else trio.SSLStream(socket_stream, tls, server_side=True)
        connection = ServerConnection(self, stream, peer)
        self._connections.add(connection)
        self._add_idle(connection)
        nursery.start_soon(self._serve_connection, connection, name=_CONNECTION_TASK_NAME)

    async def _make_room(self) -> None:
        """Return once one more connection fits under max_connections.

        At the cap, the connection idle the longest makes way. If every connection has calls in flight,
        wait (the next client waits in the listen backlog) until one ends or goes idle: calls in flight
        are what a server is for, and an idle connection costs its client no more than a reconnection.
        """
        while len(self._connections) >= self.settings.max_connections:
            victim = self._longest_idle()
            if victim is None:
                await self._vacancy.park()
            else:
                await self._evict(victim, "closed to make room for a new connection (idle the longest)")

    def _longest_idle(self) -> ServerConnection | None:
        while self._idle_order:
            connection = next(iter(self._idle_order))
            if connection.is_idle:
                return connection
            del self._idle_order[connection]  # busy or going away since it went idle
        return None

    async def _evict(self, victim: ServerConnection, reason: str) -> None:
        victim.close_idle(reason)
        while victim in self._connections:  # not for long: close_idle() bounds its goodbye
            await self._vacancy.park()

    def _connection_went_idle(self, connection: ServerConnection) -> None:
        self._add_idle(connection)
        if self._vacancy:
            self._vacancy.unpark_all()

    def _add_idle(self, connection: ServerConnection) -> None:
        self._idle_order[connection] = None
        self._idle_order.move_to_end(connection)
        if self._no_idle_connection:
            self._no_idle_connection.unpark_all()

    async def _expire_idle_connections(self, idle_time: float) -> None:
        """The idle timer of every connection: one task per server instead of one per connection (a task
        and its cancel scope were the largest part of an idle connection's memory)."""
        while True:
            deadline = self._close_expired_idle(idle_time)
            if deadline is None:
                await self._no_idle_connection.park()
            else:
                await trio.sleep_until(deadline)

    def _close_expired_idle(self, idle_time: float) -> float | None:
        """Close the connections idle for `idle_time`; when the next one expires (None: none is idle).

        `_idle_order` holds the idle connections in the order they went idle, all for the same time, so
        the first one expires first. (A function of its own, so that no local of the timer task keeps a
        closed connection alive while it sleeps.)"""
        now = trio.current_time()
        while (connection := self._longest_idle()) is not None:
            deadline = connection.idle_since + idle_time
            if deadline > now:
                return deadline
            connection.close_idle("idle for max_connection_idle")  # no longer idle: it leaves the order
        return None

    async def _serve_connection(self, connection: ServerConnection) -> None:
        log.info("%s: connected", connection.peer)
        try:
            await connection.run()
        except Exception:  # the guards below this one failed: this connection ends, the server goes on
            log.exception("%s: connection failed", connection.peer)
        finally:
            self._connections.discard(connection)
            self._idle_order.pop(connection, None)
            await close_at_once(connection.socket)
            self._vacancy.unpark_all()
            log.info("%s: disconnected", connection.peer)

    async def shutdown(self, grace: float | None = None) -> None:
        """Stop accepting, GOAWAY every connection, give calls `grace` seconds, then cancel them."""
        grace = self.settings.shutdown_grace if grace is None else grace
        if not self._shutdown_started.is_set():
            for callback in self._shutdown_callbacks:
                callback()
            self._shutdown_started.set()
            if self._serving == 0:
                self._all_stopped.set()
        for connection in list(self._connections):
            connection.begin_graceful_close()
        with trio.move_on_after(grace):
            await self._all_stopped.wait()
        for connection in list(self._connections):
            connection.cancel_calls()
        await self._all_stopped.wait()

    async def __aenter__(self) -> Server:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.shutdown()
