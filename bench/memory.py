"""Resident memory of each server under idle connections and under slow readers.

    python -m bench.memory                     # trio_grpc, grpc.aio and grpclib
    python -m bench.memory --connections 2000 --slow-readers 20

For each server (its own process, as in `bench.run`), printed in MiB of VmRSS read from /proc:
- base:  after start and one call;
- idle:  with --connections HTTP/2 connections open (preface and SETTINGS exchanged, no stream), and the
         cost per connection;
- open streams: --streams FullDuplexCall streams, each with its request headers sent and nothing else, so
         every handler waits for its first message (MiB per 1,000 streams, the connections' own cost taken
         off), in a server process of its own. They are spread over 10 connections, or over more where the
         server's SETTINGS_MAX_CONCURRENT_STREAMS allows fewer per connection (grpclib's 100);
- slow:  with --slow-readers connections, each with one StreamingOutputCall asking for --slow-mib MiB of
         64 KiB messages, whose client grants an unbounded flow-control window but then never reads its
         socket: only the server's own write buffering stands between the responses and its memory
         (peak VmRSS over --hold seconds, and its growth per slow reader);
- after: once those connections are closed.
A well-behaved server stays near its base under slow readers: it stops producing when the socket is full.
"""

from __future__ import annotations

import argparse
import socket
import time
from collections.abc import Sequence
from pathlib import Path

import h2.config
import h2.connection
import h2.events
import h2.settings

from bench.run import LABELS, server_process
from bench.servers import (
    DUPLEX_PATH,
    SERVERS,
    STREAM_PATH,
    UNARY_PATH,
    StreamRequest,
    frame,
    installed_servers,
)
from tests.interop._proto.grpc.testing import messages_pb2

MiB = 1 << 20
_MESSAGE = 64 * 1024
_UNBOUNDED_WINDOW = 2**31 - 1
_STREAM_CONNECTIONS = 10


def memory(pid: int) -> tuple[float, float]:
    """(VmRSS, VmHWM) of a process, in MiB."""
    fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines())
    return int(fields["VmRSS"].split()[0]) / 1024, int(fields["VmHWM"].split()[0]) / 1024


class RawClient:
    """A blocking HTTP/2 client connection that does only what we tell it: here, mostly nothing."""

    def __init__(self, port: int, unbounded_window: bool = False) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if unbounded_window:  # keep the kernel from absorbing much of what the server sends
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
        self.sock.connect(("127.0.0.1", port))
        self.h2 = h2.connection.H2Connection(
            h2.config.H2Configuration(client_side=True, header_encoding=None)
        )
        if unbounded_window:
            self.h2.local_settings = h2.settings.Settings(
                client=True, initial_values={h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: _UNBOUNDED_WINDOW}
            )
        self.h2.initiate_connection()
        if unbounded_window:
            self.h2.increment_flow_control_window(_UNBOUNDED_WINDOW - 65535)
        self.sock.sendall(self.h2.data_to_send())

    def handshake(self) -> None:
        """Read the server's SETTINGS and acknowledge them, as a real client would before going quiet."""
        self.sock.settimeout(5)
        while not any(
            isinstance(event, h2.events.RemoteSettingsChanged)
            for event in self.h2.receive_data(self.sock.recv(65536))
        ):
            pass
        self.sock.sendall(self.h2.data_to_send())

    @property
    def max_concurrent_streams(self) -> int:
        """What the server advertised (h2 refuses to open a stream past it)."""
        return int(self.h2.remote_settings.max_concurrent_streams)

    def open_stream(self, path: str) -> int:
        stream_id = self.h2.get_next_available_stream_id()
        self.h2.send_headers(stream_id, self._headers(path))
        self.sock.sendall(self.h2.data_to_send())
        return stream_id

    @staticmethod
    def _headers(path: str) -> list[tuple[bytes, bytes]]:
        return [
            (b":method", b"POST"),
            (b":scheme", b"http"),
            (b":path", path.encode()),
            (b":authority", b"127.0.0.1"),
            (b"content-type", b"application/grpc"),
            (b"te", b"trailers"),
        ]

    def call(self, path: str, body: bytes) -> None:
        stream_id = self.h2.get_next_available_stream_id()
        self.h2.send_headers(stream_id, self._headers(path))
        self.h2.send_data(stream_id, body, end_stream=True)
        self.sock.sendall(self.h2.data_to_send())

    def close(self) -> None:
        self.sock.close()


def measure_streams(name: str, args: argparse.Namespace, pin: list[str]) -> dict[str, float]:
    """RSS before and with the open streams, in a server process of their own: memory freed by an earlier
    load would otherwise be handed back to the streams, and they would seem to cost nothing."""
    figures: dict[str, float] = {}
    with server_process(name, pin) as (process, port):
        holders = [RawClient(port)]
        holders[0].handshake()
        per_connection = min(holders[0].max_concurrent_streams, -(-args.streams // _STREAM_CONNECTIONS))
        holders += [RawClient(port) for _ in range(-(-args.streams // per_connection) - 1)]
        for client in holders[1:]:
            client.handshake()
        figures["stream_connections"] = len(holders)
        warm = RawClient(port)  # whatever a first call loads is not the streams' cost
        warm.handshake()
        warm.call(UNARY_PATH, frame(b""))  # on a connection of its own: its stream stays open for h2
        time.sleep(0.5)
        warm.close()
        figures["streams_base"] = memory(process.pid)[0]
        for index in range(args.streams):
            holders[index % len(holders)].open_stream(DUPLEX_PATH)
        time.sleep(args.hold)
        figures["streams"] = memory(process.pid)[0]
        for client in holders:
            client.close()
        time.sleep(0.5)
        if process.poll() is not None:
            raise SystemExit(f"error: {name} exited during the test")
    return figures


def measure(name: str, args: argparse.Namespace, pin: list[str]) -> dict[str, float]:
    figures: dict[str, float] = {}
    with server_process(name, pin) as (process, port):
        warm = RawClient(port)
        warm.handshake()
        warm.call(UNARY_PATH, frame(b""))
        time.sleep(0.5)
        warm.close()
        figures["base"] = memory(process.pid)[0]

        idle = [RawClient(port) for _ in range(args.connections)]
        for client in idle:
            client.handshake()
        time.sleep(args.hold)
        figures["idle"] = memory(process.pid)[0]
        for client in idle:
            client.close()
        time.sleep(0.5)

        request = StreamRequest(
            response_parameters=[messages_pb2.ResponseParameters(size=_MESSAGE)]
            * (args.slow_mib * MiB // _MESSAGE)
        )
        figures["quiet"] = memory(process.pid)[0]
        slow = [RawClient(port, unbounded_window=True) for _ in range(args.slow_readers)]
        for client in slow:
            client.handshake()
            client.call(STREAM_PATH, frame(request.SerializeToString()))
        peak_rss = 0.0
        deadline = time.monotonic() + args.hold
        while time.monotonic() < deadline:
            peak_rss = max(peak_rss, memory(process.pid)[0])
            time.sleep(0.1)
        figures["slow"] = peak_rss
        for client in slow:
            client.close()
        time.sleep(1)
        figures["after"] = memory(process.pid)[0]
        if process.poll() is not None:
            raise SystemExit(f"error: {name} exited during the test")
    return figures


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.memory",
        description="RSS of each server at rest, with many idle HTTP/2 connections, with many open streams, "
        "and under slow readers.",
    )
    parser.add_argument(
        "--servers", default=",".join(installed_servers()), help=f"subset of {SERVERS} (default: installed)"
    )
    parser.add_argument("--connections", type=int, default=1000, help="idle connections (default 1000)")
    parser.add_argument("--streams", type=int, default=1000, help="open streams (1000)")
    parser.add_argument("--slow-readers", type=int, default=10, help="slow-reader connections (default 10)")
    parser.add_argument("--slow-mib", type=int, default=64, help="MiB each slow reader asks for (default 64)")
    parser.add_argument("--hold", type=float, default=3.0, help="seconds to hold each load (default 3)")
    parser.add_argument("--no-pin", action="store_true", help="do not pin the server to core 0")
    parser.add_argument("--markdown", action="store_true", help="print the table as Markdown")
    args = parser.parse_args(argv)
    args.servers = [name for name in args.servers.split(",") if name]
    if unknown := set(args.servers) - set(SERVERS):
        parser.error(f"unknown servers: {sorted(unknown)}")
    return args


def memory_table(
    servers: list[str], pin: list[str], markdown: bool, args: argparse.Namespace | None = None
) -> str:
    """Measure every server in turn (defaults unless `args`); the table, with ratios to grpc.aio."""
    from bench.run import format_table

    args = args or parse_args([])
    header = [
        "server",
        "base MiB",
        "MiB/1000 idle conns",
        "MiB/1000 open streams",
        "MiB/slow reader",
        "after MiB",
    ]
    figures = {name: measure(name, args, pin) | measure_streams(name, args, pin) for name in servers}
    idle = {n: (f["idle"] - f["base"]) * 1000 / args.connections for n, f in figures.items()}
    streams = {n: (f["streams"] - f["streams_base"]) * 1000 / args.streams for n, f in figures.items()}
    rows = []
    for name, f in figures.items():
        row = [LABELS[name], f"{f['base']:.1f}", f"{idle[name]:.1f}", f"{streams[name]:.1f}"]
        row += [f"{(f['slow'] - f['quiet']) / args.slow_readers:.1f}", f"{f['after']:.1f}"]
        if "grpc_aio" in figures:
            row.append(f"{idle[name] / idle['grpc_aio']:.2f}x / {streams[name] / streams['grpc_aio']:.2f}x")
        rows.append(row)
    if "grpc_aio" in figures:
        header.append("idle / streams vs grpc.aio")
    note = (
        f"# {args.connections} idle connections; {args.streams} open streams over {_STREAM_CONNECTIONS} "
        "connections (more where a server allows fewer streams per connection: "
        + ", ".join(f"{LABELS[n]} {f['stream_connections']:.0f}" for n, f in figures.items())
        + f"); slow readers: {args.slow_readers} connections x one call asking {args.slow_mib} MiB, "
        f"never read, peak RSS over {args.hold:g} s"
    )
    return note + "\n" + format_table(header, rows, markdown)


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    pin = [] if args.no_pin else ["taskset", "-c", "0"]
    print(memory_table(args.servers, pin, args.markdown, args))


if __name__ == "__main__":
    main()
