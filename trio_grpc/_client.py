"""The gRPC client: `Channel` (connections), `Call` (one RPC), `Stub` (methods from a service descriptor).

A Channel owns a nursery in which its connection tasks run; leaving `async with Channel(...)` closes them.
It keeps one connection and opens a new one when that one is lost or draining after a GOAWAY; a GOAWAY that
says `too_many_pings` doubles the keepalive interval of the connections after it (`KeepaliveBackoff`). A call
the server refused before processing it is sent again, once (`Call._retry_if_refused`). A `Call` is
an async context manager: leaving it before the call ended resets the stream with RST_STREAM(CANCEL).
The deadline of a call is the earlier of its `timeout` and the effective deadline of the cancel scopes it is
entered in, and goes to the server as `grpc-timeout`: a handler's calls carry its own deadline onward. It
bounds every wait of the call; when it passes, the stream is reset. If the enclosing scope's deadline was the
earlier, that scope is cancelled with it (Trio's own `Cancelled`); if `timeout` was, the waiting operation
raises RpcError(DEADLINE_EXCEEDED).
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import re
import ssl
from collections.abc import AsyncIterable, Callable, Iterable, Sequence
from typing import Any, TypeVar

import h2.config
import h2.connection
import h2.events
import h2.settings
import h2.stream
import hpack
import trio
from google.protobuf.descriptor import ServiceDescriptor
from google.protobuf.message import Message

from ._codec import deserialize, non_grpc_response_error, serialize, status_from_trailers
from ._compression import ACCEPT_ENCODING, is_supported
from ._headers import ConstantHeaders, header_frames, malformed_response
from ._metadata import Metadata, MetadataValue, decode_metadata, encode_metadata, header_list_size
from ._service import Kind, MethodSpec
from ._settings import ChannelSettings
from ._status import RpcError, StatusCode, status_from_reset
from ._timeout import format_timeout
from ._transport import Connection, ErrorCodes, Stream, StreamClosed, close_at_once, fresh

log = logging.getLogger("trio_grpc.client")

# Closed streams h2 may hold beyond twice the open ones before it is made to forget them (`_open_h2_stream`).
_H2_CLOSED_STREAMS_KEPT = 32
# What `ClientConnection.memo` keeps: this many results, of header lists at most this large.
_MEMO_ENTRIES = 32
_MEMO_LIST_SIZE = 1024

_T = TypeVar("_T")


class ClientConnection(Connection):
    def __init__(
        self,
        socket: trio.abc.Stream,
        settings: ChannelSettings,
        authority: bytes,
        scheme: bytes,
        keepalive: KeepaliveBackoff,
    ) -> None:
        # h2's inbound validation would take a malformed response for a connection error, at a cost per
        # field; `headers_error` checks the same rules (`malformed_response`) and fails just that call.
        config = h2.config.H2Configuration(
            client_side=True,
            header_encoding=None,
            validate_inbound_headers=False,
            validate_outbound_headers=False,
            normalize_outbound_headers=False,
        )
        super().__init__(socket, config, settings)
        self.settings_received = trio.Event()
        self.draining = False
        self._keepalive = keepalive
        self._slot_lot = trio.lowlevel.ParkingLot()
        #: The request headers of each method path called on this connection, but for per-call ones.
        self._request_headers: dict[bytes, ConstantHeaders] = {}
        self._base_headers = (
            (b":method", b"POST"),
            (b":scheme", scheme),
            (b":authority", authority),
            (b"te", b"trailers"),
            (b"content-type", b"application/grpc"),
            (b"user-agent", settings.user_agent.encode()),
            (b"grpc-accept-encoding", ACCEPT_ENCODING),
        )
        #: Results of pure functions of received header lists (`memo`); None for the check of a sound one.
        self._memo: dict[tuple[str, tuple[tuple[bytes, bytes], ...]], Any] = {}
        self._local_settings({h2.settings.SettingCodes.ENABLE_PUSH: 0})

    @property
    def usable(self) -> bool:
        return self.lost is None and not self.draining

    def _on_remote_settings(self, event: h2.events.RemoteSettingsChanged) -> None:
        self.settings_received.set()
        super()._on_remote_settings(event)
        self._slot_lot.unpark_all()  # MAX_CONCURRENT_STREAMS may have grown

    def memo(
        self,
        kind: str,
        compute: Callable[[list[tuple[bytes, bytes]]], _T],
        headers: list[tuple[bytes, bytes]],
    ) -> _T:
        """`compute(headers)`, a pure function of the list, known as `kind`; kept for the small header lists
        a server sends again.

        A server answers call after call with the same response headers and trailers: their checks and
        parses are done once per connection. Bounded: once full, new lists are computed every time. Keyed by
        a name, not by `compute`: a bound method kept here would make a cycle through the connection.
        """
        key = (kind, tuple(headers))
        try:
            return self._memo[key]  # type: ignore[no-any-return]
        except KeyError:
            result = compute(headers)
            if len(self._memo) < _MEMO_ENTRIES and header_list_size(headers) <= _MEMO_LIST_SIZE:
                self._memo[key] = result
            return result

    def _on_headers(self, event: h2.events.ResponseReceived) -> None:
        stream = self.streams.get(event.stream_id)
        if stream is None:
            return
        stream.headers = event.headers
        # Decided here, before the DATA that follows in the same read: the body of a response that is not
        # gRPC (a proxy's HTML error page) is never parsed as messages. The call reads the error instead.
        if self.memo("sound response", self._sound_response, event.headers) is not None:
            malformed = malformed_response(event.headers, trailers=False)
            stream.receive_error = self._response_error(event.headers, malformed)
            if event.stream_ended is None:  # nothing more of it is wanted; malformed: RFC 9113 8.1.1
                self.reset(stream, ErrorCodes.CANCEL if malformed is None else ErrorCodes.PROTOCOL_ERROR)
        stream.wake()

    def _on_trailers(self, event: h2.events.TrailersReceived) -> None:
        stream = self.streams.get(event.stream_id)
        sound = self.memo("sound trailers", self._sound_trailers, event.headers) is None
        error = None if sound else self._trailers_error(event.headers)
        if stream is not None and error is not None and stream.receive_error is None:
            stream.receive_error = error  # the call raises it once it has read the messages before it
        super()._on_trailers(event)

    # Memoized verdicts (`memo`): None when sound, else False. The error itself is made afresh every time:
    # an exception shared between calls would collect their tracebacks.
    def _sound_response(self, headers: list[tuple[bytes, bytes]]) -> bool | None:
        return None if self.headers_error(headers) is None else False

    def _sound_trailers(self, headers: list[tuple[bytes, bytes]]) -> bool | None:
        return None if self._trailers_error(headers) is None else False

    def _trailers_error(self, headers: list[tuple[bytes, bytes]]) -> RpcError | None:
        malformed = malformed_response(headers, trailers=True)
        if malformed is not None:
            return RpcError(StatusCode.INTERNAL, f"malformed trailers: {malformed}")
        return self._metadata_too_large(headers)

    def headers_error(self, headers: list[tuple[bytes, bytes]]) -> RpcError | None:
        """Why response headers end the call before it starts, or None."""
        return self._response_error(headers, malformed_response(headers, trailers=False))

    def _response_error(self, headers: list[tuple[bytes, bytes]], malformed: str | None) -> RpcError | None:
        if malformed is not None:  # INTERNAL, as grpc-go answers a malformed response
            return RpcError(StatusCode.INTERNAL, f"malformed response headers: {malformed}")
        return non_grpc_response_error(headers) or self._metadata_too_large(headers)

    def _metadata_too_large(self, headers: list[tuple[bytes, bytes]]) -> RpcError | None:
        # As grpc-core answers: this call fails, the connection carries on. Past hpack's hard limit (see
        # _local_settings), h2 has already closed the connection.
        size, limit = header_list_size(headers), self.limits.max_header_list_size
        if size <= limit:
            return None
        return RpcError(
            StatusCode.RESOURCE_EXHAUSTED, f"received metadata larger than max ({size} vs. {limit})"
        )

    def _on_goaway(self, event: h2.events.ConnectionTerminated) -> None:
        self.draining = True
        if event.error_code == ErrorCodes.ENHANCE_YOUR_CALM and event.additional_data == b"too_many_pings":
            self._keepalive.too_many_pings(self.limits.keepalive_time)
        refused = StreamClosed(
            f"the server refused the call ({_describe_goaway(event)})", ErrorCodes.REFUSED_STREAM
        )
        last_stream_id = event.last_stream_id or 0
        for stream in list(self.streams.values()):
            if stream.id > last_stream_id:
                stream._close(refused)
        if not self.streams:
            self.close()

    def _on_connection_lost(self) -> None:
        self.settings_received.set()
        self._slot_lot.unpark_all()

    def _stream_released(self) -> None:
        if self._slot_lot:  # ParkingLot's len is cheap, unpark is not, and this runs once per call
            self._slot_lot.unpark(count=1)
        if self.draining and not self.streams:
            self.close()

    async def open_stream(self, path: bytes, extra_headers: list[tuple[bytes, bytes]]) -> Stream:
        """A new stream with its request headers sent, once MAX_CONCURRENT_STREAMS allows one."""
        while len(self.streams) >= (self.h2.remote_settings.max_concurrent_streams or 2**31):
            if self.lost is not None:
                raise fresh(self.lost)
            await self._slot_lot.park()
        if self.lost is not None:
            raise fresh(self.lost)
        stream_id = self.h2.get_next_available_stream_id()
        constant = self._request_headers.get(path)
        if constant is None:
            constant = self._request_headers[path] = ((b":path", path), *self._base_headers)
        self._open_h2_stream(stream_id)
        stream = Stream(self, stream_id)
        self.streams[stream_id] = stream
        block = self._encoder.encode_block(constant, extra_headers)
        self.flush_soon()  # what h2 queued so far goes first
        self.send_raw_frame(header_frames(stream_id, block, False, self.h2.max_outbound_frame_size))
        self.headers_and_data_sent += 1
        return stream

    def _open_h2_stream(self, stream_id: int) -> None:
        """Open the stream in h2's state machines, as its `send_headers` would, without its frames.

        h2's send_headers per call counted every stream on the connection (a walk over all of them), built,
        validated and serialized frame objects and re-encoded the header list: a fifth of a unary call's
        CPU with 64 calls in flight. The block is ours (`header_frames`); h2 only moves the states (first,
        as h2 does, so that a refused transition leaves HPACK untouched) and creates the stream with the
        windows in force. Counting open streams is also when h2 forgets closed ones: done here once the
        streams h2 holds are many more than ours.
        """
        h2conn = self.h2
        if len(h2conn.streams) > 2 * len(self.streams) + _H2_CLOSED_STREAMS_KEPT:
            h2conn.open_outbound_streams  # noqa: B018 (counting forgets h2's closed streams)
        h2conn.state_machine.process_input(h2.connection.ConnectionInputs.SEND_HEADERS)
        h2_stream = h2conn._begin_new_stream(stream_id, h2.connection.AllowedStreamIDs.ODD)
        h2_stream.state_machine.process_input(h2.stream.StreamInputs.SEND_HEADERS)


class KeepaliveBackoff:
    """The settings of a channel's new connections: its own, but for a keepalive interval servers made it
    back off from. Shared by the channel and its connections (a callback into the channel would tie the
    two in a reference cycle)."""

    def __init__(self, target: str, settings: ChannelSettings) -> None:
        self.target = target
        self.settings = settings

    def too_many_pings(self, interval: float | None) -> None:
        """A server said the PINGs of a connection that PINGed every `interval` seconds came too often: new
        connections PING half as often as that one did.

        As grpc-core, grpc-java and grpc-go do (gRFC A8), so that a client configured more eagerly than
        the servers it meets settles on an interval they accept instead of being cut off again and again.
        From the connection's own interval, so that two connections told at once double it only once.
        """
        if interval is None:  # PINGs that were not ours (or a server that says so regardless)
            return
        current = self.settings.keepalive_time
        doubled = max(current or 0.0, 2 * interval)
        if doubled == current:
            return
        self.settings = dataclasses.replace(self.settings, keepalive_time=doubled)
        log.warning(
            "%s answered our keepalive PINGs with GOAWAY ENHANCE_YOUR_CALM (too_many_pings); "
            "keepalive interval for new connections doubled to %gs",
            self.target,
            doubled,
        )


def _describe_goaway(event: h2.events.ConnectionTerminated) -> str:
    """The code and debug data of a GOAWAY, which say why: `GOAWAY ENHANCE_YOUR_CALM: too_many_pings`."""
    code = event.error_code
    name = code.name if isinstance(code, ErrorCodes) else f"error code {code}"
    debug = (event.additional_data or b"")[:200].decode("ascii", "replace")
    return f"GOAWAY {name}: {debug}" if debug else f"GOAWAY {name}"


# grpcio's resolver prefixes in front of host:port: "dns:[//dns-server/]host:port", "ipv4:", "ipv6:".
_ADDRESS_SCHEMES = re.compile(r"^(?:dns:(?://[^/]*/)?|ipv4:|ipv6:)")


def _parse_target(target: str) -> tuple[str, int] | str:
    """(host, port) from "host:port", "[v6]:port", and grpcio's "dns:///host:port", "ipv4:1.2.3.4:port",
    "ipv6:[::1]:port"; a path from "unix:path"."""
    if target.startswith("unix:"):
        path = target[len("unix:") :]
        return path[2:] if path.startswith("///") else path
    host, sep, port = _ADDRESS_SCHEMES.sub("", target).rpartition(":")
    if not sep or not port.isdigit():
        raise ValueError(f"target {target!r} is not host:port, dns:///host:port, ipv4:, ipv6: or unix:path")
    return host.strip("[]"), int(port)


def _authority(address: tuple[str, int] | str) -> str:
    """The :authority of a target: host:port without any scheme, "localhost" for a unix socket."""
    if isinstance(address, str):
        return "localhost"
    host, port = address
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class Channel:
    """Calls to one server over HTTP/2 (plaintext, or TLS when `tls` is an SSLContext)."""

    def __init__(
        self,
        target: str,
        *,
        tls: ssl.SSLContext | None = None,
        server_hostname: str | None = None,
        settings: ChannelSettings | None = None,
        interceptors: Sequence[ClientInterceptor] = (),
    ) -> None:
        self.target = target
        self.interceptors = tuple(interceptors)  # the first wraps all the others
        self._address = _parse_target(target)
        self._tls = tls
        if tls is not None:
            tls.set_alpn_protocols(["h2"])
        self._server_hostname = server_hostname
        self.settings = settings or ChannelSettings()
        self._keepalive = KeepaliveBackoff(target, self.settings)
        authority = server_hostname or _authority(self._address)
        self._authority = authority.encode()
        self._scheme = b"https" if tls is not None else b"http"
        self._connection: ClientConnection | None = None
        self._connect_lock = trio.Lock()
        self._nursery: trio.Nursery | None = None
        self._nursery_manager: Any = None

    async def __aenter__(self) -> Channel:
        self._nursery_manager = trio.open_nursery()
        self._nursery = await self._nursery_manager.__aenter__()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        assert self._nursery is not None
        if self._connection is not None:
            self._connection.close()
        self._nursery.cancel_scope.cancel()
        self._nursery = None
        # What the `async with` body raised is none of the nursery's business: given to it, it would come
        # out wrapped in an ExceptionGroup, out of reach of an `except RpcError` around the block.
        await self._nursery_manager.__aexit__(None, None, None)

    async def connection(self) -> ClientConnection:
        connection = self._connection
        if connection is not None and connection.usable:
            return connection
        async with self._connect_lock:
            if self._connection is None or not self._connection.usable:
                self._connection = await self._connect()
            return self._connection

    async def _connect(self) -> ClientConnection:
        if self._nursery is None:
            raise RuntimeError("use the Channel in `async with Channel(...) as channel:`")
        stream: trio.abc.Stream
        with trio.move_on_after(self.settings.connect_timeout) as timer:
            try:
                if isinstance(self._address, str):
                    stream = await trio.open_unix_socket(self._address)
                else:
                    stream = await trio.open_tcp_stream(*self._address)
            except OSError as exc:
                raise RpcError(StatusCode.UNAVAILABLE, f"cannot connect to {self.target}: {exc}") from None
            if self._tls is not None:
                try:
                    stream = await self._tls_handshake(stream)
                except trio.Cancelled:  # timed out, or the call's deadline passed: leave no socket open
                    await close_at_once(stream)
                    raise
            connection = ClientConnection(
                stream, self._keepalive.settings, self._authority, self._scheme, self._keepalive
            )
            self._nursery.start_soon(connection.run)
            try:
                await connection.settings_received.wait()
            except trio.Cancelled:  # a server that never sends SETTINGS keeps no connection of ours alive
                connection.close()
                raise
            if connection.lost is not None:
                hint = " (is it a TLS server? use TLS)" if self._tls is None else ""
                raise RpcError(StatusCode.UNAVAILABLE, f"{self.target} did not speak HTTP/2{hint}")
            return connection
        assert timer.cancelled_caught
        raise RpcError(StatusCode.UNAVAILABLE, f"timed out connecting to {self.target}")

    async def _tls_handshake(self, stream: trio.abc.Stream) -> trio.SSLStream[trio.abc.Stream]:
        assert self._tls is not None
        hostname = self._server_hostname or (self._address[0] if isinstance(self._address, tuple) else None)
        ssl_stream = trio.SSLStream(stream, self._tls, server_hostname=hostname)
        try:
            await ssl_stream.do_handshake()
        except trio.BrokenResourceError as exc:
            await trio.aclose_forcefully(stream)
            cause = exc.__cause__ or exc
            hint = " (is it a plaintext server?)" if "WRONG_VERSION_NUMBER" in str(cause) else ""
            raise RpcError(
                StatusCode.UNAVAILABLE, f"TLS handshake with {self.target} failed: {cause}{hint}"
            ) from None
        if ssl_stream.selected_alpn_protocol() != "h2":
            await trio.aclose_forcefully(ssl_stream)
            raise RpcError(StatusCode.UNAVAILABLE, f"{self.target} did not negotiate HTTP/2 (ALPN h2)")
        return ssl_stream


#: Called with each call before it starts; the async context manager it returns wraps the call (docs/api.md).
ClientInterceptor = Callable[["Call"], contextlib.AbstractAsyncContextManager[object]]


class Call:
    """One RPC in progress. Use as `async with`; see docs/api.md for the operations of each kind."""

    #: Whether the call was sent again after a refusal (`_retry_if_refused`). A class attribute, set on the
    #: instance only by a retry: the calls that are never refused pay nothing for it.
    _retried = False

    def __init__(
        self,
        channel: Channel,
        spec: MethodSpec,
        request: Message | None,
        timeout: float | None,
        metadata: Metadata | None,
        compression: str | None,
    ) -> None:
        if compression is not None and not is_supported(compression):
            raise ValueError(f"unsupported compression {compression!r}")
        self._channel = channel
        self._spec = spec
        self.method = spec.path
        self._request = request
        self._timeout = timeout
        self._deadline = math.inf  # set on entry, from `timeout` and the enclosing cancel scopes
        self._extra_headers = encode_metadata(metadata)
        self._compression = None if compression == "identity" else compression
        self._connection: ClientConnection | None = None
        self._stream: Stream | None = None
        self._response_encoding: str | None = None
        self._response_compressed = False
        self._headers_checked = False
        self._initial_metadata: tuple[tuple[str, MetadataValue], ...] | None = None
        self._error: RpcError | None = None
        self.code: StatusCode | None = None
        self.message = ""
        self.details: bytes | None = None
        self.trailing_metadata: tuple[tuple[str, MetadataValue], ...] = ()
        self._interceptor_exits: contextlib.AsyncExitStack | None = None

    @property
    def request_metadata(self) -> tuple[tuple[str, MetadataValue], ...]:
        """The metadata this call sends (interceptors read it before their `yield`)."""
        return decode_metadata(self._extra_headers)

    def add_metadata(self, metadata: Metadata) -> None:
        """Add request metadata; only before the call starts, i.e. in an interceptor before its `yield`."""
        if self._stream is not None:
            raise RuntimeError("the call has started: its metadata was sent")
        self._extra_headers.extend(encode_metadata(metadata))

    @property
    def done(self) -> bool:
        return self.code is not None

    @property
    def response_compressed(self) -> bool:
        """Whether the response message received last came compressed (its compressed flag was set)."""
        return self._response_compressed

    async def __aenter__(self) -> Call:
        self._deadline = trio.current_effective_deadline()
        if self._timeout is not None:
            self._deadline = min(self._deadline, trio.current_time() + self._timeout)
        if self._channel.interceptors:
            await self._start_intercepted()
        else:
            await self._bounded(self._start)
        return self

    async def __aexit__(self, *exc_info: Any) -> None:
        self._close()
        if self._interceptor_exits is not None:
            # Their `yield` gets what the block raised; they cannot swallow it (the result is ignored).
            await self._interceptor_exits.__aexit__(*exc_info)

    async def _start_intercepted(self) -> None:
        """Enter the channel's interceptors in order, then start; if any of it fails, they see how."""
        exits = self._interceptor_exits = contextlib.AsyncExitStack()
        try:
            for interceptor in self._channel.interceptors:
                await exits.enter_async_context(interceptor(self))
            await self._bounded(self._start)
        except BaseException as exc:
            if self.code is None:  # an interceptor ended it before it started, or it was cancelled
                failure = (
                    exc if isinstance(exc, RpcError) else RpcError(StatusCode.CANCELLED, "call cancelled")
                )
                self._fail(failure)
            self._close()
            await exits.__aexit__(type(exc), exc, exc.__traceback__)
            raise

    def __aiter__(self) -> Call:
        return self

    async def __anext__(self) -> Message:
        message = await self.receive()
        if message is None:
            raise StopAsyncIteration
        return message

    async def _start(self) -> None:
        connection = self._connection = await self._channel.connection()
        headers = list(self._extra_headers)
        if self._deadline != math.inf:  # timeout=math.inf is no deadline, as None is
            timeout = format_timeout(self._deadline - trio.current_time())
            # Never indexed: a value that changes every call would only churn the peer's HPACK table
            # and move the indexes of the block reused for the other request headers.
            headers.append(hpack.NeverIndexedHeaderTuple(b"grpc-timeout", timeout))
        if self._compression is not None:
            headers.append((b"grpc-encoding", self._compression.encode()))
        try:
            self._stream = await connection.open_stream(self._spec.path.encode(), headers)
        except StreamClosed as exc:
            raise RpcError(StatusCode.UNAVAILABLE, exc.reason) from None
        if self._request is not None:
            await self._send(self._request, end_stream=True)

    async def _bounded(self, operation: Any, *args: Any) -> Any:
        """Run one wait of the call within its deadline."""
        if self._deadline == math.inf:
            return await operation(*args)
        with trio.move_on_at(self._deadline):
            return await operation(*args)
        raise self._fail(RpcError(StatusCode.DEADLINE_EXCEEDED, "Deadline Exceeded"))

    def _fail(self, error: RpcError) -> RpcError:
        """End the call on our side with `error` (the stream is reset if still open).

        Returns what the call raises from now on: `error`, unless the call had already failed otherwise.
        """
        if self.code is None:
            self.code, self.message, self.details = error.code, error.message, error.details
            self._error = fresh(error)  # not the instance on its way up: its traceback holds this call
        if self._stream is not None and self._connection is not None:
            self._connection.reset(self._stream, ErrorCodes.CANCEL)
        return error if self._error is None else fresh(self._error)

    def _close(self) -> None:
        if self._stream is None or self._connection is None:
            return
        headers = self._stream.headers
        if self._interceptor_exits is not None and self._initial_metadata is None and headers is not None:
            self._check_headers(headers)  # so that interceptors can read it after their `yield`
        if self.code is None:
            self._fail(RpcError(StatusCode.CANCELLED, "call cancelled by the client"))
        elif not self._stream.local_ended:  # the server answered before we half-closed: free the stream
            self._connection.reset(self._stream, ErrorCodes.NO_ERROR)
        self._connection.release(self._stream)
        self._stream = None

    # -- sending ---------------------------------------------------------------------------------------

    async def send(self, message: Message, *, compress: bool = True) -> None:
        """Send one request message (client-streaming kinds).

        `compress=False` sends this message uncompressed even when the call compresses its requests.
        """
        await self._bounded(self._send, message, False, compress)

    async def _send(self, message: Message, end_stream: bool, compress: bool = True) -> None:
        stream = self._live_stream()
        if stream.ended:  # the server already answered: report its status instead of writing into the void
            self._raise_if_failed(self._complete())
            return
        encoding = self._compression if compress else None
        data = serialize(message, encoding, self._channel.settings.max_send_message_size)
        assert self._connection is not None
        try:
            await self._connection.send_data(stream, data, end_stream=end_stream)
        except StreamClosed as exc:
            if await self._retry_if_refused(exc):
                return
            answered = stream.ended or stream.receive_error is not None
            self._raise_if_failed(self._complete() if answered else self._closed_error(exc))

    async def done_writing(self) -> None:
        """Half-close: no more requests."""
        stream = self._live_stream()
        assert self._connection is not None
        if stream.partial_send:  # another task's message is half-sent: END_STREAM must wait for the rest
            await self._bounded(self._connection.wait_for_turn, stream)
        self._connection.end_stream(stream)
        await trio.lowlevel.checkpoint()

    def _live_stream(self) -> Stream:
        if self._error is not None:
            raise fresh(self._error)
        if self._stream is None:
            raise RuntimeError("the call is not open: use it inside `async with`")
        return self._stream

    # -- receiving -------------------------------------------------------------------------------------

    async def initial_metadata(self) -> tuple[tuple[str, MetadataValue], ...]:
        """The server's initial metadata, once it came (empty after a Trailers-Only response)."""
        if self._initial_metadata is None:
            stream = self._live_stream()
            try:
                headers = await self._bounded(stream.wait_for_headers)
            except StreamClosed as exc:
                if await self._retry_if_refused(exc):
                    return await self.initial_metadata()
                raise self._closed_error(exc) from None
            assert self._connection is not None
            error = self._connection.headers_error(headers)
            if error is not None:
                raise self._fail(error)
            self._check_headers(headers)
        assert self._initial_metadata is not None
        return self._initial_metadata

    async def receive(self) -> Message | None:
        """The next response message, or None when the call ended with OK; raises RpcError otherwise."""
        return await self._receive()

    async def _receive(self, schedule_point: bool = True) -> Message | None:
        if self.code is not None:
            self._raise_if_failed(self._error)
            return None
        stream = self._live_stream()
        try:
            item = await self._bounded(stream.receive_message, schedule_point)
        except RpcError as exc:
            self._fail(exc)
            raise
        except StreamClosed as exc:
            if await self._retry_if_refused(exc):
                return await self._receive(schedule_point)
            raise self._closed_error(exc) from None
        if not self._headers_checked and stream.headers is not None:
            self._check_headers(stream.headers)
        if item is None:
            self._raise_if_failed(self._complete())
            return None
        self._response_compressed = item[0]
        try:
            return deserialize(
                item[0],
                item[1],
                self._response_encoding,
                self._spec.response_type,
                self._channel.settings.max_receive_message_size,
            )
        except RpcError as exc:
            self._fail(exc)
            raise

    async def response(self) -> Message:
        """Half-close if still sending, then the single response of a unary-response call."""
        if self._stream is not None and not self._stream.local_ended:
            await self.done_writing()
        response = await self.receive()
        if response is None:
            raise self._cardinality_violation("the server ended the call with OK and no response message")
        # No second schedule point: the first receive was one, and the status is usually here already.
        if await self._receive(schedule_point=False) is not None:
            raise self._cardinality_violation("the server sent more than one response message")
        return response

    def _cardinality_violation(self, what: str) -> RpcError:
        """INTERNAL, as grpc-go and grpc-java answer a unary response of no message or several.

        It replaces the OK status the server may have ended the call with.
        """
        self.code = None
        return self._fail(RpcError(StatusCode.INTERNAL, f"cardinality violation: {what}"))

    def _check_headers(self, headers: list[tuple[bytes, bytes]]) -> None:
        self._headers_checked = True
        assert self._connection is not None
        self._initial_metadata, encoding = self._connection.memo("metadata", _response_metadata, headers)
        if encoding is not None:
            self._response_encoding = encoding

    def _complete(self) -> RpcError | None:
        """The call's final status from the trailers (or a Trailers-Only response); None if OK."""
        stream = self._stream
        assert stream is not None
        if stream.receive_error is not None:  # not a gRPC response, or a message we could not accept
            return self._fail(stream.receive_error)
        trailers = stream.trailers if stream.trailers is not None else stream.headers or []
        assert self._connection is not None
        code, message, details, self.trailing_metadata = self._connection.memo("status", _status, trailers)
        self.code, self.message, self.details = code, message, details
        if code == StatusCode.OK:
            return None
        self._error = RpcError(code, message, details=details, trailing_metadata=self.trailing_metadata)
        return self._error

    async def _retry_if_refused(self, closed: StreamClosed) -> bool:
        """Send the call again, once, if the server refused it before its application saw any of it.

        RST_STREAM(REFUSED_STREAM) and a stream above a GOAWAY's last stream id (which the connection closes
        with that code) both say the server did not process the call (RFC 9113 8.7), so sending it again
        cannot run it twice: gRPC's transparent retry (gRFC A6). Only before any response headers, and only
        for calls whose request is in hand (unary and server-streaming requests); the new attempt goes to
        the channel's connection (a new one if this one is going away) within the call's deadline.
        """
        stream, connection = self._stream, self._connection
        if (
            closed.reset_code != ErrorCodes.REFUSED_STREAM
            or self._retried
            or self._request is None
            or stream is None
            or connection is None
            or stream.headers is not None
        ):
            return False
        self._retried = True
        log.debug("%s: %s; sending it again", self.method, closed.reason)
        connection.release(stream)
        self._stream = None
        try:
            await self._bounded(self._start)
        except RpcError as exc:  # no connection to be had: that is the call's outcome from now on
            raise self._fail(exc) from None
        return True

    def _closed_error(self, closed: StreamClosed) -> RpcError:
        if closed.reset_code is None:
            error = RpcError(StatusCode.UNAVAILABLE, closed.reason)
        else:
            error = RpcError(status_from_reset(closed.reset_code), closed.reason)
        return self._fail(error)

    def _raise_if_failed(self, error: RpcError | None) -> None:
        if error is not None:
            raise fresh(error)


def _response_metadata(
    headers: list[tuple[bytes, bytes]],
) -> tuple[tuple[tuple[str, MetadataValue], ...], str | None]:
    """The initial metadata and the message encoding (None: identity) of a response's headers."""
    fields = dict(headers)
    # Trailers-Only: what it carries is trailing metadata.
    metadata = () if b"grpc-status" in fields else decode_metadata(headers)
    encoding = fields.get(b"grpc-encoding")
    return metadata, None if encoding in (None, b"identity") else encoding.decode("ascii", "replace")


def _status(
    trailers: list[tuple[bytes, bytes]],
) -> tuple[StatusCode, str, bytes | None, tuple[tuple[str, MetadataValue], ...]]:
    """A call's (code, message, details, trailing metadata) from its trailers."""
    return (*status_from_trailers(dict(trailers)), decode_metadata(trailers))


class Method:
    """One method of a `Stub`. How to call it depends on its kind (see docs/api.md)."""

    def __init__(self, channel: Channel, spec: MethodSpec) -> None:
        self._channel = channel
        self.spec = spec

    def open(
        self,
        request: Message | None = None,
        *,
        timeout: float | None = None,
        metadata: Metadata | None = None,
        compression: str | None = None,
    ) -> Call:
        """The call as an async context manager, for full control (metadata, sending by hand)."""
        if (request is not None) == self.spec.kind.client_streaming:
            needs = "no request (send them on the call)" if self.spec.kind.client_streaming else "a request"
            raise TypeError(f"{self.spec.path} takes {needs}")
        return Call(self._channel, self.spec, request, timeout, metadata, compression)

    def __call__(self, request: Any = None, **options: Any) -> Any:
        """Unary response: a coroutine giving the response. Streaming response: `async with` the call."""
        kind = self.spec.kind
        if kind is Kind.UNARY_UNARY or kind is Kind.STREAM_UNARY:
            return self._response_only(request, options)
        return self.open(request, **options)

    async def _response_only(self, request: Any, options: dict[str, Any]) -> Message:
        response, _ = await self.with_call(request, **options)
        return response

    async def with_call(self, request: Any = None, **options: Any) -> tuple[Message, Call]:
        """Unary-response kinds: (response, finished call) so metadata can be read."""
        if self.spec.kind.client_streaming:
            async with self.open(**options) as call:
                await _send_all(call, request)
                return await call.response(), call
        async with self.open(request, **options) as call:
            return await call.response(), call


async def _send_all(call: Call, requests: Iterable[Message] | AsyncIterable[Message]) -> None:
    if isinstance(requests, AsyncIterable):
        async for request in requests:
            await call.send(request)
    else:
        for request in requests:
            await call.send(request)


class Stub:
    """Methods of a service, named as in its descriptor: `await stub.CreateChatRoom(request)`."""

    def __init__(self, channel: Channel, service: ServiceDescriptor) -> None:
        self.service = service
        self.methods = {
            method.name: Method(channel, MethodSpec.from_descriptor(method)) for method in service.methods
        }

    def __getattr__(self, name: str) -> Method:
        try:
            return self.__dict__["methods"][name]  # type: ignore[no-any-return]
        except KeyError:
            raise AttributeError(f"{self.service.full_name} has no method {name!r}") from None
