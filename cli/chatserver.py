"""chatserver: serve rpc.ChatService and rpc.Catalog, with health and reflection, until SIGINT or SIGTERM.

Owns the command line, logging, and the shutdown sequence. On the first SIGINT or SIGTERM: health turns
NOT_SERVING, every room closes (members and listeners get the closing message and their calls end), the
server sends GOAWAY and calls in flight get --grace seconds before they are cancelled; exit code 0.
A second signal cuts the grace period short.
"""

from __future__ import annotations

import argparse
import functools
import logging
import os
import signal
import ssl
import sys
from collections.abc import AsyncIterator

import trio

from chat._proto.rpc import catalog_pb2, chat_pb2
from chat.catalog import CatalogService
from chat.rooms import RoomRegistry, RoomSettings
from chat.service import ChatService
from trio_grpc import Server, ServerSettings, bind_service
from trio_grpc.health import add_health, parse_status
from trio_grpc.interceptors import AccessLog
from trio_grpc.reflection import add_reflection

from ._common import sole_exception

log = logging.getLogger("chatserver")

DESCRIPTION = """\
Serve the chat service (rpc.ChatService) and the product catalog (rpc.Catalog) over gRPC, with the
standard health (grpc.health.v1.Health) and reflection (v1 and v1alpha) services.

Plaintext HTTP/2 unless --tls-cert and --tls-key are given. The HEALTH environment variable sets the
initial health of every service: SERVING (default), NOT_SERVING or SERVICE_UNKNOWN, or 1, 2, 3.
SIGINT (Ctrl-C) or SIGTERM shuts down gracefully: health turns NOT_SERVING, every room closes with the
message "chat room is closing", and calls in flight get --grace seconds to finish. A second signal stops
at once.
"""

EPILOG = """\
examples:
  chatserver                                  plaintext on 0.0.0.0:8080
  chatserver --host 127.0.0.1 --port 0        a free port, printed as "listening on 127.0.0.1:PORT"
  chatserver --tls-cert cert.pem --tls-key key.pem --port 8443
"""


def build_parser() -> argparse.ArgumentParser:
    defaults = RoomSettings()
    parser = argparse.ArgumentParser(
        prog="chatserver",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--host", default="0.0.0.0", help="address to listen on (default: %(default)s)")
    parser.add_argument(
        "--port", type=int, default=8080, help="TCP port; 0 picks a free one (default: %(default)s)"
    )
    tls = parser.add_argument_group("TLS (both or neither)")
    tls.add_argument("--tls-cert", metavar="FILE", help="certificate chain, PEM")
    tls.add_argument("--tls-key", metavar="FILE", help="private key of the certificate, PEM")
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
        help="unread messages a member or listener may have before it is cut off as too slow "
        "(default: %(default)s)",
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
        "--access-log",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="log a line per call at INFO: method, peer, status, duration; never metadata (default: on)",
    )
    return parser


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def main(argv: list[str] | None = None) -> None:
    parser = build_parser()
    args = parser.parse_args(argv)
    if bool(args.tls_cert) != bool(args.tls_key):
        parser.error("--tls-cert and --tls-key go together")
    if args.history > args.buffer:
        parser.error("--history cannot exceed --buffer: the replay is buffered")
    logging.basicConfig(
        level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr
    )
    tls = None
    if args.tls_cert:
        tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        try:
            tls.load_cert_chain(args.tls_cert, args.tls_key)
        except (OSError, ssl.SSLError) as exc:
            sys.exit(f"error: cannot load --tls-cert/--tls-key: {exc}")
    try:
        trio.run(serve, args, tls)
    except BaseException as exc:
        error = sole_exception(exc)
        if isinstance(error, KeyboardInterrupt):  # Ctrl-C before the signal handling was in place
            sys.exit(130)
        if not isinstance(error, OSError):
            raise
        # the port is taken, the address is not ours...
        sys.exit(f"error: cannot listen on {args.host}:{args.port}: {error.strerror or error}")


async def serve(args: argparse.Namespace, tls: ssl.SSLContext | None) -> None:
    rooms = RoomRegistry(
        RoomSettings(
            buffer_size=args.buffer,
            history_length=args.history,
            max_members=args.max_members,
            max_rooms=args.max_rooms,
        )
    )
    server = Server(
        [
            bind_service(chat_pb2.DESCRIPTOR.services_by_name["ChatService"], ChatService(rooms)),
            bind_service(catalog_pb2.DESCRIPTOR.services_by_name["Catalog"], CatalogService()),
        ],
        settings=ServerSettings(shutdown_grace=args.grace, max_receive_message_size=args.max_message_size),
        interceptors=[AccessLog()] if args.access_log else [],
    )
    add_health(server, parse_status(os.environ.get("HEALTH")))  # first to hear of shutdown: NOT_SERVING
    add_reflection(server)
    server.on_shutdown(rooms.close_all)
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with trio.open_nursery() as nursery:
            serve_tcp = functools.partial(server.serve_tcp, host=args.host, tls=tls)
            port = await nursery.start(serve_tcp, args.port)
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
