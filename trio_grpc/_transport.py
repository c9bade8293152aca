"""The Trio driver of one h2 connection, shared by server and client.

Theory of operation:
- One task (`_read_loop`) reads the socket and feeds h2. The events that come back are dispatched at once,
  without awaiting, to the per-stream state (`Stream`) and to the role (the server or client subclass).
- Every write leaves through one flush point: code that changes h2 state calls `flush_soon()`, which moves
  h2's output onto the outgoing queue and wakes `_write_loop`, the only task that writes to the socket.
  Frames produced while a write is in progress go out together in the next one.
- Receive backpressure: a stream returns flow-control credit to the peer only while its complete, unread
  messages stay under `stream_read_buffer_size`; once the application reads them, the credit goes back.
  A peer whose messages nobody reads therefore stops at its stream window instead of filling our memory.
  Connection-level credit goes back as the bytes arrive, so a stalled stream stalls only itself.
- Send backpressure: `send_data` never hands h2 more than the peer's window and waits for WINDOW_UPDATE;
  it also waits while the outgoing queue holds more than `write_buffer_size` bytes. Frames we must send
  whatever happens, in answer to the peer (ACKs, resets), count towards a hard cap: a peer that makes us
  queue more than four times the buffer of them without reading its socket is disconnected.
This module moves headers and messages. It does not know about paths, handlers, deadlines or compression,
and the only status it produces is for a message it cannot accept (too large, broken framing).
"""

from __future__ import annotations

import collections
import contextlib
import logging
from collections.abc import Callable
from typing import Any

import h2.config
import h2.connection
import h2.events
import h2.exceptions
import h2.settings
import trio
from hyperframe.frame import GoAwayFrame

from ._framing import FramingError, MessageDecoder, MessageTooLarge
from ._settings import _Limits
from ._status import RpcError, StatusCode

log = logging.getLogger("trio_grpc")

# Below glibc's mmap threshold: the buffer receive_some allocates per call stays cheap.
_RECEIVE_SIZE = 65536
_CONTROL_FRAMES_CAP_FACTOR = 4
# A sender that never has to wait still yields to the writer once this much is queued.
_YIELD_AFTER_BYTES = 65536

ErrorCodes = h2.errors.ErrorCodes


class StreamClosed(Exception):
    """The stream can carry nothing more: reset by the peer, or its connection is gone."""

    def __init__(self, reason: str, reset_code: int | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.reset_code = reset_code


class Stream:
    """One HTTP/2 stream: its received headers and messages, and the waits of the tasks using it."""

    __slots__ = (
        "_buffered",
        "_connection",
        "_decoder",
        "_held_credit",
        "_lot",
        "_messages",
        "_unsent_credit",
        "_window_lot",
        "closed",
        "ended",
        "headers",
        "id",
        "local_ended",
        "on_reset",
        "partial_send",
        "receive_error",
        "trailers",
    )

    def __init__(self, connection: Connection, stream_id: int) -> None:
        self._connection = connection
        self.id = stream_id
        self._decoder = MessageDecoder(connection.limits.max_receive_message_size)
        self._messages: collections.deque[tuple[bool, bytes]] = collections.deque()
        self._buffered = 0
        self._held_credit = 0
        self._unsent_credit = 0
        self._lot = trio.lowlevel.ParkingLot()
        self._window_lot = trio.lowlevel.ParkingLot()
        self.headers: list[tuple[bytes, bytes]] | None = None
        self.trailers: list[tuple[bytes, bytes]] | None = None
        #: END_STREAM received: no more messages will come.
        self.ended = False
        #: We sent END_STREAM or RST_STREAM.
        self.local_ended = False
        #: Set when the stream is reset or the connection is lost; every wait then raises it.
        self.closed: StreamClosed | None = None
        #: A message we could not accept; raised to the reader once the messages before it are read.
        self.receive_error: RpcError | None = None
        #: A message is half sent: nothing but RST_STREAM may follow it.
        self.partial_send = False
        #: Called (synchronously, from the reader task) when the stream is closed under its user.
        self.on_reset: Callable[[], None] | None = None

    # -- receiving -------------------------------------------------------------------------------------

    def _data_received(self, data: bytes, flow_controlled_length: int) -> None:
        if self.receive_error is not None:
            self._return_credit(flow_controlled_length)  # discarded until the stream is reset
            return
        try:
            messages = self._decoder.feed(data)
        except MessageTooLarge as exc:
            self._fail_receive(StatusCode.RESOURCE_EXHAUSTED, str(exc), flow_controlled_length)
            return
        except FramingError as exc:
            self._fail_receive(StatusCode.INTERNAL, str(exc), flow_controlled_length)
            return
        for message in messages:
            self._messages.append(message)
            self._buffered += len(message[1])
        if self._buffered <= self._connection.limits.stream_read_buffer_size:
            self._return_credit(flow_controlled_length)
        else:
            self._held_credit += flow_controlled_length
        if messages and self._lot:  # ParkingLot's len is cheap, unpark_all is not: this runs per DATA frame
            self._lot.unpark_all()

    def _return_credit(self, size: int) -> None:
        """Stream-level credit goes back in batches; the connection's went back when the bytes arrived."""
        self._unsent_credit += size + self._held_credit
        self._held_credit = 0
        if self._unsent_credit >= self._connection.stream_credit_batch() and not self.ended:
            self._connection.open_stream_window(self.id, self._unsent_credit)
            self._unsent_credit = 0

    def _fail_receive(self, code: StatusCode, message: str, flow_controlled_length: int) -> None:
        self.receive_error = RpcError(code, message)
        self._return_credit(flow_controlled_length)
        self._lot.unpark_all()

    def _end_received(self) -> None:
        self.ended = True
        if self._decoder.pending and self.receive_error is None:
            self.receive_error = RpcError(StatusCode.INTERNAL, "stream ended in the middle of a message")
        if self._lot:
            self._lot.unpark_all()

    def _close(self, closed: StreamClosed) -> None:
        if self.closed is None:
            self.closed = closed
            self._lot.unpark_all()
            self._window_lot.unpark_all()
            if self.on_reset is not None:
                self.on_reset()

    def take_message(self) -> tuple[bool, bytes] | None:
        """The next received (compressed, body) message, if one is here. Raises what ended the stream."""
        if self._messages:
            message = self._messages.popleft()
            self._buffered -= len(message[1])
            if self._held_credit and self._buffered <= self._connection.limits.stream_read_buffer_size:
                self._return_credit(0)
                self._connection.flush_soon()
            return message
        if self.receive_error is not None:
            raise self.receive_error
        if self.closed is not None and not self.ended:
            raise self.closed
        return None

    async def receive_message(self, schedule_point: bool = True) -> tuple[bool, bytes] | None:
        """The next message, or None once the peer ended the stream.

        A checkpoint like a Trio channel's receive, also when a message is already here: without it, a task
        draining a burst of buffered messages would starve every other task until the burst ran out. Taking
        the message happens after the cancellation check, so a cancelled receive never loses one.
        """
        await trio.lowlevel.checkpoint_if_cancelled()
        parked = False
        while True:
            message = self.take_message()
            if message is not None or self.ended:
                if schedule_point and not parked:
                    await trio.lowlevel.cancel_shielded_checkpoint()
                return message
            await self._lot.park()
            parked = True

    async def wait_for_headers(self) -> list[tuple[bytes, bytes]]:
        while self.headers is None:
            if self.closed is not None:
                raise self.closed
            await self._lot.park()
        return self.headers

    def wake(self) -> None:
        if self._lot:
            self._lot.unpark_all()


class Connection:
    """An h2 connection over a Trio stream: the read loop, the one flush point, flow control.

    Subclasses (server and client) handle the events that open and answer streams.
    """

    def __init__(self, socket: trio.abc.Stream, config: h2.config.H2Configuration, limits: _Limits) -> None:
        self.socket = socket
        self.limits = limits
        self.h2 = h2.connection.H2Connection(config)
        _keep_streams_open_after_goaway(self.h2)
        self.streams: dict[int, Stream] = {}
        self._outgoing: list[bytes] = []
        self._outgoing_size = 0
        #: Of `_outgoing_size`, at most this much was queued in answer to what the peer sent (ACKs, resets).
        self._answers_size = 0
        self._writer_lot = trio.lowlevel.ParkingLot()
        self._drained_lot = trio.lowlevel.ParkingLot()
        self._closing = False
        self._writer_finished = trio.Event()
        self._unsent_connection_credit = 0
        #: Why the connection ended, once it has.
        self.lost: StreamClosed | None = None
        #: Calls that handed h2 HEADERS or DATA: the server's PING policy compares it from PING to PING.
        self.headers_and_data_sent = 0
        self._ping_ack = trio.Event()
        self._dispatch: dict[type[Any], Callable[[Any], None]] = {
            h2.events.DataReceived: self._on_data,
            h2.events.StreamEnded: self._on_stream_ended,
            h2.events.StreamReset: self._on_stream_reset,
            h2.events.WindowUpdated: self._on_window_updated,
            h2.events.RemoteSettingsChanged: self._on_remote_settings,
            h2.events.ConnectionTerminated: self._on_goaway,
            h2.events.PingAckReceived: self._on_ping_ack,
            h2.events.RequestReceived: self._on_headers,
            h2.events.ResponseReceived: self._on_headers,
            h2.events.TrailersReceived: self._on_trailers,
        }

    def _local_settings(self, extra: dict[h2.settings.SettingCodes, int]) -> None:
        settings = {
            h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: self.limits.stream_window_size,
            h2.settings.SettingCodes.MAX_HEADER_LIST_SIZE: self.limits.max_header_list_size,
            **extra,
        }
        self.h2.local_settings = h2.settings.Settings(
            client=self.h2.config.client_side, initial_values=settings
        )
        self.h2.initiate_connection()
        # Past hpack's limit the connection is lost; below it, past ours, a server fails just that call.
        self.h2.decoder.max_header_list_size = max(4 * self.limits.max_header_list_size, 65536)
        window_increase = self.limits.connection_window_size - self.h2.inbound_flow_control_window
        if window_increase > 0:
            self.h2.increment_flow_control_window(window_increase)
        self.flush_soon()

    # -- the flush point -------------------------------------------------------------------------------

    def flush_soon(self) -> None:
        """Queue what h2 has produced and wake the writer. Call after every change to h2 state."""
        data = self.h2.data_to_send()
        if data:
            self._outgoing.append(data)
            self._outgoing_size += len(data)
            if self._writer_lot:
                self._writer_lot.unpark_all()

    def send_raw_frame(self, frame: bytes) -> None:
        self._outgoing.append(frame)
        self._outgoing_size += len(frame)
        self._writer_lot.unpark_all()

    async def _write_loop(self) -> None:
        socket = self.socket
        try:
            while True:
                if not self._outgoing:
                    if self._closing:
                        return
                    await self._writer_lot.park()
                    continue
                chunks, self._outgoing = self._outgoing, []
                data = chunks[0] if len(chunks) == 1 else b"".join(chunks)
                del chunks  # not kept alive, twice over, while a slow peer takes its time
                try:
                    await socket.send_all(data)
                except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
                    self._connection_lost(f"connection lost while sending: {exc or type(exc).__name__}")
                    return
                self._outgoing_size -= len(data)
                self._answers_size = min(self._answers_size, self._outgoing_size)
                self._drained_lot.unpark_all()
        finally:
            self._writer_finished.set()
            await close_at_once(socket)  # also ends the read loop, if it still waits

    async def _wait_for_drain(self) -> None:
        while self._outgoing_size > self.limits.write_buffer_size and self.lost is None:
            await self._drained_lot.park()

    # -- reading ---------------------------------------------------------------------------------------

    async def run(self) -> None:
        """Serve the connection until it closes. Subclasses wrap this with their own tasks."""
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._write_loop)
                if self.limits.keepalive_time is not None:
                    nursery.start_soon(self._keepalive_loop, self.limits.keepalive_time)
                await self._read_loop()
                self.close()
                with trio.move_on_after(self.limits.handshake_timeout):  # bounded: the peer may not read
                    await self._writer_finished.wait()
                nursery.cancel_scope.cancel()
        finally:
            self._connection_lost("connection closed")
            await close_at_once(self.socket)

    async def _read_loop(self) -> None:
        socket = self.socket
        receive = self.h2.receive_data
        dispatch = self._dispatch
        cap = self.limits.write_buffer_size * _CONTROL_FRAMES_CAP_FACTOR
        while self.lost is None:
            try:
                data = await socket.receive_some(_RECEIVE_SIZE)
            except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
                self._connection_lost(f"connection lost: {exc or type(exc).__name__}")
                return
            if not data:
                self._connection_lost("connection closed by peer")
                return
            try:
                events = receive(data)
            except h2.exceptions.ProtocolError as exc:
                log.debug("HTTP/2 protocol error from peer: %s", exc)
                self.flush_soon()  # h2 queued a GOAWAY
                self._connection_lost(f"HTTP/2 protocol error: {exc}")
                return
            queued = self._outgoing_size
            for event in events:
                handler = dispatch.get(type(event))
                if handler is not None:
                    handler(event)
            self.flush_soon()
            # Only answers count: the DATA we send is bounded by the buffer and the peer's own windows.
            self._answers_size += self._outgoing_size - queued
            if self._answers_size > cap:
                log.warning("peer is not reading its socket; closing the connection")
                self._connection_lost("peer does not read")
                await trio.aclose_forcefully(socket)  # no waiting to flush to a peer that does not read
                return

    def _on_data(self, event: h2.events.DataReceived) -> None:
        # Connection-level credit goes back as soon as the bytes are here, so that one stream whose reader
        # is slow holds up only itself; what a stream may hold is bounded by its own window.
        self._unsent_connection_credit += event.flow_controlled_length
        if self._unsent_connection_credit >= self.limits.connection_window_size // 4:
            self.h2.increment_flow_control_window(self._unsent_connection_credit)
            self._unsent_connection_credit = 0
        stream = self.streams.get(event.stream_id)
        if stream is not None:
            stream._data_received(event.data, event.flow_controlled_length)

    def _on_stream_ended(self, event: h2.events.StreamEnded) -> None:
        stream = self.streams.get(event.stream_id)
        if stream is not None:
            stream._end_received()

    def _on_stream_reset(self, event: h2.events.StreamReset) -> None:
        stream = self.streams.get(event.stream_id)
        if stream is not None:
            stream.local_ended = True
            stream._close(
                StreamClosed(f"stream reset by peer (error code {event.error_code})", event.error_code)
            )

    def _on_window_updated(self, event: h2.events.WindowUpdated) -> None:
        if event.stream_id:
            stream = self.streams.get(event.stream_id)
            if stream is not None:
                stream._window_lot.unpark_all()
        else:
            self._wake_all_senders()

    def _on_remote_settings(self, event: h2.events.RemoteSettingsChanged) -> None:
        self._wake_all_senders()

    def _wake_all_senders(self) -> None:
        for stream in self.streams.values():
            stream._window_lot.unpark_all()

    def _on_ping_ack(self, event: h2.events.PingAckReceived) -> None:
        self._ping_ack.set()

    def _on_headers(self, event: Any) -> None:
        raise NotImplementedError

    def _on_trailers(self, event: h2.events.TrailersReceived) -> None:
        stream = self.streams.get(event.stream_id)
        if stream is not None:
            stream.trailers = event.headers
            stream.wake()

    def _on_goaway(self, event: h2.events.ConnectionTerminated) -> None:
        raise NotImplementedError

    # -- sending ---------------------------------------------------------------------------------------

    def stream_credit_batch(self) -> int:
        # A quarter of the window in force (before the peer acknowledges our SETTINGS, the default 65535).
        return self.h2.local_settings.initial_window_size // 4

    def open_stream_window(self, stream_id: int, size: int) -> None:
        with contextlib.suppress(h2.exceptions.StreamClosedError):  # the peer is done sending anyway
            self.h2.increment_flow_control_window(size, stream_id=stream_id)

    def send_headers(
        self, stream: Stream, headers: list[tuple[bytes, bytes]], end_stream: bool = False
    ) -> None:
        if stream.closed is not None:
            raise stream.closed
        self.h2.send_headers(stream.id, headers, end_stream=end_stream)
        self.headers_and_data_sent += 1
        if end_stream:
            stream.local_ended = True
        self.flush_soon()

    async def send_data(self, stream: Stream, data: bytes, end_stream: bool = False) -> None:
        """Send within the peer's windows, waiting for WINDOW_UPDATE and for the socket as needed.

        A message no larger than the peer's initial stream window goes out whole or not at all: a call
        cancelled while it waits can still end with a status, since trailers must never follow half a
        message. A larger one goes out window by window; if it is interrupted, `stream.partial_send`
        stays set and the stream can only be reset.
        """
        h2conn = self.h2
        view = memoryview(data)
        offset = 0
        total = len(data)
        whole = total <= h2conn.remote_settings.initial_window_size
        high_water = self.limits.write_buffer_size
        while True:
            if stream.closed is not None:
                raise stream.closed
            if self._outgoing_size > high_water:
                await self._wait_for_drain()
                continue
            window = h2conn.local_flow_control_window(stream.id)
            if window <= 0 or (whole and window < total):
                await stream._window_lot.park()
                continue
            stream.partial_send = True
            frame_size = h2conn.max_outbound_frame_size
            end = min(total, offset + window)
            while offset < end:
                size = min(end - offset, frame_size)
                h2conn.send_data(stream.id, view[offset : offset + size])
                offset += size
            self.headers_and_data_sent += 1
            if offset >= total:
                stream.partial_send = False
                if end_stream:
                    h2conn.end_stream(stream.id)
                    stream.local_ended = True
            self.flush_soon()
            if offset >= total:
                # No wait was needed: still honour cancellation, and let the writer run once a batch
                # worth a write has gathered, without giving up batching for every small message.
                if self._outgoing_size >= _YIELD_AFTER_BYTES:
                    await trio.lowlevel.checkpoint()
                else:
                    await trio.lowlevel.checkpoint_if_cancelled()
                return

    def end_stream(self, stream: Stream) -> None:
        if stream.closed is None and not stream.local_ended:
            self.h2.end_stream(stream.id)
            stream.local_ended = True
            self.flush_soon()

    def reset(self, stream: Stream, error_code: int = ErrorCodes.CANCEL) -> None:
        """RST_STREAM, unless the stream is already over on our side and the peer's."""
        if stream.closed is None and not (stream.local_ended and stream.ended):
            try:
                self.h2.reset_stream(stream.id, error_code)
            except h2.exceptions.StreamClosedError:
                pass
            else:
                self.flush_soon()
        stream.local_ended = True
        stream._close(StreamClosed("stream reset locally", error_code))

    def release(self, stream: Stream) -> None:
        """The stream's user is done with it."""
        stream.on_reset = None
        self.streams.pop(stream.id, None)
        self._stream_released()

    def _stream_released(self) -> None:
        """Hook: a slot for a new stream is free."""

    def send_goaway(
        self, last_stream_id: int, error_code: int = ErrorCodes.NO_ERROR, debug: bytes = b""
    ) -> None:
        # Written by hand rather than through h2.close_connection(), after which h2 refuses to send anything
        # else: graceful shutdown needs the streams below last_stream_id to carry on.
        frame = GoAwayFrame(
            stream_id=0, last_stream_id=last_stream_id, error_code=error_code, additional_data=debug
        )
        self.send_raw_frame(frame.serialize())

    # -- ending ----------------------------------------------------------------------------------------

    def close(self) -> None:
        """Stop: let the writer send what is queued, then close the socket."""
        if not self._closing:
            self._closing = True
            self._writer_lot.unpark_all()
            self._connection_lost("connection closed")

    def _connection_lost(self, reason: str) -> None:
        if self.lost is not None:
            return
        self.lost = StreamClosed(reason)
        self._closing = True
        self._writer_lot.unpark_all()
        self._drained_lot.unpark_all()
        for stream in list(self.streams.values()):
            stream._close(self.lost)
        self._on_connection_lost()

    def _on_connection_lost(self) -> None:
        """Hook: the connection is gone; every stream has been closed already."""

    async def aclose(self) -> None:
        """Close from outside the connection's tasks: flush what is queued (briefly), then the socket."""
        self.close()
        with trio.move_on_after(1):
            await self._writer_finished.wait()
        await trio.aclose_forcefully(self.socket)

    async def _keepalive_loop(self, interval: float) -> None:
        timeout = self.limits.keepalive_timeout
        while self.lost is None:
            await trio.sleep(interval)
            if self.lost is not None:  # h2 refuses to PING on a connection it has closed
                return
            self._ping_ack = trio.Event()
            self.h2.ping(b"trio-grp")
            self.flush_soon()
            with trio.move_on_after(timeout):
                await self._ping_ack.wait()
                continue
            log.info("keepalive PING not answered within %.1fs; closing the connection", timeout)
            self._connection_lost("keepalive timeout")
            await trio.aclose_forcefully(self.socket)
            return


async def close_at_once(resource: trio.abc.AsyncResource) -> None:
    """Close without waiting, also from a `finally` in a cancelled scope.

    Unshielded, the close's checkpoint would raise a new Cancelled there, and a scope that catches it would
    also swallow whatever was on its way out (a KeyboardInterrupt from Ctrl-C, for one).
    """
    with trio.CancelScope(shield=True):
        await trio.aclose_forcefully(resource)


def _transitions_keeping_streams_open() -> dict[Any, Any]:
    states = h2.connection.ConnectionState
    recv_goaway = h2.connection.ConnectionInputs.RECV_GOAWAY
    transitions = dict(h2.connection.H2ConnectionStateMachine._transitions)
    for state in (states.CLIENT_OPEN, states.SERVER_OPEN):
        transitions[(state, recv_goaway)] = (None, state)
    return transitions


# Read-only, so one copy serves every connection.
_TRANSITIONS_KEEPING_STREAMS_OPEN = _transitions_keeping_streams_open()


def _keep_streams_open_after_goaway(connection: h2.connection.H2Connection) -> None:
    """Let streams in flight finish after a GOAWAY is received, as HTTP/2 intends.

    h2 moves the whole connection to CLOSED on a received GOAWAY and then refuses every frame, which would
    cut off the calls a server promised to finish during its graceful shutdown. We track GOAWAY ourselves
    (no new streams after it), so an open connection stays open in h2's state machine.
    """
    connection.state_machine._transitions = _TRANSITIONS_KEEPING_STREAMS_OPEN
