"""The Trio driver of one h2 connection, shared by server and client.

Theory of operation:
- One task (`_read_loop`) reads the socket and feeds h2, through `InboundFrames`, which takes the plain DATA
  frames past h2's copies and gives the same events (`_inbound.py`). The events are dispatched at once,
  without awaiting, to the per-stream state (`Stream`) and to the role (the server or client subclass).
- Every write leaves through one flush point: code that changes h2 state calls `flush_soon()`, which moves
  h2's output onto the outgoing queue and wakes `_write_loop`, the writer task. Frames produced while a write
  is in progress go out together in the next one. The one other writer is a task about to wait for the peer
  (`write_before_waiting`): while the writer is not mid-write, it writes the whole queue itself, once per
  read, and hands what the socket did not take back to the writer, first in line.
- Messages are coalesced: `send_data` queues a message's bytes on its stream (`_queue_data`), and the
  writer, when it next runs, puts each stream's queued bytes in as few DATA frames as the frame size allows
  (`_send_pending`). So messages sent in a loop leave many to a frame and many frames to a write, while a
  lone message waits only for the writer's next turn. We write DATA frames ourselves, not through h2 (whose
  per-frame objects and copies were most of a large message's cost), and keep h2's windows as it would
  (`_frame_pending`). Anything that must follow a stream's messages (trailers, END_STREAM) first frames
  what that stream has queued. Queued bytes are counted against the windows when queued, and the read loop
  frames everything queued before it feeds h2 what the peer sent: a SETTINGS that shrinks the windows or
  the frame size thus never finds bytes queued past them.
- Receive backpressure: a stream returns flow-control credit to the peer only while its complete, unread
  messages stay under `stream_read_buffer_size`; once the application reads them, the credit goes back.
  A peer whose messages nobody reads therefore stops at its stream window instead of filling our memory.
  Connection-level credit goes back as the bytes arrive, so a stalled stream stalls only itself (until the
  connection's memory budget is spent, below).
- Memory has a budget. Every byte of a received message held in a buffer (partly received or complete and
  unread) counts against the connection's `connection_memory_budget` and, on a server, against the server's
  `server_memory_budget`. Past a budget, connection-level credit is held back until the application consumes
  data, and the newest streams holding a partly received message are failed (RESOURCE_EXHAUSTED) and their
  bytes dropped: partial messages can never all wait for one another. A connection's worst case is its budget
  plus the connection window it already granted.
- A peer can end its own stream or its own connection, never more. Every event is handled under one guard
  (`_event_failed`): an error while handling a stream's event resets that stream; any other error closes this
  connection with GOAWAY. Nothing a peer sends raises out of `_read_loop`. h2 may already have closed a stream
  whose earlier events we are still handling (a HEADERS and a RST_STREAM read in one batch): calls into h2 for
  a stream first check that h2 still has it open.
- Memory comes back at once: nothing here forms a reference cycle that outlives the connection (stored
  exceptions are raised as fresh copies, whose tracebacks would otherwise hold the frames holding the stream;
  the event dispatch tables, ours and h2's, are per class, not dicts of bound methods).
- Send backpressure: `send_data` queues what the peer's windows allow at once (less what is queued already)
  and waits for WINDOW_UPDATE only once a window is empty, never for room for a whole message (peers credit
  only after part of a window is consumed); a send interrupted half-way resets the stream. It also waits while
  more than `write_buffer_size` bytes are queued (on streams or for the socket). Frames we must send
  whatever happens, in answer to the peer (ACKs, resets), count towards a hard cap: a peer that makes us
  queue more than four times the buffer of them without reading its socket is disconnected.
This module moves headers and messages. It does not know about paths, handlers, deadlines or compression,
and the only status it produces is for a message it cannot accept (too large, broken framing).
"""

from __future__ import annotations

import collections
import contextlib
import copy
import logging
import os
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import h2.config
import h2.connection
import h2.events
import h2.exceptions
import h2.settings
import h2.stream
import hpack.exceptions
import hyperframe.frame
import trio
from hyperframe.frame import GoAwayFrame

from ._framing import FramingError, MessageDecoder, MessageTooLarge
from ._headers import ConstantHeaders, HeaderDecoder, HeaderEncoder, header_frames
from ._inbound import InboundFrames
from ._settings import _Limits
from ._status import RpcError, StatusCode

log = logging.getLogger("trio_grpc")

# Below glibc's mmap threshold: the buffer receive_some allocates per call stays cheap.
_RECEIVE_SIZE = 65536
_CONTROL_FRAMES_CAP_FACTOR = 4
# Queued chunks smaller than this on average are joined before framing (see `_frame_pending`).
_JOIN_CHUNKS_BELOW = 1024
# A sender that never has to wait still yields to the writer once this much is queued.
_YIELD_AFTER_BYTES = 65536

ErrorCodes = h2.errors.ErrorCodes
# The h2 stream states in which sending DATA is allowed, and changes nothing (h2's stream state machine).
_DATA_SENDING_STATES = frozenset({h2.stream.StreamState.OPEN, h2.stream.StreamState.HALF_CLOSED_REMOTE})
_END_STREAM_FLAG = 0x1 << 32  # END_STREAM in a frame header taken as a 72-bit integer (flags: bits 32-39)


_WRITER_TASK_NAME = "trio_grpc writer"

_E = TypeVar("_E", bound=BaseException)


def fresh(exc: _E) -> _E:
    """A copy of a stored exception, to raise. Raising the stored instance itself would give it a traceback
    whose frames hold the object that stores it: a reference cycle that keeps a stream's buffers alive until
    the cyclic GC runs."""
    return copy.copy(exc)


class StreamClosed(Exception):
    """The stream can carry nothing more: reset by the peer, or its connection is gone."""

    def __init__(self, reason: str, reset_code: int | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.reset_code = reset_code


class Stream:
    """One HTTP/2 stream: its received headers and messages, and the waits of the tasks using it."""

    __slots__ = (
        "__weakref__",  # tests check that nothing keeps a closed stream alive
        "_buffered",
        "_connection",
        "_decoder",
        "_held_credit",
        "_lot",
        "_messages",
        "_pending",
        "_pending_size",
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
        # Allocated on first use (a deque costs about 600 bytes even empty; most streams hold none, or one).
        self._messages: collections.deque[tuple[bool, bytes | memoryview]] | None = None
        self._buffered = 0
        self._held_credit = 0
        self._unsent_credit = 0
        self._lot = trio.lowlevel.ParkingLot()
        self._window_lot: trio.lowlevel.ParkingLot | None = None  # allocated by the first sender to wait
        #: Message bytes queued for h2 by `send_data`, not yet in DATA frames (see coalescing above).
        self._pending: list[bytes | memoryview] = []
        self._pending_size = 0
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
        #: A message is half sent, waiting for window: other sends on the stream wait until it is out.
        self.partial_send = False
        #: Called (synchronously, from the reader task) when the stream is closed under its user.
        self.on_reset: Callable[[], None] | None = None

    # -- receiving -------------------------------------------------------------------------------------

    def _data_received(self, data: bytes | memoryview, flow_controlled_length: int) -> None:
        if self.receive_error is not None:
            self._return_credit(flow_controlled_length)  # discarded until the stream is reset
            return
        decoder = self._decoder
        pending_before = decoder.pending
        try:
            messages = decoder.feed(data)
        except MessageTooLarge as exc:
            self._fail_receive(StatusCode.RESOURCE_EXHAUSTED, str(exc), flow_controlled_length)
            return
        except FramingError as exc:
            self._fail_receive(StatusCode.INTERNAL, str(exc), flow_controlled_length)
            return
        held = decoder.pending - pending_before
        for message in messages:
            if self._messages is None:
                self._messages = collections.deque()
            self._messages.append(message)
            size = len(message[1])
            self._buffered += size
            held += size
        self._connection._account(held)
        if self._buffered <= self._connection.limits.stream_read_buffer_size:
            self._return_credit(flow_controlled_length)
        else:
            self._held_credit += flow_controlled_length
        if messages and self._lot:  # ParkingLot's len is cheap, unpark_all is not: this runs per DATA frame
            self._lot.unpark_all()

    @property
    def receiving_partial_message(self) -> bool:
        return self.receive_error is None and self._decoder.pending > 0

    def _drop_partial_message(self, reason: str) -> None:
        """Free the message being assembled; the stream's reader gets RESOURCE_EXHAUSTED in its place."""
        self._connection._account(-self._decoder.discard())
        self._fail_receive(StatusCode.RESOURCE_EXHAUSTED, reason, 0)

    def _drop_buffers(self) -> None:
        """Free everything received and unread (the stream's user is done with it)."""
        dropped = self._decoder.discard() + self._buffered
        self._messages = None
        self._buffered = 0
        self._connection._account(-dropped)

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
            self._wake_senders()
            if self.on_reset is not None:
                self.on_reset()

    def take_message(self) -> tuple[bool, bytes | memoryview] | None:
        """The next received (compressed, body) message, if one is here. Raises what ended the stream."""
        if self._messages:
            message = self._messages.popleft()
            size = len(message[1])
            self._buffered -= size
            self._connection._account(-size)
            if self._held_credit and self._buffered <= self._connection.limits.stream_read_buffer_size:
                self._return_credit(0)
                self._connection.flush_soon()
            return message
        if self.receive_error is not None:
            raise fresh(self.receive_error)
        if self.closed is not None and not self.ended:
            raise fresh(self.closed)
        return None

    async def receive_message(self, schedule_point: bool = True) -> tuple[bool, bytes | memoryview] | None:
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
            if self._connection.write_before_waiting():
                continue  # that write may have lost the connection: look again
            await self._lot.park()
            parked = True

    async def wait_for_headers(self) -> list[tuple[bytes, bytes]]:
        while self.headers is None:
            if self.closed is not None:
                raise fresh(self.closed)
            if not self._connection.write_before_waiting():
                await self._lot.park()
        return self.headers

    async def _wait_for_window(self) -> None:
        """Until window opens, the stream closes, or another task's half-sent message is out."""
        if self._window_lot is None:
            self._window_lot = trio.lowlevel.ParkingLot()
        await self._window_lot.park()

    def _wake_senders(self) -> None:
        if self._window_lot:  # none yet, or none parked: unpark_all is not free, and runs per WINDOW_UPDATE
            self._window_lot.unpark_all()

    def wake(self) -> None:
        if self._lot:
            self._lot.unpark_all()


class SharedMemoryBudget:
    """Bytes of received messages held by all the connections of a server, against `server_memory_budget`."""

    __slots__ = ("limit", "starved", "used")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0
        #: Connections withholding credit until the server is back under its budget.
        self.starved: set[Connection] = set()

    def wake_starved(self) -> None:
        for connection in list(self.starved):
            connection._grant_withheld_credit()


class Connection:
    """An h2 connection over a Trio stream: the read loop, the one flush point, flow control.

    Subclasses (server and client) handle the events that open and answer streams.
    """

    # One per connection, and more than the 30 attributes CPython shares an instance dict's keys for: slots
    # save about 1.3 KiB each. `__dict__` stays, so that a subclass or a test may still add its own.
    __slots__ = (
        "__dict__",
        "__weakref__",
        "_answers_size",
        "_closing",
        "_credit_withheld",
        "_drained_lot",
        "_encoder",
        "_held_bytes",
        "_inbound",
        "_outgoing",
        "_outgoing_size",
        "_pending_streams",
        "_pending_total",
        "_ping_ack",
        "_raw_socket",
        "_read_of_early_write",
        "_reads",
        "_sending",
        "_shared_budget",
        "_unsent_connection_credit",
        "_writer_finished",
        "_writer_lot",
        "h2",
        "headers_and_data_sent",
        "limits",
        "lost",
        "nursery",
        "socket",
        "streams",
    )

    def __init__(
        self,
        socket: trio.abc.Stream,
        config: h2.config.H2Configuration,
        limits: _Limits,
        shared_budget: SharedMemoryBudget | None = None,
    ) -> None:
        self.socket = socket
        self.limits = limits
        self.h2 = _H2Connection(config)
        self.h2.remote_settings = _LeanSettings(client=not config.client_side)  # nothing received yet
        self._encoder = self.h2.encoder = HeaderEncoder()
        decoder = HeaderDecoder()
        decoder.max_header_list_size = self.h2.decoder.max_header_list_size
        self.h2.decoder = decoder
        _keep_streams_open_after_goaway(self.h2)
        self._inbound = InboundFrames(self.h2)
        self.streams: dict[int, Stream] = {}
        self._outgoing: list[bytes | memoryview] = []
        #: Bytes queued for the socket, including the message bytes queued on streams.
        self._outgoing_size = 0
        #: Streams with message bytes queued, and the total of those bytes (counted against the windows).
        self._pending_streams: dict[int, Stream] = {}
        self._pending_total = 0
        #: Of `_outgoing_size`, at most this much was queued in answer to what the peer sent (ACKs, resets).
        self._answers_size = 0
        self._writer_lot = trio.lowlevel.ParkingLot()
        #: Where senders wait for the socket to drain; made by the first that has to.
        self._drained_lot: trio.lowlevel.ParkingLot | None = None
        #: A plain TCP or Unix socket takes writes that do not wait (`_write_without_waiting`); TLS does not.
        self._raw_socket: trio.socket.SocketType | None = None
        if isinstance(socket, trio.SocketStream) and os.name == "posix":
            self._raw_socket = socket.socket
        #: The writer is in `send_all`, with part of a write out: no other write may start before it ends.
        self._sending = False
        #: Reads of the socket so far; the one after which a waiting task last wrote (`write_before_waiting`).
        self._reads = 0
        self._read_of_early_write = -1
        self._closing = False
        self._writer_finished = trio.Event()
        self._unsent_connection_credit = 0
        #: Why the connection ended, once it has.
        self.lost: StreamClosed | None = None
        #: Calls that handed h2 HEADERS or DATA: the server's PING policy compares it from PING to PING.
        self.headers_and_data_sent = 0
        #: Set by the ACK of our keepalive PING in flight, if one is.
        self._ping_ack: trio.Event | None = None
        #: Bytes of received messages this connection holds (see the memory budget above).
        self._held_bytes = 0
        self._shared_budget = shared_budget
        self._credit_withheld = False
        #: Where the connection's tasks run, while `run` does.
        self.nursery: trio.Nursery | None = None

    #: Which method handles which h2 event; resolved per class, so that subclasses override by name.
    _EVENT_HANDLERS: dict[type[Any], str] = {
        h2.events.DataReceived: "_on_data",
        h2.events.StreamEnded: "_on_stream_ended",
        h2.events.StreamReset: "_on_stream_reset",
        h2.events.WindowUpdated: "_on_window_updated",
        h2.events.RemoteSettingsChanged: "_on_remote_settings",
        h2.events.ConnectionTerminated: "_on_goaway",
        h2.events.PingAckReceived: "_on_ping_ack",
        h2.events.RequestReceived: "_on_headers",
        h2.events.ResponseReceived: "_on_headers",
        h2.events.TrailersReceived: "_on_trailers",
    }
    _dispatch: dict[type[Any], Callable[[Any, Any], None]]

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls._dispatch = _dispatch_table(cls)

    def _local_settings(self, extra: dict[h2.settings.SettingCodes, int]) -> None:
        settings = {
            h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: self.limits.stream_window_size,
            h2.settings.SettingCodes.MAX_HEADER_LIST_SIZE: self.limits.max_header_list_size,
            h2.settings.SettingCodes.MAX_FRAME_SIZE: self.limits.max_frame_size,
            **extra,
        }
        self.h2.local_settings = _LeanSettings(client=self.h2.config.client_side, initial_values=settings)
        self.h2.initiate_connection()
        # Take frames as large as we advertise at once: h2 would apply the new size only from the read after
        # the peer's SETTINGS ACK, and refuse (FRAME_SIZE_ERROR) a large frame that shares a read with it.
        self.h2.max_inbound_frame_size = self.limits.max_frame_size
        # Past hpack's limit the connection is lost (decoding stops half-way, and HPACK state with it); below
        # it, past ours, a server fails just that call and the connection goes on.
        self.h2.decoder.max_header_list_size = hard_header_list_limit(self.limits)
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

    def _queue_data(self, stream: Stream, chunk: bytes | memoryview, size: int) -> None:
        """Queue message bytes (`size` of them) on a stream, for the writer to frame together with what
        follows them."""
        pending = stream._pending
        if not pending:
            # The writer parks only with nothing queued: once a stream is pending, it has been woken.
            if not self._pending_streams and self._writer_lot:
                self._writer_lot.unpark_all()
            self._pending_streams[stream.id] = stream
        pending.append(chunk)
        stream._pending_size += size
        self._pending_total += size
        self._outgoing_size += size

    def _send_pending(self) -> None:
        """Frame the bytes queued on every stream, for the socket."""
        streams, self._pending_streams = self._pending_streams, {}
        for stream in streams.values():
            self._frame_pending(stream)
        self.flush_soon()

    def _send_pending_of(self, stream: Stream) -> None:
        """Frame what one stream has queued: before anything that must follow its messages."""
        if stream._pending:
            del self._pending_streams[stream.id]
            self._frame_pending(stream)

    def _frame_pending(self, stream: Stream, end_stream: bool = False) -> None:
        """A stream's queued bytes into DATA frames as large as the peer allows, queued for the socket; the
        last one carries END_STREAM if `end_stream`.

        We write these frames ourselves instead of through h2.send_data, which costs a frame object, a state
        machine step and five copies of the payload per frame (bytes of the slice, its padding join, the
        header join, h2's buffer and `data_to_send`): each frame is its 9-byte header followed by the
        queued chunks, or slices of them, uncopied; the writer joins the batch once. h2 keeps its own
        accounts right: its windows are decremented as its `send_data` would, sending DATA changes no stream
        state in the two states we send it in (checked first), and END_STREAM moves the state as h2 does.
        The bytes fit the windows: they were counted against them when queued, and no SETTINGS was applied
        since (see `_read_loop`).
        """
        chunks, size = stream._pending, stream._pending_size
        stream._pending, stream._pending_size = [], 0
        self._pending_total -= size
        self._outgoing_size -= size  # counted again below, with the frame headers
        if stream.closed is not None:
            return  # reset: the peer discards what the stream would have carried
        h2_stream = self.h2.streams.get(stream.id)
        if h2_stream is None or h2_stream.state_machine.state not in _DATA_SENDING_STATES:
            return  # closed in h2 by a frame we have not handled yet
        self.flush_soon()  # what h2 holds (this stream's HEADERS, for one) goes before the DATA
        self.h2.outbound_flow_control_window -= size
        h2_stream.outbound_flow_control_window -= size
        if len(chunks) > 1 and size < len(chunks) * _JOIN_CHUNKS_BELOW:
            chunks = [b"".join(chunks)]  # small messages: one copy in C beats a Python step per message
        out = self._outgoing
        frame_size = self.h2.max_outbound_frame_size
        header_base = stream.id  # type 0 (DATA), no flags: only the length varies
        unframed = size  # payload bytes not yet under a frame header
        room = 0  # payload bytes the current frame still takes
        for chunk in chunks:
            length = len(chunk)
            offset = 0
            while offset < length:
                if not room:
                    room = min(frame_size, unframed)
                    unframed -= room
                    flags = _END_STREAM_FLAG if end_stream and not unframed else 0
                    out.append(((room << 48) | flags | header_base).to_bytes(9, "big"))
                    self._outgoing_size += 9
                taken = min(room, length - offset)
                out.append(chunk if taken == length else memoryview(chunk)[offset : offset + taken])
                offset += taken
                room -= taken
        self._outgoing_size += size
        if end_stream:
            h2_stream.state_machine.process_input(h2.stream.StreamInputs.SEND_END_STREAM)
        if self._writer_lot:
            self._writer_lot.unpark_all()

    def send_raw_frame(self, frame: bytes) -> None:
        self._outgoing.append(frame)
        self._outgoing_size += len(frame)
        if self._writer_lot:
            self._writer_lot.unpark_all()

    async def _write_loop(self) -> None:
        socket = self.socket
        try:
            while True:
                if self._pending_streams:
                    self._send_pending()
                if not self._outgoing:
                    if self._closing:
                        return
                    await self._writer_lot.park()
                    continue
                data = self._take_outgoing()
                # A write the socket takes whole needs no checkpoint: the writer parks once the queue is
                # empty, and a turn of its own for trio's checkpoint after each write cost a scheduler pass.
                self._sending = True
                try:
                    sent = self._write_without_waiting(data)
                    if sent < len(data):
                        await socket.send_all(memoryview(data)[sent:] if sent else data)
                except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
                    self._connection_lost(f"connection lost while sending: {exc or type(exc).__name__}")
                    return
                finally:
                    self._sending = False
                self._wrote(len(data))
                del data  # not kept alive while the writer waits for more
        finally:
            self._writer_finished.set()
            await close_at_once(socket)  # also ends the read loop, if it still waits

    def _take_outgoing(self) -> bytes | memoryview:
        """Everything queued for the socket, as one buffer (trio's `send_all` takes one)."""
        chunks, self._outgoing = self._outgoing, []
        return chunks[0] if len(chunks) == 1 else b"".join(chunks)

    def _write_without_waiting(self, data: bytes | memoryview) -> int:
        """Write what the socket takes of `data` now, with no checkpoint; how many bytes that was."""
        if self._raw_socket is None:
            return 0
        try:
            return os.write(self._raw_socket.fileno(), data)
        except BlockingIOError:
            return 0

    def _wrote(self, size: int) -> None:
        self._outgoing_size -= size
        self._answers_size = min(self._answers_size, self._outgoing_size)
        if self._drained_lot:
            self._drained_lot.unpark_all()

    def write_before_waiting(self) -> bool:
        """A task is about to wait for the peer: write what is queued now, from this task, if the writer is
        not writing; whether it did (the write may have lost the connection: look again before waiting).

        A task waiting for an answer has nothing more to add to the batch, and the writer's turn would cost
        the answer's round trip a scheduler pass (ping-pong: the handler's reply left one pass after the
        handler). At most once per read of the socket: the other tasks that read woke queue behind it, and
        the writer sends them together in its turn, as it would have. The writer is not writing, so
        nothing it sent can be cut into; what this write leaves goes back to the front of the queue.
        """
        if (
            self._raw_socket is None
            or self._sending
            or self.lost is not None
            or self._read_of_early_write == self._reads
            or not (self._outgoing or self._pending_streams)
        ):
            return False
        self._read_of_early_write = self._reads
        if self._pending_streams:
            self._send_pending()
        data = self._take_outgoing()
        try:
            sent = self._write_without_waiting(data)
        except OSError as exc:
            self._connection_lost(f"connection lost while sending: {exc}")
            return True
        self._wrote(sent)
        if sent < len(data):
            self._outgoing.insert(0, memoryview(data)[sent:])  # first, before anything queued after it
            if self._writer_lot:
                self._writer_lot.unpark_all()
        return True

    async def _wait_for_drain(self) -> None:
        while self._outgoing_size > self.limits.write_buffer_size and self.lost is None:
            if self._drained_lot is None:
                self._drained_lot = trio.lowlevel.ParkingLot()
            await self._drained_lot.park()

    # -- reading ---------------------------------------------------------------------------------------

    async def run(self) -> None:
        """Serve the connection until it closes. Subclasses start their own tasks in `nursery` (one nursery
        per connection: each costs about a kilobyte) and wrap this with what must come before and after."""
        try:
            async with trio.open_nursery() as nursery:
                self.nursery = nursery
                nursery.start_soon(self._write_loop, name=_WRITER_TASK_NAME)  # not a string per connection
                if self.limits.keepalive_time is not None:
                    nursery.start_soon(self._keepalive_loop, self.limits.keepalive_time)
                await self._read_loop()
                self.close()
                with trio.move_on_after(self.limits.handshake_timeout):  # bounded: the peer may not read
                    await self._writer_finished.wait()
                nursery.cancel_scope.cancel()
        finally:
            self.nursery = None
            self._connection_lost("connection closed")
            await close_at_once(self.socket)

    async def _read_loop(self) -> None:
        socket = self.socket
        receive = self._inbound.receive  # h2's receive_data, DATA frames without its copies
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
            self._reads += 1
            if self._pending_streams:  # they fit the windows now; a SETTINGS in `data` may shrink them
                self._send_pending()
            try:
                events = receive(data)
            except h2.exceptions.ProtocolError as exc:
                log.debug("HTTP/2 protocol error from peer: %s", exc)
                self._protocol_error(exc)
                return
            queued = self._outgoing_size
            dispatch = self._dispatch  # per read, not per event: a test may give one connection its own
            for event in events:
                handler = dispatch.get(type(event))
                if handler is not None:
                    try:
                        handler(self, event)
                    except Exception as exc:
                        self._event_failed(event, exc)
            self.flush_soon()
            # Only answers count: the DATA we send is bounded by the buffer and the peer's own windows.
            self._answers_size += self._outgoing_size - queued
            if self._answers_size > cap:
                log.warning("peer is not reading its socket; closing the connection")
                self._connection_lost("peer does not read")
                await trio.aclose_forcefully(socket)  # no waiting to flush to a peer that does not read
                return

    def _event_failed(self, event: Any, exc: Exception) -> None:
        """The one guard around event handling: a failure costs the event's stream, else this connection."""
        stream_id = getattr(event, "stream_id", 0)
        name = type(event).__name__
        if isinstance(exc, h2.exceptions.StreamClosedError):  # the peer closed it later in the same batch
            log.debug("stream %d closed by the peer before its %s was handled", stream_id, name)
        else:
            log.exception("error handling %s from the peer", name)
        stream = self.streams.get(stream_id) if stream_id else None
        if stream is not None:
            self.reset(stream, ErrorCodes.INTERNAL_ERROR)
            self._abandon(stream)
        elif stream_id:
            self._reset_stream_id(stream_id, ErrorCodes.INTERNAL_ERROR)
        elif self.lost is None:
            self.send_goaway(self.h2.highest_inbound_stream_id, ErrorCodes.INTERNAL_ERROR)
            self._connection_lost(f"internal error: {exc!r}")

    def _abandon(self, stream: Stream) -> None:
        """Hook: `stream` failed while its events were handled; release it if no task owns it yet."""

    def _protocol_error(self, exc: h2.exceptions.ProtocolError) -> None:
        """A connection error (RFC 9113 5.4.1): GOAWAY with the code that names it, then close."""
        code = exc.error_code
        if isinstance(exc.__cause__, hpack.exceptions.HPACKError) and not isinstance(
            exc.__cause__, hpack.exceptions.OversizedHeaderListError
        ):
            code = ErrorCodes.COMPRESSION_ERROR  # RFC 9113 4.3; h2 says PROTOCOL_ERROR
        self.h2.data_to_send()  # h2's own GOAWAY: replaced by ours
        self.send_goaway(self.h2.highest_inbound_stream_id, code, str(exc).encode()[:256])
        self._connection_lost(f"HTTP/2 protocol error: {exc}")

    def _h2_stream_open(self, stream_id: int) -> bool:
        """Whether h2 still has the stream open: it may have closed it on a frame we have not handled yet."""
        h2_stream = self.h2.streams.get(stream_id)
        return h2_stream is not None and not h2_stream.closed

    def _reset_stream_id(self, stream_id: int, error_code: int) -> None:
        if self._h2_stream_open(stream_id):
            self.h2.reset_stream(stream_id, error_code)
            self.flush_soon()

    # -- the memory budget -----------------------------------------------------------------------------

    def _account(self, delta: int) -> None:
        """Received bytes now held (`delta` > 0) or freed (< 0) by one of our streams."""
        self._held_bytes += delta
        shared = self._shared_budget
        if shared is not None:
            shared.used += delta
            if delta < 0 and shared.starved and shared.used <= shared.limit:
                shared.wake_starved()
        if delta < 0 and self._credit_withheld:
            self._grant_withheld_credit()

    def _over_budget(self) -> bool:
        shared = self._shared_budget
        return self._held_bytes > self.limits.connection_memory_budget or (
            shared is not None and shared.used > shared.limit
        )

    def _enforce_budget(self) -> None:
        """Over a budget: drop the newest partly received messages, then withhold connection credit."""
        partial = [stream for stream in self.streams.values() if stream.receiving_partial_message]
        for stream in sorted(partial, key=lambda stream: stream.id, reverse=True):
            if not self._over_budget():
                break
            log.info("stream %d: memory budget exceeded; its message is dropped", stream.id)
            stream._drop_partial_message("memory budget exceeded: message dropped (RESOURCE_EXHAUSTED)")
        if self._over_budget():
            self._credit_withheld = True
            if self._shared_budget is not None:
                self._shared_budget.starved.add(self)

    def _grant_withheld_credit(self) -> None:
        if self._over_budget() or self.lost is not None:
            return
        self._credit_withheld = False
        if self._shared_budget is not None:
            self._shared_budget.starved.discard(self)
        if self._unsent_connection_credit:
            self.h2.increment_flow_control_window(self._unsent_connection_credit)
            self._unsent_connection_credit = 0
            self.flush_soon()

    def _on_data(self, event: h2.events.DataReceived) -> None:
        stream = self.streams.get(event.stream_id)
        if stream is not None:
            stream._data_received(event.data, event.flow_controlled_length)
        # Connection-level credit goes back as soon as the bytes are here, so that one stream whose reader
        # is slow holds up only itself (a stream's own window bounds it), unless a memory budget is spent.
        self._unsent_connection_credit += event.flow_controlled_length
        if self._credit_withheld or self._over_budget():
            self._enforce_budget()
            if self._credit_withheld:
                return
        if self._unsent_connection_credit >= self.limits.connection_window_size // 4:
            self.h2.increment_flow_control_window(self._unsent_connection_credit)
            self._unsent_connection_credit = 0

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
                stream._wake_senders()
        else:
            self._wake_all_senders()

    def _on_remote_settings(self, event: h2.events.RemoteSettingsChanged) -> None:
        self._wake_all_senders()

    def _wake_all_senders(self) -> None:
        for stream in self.streams.values():
            stream._wake_senders()

    def _on_ping_ack(self, event: h2.events.PingAckReceived) -> None:
        if self._ping_ack is not None:
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
        self,
        stream: Stream,
        headers: Sequence[tuple[bytes, bytes]] = (),
        end_stream: bool = False,
        constant: ConstantHeaders = (),
    ) -> None:
        """Send `constant` then `headers` on a stream the peer opened (responses, trailers).

        Written without h2's send_headers, which per call validates, builds frame objects and serializes
        them: h2 only moves the stream's state, `HeaderEncoder` reuses the block of `constant` (the part
        that is the same call after call), and the frame goes out after what h2 has queued before it.
        """
        if stream.closed is not None:
            raise fresh(stream.closed)
        h2_stream = self.h2.streams.get(stream.id)
        if h2_stream is None or h2_stream.closed:  # h2 would take a forgotten one for a new stream
            raise StreamClosed("stream closed by the peer")
        self._send_pending_of(stream)
        # State first, as h2 does: a transition that fails leaves the HPACK state untouched.
        self.h2.state_machine.process_input(h2.connection.ConnectionInputs.SEND_HEADERS)
        h2_stream.state_machine.process_input(h2.stream.StreamInputs.SEND_HEADERS)
        if end_stream:
            h2_stream.state_machine.process_input(h2.stream.StreamInputs.SEND_END_STREAM)
            stream.local_ended = True
        block = self._encoder.encode_block(constant, headers)
        self.flush_soon()  # what h2 queued so far goes first
        self.send_raw_frame(header_frames(stream.id, block, end_stream, self.h2.max_outbound_frame_size))
        self.headers_and_data_sent += 1

    async def send_data(self, stream: Stream, data: bytes | memoryview, end_stream: bool = False) -> None:
        """Send one message: queue as much as the peer's windows allow now, the rest as WINDOW_UPDATEs come.

        It never waits while window is open. Peers grant credit only once part of their window is used
        (nghttp2 at half, grpc-go at a quarter): waiting for room for a whole message could wait forever.
        It also waits while more than `write_buffer_size` is queued for the socket.
        Interrupted with part of its message out (cancelled, a deadline), it hands the rest to
        `_interrupted_mid_message`: neither trailers nor another message may follow half a message, so a
        client resets the stream and a server sends the rest before the status. Sends from several tasks on
        one stream take turns, a message at a time.
        """
        # Cancelled before anything is queued, as Trio's own sends: a send that raises Cancelled sent nothing.
        await trio.lowlevel.checkpoint_if_cancelled()
        if not self.try_queue_message(stream, data):
            await self._send_in_parts(stream, data)
        if end_stream:
            self.end_stream(stream)
        if self.batch_is_full():
            await trio.lowlevel.cancel_shielded_checkpoint()

    def batch_is_full(self) -> bool:
        """Whether a sender that queued without waiting should now let the writer (and other tasks) run.

        A batch worth a write has gathered: yielding after every small message would give up batching, and
        never yielding would starve the writer and every other task. The yield comes after the message is
        queued, so it is shielded (as the second half of Trio's own sends): a cancellation that arrives
        meanwhile is raised by the next send's check, before that one queues anything.
        """
        return self._outgoing_size >= _YIELD_AFTER_BYTES

    def try_queue_message(self, stream: Stream, data: bytes | memoryview) -> bool:
        """Queue a whole message at once if nothing stands in its way; False queues nothing.

        The common case of `send_data`, and, with no task switch and no wait, how one task fans a message
        out to many streams (chat rooms). False when the windows (less what is queued) cannot take all of
        `data`, the write buffer is over `write_buffer_size`, another task's message is half-sent, or the
        stream is over (which `send_data`'s `_send_in_parts` then reports).
        """
        h2conn = self.h2
        h2_stream = h2conn.streams.get(stream.id)
        size = len(data)
        if (
            h2_stream is None
            or stream.closed is not None
            or stream.local_ended
            or stream.partial_send
            or self._outgoing_size > self.limits.write_buffer_size
            # What the windows allow beyond the bytes already queued, on this stream and on all.
            or size > h2_stream.outbound_flow_control_window - stream._pending_size
            or size > h2conn.outbound_flow_control_window - self._pending_total
        ):
            return False
        self._queue_data(stream, data, size)
        self.headers_and_data_sent += 1
        return True

    async def _send_in_parts(self, stream: Stream, data: bytes | memoryview) -> None:
        """Queue a message as window opens, waiting for WINDOW_UPDATE, for the buffer to drain, or for
        another task's half-sent message to finish."""
        h2conn = self.h2
        view = memoryview(data)
        offset = 0
        total = len(data)
        high_water = self.limits.write_buffer_size
        try:
            while True:
                if stream.closed is not None:
                    raise fresh(stream.closed)
                if stream.local_ended:
                    raise StreamClosed("stream already ended on our side")
                if self._outgoing_size > high_water:
                    await self._wait_for_drain()
                    continue
                window = min(
                    h2conn.local_flow_control_window(stream.id) - stream._pending_size,
                    h2conn.outbound_flow_control_window - self._pending_total,
                )
                # A half-sent message that is not ours (offset 0) belongs to another task: it goes first.
                if window <= 0 or (stream.partial_send and not offset):
                    await stream._wait_for_window()
                    continue
                end = min(total, offset + window)
                self._queue_data(stream, view[offset:end] if offset or end < total else data, end - offset)
                offset = end
                self.headers_and_data_sent += 1
                if offset < total:
                    stream.partial_send = True
                    continue
                if stream.partial_send:
                    stream.partial_send = False
                    stream._wake_senders()  # sends from other tasks waiting for their turn
                return
        except BaseException:
            if 0 < offset < total:
                self._interrupted_mid_message(stream, view[offset:])
            raise

    def _interrupted_mid_message(self, stream: Stream, rest: memoryview) -> None:
        """A send stopped with part of its message out: only the rest, or RST_STREAM, may follow it.

        The client resets the stream (its call is being cancelled). The server overrides this to keep `rest`
        for `finish_message`, so that the call's status can still follow the whole message.
        """
        self.reset(stream, ErrorCodes.CANCEL)

    async def finish_message(self, stream: Stream, rest: memoryview) -> None:
        """Send the rest of a message whose send was interrupted (no other send may run on the stream)."""
        stream.partial_send = False  # the turn is ours: nobody else may send on the stream now
        await self.send_data(stream, rest)

    async def wait_for_turn(self, stream: Stream) -> None:
        """Until no message is half-sent on `stream`: what must come before END_STREAM from another task."""
        while stream.partial_send and stream.closed is None:
            await stream._wait_for_window()

    def end_stream(self, stream: Stream) -> None:
        if stream.closed is None and not stream.local_ended:
            if stream._pending_size:  # END_STREAM goes on the last DATA frame, not in a frame of its own
                del self._pending_streams[stream.id]
                self._frame_pending(stream, end_stream=True)
            else:
                self._send_pending_of(stream)
                self.h2.end_stream(stream.id)
            stream.local_ended = True
            self.flush_soon()

    def reset(self, stream: Stream, error_code: int = ErrorCodes.CANCEL) -> None:
        """RST_STREAM, unless the stream is already over on our side and the peer's."""
        if stream.closed is None and not (stream.local_ended and stream.ended):
            self._reset_stream_id(stream.id, error_code)
        stream.local_ended = True
        stream._close(StreamClosed("stream reset locally", error_code))

    def release(self, stream: Stream) -> None:
        """The stream's user is done with it."""
        stream.on_reset = None
        stream._drop_buffers()
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
        if self._drained_lot:
            self._drained_lot.unpark_all()
        for stream in list(self.streams.values()):
            stream._close(self.lost)
        for stream in self._pending_streams.values():  # never to be sent: not kept until the streams go
            stream._pending, stream._pending_size = [], 0
        self._pending_streams.clear()
        shared, self._shared_budget = self._shared_budget, None
        if shared is not None:  # what our streams still hold is theirs to read, but no longer the server's
            shared.used -= self._held_bytes
            shared.starved.discard(self)
            if shared.starved and shared.used <= shared.limit:
                shared.wake_starved()
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
            self._ping_ack = ack = trio.Event()
            self.h2.ping(b"trio-grp")
            self.flush_soon()
            with trio.move_on_after(timeout):
                await ack.wait()
                continue
            log.info("keepalive PING not answered within %.1fs; closing the connection", timeout)
            self._connection_lost("keepalive timeout")
            await trio.aclose_forcefully(self.socket)
            return


def hard_header_list_limit(limits: _Limits) -> int:
    """The largest header block decoded at all; past it the connection is closed (HPACK state is lost)."""
    return max(64 * limits.max_header_list_size, 2 * 1024 * 1024)


def _dispatch_table(cls: type[Connection]) -> dict[type[Any], Callable[[Any, Any], None]]:
    return {event: getattr(cls, name) for event, name in cls._EVENT_HANDLERS.items()}


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


class _H2Connection(h2.connection.H2Connection):
    """h2's connection, without its dict of a dozen bound methods per connection (about 1.4 KiB, and a
    reference cycle that held every closed connection until the cyclic GC ran): h2 looks the handler of a
    received frame up in `_frame_dispatch_table`, which is the connection itself, by name."""

    #: h2's own table, by method name.
    _HANDLERS = {
        hyperframe.frame.HeadersFrame: "_receive_headers_frame",
        hyperframe.frame.PushPromiseFrame: "_receive_push_promise_frame",
        hyperframe.frame.SettingsFrame: "_receive_settings_frame",
        hyperframe.frame.DataFrame: "_receive_data_frame",
        hyperframe.frame.WindowUpdateFrame: "_receive_window_update_frame",
        hyperframe.frame.PingFrame: "_receive_ping_frame",
        hyperframe.frame.RstStreamFrame: "_receive_rst_stream_frame",
        hyperframe.frame.PriorityFrame: "_receive_priority_frame",
        hyperframe.frame.GoAwayFrame: "_receive_goaway_frame",
        hyperframe.frame.ContinuationFrame: "_receive_naked_continuation",
        hyperframe.frame.AltSvcFrame: "_receive_alt_svc_frame",
        hyperframe.frame.ExtensionFrame: "_receive_unknown_frame",
    }

    @property  # type: ignore[override]
    def _frame_dispatch_table(self) -> _H2Connection:
        return self

    @_frame_dispatch_table.setter
    def _frame_dispatch_table(self, table: object) -> None:
        """h2's __init__ builds its table: dropped at once."""

    def __getitem__(self, frame_type: type[hyperframe.frame.Frame]) -> Callable[[Any], Any]:
        return getattr(self, self._HANDLERS[frame_type])  # type: ignore[no-any-return]


class _SettingValues(list[Any]):
    """A setting's values while a new one waits for acknowledgement: the one in force first, then those
    sent or received and not yet acknowledged. h2 only takes `[0]`, `len`, `append` and `popleft`."""

    __slots__ = ()

    def popleft(self) -> Any:
        return self.pop(0)


class _LeanSettings(h2.settings.Settings):
    """h2's Settings, each setting's value a plain int while no other one waits for acknowledgement.

    h2 keeps every setting's values in a deque (about 600 bytes even for one value: seven settings, two
    Settings per connection, once a third of an idle connection's memory). A second value exists only
    between a SETTINGS and its ACK: the values become a `_SettingValues` list then, and a plain int again
    once acknowledged.
    """

    def __init__(
        self, client: bool, initial_values: dict[h2.settings.SettingCodes, int] | None = None
    ) -> None:
        super().__init__(client, initial_values)
        self._settings = {key: values[0] for key, values in self._settings.items()}  # type: ignore[misc]

    def __getitem__(self, key: h2.settings.SettingCodes | int) -> int:
        value: Any = self._settings[key]
        if type(value) is _SettingValues:
            value = value[0]
        if value is None:  # created when a new value was received, and not yet acknowledged (as h2 does)
            raise KeyError(key)
        return int(value)

    def __setitem__(self, key: h2.settings.SettingCodes | int, value: int) -> None:
        current: Any = self._settings.get(key)  # None: no value yet, as h2 starts a new setting
        if type(current) is not _SettingValues:
            self._settings[key] = _SettingValues([current])  # type: ignore[assignment]
        super().__setitem__(key, value)  # validates, then appends

    def acknowledge(self) -> dict[h2.settings.SettingCodes | int, h2.settings.ChangedSetting]:
        changed: dict[h2.settings.SettingCodes | int, h2.settings.ChangedSetting] = {}
        settings: dict[h2.settings.SettingCodes | int, Any] = self._settings
        for key, values in settings.items():
            if type(values) is _SettingValues and len(values) > 1:
                old = values.popleft()
                changed[key] = h2.settings.ChangedSetting(key, old, values[0])
                if len(values) == 1:
                    settings[key] = values[0]
        return changed


Connection._dispatch = _dispatch_table(Connection)


def _data_frame_body_repr(frame: hyperframe.frame.DataFrame) -> str:
    """hyperframe's repr of a DATA frame's body, the same text, made from its first bytes only.

    h2 builds `repr(frame)` of every frame it receives for its trace log, logging on or off, and for a DATA
    frame hyperframe serializes the whole body again and hex-encodes all of it only to keep 20 characters:
    a copy and 4 bytes written per byte received, which was the largest single cost of a 1 MiB upload.
    """
    head = frame.serialize_padding_data() + bytes(frame.data[:11])  # 22 hex digits: more than are kept
    return hyperframe.frame._raw_data_repr(head if len(head) >= 11 else frame.serialize_body())


hyperframe.frame.DataFrame._body_repr = _data_frame_body_repr  # type: ignore[assignment,method-assign]
