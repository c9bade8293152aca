"""Every limit of a server or a channel in one place, with defaults safe against a hostile peer."""

from __future__ import annotations

import dataclasses

KiB = 1024
MiB = 1024 * KiB


@dataclasses.dataclass(frozen=True, kw_only=True)
class _Limits:
    #: Largest message accepted (after decompression); larger -> RESOURCE_EXHAUSTED for that call only.
    max_receive_message_size: int = 4 * MiB
    #: Largest message this side sends; larger -> RESOURCE_EXHAUSTED raised to the sender.
    max_send_message_size: int = 2**31 - 1
    #: SETTINGS_MAX_HEADER_LIST_SIZE we advertise. A server fails a call whose request headers exceed it
    #: (RESOURCE_EXHAUSTED) and the connection goes on; only a block past 64 times it (at least 2 MiB), or
    #: past h2's 64 CONTINUATION frames, closes the connection.
    max_header_list_size: int = 16 * KiB
    #: SETTINGS_MAX_FRAME_SIZE we advertise: the largest frame the peer may send. h2 takes a header block of
    #: at most 64 frames, so this also bounds the largest header block on the wire (4 MiB at 64 KiB).
    max_frame_size: int = 64 * KiB
    #: Flow-control window we grant per stream (SETTINGS_INITIAL_WINDOW_SIZE).
    stream_window_size: int = 1 * MiB
    #: Flow-control window we grant for the whole connection.
    connection_window_size: int = 16 * MiB
    #: Bytes of complete, unread messages a stream may hold before credit stops going back to the peer.
    stream_read_buffer_size: int = 1 * MiB
    #: Bytes of received messages (partly received, or complete and unread) one connection may hold. Past it,
    #: connection-level credit is withheld until the application reads, and the newest streams holding a
    #: partly received message fail with RESOURCE_EXHAUSTED. Worst case per connection: this plus
    #: `connection_window_size` (credit already granted) plus four `write_buffer_size` of frames owed.
    connection_memory_budget: int = 16 * MiB
    #: Bytes of outgoing frames queued for the socket before senders wait for it to drain.
    write_buffer_size: int = 1 * MiB
    #: Seconds for the TLS handshake and the peer's HTTP/2 preface and SETTINGS, together.
    handshake_timeout: float = 10.0
    #: Seconds between keepalive PINGs when the connection is otherwise quiet; None: no keepalive PINGs.
    #: Servers enforce a PING policy (grpc's and ours by default: at most one PING per 5 minutes while they
    #: send nothing, two hours without calls); PINGing more often gets GOAWAY(ENHANCE_YOUR_CALM).
    keepalive_time: float | None = None
    #: Seconds to wait for a keepalive PING's ACK before closing the connection.
    keepalive_timeout: float = 20.0


@dataclasses.dataclass(frozen=True, kw_only=True)
class ServerSettings(_Limits):
    #: SETTINGS_MAX_CONCURRENT_STREAMS we advertise; extra streams are refused (REFUSED_STREAM).
    max_concurrent_streams: int = 256
    #: Connections served at once. At the cap, a new connection makes the one idle (no open stream) the
    #: longest go away (GOAWAY, then close) and is served; only if every connection has calls in flight
    #: does it wait in the listen backlog until one ends or goes idle. Idle connections therefore never
    #: lock a client out, whatever this is; it bounds file descriptors and memory. Running out of file
    #: descriptors below the cap evicts the same way.
    max_connections: int = 1024
    #: RST_STREAMs a peer may send in one second; past it: GOAWAY(ENHANCE_YOUR_CALM) ("rapid reset" attacks).
    max_stream_resets_per_second: int = 1000
    #: Close a connection (GOAWAY) that has had no open stream for this many seconds; None: never. This
    #: reclaims connections whose peer vanished; a client that comes back reconnects. Not needed to keep
    #: the server open to new clients: eviction at `max_connections` does that.
    max_connection_idle: float | None = 300.0
    #: Least seconds between the peer's PINGs while we send it no HEADERS or DATA (grpc's
    #: min_ping_interval_without_data, 5 minutes); a PING sooner is a strike. Sending HEADERS or DATA
    #: clears the strikes, so PINGs that follow traffic (BDP probes, keepalive during calls) never count.
    min_ping_interval_without_data: float = 300.0
    #: Whether the peer may PING while no stream is open. If not (grpc's default), such PINGs are strikes
    #: unless two hours apart.
    keepalive_permit_without_calls: bool = False
    #: Strikes a peer may earn; one more: GOAWAY(ENHANCE_YOUR_CALM, "too_many_pings") and close (grpc: 2).
    #: None: PINGs are never limited (their answers are still bounded by the write buffer's hard cap).
    max_ping_strikes: int | None = 2
    #: Bytes of received messages all connections together may hold; past it, as for one connection's
    #: budget. Worst case per server: this plus `max_connections` times (`connection_window_size` plus four
    #: `write_buffer_size`).
    server_memory_budget: int = 256 * MiB
    #: Seconds a call's status waits for the client's window to take the rest of a message that the end of its
    #: handler interrupted half-sent (trailers cannot follow half a message); past it, RST_STREAM(CANCEL).
    finish_message_timeout: float = 2.0
    #: Seconds calls in flight get to finish on graceful shutdown before they are cancelled.
    shutdown_grace: float = 5.0


@dataclasses.dataclass(frozen=True, kw_only=True)
class ChannelSettings(_Limits):
    #: Seconds to establish a connection (TCP and TLS and the HTTP/2 preface).
    connect_timeout: float = 20.0
    #: Value of the `user-agent` header.
    user_agent: str = "trio-grpc/0.1"
