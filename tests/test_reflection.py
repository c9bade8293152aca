"""trio_grpc.reflection against grpcio-reflection's client (v1alpha) and against our own client (v1).

The test service is compiled here by protoc from the .proto text below into a descriptor pool of its own,
so that the reflected files (with a shared import, extensions, nested types) can be compared byte for byte
with what protoc produced. Files registered from generated Python code (ours, and a user's) lack the
`json_name`s protoc computes; reflection fills them in, so they too go out as protoc's descriptor sets
describe them. A client that knows nothing but the address lists the services, fetches their
descriptors, builds message classes from them alone and calls the service.
"""

from __future__ import annotations

import ast
import contextlib
import functools
import queue
import re
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
import trio
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from google.protobuf.descriptor import ServiceDescriptor
from google.protobuf.message import Message
from grpc_reflection.v1alpha import reflection_pb2 as grpcio_reflection_pb2
from grpc_reflection.v1alpha import reflection_pb2_grpc as grpcio_reflection_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase

import trio_grpc
from chat._proto.rpc import catalog_pb2, chat_pb2
from trio_grpc import health, reflection
from trio_grpc._proto.grpc.health.v1 import health_pb2
from trio_grpc._proto.grpc.reflection.v1 import reflection_pb2 as reflection_v1

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:grpc")

REPO_ROOT = Path(__file__).resolve().parent.parent
GRPCIO_OPTIONS = [("grpc.enable_http_proxy", 0)]
NOT_FOUND = trio_grpc.StatusCode.NOT_FOUND.value

TEST_PROTOS = {
    "reflection_test/types.proto": """
        syntax = "proto2";
        package reflection_test;
        import "google/protobuf/timestamp.proto";
        message Extendable {
          optional string label = 1;
          extensions 100 to 199;
        }
        message Stamp { optional google.protobuf.Timestamp at = 1; }
    """,
    # Imports timestamp.proto both directly and through types.proto: it must still go out once.
    "reflection_test/echo.proto": """
        syntax = "proto2";
        package reflection_test;
        import "google/protobuf/timestamp.proto";
        import "reflection_test/types.proto";
        extend Extendable { optional int32 priority = 100; }
        message EchoRequest {
          enum Mood { CALM = 0; LOUD = 1; }
          message Envelope {
            optional string text = 1;
            extend Extendable { optional string note = 101; }
          }
          optional Envelope envelope = 1;
          optional Mood mood = 2;
          optional google.protobuf.Timestamp sent = 3;
        }
        message EchoReply {
          optional string text = 1;
          optional EchoRequest.Mood mood = 2;
          optional Stamp stamp = 3;
        }
        service Echo {
          rpc Echo(EchoRequest) returns (EchoReply);
          rpc EchoStream(stream EchoRequest) returns (stream EchoReply);
        }
    """,
}
ECHO_SERVICE = "reflection_test.Echo"
ECHO_FILES = ("reflection_test/echo.proto", "google/protobuf/timestamp.proto", "reflection_test/types.proto")
EXPECTED_SERVICES = sorted([ECHO_SERVICE, "rpc.ChatService", health.SERVICE_NAME, *reflection.SERVICE_NAMES])


def protoc(root: Path, proto: str, out_dir: Path, *extra: str) -> dict[str, bytes]:
    """protoc's serialized FileDescriptorProto of `proto` and of everything it imports, by file name.

    `root` is the include root; the descriptor set (and what `extra` options make) is written in `out_dir`.
    """
    grpc_tools = pytest.importorskip("grpc_tools")
    from grpc_tools import protoc as grpc_tools_protoc

    well_known = Path(grpc_tools.__file__).parent / "_proto"
    out = out_dir / "descriptor_set.pb"
    args = [
        "protoc",
        f"-I{root}",
        f"-I{well_known}",
        f"--descriptor_set_out={out}",
        "--include_imports",
        *extra,
        proto,
    ]
    assert grpc_tools_protoc.main(args) == 0, args
    return {
        file.name: file.SerializeToString()
        for file in descriptor_pb2.FileDescriptorSet.FromString(out.read_bytes()).file
    }


@pytest.fixture(scope="module")
def echo_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    root = tmp_path_factory.mktemp("protos")
    for name, text in TEST_PROTOS.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    files = protoc(root, "reflection_test/echo.proto", root)
    assert sorted(files) == sorted(ECHO_FILES)
    return files


@pytest.fixture(scope="module")
def ours(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    """protoc's descriptors of the files our generated code registers (chat, catalog, health), by name."""
    files: dict[str, bytes] = {}
    for proto in ("rpc/chat.proto", "rpc/catalog.proto", "grpc/health/v1/health.proto"):
        files.update(protoc(REPO_ROOT / "proto", proto, tmp_path_factory.mktemp("ours")))
    return files


def pool_of(files: dict[str, bytes] | list[bytes]) -> descriptor_pool.DescriptorPool:
    """A fresh pool holding `files` (serialized FileDescriptorProtos, in any order)."""
    pending = {
        descriptor_pb2.FileDescriptorProto.FromString(data).name: data
        for data in (files.values() if isinstance(files, dict) else files)
    }
    pool = descriptor_pool.DescriptorPool()
    while pending:  # add each file after the files it imports
        for name, data in list(pending.items()):
            if not set(descriptor_pb2.FileDescriptorProto.FromString(data).dependency) & set(pending):
                pool.AddSerializedFile(data)
                del pending[name]
    return pool


def message_class(service: ServiceDescriptor, method: str, side: str) -> type[Message]:
    descriptor = getattr(service.methods_by_name[method], f"{side}_type")
    return message_factory.GetMessageClass(descriptor)


class Echo:
    """reflection_test.Echo, on message classes from the service descriptor; EchoStream left UNIMPLEMENTED."""

    def __init__(self, service: ServiceDescriptor) -> None:
        self._reply_type = message_class(service, "Echo", "output")

    async def Echo(self, request: Any, context: trio_grpc.ServicerContext) -> Message:
        return self._reply_type(text=request.envelope.text.upper(), mood=request.mood)


@contextlib.asynccontextmanager
async def serving(echo_files: dict[str, bytes]) -> AsyncIterator[tuple[trio_grpc.Server, str]]:
    """Echo, rpc.ChatService (methods left unimplemented), health and reflection on 127.0.0.1."""
    echo = pool_of(echo_files).FindServiceByName(ECHO_SERVICE)
    chat = chat_pb2.DESCRIPTOR.services_by_name["ChatService"]
    server = trio_grpc.Server(
        [trio_grpc.bind_service(echo, Echo(echo)), trio_grpc.bind_service(chat, object())]
    )
    health.add_health(server)
    reflection.add_reflection(server)
    async with trio.open_nursery() as nursery:
        port = await nursery.start(functools.partial(server.serve_tcp, 0, host="127.0.0.1"))
        yield server, f"127.0.0.1:{port}"
        await server.shutdown(grace=1)


async def in_grpcio_thread(address: str, client: Callable[[grpc.Channel], Any]) -> Any:
    def run() -> Any:
        with grpc.insecure_channel(address, options=GRPCIO_OPTIONS) as channel:
            return client(channel)

    return await trio.to_thread.run_sync(run, abandon_on_cancel=True)  # so that fail_after fails it


# -- grpcio-reflection's client (v1alpha) ---------------------------------------------------------------


async def test_grpcio_client_knowing_only_the_address_lists_resolves_and_calls(
    echo_files: dict[str, bytes], ours: dict[str, bytes]
) -> None:
    def client(channel: grpc.Channel) -> None:
        database = ProtoReflectionDescriptorDatabase(channel)
        assert sorted(database.get_services()) == EXPECTED_SERVICES  # list_services
        pool = descriptor_pool.DescriptorPool(database)
        for name in database.get_services():
            service = pool.FindServiceByName(name)  # file_containing_symbol, file_by_filename for imports
            for method in service.methods:
                assert method.input_type.full_name and method.output_type.full_name
                assert pool.FindMethodByName(method.full_name) is method

        echo = pool.FindServiceByName(ECHO_SERVICE)
        request_type = message_class(echo, "Echo", "input")
        reply_type = message_class(echo, "Echo", "output")
        call = channel.unary_unary(
            f"/{ECHO_SERVICE}/Echo",
            request_serializer=request_type.SerializeToString,
            response_deserializer=reply_type.FromString,
        )
        request = request_type(
            envelope={"text": "hello"}, mood=request_type.DESCRIPTOR.enum_values_by_name["LOUD"].number
        )
        reply = call(request, timeout=5)
        assert reply.text == "HELLO" and reply.mood == 1

        # Extensions, as the pool asks for them (all_extension_numbers_of_type; the files are known already).
        extendable = pool.FindMessageTypeByName("reflection_test.Extendable")
        assert sorted(ext.full_name for ext in pool.FindAllExtensions(extendable)) == [
            "reflection_test.EchoRequest.Envelope.note",
            "reflection_test.priority",
        ]
        assert pool.FindExtensionByNumber(extendable, 100).full_name == "reflection_test.priority"

        # A reflected file is what protoc produced, byte for byte.
        for name, data in echo_files.items():
            assert database.FindFileByName(name).SerializeToString() == data

        # A database that knows nothing yet asks the server for these directly. (It never sends
        # file_containing_extension: protobuf's DescriptorDatabase answers that lookup with None itself.)
        fresh = ProtoReflectionDescriptorDatabase(channel)
        chat_file = fresh.FindFileByName("rpc/chat.proto")  # file_by_filename
        assert chat_file.SerializeToString() == ours["rpc/chat.proto"]
        with pytest.raises(KeyError):  # the database's reading of error_response NOT_FOUND
            fresh.FindFileByName("no/such.proto")
        with pytest.raises(KeyError):
            fresh.FindFileContainingSymbol("no.such.Symbol")

    with trio.fail_after(30):
        async with serving(echo_files) as (_, address):
            await in_grpcio_thread(address, client)


def grpcio_requests() -> tuple[queue.SimpleQueue[Any], Iterator[Any]]:
    """A request iterator for a grpcio streaming call, fed one request at a time (None ends it)."""
    pending: queue.SimpleQueue[Any] = queue.SimpleQueue()
    return pending, iter(pending.get, None)


async def test_grpcio_raw_v1alpha_stream_answers_errors_with_not_found_and_goes_on(
    echo_files: dict[str, bytes], ours: dict[str, bytes]
) -> None:
    Request = grpcio_reflection_pb2.ServerReflectionRequest
    ExtensionRequest = grpcio_reflection_pb2.ExtensionRequest

    def client(channel: grpc.Channel) -> None:
        stub = grpcio_reflection_grpc.ServerReflectionStub(channel)
        pending, requests = grpcio_requests()
        responses = stub.ServerReflectionInfo(requests, timeout=10)

        def ask(**fields: Any) -> Any:
            request = Request(host="localhost", **fields)
            pending.put(request)
            response = next(responses)
            assert response.original_request == request and response.valid_host == "localhost"
            return response

        for fields in (
            {"file_by_filename": "no/such.proto"},
            {"file_containing_symbol": "no.such.Symbol"},
            {
                "file_containing_extension": ExtensionRequest(
                    containing_type="reflection_test.Extendable", extension_number=150
                )
            },
            {"file_containing_extension": ExtensionRequest(containing_type="no.Such", extension_number=1)},
            {"all_extension_numbers_of_type": "no.Such"},
        ):
            response = ask(**fields)
            assert response.WhichOneof("message_response") == "error_response", fields
            assert response.error_response.error_code == NOT_FOUND, fields
        # The stream is still good after the errors.
        found = ask(
            file_containing_extension=ExtensionRequest(
                containing_type="reflection_test.Extendable", extension_number=101
            )
        )
        assert list(found.file_descriptor_response.file_descriptor_proto) == [
            echo_files[name] for name in ECHO_FILES
        ]
        chat = ask(file_by_filename="rpc/chat.proto").file_descriptor_response.file_descriptor_proto
        assert list(chat) == [ours["rpc/chat.proto"]]
        listed = ask(list_services="").list_services_response.service
        assert [service.name for service in listed] == EXPECTED_SERVICES
        pending.put(None)
        assert next(responses, None) is None

    with trio.fail_after(30):
        async with serving(echo_files) as (_, address):
            await in_grpcio_thread(address, client)


def generated_literal(source: Path) -> bytes:
    """The serialized file a generated _pb2 module registers: the Python generator's output, literally."""
    literal = re.search(r"AddSerializedFile\((b'.*?')\)\n", source.read_text(encoding="utf-8"))
    assert literal is not None, source
    data = ast.literal_eval(literal[1])
    assert isinstance(data, bytes)
    return data


def json_names(file: bytes) -> dict[str, str]:
    """The json_name of every field and extension in a serialized file, by full name ("" where unset)."""
    proto = descriptor_pb2.FileDescriptorProto.FromString(file)
    names: dict[str, str] = {}

    def add(scope: str, fields: Any, messages: Any) -> None:
        names.update({f"{scope}.{field.name}": field.json_name for field in fields})
        for message in messages:
            add(f"{scope}.{message.name}", [*message.field, *message.extension], message.nested_type)

    add(proto.package, proto.extension, proto.message_type)
    return names


def test_generated_code_registers_our_files_without_json_names() -> None:
    """Why reflection cannot send `serialized_pb` as it is: it lacks every name protoc computed."""
    for module, source in (
        (chat_pb2, REPO_ROOT / "chat/_proto/rpc/chat_pb2.py"),
        (health_pb2, REPO_ROOT / "trio_grpc/_proto/grpc/health/v1/health_pb2.py"),
    ):
        assert module.DESCRIPTOR.serialized_pb == generated_literal(source), source
        assert set(json_names(module.DESCRIPTOR.serialized_pb).values()) == {""}, source
    assert json_names(chat_pb2.DESCRIPTOR.serialized_pb)["rpc.PostRequest.room_id"] == ""


# Every case of protoc's rule, in every place a field can be: nested messages, a group, a oneof, a map
# entry, extensions at file and message scope, and an explicit json_name (kept as written).
JSON_NAMES_PROTO = """
    syntax = "proto2";
    package json_names;
    message Names {
      optional string room_id = 1;
      optional string two__underscores = 2;
      optional string _leading = 3;
      optional string trailing_ = 4;
      optional string digit_1st = 5;
      optional string Upper_Case = 6;
      optional string explicit_name = 7 [json_name = "custom_Name"];
      optional group Some_Group = 8 { optional int32 group_field = 1; }
      oneof the_choice { string one_of_them = 9; }
      map<string, int32> by_key = 10;
      message Inner_Message {
        optional int32 inner_field = 1;
        extend Names { optional int32 nested_ext = 101; }
      }
      optional Inner_Message inner = 11;
      extensions 100 to 199;
    }
    extend Names { optional int32 top_level_ext = 100; }
    service Lookup { rpc Get(Names) returns (Names); }
"""
EXPECTED_JSON_NAMES = {
    "json_names.top_level_ext": "topLevelExt",
    "json_names.Names.room_id": "roomId",
    "json_names.Names.two__underscores": "twoUnderscores",
    "json_names.Names._leading": "Leading",
    "json_names.Names.trailing_": "trailing",
    "json_names.Names.digit_1st": "digit1st",
    "json_names.Names.Upper_Case": "UpperCase",
    "json_names.Names.explicit_name": "custom_Name",
    "json_names.Names.some_group": "someGroup",
    "json_names.Names.one_of_them": "oneOfThem",
    "json_names.Names.by_key": "byKey",
    "json_names.Names.inner": "inner",
    "json_names.Names.Some_Group.group_field": "groupField",
    "json_names.Names.ByKeyEntry.key": "key",
    "json_names.Names.ByKeyEntry.value": "value",
    "json_names.Names.Inner_Message.inner_field": "innerField",
    "json_names.Names.Inner_Message.nested_ext": "nestedExt",
}


@pytest.fixture(scope="module")
def json_names_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[bytes, bytes]:
    """json_names.proto as protoc's descriptor set has it, and as its generated Python module registers it."""
    root = tmp_path_factory.mktemp("json_names")
    (root / "json_names.proto").write_text(JSON_NAMES_PROTO)
    [described] = protoc(root, "json_names.proto", root, f"--python_out={root}").values()
    generated = generated_literal(root / "json_names_pb2.py")
    assert json_names(described) == EXPECTED_JSON_NAMES  # the rule, as protoc applies it
    assert set(json_names(generated).values()) == {"", "custom_Name"}  # only the explicit one survives
    return described, generated


# -- our own client (v1) -------------------------------------------------------------------------------


class V1Reflection:
    """A v1 ServerReflectionInfo call driven one request at a time."""

    def __init__(self, call: trio_grpc.Call) -> None:
        self._call = call

    async def ask(self, **fields: Any) -> reflection_v1.ServerReflectionResponse:
        request = reflection_v1.ServerReflectionRequest(**fields)
        await self._call.send(request)
        response = await self._call.receive()
        assert isinstance(response, reflection_v1.ServerReflectionResponse)
        assert response.original_request == request
        return response

    async def files(self, **fields: Any) -> list[bytes]:
        response = await self.ask(**fields)
        assert response.WhichOneof("message_response") == "file_descriptor_response", response
        return list(response.file_descriptor_response.file_descriptor_proto)

    async def error_code(self, **fields: Any) -> int:
        response = await self.ask(**fields)
        assert response.WhichOneof("message_response") == "error_response", response
        return response.error_response.error_code


@contextlib.asynccontextmanager
async def v1_reflection(
    echo_files: dict[str, bytes],
) -> AsyncIterator[tuple[trio_grpc.Server, trio_grpc.Channel, V1Reflection]]:
    """A server as `serving` makes it, our channel to it, and one open v1 ServerReflectionInfo call."""
    service = reflection_v1.DESCRIPTOR.services_by_name["ServerReflection"]
    async with (
        serving(echo_files) as (server, address),
        trio_grpc.Channel(address) as channel,
        trio_grpc.Stub(channel, service).ServerReflectionInfo() as call,
    ):
        yield server, channel, V1Reflection(call)
        await call.done_writing()
        assert await call.receive() is None  # the server ends the call when we do


async def test_our_client_on_v1_lists_resolves_every_method_and_calls_with_what_it_found(
    echo_files: dict[str, bytes],
) -> None:
    with trio.fail_after(30):
        async with v1_reflection(echo_files) as (_, channel, v1):
            listed = (await v1.ask(list_services="")).list_services_response.service
            assert [entry.name for entry in listed] == EXPECTED_SERVICES
            files: dict[str, bytes] = {}
            for entry in listed:
                for data in await v1.files(file_containing_symbol=entry.name):
                    files.setdefault(descriptor_pb2.FileDescriptorProto.FromString(data).name, data)
            pool = pool_of(files)
            for entry in listed:
                for method in pool.FindServiceByName(entry.name).methods:
                    assert method.input_type.full_name and method.output_type.full_name

            echo = pool.FindServiceByName(ECHO_SERVICE)
            request_type = message_class(echo, "Echo", "input")
            reply = await trio_grpc.Stub(channel, echo).Echo(request_type(envelope={"text": "hi"}))
            assert reply.text == "HI"


async def test_v1_file_responses_hold_the_file_then_its_imports_once_each_as_protoc_made_them(
    echo_files: dict[str, bytes], ours: dict[str, bytes]
) -> None:
    with trio.fail_after(30):
        async with v1_reflection(echo_files) as (_, _, v1):
            echo = await v1.files(file_containing_symbol=ECHO_SERVICE)
            assert echo == [echo_files[name] for name in ECHO_FILES]
            assert await v1.files(file_by_filename="reflection_test/echo.proto") == echo
            assert await v1.files(file_containing_symbol="reflection_test.Stamp") == [
                echo_files["reflection_test/types.proto"],
                echo_files["google/protobuf/timestamp.proto"],
            ]
            assert await v1.files(file_by_filename="google/protobuf/timestamp.proto") == [
                echo_files["google/protobuf/timestamp.proto"]
            ]
            assert await v1.files(file_by_filename="rpc/chat.proto") == [ours["rpc/chat.proto"]]


async def test_v1_file_containing_symbol_finds_every_kind_of_symbol(
    echo_files: dict[str, bytes], ours: dict[str, bytes]
) -> None:
    with trio.fail_after(30):
        async with v1_reflection(echo_files) as (_, _, v1):
            echo = [echo_files[name] for name in ECHO_FILES]
            for symbol in (
                "reflection_test.Echo",  # service
                "reflection_test.Echo.EchoStream",  # method
                "reflection_test.EchoRequest",  # message
                "reflection_test.EchoRequest.Envelope",  # nested message
                "reflection_test.EchoRequest.Mood",  # nested enum
                "reflection_test.EchoRequest.LOUD",  # enum value (scoped beside its enum)
                "reflection_test.EchoRequest.envelope",  # field
                "reflection_test.priority",  # extension
                "reflection_test.EchoRequest.Envelope.note",  # nested extension
            ):
                assert await v1.files(file_containing_symbol=symbol) == echo, symbol
            # Our own services' files live in a private descriptor pool: found all the same.
            health_file = await v1.files(
                file_containing_symbol="grpc.health.v1.HealthCheckResponse.ServingStatus"
            )
            assert health_file == [ours["grpc/health/v1/health.proto"]]


async def test_v1_extension_requests(echo_files: dict[str, bytes]) -> None:
    with trio.fail_after(30):
        async with v1_reflection(echo_files) as (_, _, v1):
            numbers = await v1.ask(all_extension_numbers_of_type="reflection_test.Extendable")
            assert numbers.all_extension_numbers_response.base_type_name == "reflection_test.Extendable"
            assert list(numbers.all_extension_numbers_response.extension_number) == [100, 101]
            none = await v1.ask(all_extension_numbers_of_type="reflection_test.EchoReply")
            assert list(none.all_extension_numbers_response.extension_number) == []
            extension = reflection_v1.ExtensionRequest(
                containing_type="reflection_test.Extendable", extension_number=101
            )
            assert await v1.files(file_containing_extension=extension) == [
                echo_files[name] for name in ECHO_FILES
            ]


async def test_v1_unknown_names_get_not_found_and_the_stream_goes_on(
    echo_files: dict[str, bytes], ours: dict[str, bytes]
) -> None:
    missing_extension = reflection_v1.ExtensionRequest(
        containing_type="reflection_test.Extendable", extension_number=199
    )
    with trio.fail_after(30):
        async with v1_reflection(echo_files) as (server, _, v1):
            assert await v1.error_code(file_by_filename="reflection_test/missing.proto") == NOT_FOUND
            assert await v1.error_code(file_containing_symbol="reflection_test.Missing") == NOT_FOUND
            assert await v1.error_code(file_containing_extension=missing_extension) == NOT_FOUND
            assert await v1.error_code(all_extension_numbers_of_type="reflection_test.Missing") == NOT_FOUND
            assert await v1.error_code() == trio_grpc.StatusCode.INVALID_ARGUMENT.value  # asks nothing

            # Still answering, and the service list is the server's as of now.
            server.add_service(
                trio_grpc.bind_service(catalog_pb2.DESCRIPTOR.services_by_name["Catalog"], object())
            )
            listed = (await v1.ask(list_services="")).list_services_response.service
            assert [entry.name for entry in listed] == sorted([*EXPECTED_SERVICES, "rpc.Catalog"])
            assert await v1.files(file_containing_symbol="rpc.Catalog.GetProduct") == [
                ours["rpc/catalog.proto"]
            ]


async def test_v1_serves_json_names_as_protoc_computes_them_for_our_files_and_users(
    echo_files: dict[str, bytes], ours: dict[str, bytes], json_names_files: tuple[bytes, bytes]
) -> None:
    described, generated = json_names_files
    lookup = pool_of([generated]).FindServiceByName("json_names.Lookup")  # as a user's _pb2 registers it
    with trio.fail_after(30):
        async with v1_reflection(echo_files) as (server, _, v1):
            server.add_service(trio_grpc.bind_service(lookup, object()))
            [served] = await v1.files(file_containing_symbol="json_names.Lookup")
            assert json_names(served) == EXPECTED_JSON_NAMES
            assert served == described  # and nothing else differs from protoc's descriptor, byte for byte

            [chat] = await v1.files(file_containing_symbol="rpc.ChatService")
            assert chat == ours["rpc/chat.proto"]
            assert json_names(chat)["rpc.PostRequest.room_id"] == "roomId"
            assert "" not in json_names(chat).values()
