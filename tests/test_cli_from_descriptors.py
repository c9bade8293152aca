"""chatter-from-descriptors as a subprocess: every descriptor source (reflection v1 from chatserver, v1alpha
from a grpcio server, .proto files, descriptor sets), every kind of call, list and describe, and the errors
(unknown method with suggestions, JSON that does not fit, final status as grpcurl prints it, connection)."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from concurrent import futures
from pathlib import Path

import grpc
import pytest
from grpc_reflection.v1alpha import reflection

from cli.from_descriptors import main as from_descriptors_main
from tests.grpcio_stubs import test_pb2_grpc
from tests.interop._proto.grpc.testing import messages_pb2, test_pb2
from tests.test_cli_chatserver import (
    ChatServer,
    Proc,
    Result,
    clean_env,
    cli,
    command,
    in_process,
    running_chatserver,
)

PROTO_ROOT = Path(__file__).resolve().parents[1] / "proto"
TEST_SERVICE = test_pb2.DESCRIPTOR.services_by_name["TestService"].full_name


@pytest.fixture(scope="module")
def chatserver() -> Iterator[ChatServer]:
    yield from running_chatserver()


def call(target: str, *args: str, input: str | None = None, env: dict[str, str] | None = None) -> Result:
    return cli("from_descriptors", "--insecure", "--target", target, *args, input=input, env=env)


def json_values(text: str) -> list[object]:
    """Every JSON document in `text` (the output must be nothing else)."""
    decoder, values, position = json.JSONDecoder(), [], 0
    while text[position:].strip():
        while text[position].isspace():
            position += 1
        value, position = decoder.raw_decode(text, position)
        values.append(value)
    return values


# -- a grpcio server: grpc.testing.TestService, with grpcio's reflection (v1alpha only) or without ------


class InteropServicer(test_pb2_grpc.TestServiceServicer):
    def UnaryCall(self, request, context):  # type: ignore[no-untyped-def]
        user = dict(context.invocation_metadata()).get("x-user", "")
        body = b"a" * request.response_size
        return messages_pb2.SimpleResponse(username=user, payload=messages_pb2.Payload(body=body))

    def StreamingOutputCall(self, request, context):  # type: ignore[no-untyped-def]
        for parameters in request.response_parameters:
            payload = messages_pb2.Payload(body=b"a" * parameters.size)
            yield messages_pb2.StreamingOutputCallResponse(payload=payload)

    def StreamingInputCall(self, request_iterator, context):  # type: ignore[no-untyped-def]
        size = sum(len(request.payload.body) for request in request_iterator)
        return messages_pb2.StreamingInputCallResponse(aggregated_payload_size=size)

    def FullDuplexCall(self, request_iterator, context):  # type: ignore[no-untyped-def]
        for request in request_iterator:
            yield from self.StreamingOutputCall(request, context)


@pytest.fixture(scope="module")
def grpcio_servers() -> Iterator[dict[str, str]]:
    """Targets of two grpcio servers: "reflection" (v1alpha, all grpcio has) and "plain" (no reflection)."""
    targets, servers = {}, []
    for variant in ("reflection", "plain"):
        server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
        test_pb2_grpc.add_TestServiceServicer_to_server(InteropServicer(), server)
        if variant == "reflection":
            reflection.enable_server_reflection([TEST_SERVICE, reflection.SERVICE_NAME], server)
        targets[variant] = f"127.0.0.1:{server.add_insecure_port('127.0.0.1:0')}"
        server.start()
        servers.append(server)
    yield targets
    for server in servers:
        server.stop(None)


@pytest.fixture(scope="module")
def protoset(tmp_path_factory: pytest.TempPathFactory) -> str:
    from grpc_tools import protoc

    path = str(tmp_path_factory.mktemp("protoset") / "test.protoset")
    arguments = ["protoc", f"-I{PROTO_ROOT}", f"--descriptor_set_out={path}", "--include_imports"]
    assert protoc.main([*arguments, "grpc/testing/test.proto"]) == 0
    return path


SOURCES = {
    "reflection-v1alpha": [],
    "proto-files": ["--proto", "grpc/testing/test.proto", "-I", str(PROTO_ROOT)],
    "protoset": ["--protoset", "PROTOSET"],
}


@pytest.mark.parametrize("source", SOURCES)
def test_every_kind_against_grpcio(grpcio_servers: dict[str, str], protoset: str, source: str) -> None:
    target = grpcio_servers["reflection" if source.startswith("reflection") else "plain"]
    options = [protoset if option == "PROTOSET" else option for option in SOURCES[source]]
    method = f"{TEST_SERVICE}/"

    unary = call(
        target, *options, "--rpc", method + "UnaryCall", "-d", '{"response_size": 3}', "-H", "x-user: ann"
    )
    assert unary.code == 0, unary
    assert json_values(unary.stdout) == [{"username": "ann", "payload": {"body": "YWFh"}}]

    sizes = '{"responseParameters": [{"size": 1}, {"size": 2}]}'
    output = call(target, *options, "--rpc", method + "StreamingOutputCall", "-d", sizes)
    assert output.code == 0, output
    assert json_values(output.stdout) == [{"payload": {"body": "YQ=="}}, {"payload": {"body": "YWE="}}]

    uploads = '{"payload": {"body": "YWFh"}}\n{"payload": {"body": "YQ=="}}\n'
    input_ = call(target, *options, "--rpc", method + "StreamingInputCall", "-d", "@", input=uploads)
    assert input_.code == 0, input_
    assert json_values(input_.stdout) == [{"aggregatedPayloadSize": 4}]

    duplex = call(target, *options, "--rpc", method + "FullDuplexCall", "-d", "@", input=sizes + sizes)
    assert duplex.code == 0, duplex
    assert len(json_values(duplex.stdout)) == 4


def test_grpcio_server_without_reflection(grpcio_servers: dict[str, str]) -> None:
    result = call(grpcio_servers["plain"], "list")
    assert result.code == 1
    assert result.error_line() == (
        "error: the server does not offer reflection (Method not found!); "
        "give the descriptors with --proto FILE or --protoset FILE"
    )


def test_list_and_describe_by_reflection_v1(chatserver: ChatServer) -> None:
    services = call(chatserver.target, "list")
    assert services.code == 0
    assert services.stdout.splitlines() == [
        "grpc.health.v1.Health",
        "grpc.reflection.v1.ServerReflection",
        "grpc.reflection.v1alpha.ServerReflection",
        "rpc.Catalog",
        "rpc.ChatService",
    ]
    methods = call(chatserver.target, "list", "rpc.ChatService")
    assert methods.stdout.splitlines() == [
        f"rpc.ChatService.{name}"
        for name in ("Chat", "CreateChatRoom", "ListChatRooms", "DeleteChatRoom", "Listen", "Post")
    ]
    service = call(chatserver.target, "describe", "rpc.Catalog")
    assert service.stdout == (
        "rpc.Catalog is a service:\n"
        "service Catalog {\n"
        "  rpc ListProducts ( .rpc.ListProductsRequest ) returns ( .rpc.ProductList );\n"
        "  rpc GetProduct ( .rpc.GetProductRequest ) returns ( .rpc.Product );\n"
        "  rpc CreateProduct ( .rpc.CreateProductRequest ) returns ( .rpc.Product );\n"
        "  rpc DeleteProduct ( .rpc.DeleteProductRequest ) returns ( .rpc.Product );\n"
        "}\n"
    )
    method = call(chatserver.target, "describe", "rpc.ChatService/Chat")
    assert method.stdout == (
        "rpc.ChatService.Chat is a method:\n"
        "rpc Chat ( stream .rpc.ChatMessage ) returns ( stream .rpc.Message );\n"
    )
    message = call(chatserver.target, "describe", "rpc.PostRequest")
    assert message.stdout == (
        "rpc.PostRequest is a message:\n"
        "message PostRequest {\n  string room_id = 1;\n  .rpc.Message message = 2;\n}\n"
    )
    enum = call(chatserver.target, "describe", "grpc.health.v1.HealthCheckResponse.ServingStatus")
    assert enum.stdout.startswith(
        "grpc.health.v1.HealthCheckResponse.ServingStatus is an enum:\nenum ServingStatus {"
    )


def test_describe_from_files_without_a_server(protoset: str) -> None:
    result = cli("from_descriptors", "--protoset", protoset, "describe", "grpc.testing.ResponseParameters")
    assert result.code == 0, result
    assert "message ResponseParameters {\n  int32 size = 1;\n  int32 interval_us = 2;\n" in result.stdout


def test_every_kind_against_chatserver(chatserver: ChatServer) -> None:
    target = chatserver.target
    created = call(target, "--rpc", "rpc.ChatService.CreateChatRoom", "-d", '{"private": true}')
    assert created.code == 0, created
    [room] = json_values(created.stdout)
    assert isinstance(room, dict)
    room_id = room["roomId"]

    def running(*args: str) -> Proc:
        return Proc(command("from_descriptors", "--insecure", "--target", target, *args), env=clean_env())

    listen = running("--rpc", "rpc.ChatService.Listen", "-d", json.dumps({"room_id": room_id}))
    chat = running("--rpc", "rpc.ChatService.Chat", "-d", "@")
    try:
        chat.send(json.dumps({"join": {"room_id": room_id, "name": "bot"}}) + "\n")
        chat.expect('"message": "Has joined the chat"')
        listen.expect('"message": "Has joined the chat"')  # the room's history
        chat.send('{"message": {"message": "beep"}}\n')
        listen.expect('"message": "beep"')

        posts = "".join(
            json.dumps({"room_id": room_id, "message": {"name": "p", "message": m}}) for m in "xy"
        )
        posted = call(target, "--rpc", "rpc.ChatService.Post", "-d", "@", input=posts)
        assert posted.code == 0, posted
        assert json_values(posted.stdout) == [{"accepted": 2}]
        chat.expect('"message": "y"')

        chat.close_stdin()  # half-close: the server says goodbye and ends the call with OK
        assert chat.wait() == 0
        listen.expect('"message": "Has left the chat"')
        deleted = call(
            target, "--rpc", "rpc.ChatService.DeleteChatRoom", "-d", json.dumps({"room_id": room_id})
        )
        assert deleted.code == 0, deleted
        listen.expect('"message": "chat room is closing"')
        assert listen.wait() == 0
        for proc in (chat, listen):
            values = json_values("\n".join(proc.lines()))  # valid JSON, one document per response
            assert all(isinstance(value, dict) and set(value) <= {"name", "message"} for value in values)
    finally:
        chat.stop()
        listen.stop()


def test_seed_readme_example(chatserver: ChatServer) -> None:
    """`chatter-from-descriptors --rpc rpc.ChatServer.CreateChatRoom --data='{"room_id":"abcdefg"}'`"""
    target = ["--target", chatserver.target]
    as_written = cli(
        "from_descriptors", *target, "--rpc", "rpc.ChatServer.CreateChatRoom", '--data={"room_id":"abcdefg"}'
    )
    assert as_written.code == 1
    assert as_written.error_line().endswith("the server speaks plaintext (UNAVAILABLE); add --insecure")

    plaintext = call(
        chatserver.target, "--rpc", "rpc.ChatServer.CreateChatRoom", '--data={"room_id":"abcdefg"}'
    )
    assert plaintext.code == 1
    assert plaintext.error_line() == (
        "error: unknown service rpc.ChatServer; did you mean rpc.ChatService.CreateChatRoom?"
    )
    service_fixed = call(
        chatserver.target, "--rpc", "rpc.ChatService.CreateChatRoom", '--data={"room_id":"abcdefg"}'
    )
    assert service_fixed.code == 1
    assert service_fixed.error_line() == (
        "error: the request does not fit rpc.CreateChatRoomRequest: "
        'no field "room_id" (rpc.CreateChatRoomRequest has: private)'
    )


@pytest.mark.parametrize(
    ("args", "line"),
    [
        (
            ["--rpc", "rpc.ChatService.CreateChatRom"],
            "error: unknown method rpc.ChatService.CreateChatRom; "
            "did you mean rpc.ChatService.CreateChatRoom?",
        ),
        (
            ["--rpc", "rpc.Catalog/Xyzzy"],
            "error: unknown method rpc.Catalog.Xyzzy "
            "(rpc.Catalog has ListProducts, GetProduct, CreateProduct, DeleteProduct)",
        ),
        (["describe", "rpc.JoinChta"], "error: unknown symbol rpc.JoinChta; did you mean rpc.JoinChat?"),
        (["list", "rpc.Catalogue"], "error: unknown service rpc.Catalogue; did you mean rpc.Catalog?"),
        (
            ["--rpc", "rpc.ChatService.Chat", "-d", '{"join": {"rom_id": "x"}}'],
            'error: request 1 does not fit rpc.ChatMessage: no field "join.rom_id" '
            '(rpc.JoinChat has: room_id, name); did you mean "room_id"?',
        ),
        (
            ["--rpc", "rpc.Catalog.GetProduct", "-d", '{"product_id": true}'],
            'error: the request does not fit rpc.GetProductRequest: field "product_id" takes an integer, '
            "not a boolean: true",
        ),
        (
            ["--rpc", "rpc.Catalog.GetProduct", "-d", '{"product_id": "abc"}'],
            'error: the request does not fit rpc.GetProductRequest: field "product_id" takes an integer, '
            'not a string: "abc"',
        ),
        (
            [
                "--rpc",
                "rpc.Catalog.ListProducts",
                "-d",
                '{"pagination_parameters": {"page_size": 9999999999}}',
            ],
            "error: the request does not fit rpc.ListProductsRequest: "
            'field "pagination_parameters.page_size": Value out of range: 9999999999',
        ),
        (
            ["--rpc", "rpc.Catalog.GetProduct", "-d", "[1]"],
            "error: the request does not fit rpc.GetProductRequest: it must be a JSON object, not an array",
        ),
        (
            ["--rpc", "rpc.Catalog.GetProduct", "-d", '{"product_id": 1'],
            "error: --data is not valid JSON: Expecting ',' delimiter at line 1 column 17 (in JSON value 1)",
        ),
        (
            ["--rpc", "rpc.Catalog.GetProduct", "-d", "{} {}"],
            "error: rpc.Catalog.GetProduct takes one request, not 2",
        ),
        (
            ["--rpc", "rpc.Catalog.GetProduct", "-H", "grpc-timeout: 1S"],
            "error: -H: metadata key 'grpc-timeout' is reserved for the protocol",
        ),
    ],
)
def test_error_lines(chatserver: ChatServer, args: list[str], line: str) -> None:
    result = call(chatserver.target, *args)
    assert result.code == 1
    assert result.error_line() == line


def test_final_status_is_printed_as_grpcurl_does(chatserver: ChatServer) -> None:
    result = call(chatserver.target, "--rpc", "rpc.ChatService.DeleteChatRoom", "-d", '{"room_id": "nope"}')
    assert (result.code, result.stdout) == (1, "")
    assert result.stderr == "ERROR:\n  Code: NotFound\n  Message: room nope does not exist\n"


def test_timeout(chatserver: ChatServer) -> None:
    room = json_values(call(chatserver.target, "--rpc", "rpc.ChatService.CreateChatRoom").stdout)[0]
    assert isinstance(room, dict)
    request = json.dumps({"room_id": room["roomId"]})
    result = call(chatserver.target, "--rpc", "rpc.ChatService.Listen", "-d", request, "--timeout", "0.3")
    assert result.code == 1
    assert result.stderr == "ERROR:\n  Code: DeadlineExceeded\n  Message: Deadline Exceeded\n"


def test_connection_errors(chatserver: ChatServer) -> None:
    tls = cli("from_descriptors", "--target", chatserver.target, "list")
    assert tls.code == 1
    assert tls.error_line().endswith("the server speaks plaintext (UNAVAILABLE); add --insecure")

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    unreachable = call(f"127.0.0.1:{port}", "--rpc", "rpc.Catalog.GetProduct")
    assert unreachable.code == 1
    assert unreachable.error_line() == (
        f"error: cannot connect to 127.0.0.1:{port} (UNAVAILABLE); "
        "is a server running there? (--target sets the address; `chatserver` starts one)"
    )


@pytest.mark.parametrize(
    "args", [["list", "--rpc", "x.Y.Z"], [], ["-d", "{}", "list"], ["--rpc", "a.B.C", "-H", "novalue"]]
)
def test_usage_errors_exit_2(args: list[str]) -> None:
    assert in_process(from_descriptors_main, *args) == 2


def test_proto_files_need_grpcio_tools(tmp_path: Path) -> None:
    fake = tmp_path / "grpc_tools"
    fake.mkdir()
    (fake / "__init__.py").write_text("raise ImportError('grpcio-tools is not installed')\n")
    result = cli("from_descriptors", "--proto", "rpc/chat.proto", "-I", str(PROTO_ROOT), "list",
                 env=clean_env(PYTHONPATH=str(tmp_path)))  # fmt: skip
    assert result.code == 1
    assert result.error_line() == (
        "error: compiling .proto files needs grpcio-tools; "
        "install it with: pip install 'trio-grpc[tools]' (or give a --protoset instead)"
    )


def test_help_shows_the_three_actions(capsys: pytest.CaptureFixture[str]) -> None:
    assert in_process(from_descriptors_main, "--help") == 0
    help_text = capsys.readouterr().out
    for text in (
        "--rpc METHOD",
        "list [SERVICE]",
        "describe [SYMBOL]",
        "--proto",
        "--protoset",
        "-H",
        "--timeout",
    ):
        assert text in help_text
