"""chatter-from-descriptors: call any gRPC method from descriptors, JSON or text in and out (like grpcurl).

Owns the command line (ours and grpcurl's flag names and layout, `ADDRESS METHOD`) and the three actions:
calling a method (all four kinds; requests from --data or a stream of them on stdin, one document per
response on stdout, `-v` details on stderr), `list` names services or methods, `describe` shows a symbol
as .proto source. Descriptors come from `cli._descriptors` (reflection, .proto files, descriptor sets),
message conversion from `cli._json_messages`, .proto source from `cli._proto_text`. Errors before the
call are one line; a call that ends with a non-OK status prints it as grpcurl does and exits 64 + code.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import contextlib
import difflib
import re
import ssl
import sys
from collections.abc import AsyncIterator, Sequence
from typing import Any

import trio
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from google.protobuf.descriptor import FileDescriptor, MethodDescriptor, ServiceDescriptor
from google.protobuf.message import Message

from trio_grpc import Call, Channel, ChannelSettings, MetadataError, RpcError, StatusCode, Stub

from . import _proto_text
from ._common import (
    CliError,
    UsageError,
    add_version_argument,
    client_tls,
    rpc_error,
    run_exiting_2_on_usage,
    sole_exception,
)
from ._descriptors import DescriptorSource, FileSource, ReflectionSource, compile_protos, read_descriptor_set
from ._json_messages import (
    InvalidJson,
    JsonObjects,
    RequestError,
    TextMessages,
    template,
    text_to_message,
    to_json,
    to_message,
    to_text,
)
from ._stdin import StdinReader

DESCRIPTION = """\
Call any method of a gRPC server, with JSON (or protobuf text format) requests and responses, from
descriptors found by server reflection (the default), in .proto files (--proto, compiled with
grpcio-tools) or in descriptor sets (--protoset, from protoc --descriptor_set_out --include_imports).

  chatter-from-descriptors [options] ADDRESS METHOD [-d JSON | -d @]    call METHOD (as grpcurl)
  chatter-from-descriptors [options] [ADDRESS] list [SERVICE]           list services, or a service's methods
  chatter-from-descriptors [options] [ADDRESS] describe [SYMBOL]        show a service, method or message
  chatter-from-descriptors [options] --target ADDRESS --rpc METHOD ...  the same, with options

ADDRESS is HOST:PORT (default localhost:8080); without --proto or --protoset, list and describe ask it.
grpcurl's flag names work too, with one dash: -plaintext, -d, -H, -rpc-header, -reflect-header, -format,
-proto, -protoset, -import-path, -max-time, -connect-timeout, -authority, -servername, -cacert, -cert,
-key, -max-msg-sz, -allow-unknown-fields, -emit-defaults, -msg-template, -protoset-out, -v.

Requests follow the proto3 JSON mapping (or the text format, with --format text, messages separated by
the ASCII record separator 0x1E, as grpcurl's). For a streaming request, give several (in -d, or on stdin
with -d @); they are sent as they are read while responses print as they come, one document each.
Without -d, a unary request is the empty message and a request stream is empty. Output is UTF-8.
Durations take units: 500ms, 2s, 1.5m, 1h (a bare number is seconds).

exit codes: 0 the call ended with OK; 64 + the status code when it did not (65 CANCELLED, 68
DEADLINE_EXCEEDED, 69 NOT_FOUND, 78 UNAVAILABLE, ..., as grpcurl), its status on stderr
(ERROR: Code: ... Message: ...); 1 any other failure (no connection, unknown method, a request that
does not fit); 2 a usage error (the command line itself is wrong); 130 interrupted.
"""

EPILOG = """\
examples (-plaintext or --insecure for a plaintext server such as a default `chatserver`):
  chatter-from-descriptors -plaintext localhost:8080 list
  chatter-from-descriptors -plaintext localhost:8080 describe rpc.ChatService.Post
  chatter-from-descriptors -plaintext -d '{"private": true}' localhost:8080 rpc.ChatService/CreateChatRoom
  chatter-from-descriptors --insecure -v --rpc rpc.ChatService/Listen -d '{"room_id": "ID"}'
  printf '{"room_id":"ID","message":{"name":"bot","message":"hi"}}' |
      chatter-from-descriptors --insecure --rpc rpc.ChatService.Post -d @
  chatter-from-descriptors --insecure --format text --rpc rpc.ChatService.Post -d 'room_id: "ID"'
  chatter-from-descriptors --proto rpc/chat.proto -I proto describe --msg-template rpc.PostRequest
"""

ACTIONS = ("list", "describe")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="chatter-from-descriptors",
        usage="%(prog)s [options] [ADDRESS] (METHOD | --rpc METHOD | list [SERVICE] | describe [SYMBOL])",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        allow_abbrev=False,  # -p would otherwise stand for -plaintext, -proto or -protoset
    )
    add_version_argument(parser)
    parser.add_argument("words", nargs="*", help=argparse.SUPPRESS)
    parser.add_argument("--target", metavar="HOST:PORT", help="the server (default: localhost:8080)")
    parser.add_argument(
        "-v", "--verbose", action="store_true", help="show metadata, headers, trailers and counts on stderr"
    )
    _add_tls_arguments(parser)
    _add_call_arguments(parser)
    _add_source_arguments(parser)
    return parser


def _add_tls_arguments(parser: argparse.ArgumentParser) -> None:
    tls = parser.add_argument_group("connection (TLS unless --insecure)")
    tls.add_argument(
        "--insecure", "-plaintext", action="store_true", help="plaintext HTTP/2 (what `chatserver` serves)"
    )
    tls.add_argument("-insecure", action=_GrpcurlInsecure, nargs=0, help=argparse.SUPPRESS)
    tls.add_argument(
        "--cacert", "-cacert", metavar="FILE", help="trust the CA certificate(s) in this PEM file"
    )
    tls.add_argument("--cert", "-cert", metavar="FILE", help="client certificate (PEM) for mutual TLS")
    tls.add_argument("--key", "-key", metavar="FILE", help="the private key (PEM) of --cert")
    tls.add_argument(
        "--servername", "-servername", metavar="NAME", help="the name the server's certificate must have"
    )
    tls.add_argument(
        "--authority", "-authority", metavar="NAME", help=":authority of the calls (and the TLS server name)"
    )
    tls.add_argument(
        "--connect-timeout",
        "-connect-timeout",
        type=_duration,
        metavar="DURATION",
        help="give up connecting after this long (default: 20s)",
    )
    tls.add_argument(
        "--max-msg-sz", "-max-msg-sz", type=_size, metavar="BYTES", help="largest response (default: 4 MiB)"
    )


class _GrpcurlInsecure(argparse.Action):
    """grpcurl's -insecure is TLS without verification, our --insecure plaintext: say so, not guess."""

    def __call__(self, parser: argparse.ArgumentParser, *args: object) -> None:
        parser.error(
            "-insecure is grpcurl's TLS without certificate checks, which this program does not do; "
            "for a plaintext server use -plaintext (or --insecure), for a private CA -cacert FILE"
        )


def _add_call_arguments(parser: argparse.ArgumentParser) -> None:
    call = parser.add_argument_group("calling")
    call.add_argument(
        "--rpc", metavar="METHOD", help="the method: package.Service.Method or package.Service/Method"
    )
    call.add_argument(
        "-d",
        "--data",
        metavar="DATA|@",
        help="request(s) as JSON (or text with --format text); @ reads a stream of them from stdin",
    )
    call.add_argument(
        "--format",
        "-format",
        choices=["json", "text"],
        default="json",
        help="of requests and responses: json (default) or protobuf text format",
    )
    for flags, where in (
        (("-H", "--header"), "the call and the reflection requests"),
        (("--rpc-header", "-rpc-header"), "the call only"),
        (("--reflect-header", "-reflect-header"), "the reflection requests only"),
    ):
        call.add_argument(
            *flags,
            dest=flags[-1].lstrip("-").replace("-", "_") + "s",
            action="append",
            default=[],
            type=_header,
            metavar="'KEY: VALUE'",
            help=f"metadata for {where}, repeatable (values of -bin keys in base64)",
        )
    call.add_argument(
        "--timeout",
        "-max-time",
        type=_duration,
        metavar="DURATION",
        help="deadline of each call: 500ms, 2s, 1m (default: none)",
    )
    call.add_argument(
        "--emit-defaults",
        "-emit-defaults",
        action="store_true",
        help="show fields that have their default value, too",
    )
    call.add_argument(
        "--allow-unknown-fields",
        "-allow-unknown-fields",
        action="store_true",
        help="drop request fields the message type lacks instead of refusing the request",
    )


def _add_source_arguments(parser: argparse.ArgumentParser) -> None:
    sources = parser.add_argument_group("descriptors (default: server reflection, v1 then v1alpha)")
    sources.add_argument(
        "--proto", "-proto", action="append", default=[], metavar="FILE", help=".proto file, repeatable"
    )
    sources.add_argument(
        "-I",
        "--import-path",
        "-import-path",
        action="append",
        default=[],
        metavar="DIR",
        help="where --proto files and their imports are found, repeatable (default: .)",
    )
    sources.add_argument(
        "--protoset",
        "-protoset",
        action="append",
        default=[],
        metavar="FILE",
        help="binary descriptor set, repeatable",
    )
    sources.add_argument(
        "--protoset-out",
        "-protoset-out",
        metavar="FILE",
        help="write the descriptors used (with their imports) to FILE as a descriptor set",
    )
    sources.add_argument(
        "--msg-template",
        "-msg-template",
        action="store_true",
        help="describe: follow each message with a JSON request that has every field",
    )


def _header(text: str) -> tuple[str, str | bytes]:
    key, colon, value = text.partition(":")
    key, value = key.strip().lower(), value.strip()
    if not colon or not key:
        raise argparse.ArgumentTypeError(f"{text!r} is not 'key: value'")
    if key.endswith("-bin"):
        try:
            return key, base64.b64decode(value + "=" * (-len(value) % 4), validate=True)
        except binascii.Error:
            raise argparse.ArgumentTypeError(f"the value of {key} is not base64") from None
    return key, value


_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "": 1.0}


def _duration(text: str) -> float:
    """Seconds from '500ms', '2s', '1.5m', '1h' or a bare number of seconds."""
    match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)\s*(ms|s|m|h|)\s*", text)
    if match is None:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a duration: give one such as 500ms, 2s, 1.5m or 1h"
            + (
                " (leave the option out for none)"
                if text.strip().lower() in ("inf", "infinity", "none")
                else ""
            )
        )
    seconds = float(match.group(1)) * _UNITS[match.group(2)]
    if not seconds > 0:
        raise argparse.ArgumentTypeError(f"must be more than 0, not {text}")
    return seconds


def _size(text: str) -> int:
    if not text.isdigit() or int(text) == 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of bytes (more than 0)")
    return int(text)


def main(argv: list[str] | None = None) -> None:
    parser = build_parser()
    args = parser.parse_intermixed_args(argv)
    _place_words(parser, args)
    if args.command is None and args.rpc is None:
        parser.error("say what to do: ADDRESS METHOD, --rpc METHOD, list or describe")
    if args.data is not None and args.rpc is None:
        parser.error("-d/--data goes with a METHOD to call")
    if args.import_path and not args.proto:
        parser.error("-I/--import-path goes with --proto")
    if args.msg_template and args.command != "describe":
        parser.error("--msg-template goes with describe")
    if (args.cert is None) != (args.key is None):
        parser.error("--cert and --key go together (mutual TLS)")
    if args.insecure and (args.cacert or args.cert or args.servername):
        parser.error("--cacert, --cert and --servername are for TLS; they do not go with --insecure")
    if args.authority and args.servername and args.authority != args.servername:
        parser.error("--authority and --servername differ; this client uses one name for both")
    sys.stdout.reconfigure(encoding="utf-8")  # type: ignore[union-attr]  # whatever the locale
    run_exiting_2_on_usage(lambda: _main(args))


def _place_words(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Sort the positional words into address, action and symbol: `[ADDRESS] (list|describe) [SYMBOL]`
    or grpcurl's `ADDRESS METHOD` (no ADDRESS after --target). Sets target, command, symbol and rpc."""
    words = list(args.words)
    if args.target is None and words and words[0] not in ACTIONS:
        args.target = words.pop(0)
        if not words and args.rpc is None:
            parser.error(f"say what to do with {args.target}: METHOD, list or describe")
    args.target = args.target or "localhost:8080"
    args.command = args.symbol = None
    if words and words[0] in ACTIONS:
        args.command = words.pop(0)
        args.symbol = words.pop(0) if words else None
        if args.rpc is not None:
            parser.error(f"--rpc calls a method; it does not go with {args.command}")
    elif words:
        if args.rpc is not None:
            parser.error(f"the method is given twice: --rpc {args.rpc} and {words[0]}")
        args.rpc = words.pop(0)
    if words:
        parser.error(f"unexpected argument {words[0]!r}")


def _files(args: argparse.Namespace) -> list[descriptor_pb2.FileDescriptorProto] | None:
    """The descriptors of --protoset and --proto files; None: ask the server (reflection)."""
    if not args.proto and not args.protoset:
        return None
    files = [file for path in args.protoset for file in read_descriptor_set(path)]
    if args.proto:
        files += compile_protos(args.proto, args.import_path)
    return files


async def _main(args: argparse.Namespace) -> int:
    files = _files(args)
    async with _open_channel(args) as channel:
        try:
            code = await _act(channel, args, files)
        except Exception as exc:
            error = sole_exception(exc)
            if isinstance(error, RpcError) and error.code == StatusCode.DEADLINE_EXCEEDED:
                raise CliError(
                    "the --timeout passed while asking the server for descriptors (DEADLINE_EXCEEDED)",
                    "allow more time, or give them with --protoset",
                ) from None
            if isinstance(error, RpcError):
                raise rpc_error(error, args.target, args.insecure, "--target") from None
            if isinstance(error, MetadataError):
                raise UsageError(f"-H: {error}") from None
            raise
    return code


def _open_channel(args: argparse.Namespace) -> Channel:
    tls = client_tls(args)
    if tls is not None and args.cert is not None:
        try:
            tls.load_cert_chain(args.cert, args.key)
        except (OSError, ssl.SSLError) as exc:
            raise CliError(f"cannot load --cert {args.cert} and --key {args.key}: {exc}") from None
    limits: dict[str, Any] = {}
    if args.connect_timeout is not None:
        limits["connect_timeout"] = args.connect_timeout
    if args.max_msg_sz is not None:
        limits["max_receive_message_size"] = args.max_msg_sz
    try:
        return Channel(
            args.target,
            tls=tls,
            server_hostname=args.servername or args.authority,
            settings=ChannelSettings(**limits),
        )
    except ValueError:
        raise UsageError(f"the address {args.target!r} is not HOST:PORT (or unix:PATH)") from None


async def _act(
    channel: Channel, args: argparse.Namespace, files: list[descriptor_pb2.FileDescriptorProto] | None
) -> int:
    async with contextlib.AsyncExitStack() as stack:
        source: DescriptorSource
        if files is not None:
            source = FileSource(files)
        else:
            metadata = args.headers + args.reflect_headers
            source = await stack.enter_async_context(ReflectionSource(channel, metadata, args.timeout))
        if args.command == "list":
            used = await _list(source, args.symbol)
        elif args.command == "describe":
            used = await _describe(source, args.symbol, args.msg_template)
        else:
            method = await _find_method(source, args.rpc)
            used = [method.containing_service.full_name]
        if args.protoset_out is not None:
            _write_protoset(source, used, args.protoset_out)
        if args.command is not None:
            return 0
    return await _call(channel, method, source, args)


def _write_protoset(source: DescriptorSource, symbols: list[str], path: str) -> None:
    """The files declaring `symbols` and all they import, dependencies first, as one descriptor set."""
    descriptor_set = descriptor_pb2.FileDescriptorSet()
    written: set[str] = set()

    def write(file: FileDescriptor) -> None:
        if file.name in written:
            return
        written.add(file.name)
        for dependency in file.dependencies:
            write(dependency)
        file.CopyToProto(descriptor_set.file.add())

    for symbol in symbols:
        with contextlib.suppress(KeyError):
            write(source.pool.FindFileContainingSymbol(symbol))
    try:
        with open(path, "wb") as out:
            out.write(descriptor_set.SerializeToString())
    except OSError as exc:
        raise CliError(f"cannot write --protoset-out {path}: {exc.strerror}") from None


# -- list and describe ------------------------------------------------------------------------------


async def _list(source: DescriptorSource, service_name: str | None) -> list[str]:
    """Print the services, or the methods of one; return the symbols shown (for --protoset-out)."""
    if service_name is None:
        services = await source.services()
        print("\n".join(services))
        return [name for name in services if await source.load(name)]
    service_name = service_name.lstrip(".")
    if service_name not in await source.services() or not await source.load(service_name):
        raise _unknown("service", service_name, await source.services())
    service = source.pool.FindServiceByName(service_name)
    print("\n".join(method.full_name for method in service.methods))
    return [service_name]


async def _describe(source: DescriptorSource, symbol: str | None, msg_template: bool) -> list[str]:
    """Print the symbol (or every service) as .proto source; return the symbols shown."""
    symbols = [symbol.lstrip(".").replace("/", ".")] if symbol else await source.services()
    texts = []
    for name in symbols:
        text = _proto_text.describe(source.pool, name) if await source.load(name) else None
        if text is None:
            raise _unknown("symbol", name, await _known_symbols(source))
        if msg_template:
            text += _templates(source.pool, name)
        texts.append(text)
    print("\n\n".join(texts))
    return symbols


def _templates(pool: descriptor_pool.DescriptorPool, name: str) -> str:
    """JSON requests with every field: for a message, or for a method's request."""
    with contextlib.suppress(KeyError):
        name = pool.FindMethodByName(name).input_type.full_name
    try:
        message_type = message_factory.GetMessageClass(pool.FindMessageTypeByName(name))
    except KeyError:
        return ""  # a service or an enum: no request to show
    return f"\n\nMessage template of {name}:\n{template(message_type, pool)}"


async def _known_symbols(source: DescriptorSource) -> list[str]:
    """Services, methods and message types of every service's file, for suggestions."""
    names = []
    for service_name in await source.services():
        if not await source.load(service_name):
            continue
        service = source.pool.FindServiceByName(service_name)
        names.append(service.full_name)
        names += [method.full_name for method in service.methods]
        names += [message.full_name for message in service.file.message_types_by_name.values()]
    return names


async def _all_methods(source: DescriptorSource) -> list[str]:
    methods = []
    for service_name in await source.services():
        if await source.load(service_name):
            methods += [method.full_name for method in source.pool.FindServiceByName(service_name).methods]
    return methods


def _unknown(kind: str, name: str, known: list[str]) -> CliError:
    return CliError(f"unknown {kind} {name}", _did_you_mean(name, known))


def _did_you_mean(name: str, known: list[str]) -> str:
    close = _close(name, known)
    if close:
        return f"did you mean {' or '.join(close)}?"
    return "`chatter-from-descriptors list` shows the services, `list SERVICE` their methods"


async def _find_method(source: DescriptorSource, name: str) -> MethodDescriptor:
    full_name = name.lstrip("/").replace("/", ".")
    service_name, _, method_name = full_name.rpartition(".")
    if not service_name:
        raise UsageError(f"the method {name} names no service", "write package.Service.Method")
    service = await _service(source, service_name)
    if service is not None and method_name in service.methods_by_name:
        return service.methods_by_name[method_name]
    if service is None:  # the method, in the services named like the one given
        services = [await _service(source, close) for close in _close(service_name, await source.services())]
        candidates = [
            s.full_name + "." + method_name for s in services if s and method_name in s.methods_by_name
        ]
        if candidates:
            hint = f"did you mean {' or '.join(candidates)}?"
        elif any(services):
            names = " or ".join(s.full_name for s in services if s)
            hint = f"did you mean {names}? (`chatter-from-descriptors list SERVICE` shows its methods)"
        else:
            hint = _did_you_mean(full_name, await _all_methods(source))
        raise CliError(f"unknown service {service_name}", hint)
    candidates = [f"{service_name}.{close}" for close in _close(method_name, list(service.methods_by_name))]
    if candidates:
        raise CliError(f"unknown method {full_name}", f"did you mean {' or '.join(candidates)}?")
    names = ", ".join(method.name for method in service.methods)
    raise CliError(f"unknown method {full_name} ({service_name} has {names})")


async def _service(source: DescriptorSource, name: str) -> ServiceDescriptor | None:
    if await source.load(name):
        with contextlib.suppress(KeyError):
            return source.pool.FindServiceByName(name)
    return None


def _close(name: str, known: list[str]) -> list[str]:
    """Up to three names in `known` most like `name`: containing it, or spelled nearly the same."""
    containing = [k for k in known if name.lower() in k.lower()]
    scored = sorted(((difflib.SequenceMatcher(None, name, k).ratio(), k) for k in known), reverse=True)
    similar = [k for score, k in scored if score >= 0.6 and score >= scored[0][0] - 0.05]
    return list(dict.fromkeys(containing + similar))[:3]


# -- calling ----------------------------------------------------------------------------------------


async def _requests(args: argparse.Namespace) -> AsyncIterator[object]:
    """The requests of --data, or of stdin with `-d @`, as they complete: JSON values, or text messages."""
    splitter = JsonObjects() if args.format == "json" else TextMessages()
    source = "stdin" if args.data == "@" else "--data"
    try:
        if args.data is None:
            return
        if args.data != "@":
            for value in splitter.feed(args.data, final=True):
                yield value
            return
        reader = StdinReader()
        while text := await reader.read_text():
            for value in splitter.feed(text):
                yield value
        for value in splitter.feed("", final=True):
            yield value
    except InvalidJson as exc:
        raise CliError(f"{source} is not valid JSON: {exc} (in JSON value {splitter.count + 1})") from None


class _Counts:
    sent = 0
    received = 0

    def line(self) -> str:
        return f"Sent {_plural(self.sent, 'request')} and received {_plural(self.received, 'response')}"


def _plural(count: int, noun: str) -> str:
    return f"{count} {noun}" + ("" if count == 1 else "s")


async def _call(
    channel: Channel, method: MethodDescriptor, source: DescriptorSource, args: argparse.Namespace
) -> int:
    stub_method = Stub(channel, method.containing_service).methods[method.name]
    request_type = stub_method.spec.request_type
    pool = source.pool
    counts = _Counts()
    metadata = args.headers + args.rpc_headers

    async def messages() -> AsyncIterator[Message]:
        async for value in _requests(args):
            try:
                message = _parse(value, request_type, pool, args)
            except RequestError as exc:
                which = f"request {counts.sent + 1}" if method.client_streaming else "the request"
                raise CliError(f"{which} {exc}") from None
            counts.sent += 1
            yield message

    request = None
    if not method.client_streaming:
        requests = [message async for message in messages()]
        if len(requests) > 1:
            raise CliError(f"{method.full_name} takes one request, not {len(requests)}")
        request = requests[0] if requests else request_type()
        counts.sent = 1
    if args.verbose:
        _verbose(f"Resolved method descriptor:\n{_proto_text.method_line(method)}")
        _verbose(f"Request metadata to send:\n{_metadata_lines(metadata)}")
    try:
        async with contextlib.AsyncExitStack() as stack:
            call = stub_method.open(request, timeout=args.timeout, metadata=metadata)
            try:
                await stack.enter_async_context(call)
            except RpcError as exc:  # could not connect: a one-line error with a hint
                raise rpc_error(exc, args.target, args.insecure, "--target") from None
            async with trio.open_nursery() as nursery:
                if method.client_streaming:
                    nursery.start_soon(_send_all, call, messages())
                await _print_responses(call, pool, args, counts)
                nursery.cancel_scope.cancel()  # the server is done: stop reading requests
    except Exception as exc:
        error = sole_exception(exc)
        if not isinstance(error, RpcError):
            raise
        if args.verbose:
            _verbose(f"Response trailers received:\n{_metadata_lines(error.trailing_metadata)}")
            _verbose(counts.line(), blank_line=False)
        _print_status(error)
        return EXIT_STATUS_BASE + error.code.value
    if args.verbose:
        _verbose(f"Response trailers received:\n{_metadata_lines(call.trailing_metadata)}")
        _verbose(counts.line(), blank_line=False)
    return 0


#: A call that ends with status code N exits with this plus N, as grpcurl does.
EXIT_STATUS_BASE = 64


def _parse(value: object, request_type: type[Message], pool: Any, args: argparse.Namespace) -> Message:
    if isinstance(value, str) and args.format == "text":
        return text_to_message(value, request_type, pool, allow_unknown=args.allow_unknown_fields)
    return to_message(value, request_type, pool, allow_unknown=args.allow_unknown_fields)


async def _print_responses(call: Call, pool: Any, args: argparse.Namespace, counts: _Counts) -> None:
    """Each response on stdout as it comes (the one response of a unary-response call, too)."""
    if args.verbose:
        _verbose(f"Response headers received:\n{_metadata_lines(await call.initial_metadata())}")
    async for response in call:
        if args.format == "text":
            separator = TextMessages.SEPARATOR if counts.received else ""
            print(separator + to_text(response, pool), flush=True)
        else:
            print(to_json(response, pool, emit_defaults=args.emit_defaults), flush=True)
        counts.received += 1


def _verbose(text: str, *, blank_line: bool = True) -> None:
    """-v output goes to stderr, so that stdout stays only responses (grpcurl mixes both on stdout)."""
    print(text + ("\n" if blank_line else ""), file=sys.stderr, flush=True)


def _metadata_lines(metadata: Sequence[tuple[str, str | bytes]]) -> str:
    """'key: value' lines sorted by key (binary values in base64), or (empty), as grpcurl shows them."""
    lines = [
        f"{key}: {base64.b64encode(value).decode() if isinstance(value, bytes) else value}"
        for key, value in sorted(metadata, key=lambda item: item[0])
    ]
    return "\n".join(lines) or "(empty)"


async def _send_all(call: Call, messages: AsyncIterator[Message]) -> None:
    """Send the requests as they come, then half-close; if the call ends first, its status tells why."""
    with contextlib.suppress(RpcError):
        async for message in messages:
            await call.send(message)
        await call.done_writing()


def _print_status(error: RpcError) -> None:
    """The final status the way grpcurl prints it."""
    code = "".join(part.capitalize() for part in error.code.name.split("_"))
    print(f"ERROR:\n  Code: {code}\n  Message: {error.message}", file=sys.stderr, flush=True)


if __name__ == "__main__":
    main()
