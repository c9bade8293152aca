"""chatter-from-descriptors: call any gRPC method from descriptors, JSON in and JSON out (like grpcurl).

Owns the command line and the three actions: `--rpc` calls a method (all four kinds; requests from --data
or a stream of JSON objects on stdin, one JSON document per response on stdout), `list` names services or
methods, `describe` shows a symbol as .proto source. Descriptors come from `cli._descriptors` (reflection,
.proto files, descriptor sets), JSON conversion from `cli._json_messages`, proto text from `cli._proto_text`.
Errors before the call are one line; a call that ends with a non-OK status prints it as grpcurl does.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import contextlib
import difflib
import sys
from collections.abc import AsyncIterator

import trio
from google.protobuf import descriptor_pb2
from google.protobuf.descriptor import MethodDescriptor, ServiceDescriptor
from google.protobuf.message import Message

from trio_grpc import Call, Channel, MetadataError, RpcError, Stub

from . import _proto_text
from ._common import CliError, add_tls_arguments, client_tls, open_channel, rpc_error, run, sole_exception
from ._descriptors import DescriptorSource, FileSource, ReflectionSource, compile_protos, read_descriptor_set
from ._json_messages import InvalidJson, JsonObjects, RequestError, to_json, to_message
from ._stdin import StdinReader

DESCRIPTION = """\
Call any method of a gRPC server, with JSON requests and responses, from descriptors found by server
reflection (the default), in .proto files (--proto, compiled with grpcio-tools) or in descriptor sets
(--protoset, from protoc --descriptor_set_out --include_imports).

  chatter-from-descriptors [options] --rpc METHOD [-d JSON | -d @]   call METHOD
  chatter-from-descriptors [options] list [SERVICE]                   list services, or a service's methods
  chatter-from-descriptors [options] describe [SYMBOL]                show a service, method or message

Requests follow the proto3 JSON mapping. For a streaming request, give several JSON objects (in -d, or
on stdin with -d @); they are sent as they are read while responses print as they come, one JSON
document each. Without -d, a unary request is the empty message and a request stream is empty.
A call that fails prints its status on stderr (ERROR: Code: ... Message: ...) and exits with 1.
"""

EPILOG = """\
examples (add --insecure for a plaintext server such as a default `chatserver`):
  chatter-from-descriptors --insecure list
  chatter-from-descriptors --insecure describe rpc.ChatService
  chatter-from-descriptors --insecure --rpc rpc.ChatService.CreateChatRoom -d '{"private": true}'
  chatter-from-descriptors --insecure --rpc rpc.ChatService/Listen -d '{"room_id": "ID"}'
  printf '{"room_id":"ID","message":{"name":"bot","message":"hi"}}' |
      chatter-from-descriptors --insecure --rpc rpc.ChatService.Post -d @
  chatter-from-descriptors --proto rpc/chat.proto -I proto describe rpc.JoinChat
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="chatter-from-descriptors",
        usage="%(prog)s [options] (--rpc METHOD [-d JSON|@] | list [SERVICE] | describe [SYMBOL])",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("command", nargs="?", choices=["list", "describe"], help=argparse.SUPPRESS)
    parser.add_argument("symbol", nargs="?", help=argparse.SUPPRESS)
    parser.add_argument(
        "--target", default="localhost:8080", metavar="HOST:PORT", help="the server (default: %(default)s)"
    )
    add_tls_arguments(parser)
    call = parser.add_argument_group("calling")
    call.add_argument(
        "--rpc", metavar="METHOD", help="the method: package.Service.Method or package.Service/Method"
    )
    call.add_argument(
        "-d",
        "--data",
        metavar="JSON|@",
        help="request(s) as JSON; @ reads a stream of JSON objects from stdin",
    )
    call.add_argument(
        "-H",
        "--header",
        dest="headers",
        action="append",
        default=[],
        type=_header,
        metavar="'KEY: VALUE'",
        help="request metadata, repeatable (values of -bin keys in base64)",
    )
    call.add_argument("--timeout", type=_seconds, metavar="SECONDS", help="deadline of each call")
    call.add_argument(
        "--emit-defaults", action="store_true", help="show fields that have their default value, too"
    )
    sources = parser.add_argument_group("descriptors (default: server reflection, v1 then v1alpha)")
    sources.add_argument(
        "--proto", action="append", default=[], metavar="FILE", help=".proto source file, repeatable"
    )
    sources.add_argument(
        "-I",
        "--import-path",
        action="append",
        default=[],
        metavar="DIR",
        help="where --proto files and their imports are found, repeatable (default: .)",
    )
    sources.add_argument(
        "--protoset", action="append", default=[], metavar="FILE", help="binary descriptor set, repeatable"
    )
    return parser


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


def _seconds(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be more than 0, not {text}")
    return value


def main(argv: list[str] | None = None) -> None:
    parser = build_parser()
    args = parser.parse_intermixed_args(argv)
    if args.command is None and args.rpc is None:
        parser.error("say what to do: --rpc METHOD, list or describe")
    if args.command is not None and args.rpc is not None:
        parser.error(f"--rpc calls a method; it does not go with {args.command}")
    if args.command is None and args.symbol is not None:
        parser.error(f"unexpected argument {args.symbol!r}")
    if args.data is not None and args.rpc is None:
        parser.error("-d/--data goes with --rpc")
    if args.import_path and not args.proto:
        parser.error("-I/--import-path goes with --proto")
    run(lambda: _main(args))


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
    tls = client_tls(args)
    async with open_channel(args.target, tls, "--target") as channel:
        try:
            code = await _act(channel, args, files)
        except Exception as exc:
            error = sole_exception(exc)
            if isinstance(error, RpcError):
                raise rpc_error(error, args.target, tls is None, "--target") from None
            if isinstance(error, MetadataError):
                raise CliError(f"-H: {error}") from None
            raise
    return code


async def _act(
    channel: Channel, args: argparse.Namespace, files: list[descriptor_pb2.FileDescriptorProto] | None
) -> int:
    async with contextlib.AsyncExitStack() as stack:
        source: DescriptorSource
        if files is not None:
            source = FileSource(files)
        else:
            source = await stack.enter_async_context(ReflectionSource(channel, args.headers, args.timeout))
        if args.command == "list":
            await _list(source, args.symbol)
            return 0
        if args.command == "describe":
            await _describe(source, args.symbol)
            return 0
        method = await _find_method(source, args.rpc)
    return await _call(channel, method, source, args)


# -- list and describe ------------------------------------------------------------------------------


async def _list(source: DescriptorSource, service_name: str | None) -> None:
    if service_name is None:
        print("\n".join(await source.services()))
        return
    service_name = service_name.lstrip(".")
    if service_name not in await source.services() or not await source.load(service_name):
        raise _unknown("service", service_name, await source.services())
    service = source.pool.FindServiceByName(service_name)
    print("\n".join(method.full_name for method in service.methods))


async def _describe(source: DescriptorSource, symbol: str | None) -> None:
    symbols = [symbol.lstrip(".").replace("/", ".")] if symbol else await source.services()
    texts = []
    for name in symbols:
        text = _proto_text.describe(source.pool, name) if await source.load(name) else None
        if text is None:
            raise _unknown("symbol", name, await _known_symbols(source))
        texts.append(text)
    print("\n\n".join(texts))


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
        raise CliError(f"--rpc {name} names no service", "write package.Service.Method")
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
    """The JSON values of --data, or of stdin with `-d @`, as they complete."""
    objects = JsonObjects()
    source = "stdin" if args.data == "@" else "--data"
    try:
        if args.data is None:
            return
        if args.data != "@":
            for value in objects.feed(args.data, final=True):
                yield value
            return
        reader = StdinReader()
        while text := await reader.read_text():
            for value in objects.feed(text):
                yield value
        for value in objects.feed("", final=True):
            yield value
    except InvalidJson as exc:
        raise CliError(f"{source} is not valid JSON: {exc} (in JSON value {objects.count + 1})") from None


async def _call(
    channel: Channel, method: MethodDescriptor, source: DescriptorSource, args: argparse.Namespace
) -> int:
    stub_method = Stub(channel, method.containing_service).methods[method.name]
    request_type = stub_method.spec.request_type
    pool = source.pool
    number = 0

    async def messages() -> AsyncIterator[Message]:
        nonlocal number
        async for value in _requests(args):
            number += 1
            try:
                yield to_message(value, request_type, pool)
            except RequestError as exc:
                which = f"request {number}" if method.client_streaming else "the request"
                raise CliError(f"{which} {exc}") from None

    request = None
    if not method.client_streaming:
        requests = [message async for message in messages()]
        if len(requests) > 1:
            raise CliError(f"{method.full_name} takes one request, not {len(requests)}")
        request = requests[0] if requests else request_type()
    try:
        async with contextlib.AsyncExitStack() as stack:
            call = stub_method.open(request, timeout=args.timeout, metadata=args.headers)
            try:
                await stack.enter_async_context(call)
            except RpcError as exc:  # could not connect: a one-line error with a hint
                raise rpc_error(exc, args.target, args.insecure, "--target") from None
            async with trio.open_nursery() as nursery:
                if method.client_streaming:
                    nursery.start_soon(_send_all, call, messages())
                async for response in call:  # the one response of a unary-response call, too
                    print(to_json(response, pool, emit_defaults=args.emit_defaults), flush=True)
                nursery.cancel_scope.cancel()  # the server is done: stop reading requests
    except Exception as exc:
        error = sole_exception(exc)
        if not isinstance(error, RpcError):
            raise
        _print_status(error)
        return 1
    return 0


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
