"""Received bytes to h2 events, DATA frames taken past h2's copies, HEADERS past its frame objects.

h2 appends every read to a buffer, slices each frame out of it, copies a DATA frame's body once more into
bytes, and builds a frame object, a trace repr and two state-machine steps per frame: three copies of every
byte of a large upload, and most of its cost. `InboundFrames` finds the frame boundaries in the received bytes
itself. A DATA frame that h2 would take as it is (unpadded, within the frame size, on a stream h2 has open for
receiving with its headers received, within its content-length if it has one, both windows large enough, no
header block in progress, the connection open) is accounted here exactly as h2 accounts it: both inbound
windows consumed, the content length counted, END_STREAM through h2's own stream state machine. Its payload is
handed on as h2's `DataReceived` events whose data are memoryviews of the received bytes, one per read the
frame spans, so nothing is buffered or copied here. Every other frame, and every DATA frame that breaks one of
those rules, goes to h2 byte for byte, in order, and h2 answers or raises as it always did.

A HEADERS frame that arrived whole on a stream h2 already has open for receiving (a client's response and
its trailers) skips h2's frame buffer, frame object, trace repr and dispatch: its block goes straight to h2's
own HPACK decoding and stream state machine (`_take_headers`), which give the events h2 would give. HEADERS
that open a stream, or are padded, prioritised or continued, go to h2.

Rules for this file:
- It never decides what is legal: a DATA frame it is not sure h2 would take silently goes to h2. The one check
  made here first is h2's own: a frame over the frame size is a FRAME_SIZE_ERROR as soon as its header is here
  (h2 would first buffer the whole oversize frame).
- The views it hands out live only until the read's events are dispatched: whoever keeps received bytes
  copies them (`MessageDecoder` does).
- h2's state is read only once h2 has processed every frame before the one being decided.
"""

from __future__ import annotations

from typing import Any, NoReturn

import h2.config
import h2.connection
import h2.events
import h2.exceptions
import h2.stream
import h2.utilities

_HEADER_SIZE = 9
_DATA_TYPE = 0x0
_END_STREAM = 0x1
_PADDED = 0x8
_HEADERS_TYPE = 0x1
_END_HEADERS = 0x4
_PRIORITY = 0x20
_STREAM_ID_MASK = 0x7FFFFFFF
_RECV_HEADERS = h2.stream.StreamInputs.RECV_HEADERS
_RECV_INFORMATIONAL_HEADERS = h2.stream.StreamInputs.RECV_INFORMATIONAL_HEADERS
_RECV_END_STREAM = h2.stream.StreamInputs.RECV_END_STREAM
# Where DATA changes no connection state (h2's connection state machine: RECV_DATA leaves these as they are).
_OPEN_CONNECTION = frozenset(
    {h2.connection.ConnectionState.CLIENT_OPEN, h2.connection.ConnectionState.SERVER_OPEN}
)
# Where DATA changes no stream state (h2's stream state machine); END_STREAM moves it, through h2.
_RECEIVING_STATES = frozenset({h2.stream.StreamState.OPEN, h2.stream.StreamState.HALF_CLOSED_LOCAL})


class InboundFrames:
    """Splits received bytes into frames for one h2 connection; `receive` is its `receive_data`."""

    __slots__ = ("_data_end_stream", "_data_left", "_data_stream_id", "_h2", "_h2_left", "_header_start")

    def __init__(self, connection: h2.connection.H2Connection) -> None:
        self._h2 = connection
        #: The first bytes of a frame header that a read cut short.
        self._header_start = b""
        #: Bytes still to come of a frame going to h2; first the client preface, which h2 checks, on a server.
        self._h2_left: int = connection.incoming_buffer._preamble_len
        #: Payload bytes still to come of a DATA frame taken here, its stream, and whether it ends the stream.
        self._data_left = 0
        self._data_stream_id = 0
        self._data_end_stream = False

    def receive(self, data: bytes | bytearray) -> list[Any]:
        """The events of `data`, in the order of its frames, as h2's `receive_data` returns them."""
        events: list[Any] = []
        view = memoryview(data)
        end = len(data)
        pos = 0
        run = 0  # start of the bytes for h2 not yet handed to it: h2 takes a run of frames in one call
        while pos < end:
            if self._h2_left:
                taken = min(self._h2_left, end - pos)
                self._h2_left -= taken
                pos += taken
            elif self._data_left:
                taken = min(self._data_left, end - pos)
                self._data_left -= taken
                self._data_piece(events, view[pos : pos + taken])
                pos = run = pos + taken
            else:
                start = self._header_start
                needed = _HEADER_SIZE - len(start)
                if end - pos < needed:  # the rest of this header comes with the next read
                    self._header_start = start + data[pos:]
                    end = pos
                    break
                self._header_start = b""
                header = int.from_bytes(
                    start + data[pos : pos + needed] if start else data[pos : pos + 9], "big"
                )
                frame_start, pos = pos, pos + needed
                kind = header >> 40 & 0xFF
                length = header >> 48
                whole_headers = kind == _HEADERS_TYPE and pos + length <= end
                if kind == _DATA_TYPE or whole_headers or length > self._h2.max_inbound_frame_size:
                    if run < frame_start:  # deciding needs h2's state after every frame before this one
                        events += self._h2.receive_data(view[run:frame_start])
                    run = frame_start
                    if whole_headers:
                        taken_events = self._take_headers(header, data[pos : pos + length])
                        if taken_events is not None:
                            events += taken_events
                            pos = run = pos + length
                            continue
                    elif self._take_data(header):
                        run = pos
                        if not self._data_left:
                            self._data_piece(events, view[pos:pos])  # an empty frame
                        continue
                if start:  # a header a read cut short: h2 gets its first bytes now, the rest with the run
                    events += self._h2.receive_data(start)
                self._h2_left = header >> 48
        if run < end:
            events += self._h2.receive_data(view[run:end])
        return events

    def _take_data(self, header: int) -> bool:
        """Account a DATA frame as h2 would, if h2 would take it without a word; False leaves it to h2.

        Raises h2's FrameTooLargeError for a frame of any type over the frame size.
        """
        connection = self._h2
        length = header >> 48
        if length > connection.max_inbound_frame_size:
            msg = f"Received overlong frame: length {length}, max {connection.max_inbound_frame_size}"
            self._refuse(h2.exceptions.FrameTooLargeError(msg))
        if header >> 40 & 0xFF != _DATA_TYPE or header >> 32 & _PADDED:
            return False
        stream = connection.streams.get(header & _STREAM_ID_MASK)
        if (
            stream is None
            or connection.state_machine.state not in _OPEN_CONNECTION
            or connection.incoming_buffer._headers_buffer  # a DATA frame there is h2's PROTOCOL_ERROR
            or stream.state_machine.state not in _RECEIVING_STATES
            or not stream.state_machine.headers_received
        ):
            return False
        end_stream = bool(header >> 32 & _END_STREAM)
        content_length = stream._actual_content_length + length
        expected = stream._expected_content_length  # a request's content-length header (h2load, curl)
        if expected is not None and (
            content_length > expected or (end_stream and content_length != expected)
        ):
            return False  # h2 raises InvalidBodyLengthError
        connection_window = connection._inbound_flow_control_window_manager
        stream_window = stream._inbound_window_manager
        if length > connection_window.current_window_size or length > stream_window.current_window_size:
            return False  # h2 raises FlowControlError
        connection_window.current_window_size -= length
        stream_window.current_window_size -= length
        stream._actual_content_length = content_length
        self._data_left = length
        self._data_stream_id = stream.stream_id
        self._data_end_stream = end_stream
        return True

    def _take_headers(self, header: int, block: bytes | bytearray) -> list[Any] | None:
        """The events of a whole HEADERS frame on a stream h2 has open, as h2 gives them, made by h2's own
        decoding and stream state machine, without its frame objects; None leaves the frame to h2.

        Taken: one frame (END_HEADERS), unpadded, without priority, on a stream h2 has open for receiving
        (a response, its trailers), no header block in progress, the connection open. Everything else,
        among it every HEADERS that opens a stream, goes to h2.
        """
        connection = self._h2
        if header >> 32 & (_PADDED | _PRIORITY | _END_HEADERS) != _END_HEADERS:
            return None
        stream = connection.streams.get(header & _STREAM_ID_MASK)
        if (
            stream is None
            or connection.state_machine.state not in _OPEN_CONNECTION
            or connection.incoming_buffer._headers_buffer
            or stream.state_machine.state not in _RECEIVING_STATES
        ):
            return None
        # What h2's _receive_headers_frame does for a stream it has, in its order (RECV_HEADERS changes no
        # state of an open connection).
        try:
            headers = h2.connection._decode_headers(connection.decoder, bytes(block))
            return _received_headers(connection.config, stream, headers, bool(header >> 32 & _END_STREAM))
        except h2.exceptions.ProtocolError as exc:
            self._refuse(exc)

    def _refuse(self, exc: h2.exceptions.ProtocolError) -> NoReturn:
        """What h2's receive_data does with a connection error: GOAWAY queued, h2 closed, then raise."""
        self._h2._terminate_connection(exc.error_code)
        raise exc

    def _data_piece(self, events: list[Any], payload: memoryview) -> None:
        """What arrived of the DATA frame being taken, as h2's event; at its end, END_STREAM if it has it."""
        stream_id = self._data_stream_id
        event = h2.events.DataReceived(
            stream_id=stream_id,
            data=payload,  # type: ignore[arg-type]  # a view, where h2 gives bytes
            flow_controlled_length=len(payload),
        )
        events.append(event)
        if self._data_left or not self._data_end_stream:
            return
        self._data_end_stream = False
        stream = self._h2.streams.get(stream_id)
        # Reset by us while the frame's tail was on its way: the stream is over, and nothing moves its state.
        if stream is not None and stream.state_machine.state in _RECEIVING_STATES:
            ended = stream.state_machine.process_input(_RECV_END_STREAM)
            event.stream_ended = ended[0]  # type: ignore[assignment]  # h2's StreamEnded
            events += ended


def _received_headers(
    config: h2.config.H2Configuration, stream: h2.stream.H2Stream, headers: Any, end_stream: bool
) -> list[Any]:
    """h2's `H2Stream.receive_headers`, step for step, without the validation flags it builds per block for
    the inbound validation trio_grpc turns off (they are built only for what uses them: cookie crumbs)."""
    if config.validate_inbound_headers or isinstance(config.header_encoding, str):
        return stream.receive_headers(headers, end_stream, config.header_encoding)[1]
    informational = h2.utilities.is_informational_response(headers)
    if informational and end_stream:
        raise h2.exceptions.ProtocolError("Cannot set END_STREAM on informational responses")
    machine = stream.state_machine
    events = machine.process_input(_RECV_INFORMATIONAL_HEADERS if informational else _RECV_HEADERS)
    event: Any = events[0]  # a response, its trailers, or an informational response
    if end_stream:
        ended = machine.process_input(_RECV_END_STREAM)
        event.stream_ended = ended[0]
        events += ended
    stream._initialize_content_length(headers)
    if type(event) is h2.events.TrailersReceived and not end_stream:
        raise h2.exceptions.ProtocolError("Trailers must have END_STREAM set")
    if config.normalize_inbound_headers and any(name == b"cookie" for name, _ in headers):
        flags = stream._build_hdr_validation_flags(events)
        headers = h2.utilities.normalize_inbound_headers(headers, flags)
    event.headers = list(headers)
    return events
