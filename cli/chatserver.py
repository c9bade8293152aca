"""chatserver: serve rpc.ChatService and rpc.Catalog, with health and reflection, until SIGINT or SIGTERM.

Owns the command line, logging, and the shutdown sequence. On the first SIGINT or SIGTERM: health turns
NOT_SERVING, every room closes (members and listeners get the closing message and their calls end), the
server sends GOAWAY and calls in flight get --grace seconds before they are cancelled; exit code 0.
A second signal cuts the grace period short.

--backend redis://HOST:PORT/DB shares the rooms with every other chatserver using that Redis
(chat.redis_backend); --workers N then runs N such processes on one port (SO_REUSEPORT): this process
hands each worker its own listening socket, forwards SIGINT/SIGTERM to them, and exits when they have.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import functools
import logging
import os
import re
import resource
import signal
import socket
import ssl
import subprocess
import sys
from collections.abc import AsyncIterator

import trio

from chat.backend import MemoryBackend, RedisSettings, RoomBackend, redacted
from chat.catalog import CatalogService
from chat.rooms import RoomRegistry, RoomSettings
from chat.service import ChatService
from trio_grpc import RpcError, Server, ServerSettings, StatusCode
from trio_grpc.health import add_health, parse_status
from trio_grpc.interceptors import AccessLog
from trio_grpc.reflection import add_reflection

from ._common import add_version_argument, sole_exception

log = logging.getLogger("chatserver")

DESCRIPTION = """\
Serve the chat service (rpc.ChatService) and the product catalog (rpc.Catalog) over gRPC, with the
standard health (grpc.health.v1.Health) and reflection (v1 and v1alpha) services.

Plaintext HTTP/2 unless --tls-cert and --tls-key are given. The HEALTH environment variable sets the
initial health of every service: SERVING (default), NOT_SERVING or SERVICE_UNKNOWN, or 1, 2, 3.
SIGINT (Ctrl-C) or SIGTERM shuts down gracefully: health turns NOT_SERVING, every room closes with the
message "chat room is closing", and calls in flight get --grace seconds to finish. A second signal stops
at once.

With --backend redis://... the rooms live in Redis and every chatserver using the same Redis serves the
same rooms; --workers N runs N processes on one port (SO_REUSEPORT), one per core.
"""

EPILOG = """\
examples:
  chatserver                                  plaintext on 0.0.0.0:8080
  chatserver --host 127.0.0.1 --port 0        a free port, printed as "listening on 127.0.0.1:PORT"
  chatserver --tls-cert cert.pem --tls-key key.pem --port 8443
  chatserver --workers 2 --backend redis://127.0.0.1:6379/0   two processes sharing rooms in Redis
"""


def build_parser() -> argparse.ArgumentParser:
    defaults = RoomSettings()
    parser = argparse.ArgumentParser(
        prog="chatserver",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_version_argument(parser)
    parser.add_argument("--host", default="0.0.0.0", help="address to listen on (default: %(default)s)")
    parser.add_argument(
        "--port", type=_port, default=8080, help="TCP port; 0 picks a free one (default: %(default)s)"
    )
    tls = parser.add_argument_group("TLS (both or neither)")
    tls.add_argument("--tls-cert", metavar="FILE", help="certificate chain, PEM")
    tls.add_argument("--tls-key", metavar="FILE", help="private key of the certificate, PEM")
    scale = parser.add_argument_group("scale-out")
    scale.add_argument(
        "--backend",
        type=_backend,
        default="memory",
        metavar="URL",
        help="where rooms live: memory (this process) or redis://[:PASSWORD@]HOST:PORT/DB (also "
        "rediss:// for TLS), shared by every chatserver using it (default: %(default)s)",
    )
    scale.add_argument(
        "--workers",
        type=_positive,
        default=1,
        metavar="N",
        help="processes serving the port (SO_REUSEPORT); more than 1 needs a Redis --backend (default: 1)",
    )
    scale.add_argument(
        "--member-lease",
        type=float,
        default=RedisSettings().lease,
        metavar="SECONDS",
        help="with Redis: how long the members of a process that died keep their names "
        "(default: %(default)s)",
    )
    parser.add_argument("--listen-fd", type=int, help=argparse.SUPPRESS)  # a worker's inherited socket
    limits = parser.add_argument_group("limits")
    limits.add_argument(
        "--max-rooms",
        type=_positive,
        metavar="N",
        default=defaults.max_rooms,
        help="rooms at once (default: %(default)s)",
    )
    limits.add_argument(
        "--max-members",
        type=_positive,
        metavar="N",
        default=defaults.max_members,
        help="members per room; listeners do not count (default: %(default)s)",
    )
    limits.add_argument(
        "--history",
        type=_positive,
        metavar="N",
        default=defaults.history_length,
        help="messages replayed to whoever joins or listens (default: %(default)s)",
    )
    limits.add_argument(
        "--buffer",
        type=_positive,
        metavar="N",
        default=defaults.buffer_size,
        help="unread messages a member or listener may have before it holds the room back "
        "(default: %(default)s)",
    )
    limits.add_argument(
        "--buffer-bytes",
        type=_positive,
        metavar="BYTES",
        default=defaults.buffer_bytes,
        help="bytes of unread messages a member or listener may have before it holds the room back "
        "(default: %(default)s)",
    )
    limits.add_argument(
        "--hold-back",
        type=_non_negative_seconds,
        metavar="SECONDS",
        default=defaults.hold_back,
        help="how long a full buffer may hold back a room's senders before its reader is cut off "
        "(default: %(default)s)",
    )
    limits.add_argument(
        "--max-held-bytes",
        type=_positive,
        metavar="BYTES",
        default=defaults.max_held_bytes,
        help="bytes of messages all rooms may hold in histories and buffers (default: %(default)s)",
    )
    limits.add_argument(
        "--max-message-size",
        type=_positive,
        default=ServerSettings().max_receive_message_size,
        metavar="BYTES",
        help="largest request message accepted (default: %(default)s)",
    )
    limits.add_argument(
        "--grace",
        type=float,
        default=ServerSettings().shutdown_grace,
        metavar="SECONDS",
        help="time calls get to finish on shutdown (default: %(default)s)",
    )
    parser.add_argument(
        "--log-level",
        default="INFO",
        type=str.upper,
        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
        help="INFO logs a line per connection and per room event (default: %(default)s)",
    )
    parser.add_argument(
        "--log-wire",
        action="store_true",
        help="with --log-level DEBUG: also the header coding of hpack, line by line (metadata values hidden)",
    )
    parser.add_argument(
        "--access-log",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="log a line per call at INFO: method, peer, status, duration; never metadata (default: on)",
    )
    return parser


def _port(text: str) -> int:
    """A TCP port number: the kernel would take 99999 modulo 65536 and listen on 34463."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port number: {text!r}") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"must be 0 to 65535, not {value}")
    return value


def _backend(text: str) -> str:
    if text == "memory" or text.startswith(("redis://", "rediss://", "unix://")):
        return text
    raise argparse.ArgumentTypeError(f"memory or redis://HOST:PORT/DB, not {text!r}")


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def _non_negative_seconds(text: str) -> float:
    value = float(text)
    if not value >= 0:  # also refuses nan
        raise argparse.ArgumentTypeError(f"must be 0 or more, not {text}")
    return value


def main(argv: list[str] | None = None) -> None:
    parser = build_parser()
    args = parser.parse_args(argv)
    if bool(args.tls_cert) != bool(args.tls_key):
        parser.error("--tls-cert and --tls-key go together")
    if args.history > args.buffer:
        parser.error("--history cannot exceed --buffer: the replay is buffered")
    if args.workers > 1 and args.backend == "memory":
        sys.exit("error: --workers needs a shared backend: add --backend redis://HOST:PORT/DB")
    worker = " [%(process)d]" if args.workers > 1 or args.listen_fd is not None else ""
    logging.basicConfig(
        level=args.log_level,
        format=f"%(asctime)s %(levelname)s %(name)s{worker}: %(message)s",
        stream=sys.stderr,
    )
    _configure_wire_logging(args.log_wire)
    tls = None
    if args.tls_cert:
        tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        try:
            tls.load_cert_chain(args.tls_cert, args.tls_key)
        except (OSError, ssl.SSLError) as exc:
            sys.exit(f"error: cannot load --tls-cert/--tls-key: {exc}")
    _raise_open_file_limit()
    if args.workers > 1:
        sys.exit(run_workers(args, sys.argv[1:] if argv is None else argv))
    try:
        trio.run(serve, args, tls)
    except BaseException as exc:
        error = sole_exception(exc)
        if isinstance(error, KeyboardInterrupt):  # Ctrl-C before the signal handling was in place
            sys.exit(130)
        if isinstance(error, RpcError):  # the backend's, at start-up
            hint = ": is Redis running there?" if error.code is StatusCode.UNAVAILABLE else ""
            sys.exit(f"error: {error.message}{hint} ({error.code.name})")
        if isinstance(error, ModuleNotFoundError) and error.name == "coredis":
            sys.exit("error: a Redis --backend needs coredis: pip install 'trio-grpc[redis]'")
        if not isinstance(error, OSError):
            raise
        # the port is taken, the address is not ours...
        sys.exit(f"error: cannot listen on {args.host}:{args.port}: {error.strerror or error}")


def _raise_open_file_limit() -> None:
    """Raise the soft limit on open files to the hard one: it is often 1024, where the server's
    max_connections needs more. (The library leaves process-wide limits to the program.)"""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        except (ValueError, OSError) as exc:  # e.g. an unlimited hard limit the kernel will not take
            log.warning("cannot raise the open file limit from %d: %s", soft, exc)


#: Loggers of the HTTP/2 stack. hpack logs every header it codes, values included, several lines each.
WIRE_LOGGERS = ("hpack", "h2")
#: Headers whose values are the protocol's, not the caller's metadata: shown by --log-wire.
_PROTOCOL_HEADERS = re.compile(rb":.*|grpc-(?!.*-bin$).*|content-type|te|user-agent")


def _configure_wire_logging(wanted: bool) -> None:
    """Keep the HTTP/2 stack's DEBUG lines out unless --log-wire; with it, hide metadata values."""
    if not wanted:
        for name in WIRE_LOGGERS:
            logging.getLogger(name).setLevel(logging.WARNING)
        return
    for handler in logging.getLogger().handlers:  # a logger's filter would miss its children's records
        handler.addFilter(_hide_metadata_values)


def _hide_metadata_values(record: logging.LogRecord) -> bool:
    """Rewrite hpack's arguments: a header's value unless it is the protocol's, and raw header blocks."""
    if record.name.partition(".")[0] not in WIRE_LOGGERS:
        return True
    args = record.args if isinstance(record.args, tuple) else ()
    if isinstance(record.msg, str) and ("%s=%s" in record.msg or "%s: %s" in record.msg):  # name, value
        name, value, *rest = args
        record.args = (name, _shown_value(name, value), *rest)
    else:
        record.args = tuple(_shown_argument(arg) for arg in args)
    return True


def _shown_argument(arg: object) -> object:
    if isinstance(arg, tuple) and len(arg) == 2:  # a (name, value) header
        return (arg[0], _shown_value(arg[0], arg[1]))
    if isinstance(arg, (bytes, bytearray, memoryview)):  # a coded header block: values inside
        return f"<{len(arg)} bytes>"
    return arg


def _shown_value(name: object, value: object) -> object:
    raw_name = name.encode() if isinstance(name, str) else name
    if isinstance(raw_name, bytes) and _PROTOCOL_HEADERS.fullmatch(raw_name.lower()):
        return value
    return "<hidden>"


def run_workers(args: argparse.Namespace, argv: list[str]) -> int:
    """Run --workers chatservers on one port, each with its own SO_REUSEPORT socket, until a signal."""
    family = socket.AF_INET6 if ":" in args.host else socket.AF_INET
    sockets: list[socket.socket] = []
    port = args.port
    try:
        for _ in range(args.workers):
            sock = socket.socket(family, socket.SOCK_STREAM)
            sockets.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            sock.bind((args.host, port))
            port = sock.getsockname()[1]  # port 0: the first bind chose it, the others share it
            sock.listen(socket.SOMAXCONN)
    except OSError as exc:
        sys.exit(f"error: cannot listen on {args.host}:{args.port}: {exc.strerror or exc}")
    # Own sessions: a terminal's Ctrl-C reaches this process only, which forwards it once.
    workers = [
        subprocess.Popen(
            [sys.executable, "-m", "cli.chatserver", *argv, "--workers", "1", "--listen-fd", str(s.fileno())],
            pass_fds=[s.fileno()],
            start_new_session=True,
            preexec_fn=functools.partial(_stop_with_parent, os.getpid()),
        )
        for s in sockets
    ]
    for sock in sockets:
        sock.close()
    log.info("listening on %s:%d (%d workers, backend %s)", args.host, port, args.workers, _shown(args))

    def forward(signum: int, frame: object) -> None:
        log.info("%s: stopping %d workers", signal.Signals(signum).name, len(workers))
        for worker in workers:
            if worker.poll() is None:
                worker.send_signal(signal.SIGTERM)

    signal.signal(signal.SIGINT, forward)
    signal.signal(signal.SIGTERM, forward)
    codes = [worker.wait() for worker in workers]
    log.info("stopped")
    return max(abs(code) for code in codes)


def _stop_with_parent(parent: int) -> None:
    """In a worker, before it runs: have Linux send it SIGTERM when the parent dies, even by SIGKILL, so that
    no worker outlives the `--workers` process that started it."""
    with contextlib.suppress(OSError, AttributeError):  # not Linux: the parent's signal handler only
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() != parent:  # it died before the line above
        os.kill(os.getpid(), signal.SIGTERM)


_PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>


def _shown(args: argparse.Namespace) -> str:
    return redacted(args.backend) if args.backend != "memory" else "memory"


@contextlib.asynccontextmanager
async def open_backend(args: argparse.Namespace) -> AsyncIterator[RoomBackend]:
    settings = RoomSettings(
        buffer_size=args.buffer,
        buffer_bytes=args.buffer_bytes,
        hold_back=args.hold_back,
        max_held_bytes=args.max_held_bytes,
        history_length=args.history,
        max_members=args.max_members,
        max_rooms=args.max_rooms,
    )
    if args.backend == "memory":
        yield MemoryBackend(RoomRegistry(settings))
        return
    from chat.redis_backend import RedisBackend  # coredis is an optional extra

    async with RedisBackend.open(args.backend, settings, RedisSettings(lease=args.member_lease)) as rooms:
        yield rooms


async def _listeners(args: argparse.Namespace) -> list[trio.SocketListener] | None:
    """The socket a worker inherited, or None to open the port as usual."""
    if args.listen_fd is None:
        return None
    return [trio.SocketListener(trio.socket.from_stdlib_socket(socket.socket(fileno=args.listen_fd)))]


async def serve(args: argparse.Namespace, tls: ssl.SSLContext | None) -> None:
    async with open_backend(args) as rooms:
        await serve_rooms(args, tls, rooms)


async def serve_rooms(args: argparse.Namespace, tls: ssl.SSLContext | None, rooms: RoomBackend) -> None:
    server = Server(
        [ChatService(rooms).bind(), CatalogService().bind()],
        settings=ServerSettings(shutdown_grace=args.grace, max_receive_message_size=args.max_message_size),
        interceptors=[AccessLog()] if args.access_log else [],
    )
    add_health(server, parse_status(os.environ.get("HEALTH")))  # first to hear of shutdown: NOT_SERVING
    add_reflection(server)
    server.on_shutdown(rooms.close_all)
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with trio.open_nursery() as nursery:
            inherited = await _listeners(args)
            if inherited is None:
                port = await nursery.start(
                    functools.partial(server.serve_tcp, host=args.host, tls=tls), args.port
                )
            else:
                port = inherited[0].socket.getsockname()[1]
                await nursery.start(functools.partial(server.serve_listeners, inherited, tls=tls))
            log.info("listening on %s:%d (%s)", args.host, port, "TLS" if tls else "plaintext")
            async for signum in signals:
                log.info("%s: shutting down, calls get %gs", signal.Signals(signum).name, args.grace)
                break
            nursery.start_soon(_stop_on_second_signal, signals, nursery.cancel_scope)
            await server.shutdown()
            nursery.cancel_scope.cancel()
    log.info("stopped")


async def _stop_on_second_signal(signals: AsyncIterator[int], scope: trio.CancelScope) -> None:
    async for signum in signals:
        log.info("%s again: stopping now", signal.Signals(signum).name)
        scope.cancel()
        return


if __name__ == "__main__":
    main()
