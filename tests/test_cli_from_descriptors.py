"""chatter-from-descriptors as a subprocess: every descriptor source (reflection v1 from chatserver, v1alpha
from a grpcio server, .proto files, descriptor sets), every kind of call, list and describe, and the errors
(unknown method with suggestions, JSON that does not fit, final status as grpcurl prints it, connection)."""

from __future__ import annotations

import json
import socket
from collections.abc import Callable, Iterator
from concurrent import futures
from pathlib import Path

import grpc
import pytest
import trustme
from google.protobuf.descriptor import Descriptor
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


def all_at_once(*calls: Callable[[], Result]) -> list[Result]:
    """Independent runs of the program, at once: on a loaded machine Python is slow to start, not to run."""
    with futures.ThreadPoolExecutor(min(len(calls), 4)) as pool:
        return list(pool.map(lambda run: run(), calls))


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
        context.send_initial_metadata([("x-initial", "hello")])
        context.set_trailing_metadata([("x-trailer", "bye"), ("x-trailer-bin", b"\x00\xff")])
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

    sizes = '{"responseParameters": [{"size": 1}, {"size": 2}]}'
    uploads = '{"payload": {"body": "YWFh"}}\n{"payload": {"body": "YQ=="}}\n'
    request = '{"response_size": 3}'
    unary, output, input_, duplex = all_at_once(
        lambda: call(target, *options, "--rpc", method + "UnaryCall", "-d", request, "-H", "x-user: ann"),
        lambda: call(target, *options, "--rpc", method + "StreamingOutputCall", "-d", sizes),
        lambda: call(target, *options, "--rpc", method + "StreamingInputCall", "-d", "@", input=uploads),
        lambda: call(target, *options, "--rpc", method + "FullDuplexCall", "-d", "@", input=sizes + sizes),
    )
    assert unary.code == 0, unary
    assert json_values(unary.stdout) == [{"username": "ann", "payload": {"body": "YWFh"}}]
    assert output.code == 0, output
    assert json_values(output.stdout) == [{"payload": {"body": "YQ=="}}, {"payload": {"body": "YWE="}}]
    assert input_.code == 0, input_
    assert json_values(input_.stdout) == [{"aggregatedPayloadSize": 4}]
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
    assert method.stdout == (  # with the messages it takes and returns, expanded
        "rpc.ChatService.Chat is a method:\n"
        "rpc Chat ( stream .rpc.ChatMessage ) returns ( stream .rpc.Message );\n\n"
        "rpc.ChatMessage is a message:\n"
        "message ChatMessage {\n  .rpc.JoinChat join = 1;\n  .rpc.Message message = 2;\n}\n\n"
        "rpc.Message is a message:\n"
        "message Message {\n  string name = 1;\n  string message = 2;\n}\n\n"
        "rpc.JoinChat is a message:\n"
        "message JoinChat {\n  string room_id = 1;\n  string name = 2;\n}\n"
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


ERROR_LINES = [
    (
        ["--rpc", "rpc.ChatService.CreateChatRom"],
        "error: unknown method rpc.ChatService.CreateChatRom; did you mean rpc.ChatService.CreateChatRoom?",
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
]


def test_error_lines(chatserver: ChatServer) -> None:
    results = all_at_once(*(lambda args=args: call(chatserver.target, *args) for args, _ in ERROR_LINES))
    for result, (_, line) in zip(results, ERROR_LINES, strict=True):
        assert (result.code, result.error_line()) == (1, line)


def test_final_status_is_printed_as_grpcurl_does(chatserver: ChatServer) -> None:
    result = call(chatserver.target, "--rpc", "rpc.ChatService.DeleteChatRoom", "-d", '{"room_id": "nope"}')
    assert (result.code, result.stdout) == (64 + 5, "")  # 64 + NOT_FOUND, as grpcurl
    assert result.stderr == "ERROR:\n  Code: NotFound\n  Message: room nope does not exist\n"


def test_timeout(chatserver: ChatServer) -> None:
    room = json_values(call(chatserver.target, "--rpc", "rpc.ChatService.CreateChatRoom").stdout)[0]
    assert isinstance(room, dict)
    request = json.dumps({"room_id": room["roomId"]})
    result = call(chatserver.target, "--rpc", "rpc.ChatService.Listen", "-d", request, "--timeout", "300ms")
    assert result.code == 64 + 4  # DEADLINE_EXCEEDED
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
    "args",
    [
        ["list", "--rpc", "x.Y.Z"],
        [],
        ["-d", "{}", "list"],
        ["--rpc", "a.B.C", "-H", "novalue"],
        ["--timeout", "inf", "list"],
        ["--timeout", "2 parsecs", "list"],
        ["--timeout", "0ms", "list"],
        ["-format", "xml", "list"],
        ["localhost:1"],  # an address and nothing to do
        ["--target", "a:1", "b:2", "list"],
        ["a:1", "x.Y/Z", "extra"],
        ["--cert", "c.pem", "list"],  # no --key
        ["-plaintext", "-cacert", "ca.pem", "list"],
        ["-authority", "a", "-servername", "b", "list"],
        ["-msg-template", "list"],
        ["-max-msg-sz", "lots", "list"],
        ["-p", "list"],  # no abbreviations: -p could be -plaintext, -proto or -protoset
        ["-insecure", "list"],  # grpcurl's: TLS without verification
        ["-plaintext", "not an address", "list"],  # after parsing: still 2, not 1
    ],
)
def test_usage_errors_exit_2(args: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert in_process(from_descriptors_main, *args) == 2
    assert (
        capsys.readouterr().err.strip().splitlines()[-1].startswith(("error: ", "chatter-from-descriptors: "))
    )


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
        "-plaintext",
        "64 + the status code",
        "2 a usage error",
        "500ms",
    ):
        assert text in help_text


@pytest.mark.parametrize(
    ("args", "line"),
    [
        (["NoService"], "error: the method NoService names no service; write package.Service.Method"),
        (
            ["rpc.Catalog.GetProduct", "-H", "grpc-timeout: 1S"],
            "error: -H: metadata key 'grpc-timeout' is reserved for the protocol",
        ),
    ],
)
def test_usage_errors_found_late_exit_2_too(chatserver: ChatServer, args: list[str], line: str) -> None:
    result = cli("from_descriptors", "-plaintext", chatserver.target, *args)
    assert (result.code, result.error_line()) == (2, line)


# -- grpcurl's habits, and past them ----------------------------------------------------------------


def test_grpcurl_layout_and_flag_names(grpcio_servers: dict[str, str]) -> None:
    target = grpcio_servers["reflection"]
    services = cli("from_descriptors", "-plaintext", target, "list")
    assert (services.code, services.stdout.split()) == (0, [reflection.SERVICE_NAME, TEST_SERVICE])
    methods = cli("from_descriptors", "-plaintext", target, "list", TEST_SERVICE)
    assert f"{TEST_SERVICE}.UnaryCall" in methods.stdout.split()

    def unary_user(*flags: str) -> object:
        args = ["-plaintext", "-d", '{"response_size": 1}', *flags, target, f"{TEST_SERVICE}/UnaryCall"]
        result = cli("from_descriptors", *args)
        assert result.code == 0, result
        [response] = json_values(result.stdout)
        assert isinstance(response, dict)
        return response.get("username")

    assert unary_user("-H", "x-user: h") == "h"  # -H goes to the call (and to reflection)
    assert unary_user("-rpc-header", "x-user: r") == "r"
    assert unary_user("-reflect-header", "x-user: no") is None  # the reflection stream only


def test_verbose_shows_metadata_headers_trailers_and_counts(grpcio_servers: dict[str, str]) -> None:
    args = ["-plaintext", "-v", "-H", "x-user: ann", "-d", "{}", grpcio_servers["reflection"]]
    result = cli("from_descriptors", *args, f"{TEST_SERVICE}/UnaryCall")
    assert result.code == 0, result
    assert json_values(result.stdout) == [{"username": "ann", "payload": {}}]  # stdout: responses only
    assert result.stderr == (
        "Resolved method descriptor:\n"
        "rpc UnaryCall ( .grpc.testing.SimpleRequest ) returns ( .grpc.testing.SimpleResponse );\n\n"
        "Request metadata to send:\nx-user: ann\n\n"
        "Response headers received:\nx-initial: hello\n\n"
        "Response trailers received:\nx-trailer: bye\nx-trailer-bin: AP8=\n\n"
        "Sent 1 request and received 1 response\n"
    )


def test_verbose_on_a_failed_stream(chatserver: ChatServer) -> None:
    request = '{"room_id": "nope"}\n{"room_id": "nope"}'
    result = call(chatserver.target, "-v", "--rpc", "rpc.ChatService.Post", "-d", "@", input=request)
    assert result.code == 64 + 5, result  # NOT_FOUND
    assert result.stderr.endswith(
        "Response trailers received:\n(empty)\n\nSent 2 requests and received 0 responses\n"
        "ERROR:\n  Code: NotFound\n  Message: room nope does not exist\n"
    ) or result.stderr.endswith(  # the server may end the call before the second request is sent
        "Response trailers received:\n(empty)\n\nSent 1 request and received 0 responses\n"
        "ERROR:\n  Code: NotFound\n  Message: room nope does not exist\n"
    ), result


@pytest.fixture(scope="module")
def chat_protoset(chatserver: ChatServer, tmp_path_factory: pytest.TempPathFactory) -> str:
    """rpc.ChatService's descriptors, as -protoset-out writes them from reflection."""
    path = str(tmp_path_factory.mktemp("chat") / "chat.protoset")
    result = call(chatserver.target, "-protoset-out", path, "describe", "rpc.ChatService")
    assert result.code == 0, result
    return path


def test_protoset_out_and_utf8_text_and_json(chatserver: ChatServer, chat_protoset: str) -> None:
    target = chatserver.target
    listed = cli("from_descriptors", "-protoset", chat_protoset, "list")
    assert (listed.code, listed.stdout) == (0, "rpc.ChatService\n")  # what was described, with its imports
    room = json_values(call(target, "-protoset", chat_protoset, "rpc.ChatService/CreateChatRoom").stdout)[0]
    assert isinstance(room, dict)
    room_id = room["roomId"]

    posts = f'room_id: "{room_id}" message {{ name: "茶" message: "🍵 hi" }}\x1e'
    posts += f'room_id: "{room_id}" message {{ name: "b" message: "two" }}\n'
    posted = call(target, "-format", "text", "-d", "@", "rpc.ChatService.Post", input=posts)
    assert (posted.code, posted.stdout) == (0, "accepted: 2\n"), posted

    # Listen never ends by itself: the deadline ends it, long enough for the history on a loaded machine.
    listen = ["-max-time", "2s", "rpc.ChatService.Listen"]
    as_json = ["-d", json.dumps({"room_id": room_id}), *listen]
    json_results = all_at_once(
        lambda: call(target, *as_json, env=clean_env(LC_ALL="C")),
        lambda: call(target, "-protoset", chat_protoset, *as_json, env=clean_env(LC_ALL="C")),
        lambda: call(target, "-format", "text", "-d", f'room_id: "{room_id}"', *listen),
    )
    *json_results, as_text = json_results
    for result in json_results:
        assert result.code == 64 + 4, result  # DEADLINE_EXCEEDED
        assert json_values(result.stdout)[:2] == [
            {"name": "茶", "message": "🍵 hi"},
            {"name": "b", "message": "two"},
        ]
        assert "\\u" not in result.stdout
    assert as_text.stdout.startswith('name: "茶"\nmessage: "🍵 hi"\n\x1ename: "b"\nmessage: "two"\n'), as_text


def test_the_same_output_from_every_source(grpcio_servers: dict[str, str], protoset: str) -> None:
    request = '{"response_size": 2, "payload": {"body": "AA=="}}'
    runs = []
    for source in ([], SOURCES["proto-files"], ["-protoset", protoset]):
        target = grpcio_servers["reflection" if not source else "plain"]
        args = ["from_descriptors", "-plaintext", *source, target]
        runs.append(lambda args=args: cli(*args, "-d", request, f"{TEST_SERVICE}/UnaryCall"))
        runs.append(lambda args=args: cli(*args, "describe", f"{TEST_SERVICE}.UnaryCall"))
    results = all_at_once(*runs)
    assert all(result.code == 0 for result in results), results
    calls, descriptions = {r.stdout for r in results[::2]}, {r.stdout for r in results[1::2]}
    assert len(calls) == len(descriptions) == 1, (calls, descriptions)
    assert json_values(calls.pop()) == [{"payload": {"body": "YWE="}}]


def test_msg_template_fills_every_field(protoset: str) -> None:
    result = cli(
        "from_descriptors",
        "-protoset",
        protoset,
        "describe",
        "-msg-template",
        "grpc.testing.StreamingOutputCallRequest",
    )
    assert result.code == 0, result
    description, _, template = result.stdout.partition(
        "\n\nMessage template of grpc.testing.StreamingOutputCallRequest:\n"
    )
    assert description.startswith("grpc.testing.StreamingOutputCallRequest is a message:\n")
    assert_every_field(json.loads(template), messages_pb2.StreamingOutputCallRequest.DESCRIPTOR)
    method = cli(
        "from_descriptors", "-protoset", protoset, "describe", "-msg-template", f"{TEST_SERVICE}.UnaryCall"
    )
    assert "Message template of grpc.testing.SimpleRequest:\n{" in method.stdout


def assert_every_field(value: object, message: Descriptor) -> None:
    """`value` has each field of `message` (the first of each oneof), lists one element, and so on down."""
    assert isinstance(value, dict), value
    fields = [f for f in message.fields if f.containing_oneof is None or f.containing_oneof.fields[0] is f]
    assert set(value) == {field.json_name for field in fields}, (message.full_name, value)
    for field in fields:
        item = value[field.json_name]
        if field.message_type is not None and field.message_type.GetOptions().map_entry:
            [item] = item.values()
            field = field.message_type.fields_by_name["value"]
        elif field.is_repeated:
            assert isinstance(item, list) and len(item) == 1, (field.full_name, item)
            [item] = item
        if field.message_type is not None and not field.message_type.full_name.startswith("google."):
            assert_every_field(item, field.message_type)


def test_request_options(grpcio_servers: dict[str, str], protoset: str) -> None:
    base = ["from_descriptors", "-plaintext", "-protoset", protoset, grpcio_servers["plain"]]
    method = f"{TEST_SERVICE}/UnaryCall"
    unknown = '{"response_size": 1, "no_such_field": 2}'
    refused, allowed, too_big, text = all_at_once(
        lambda: cli(*base, method, "-d", unknown),
        lambda: cli(*base, method, "-d", unknown, "-allow-unknown-fields", "-emit-defaults"),
        lambda: cli(*base, method, "-d", '{"response_size": 100}', "-max-msg-sz", "50"),
        lambda: cli(*base, method, "-format", "text", "-d", "response_size: 1 fill_username: true"),
    )
    assert refused.code == 1 and 'no field "no_such_field"' in refused.error_line()
    assert allowed.code == 0, allowed
    response = json_values(allowed.stdout)[0]
    assert isinstance(response, dict) and response["payload"] == {"type": "COMPRESSABLE", "body": "YQ=="}
    assert too_big.code == 64 + 8, too_big  # RESOURCE_EXHAUSTED
    assert too_big.stderr.startswith("ERROR:\n  Code: ResourceExhausted\n")
    assert (text.code, text.stdout) == (0, 'payload {\n  body: "a"\n}\n'), text


def test_connect_timeout() -> None:
    with socket.socket() as silent:  # accepts connections (the kernel does), never speaks HTTP/2
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        target = f"127.0.0.1:{silent.getsockname()[1]}"
        result = cli("from_descriptors", "-plaintext", "-connect-timeout", "200ms", target, "list")
    assert result.code == 1
    assert result.error_line().startswith(f"error: timed out connecting to {target} (UNAVAILABLE)")


# -- mutual TLS -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def mtls_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    """A grpcio TLS server (certificate for "localhost") that requires a client certificate."""
    directory = tmp_path_factory.mktemp("mtls")
    ca = trustme.CA()
    ca.cert_pem.write_to_path(str(directory / "ca.pem"))
    client = ca.issue_cert("client@example.com")
    client.cert_chain_pems[0].write_to_path(str(directory / "client.pem"))
    client.private_key_pem.write_to_path(str(directory / "client.key"))
    server_cert = ca.issue_cert("localhost")
    credentials = grpc.ssl_server_credentials(
        [(server_cert.private_key_pem.bytes(), server_cert.cert_chain_pems[0].bytes())],
        root_certificates=ca.cert_pem.bytes(),
        require_client_auth=True,
    )
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    test_pb2_grpc.add_TestServiceServicer_to_server(InteropServicer(), server)
    reflection.enable_server_reflection([TEST_SERVICE, reflection.SERVICE_NAME], server)
    port = server.add_secure_port("127.0.0.1:0", credentials)
    server.start()
    yield f"127.0.0.1:{port}", directory
    server.stop(None)


def test_mutual_tls(mtls_server: tuple[str, Path]) -> None:
    target, directory = mtls_server
    trust = ["from_descriptors", "-cacert", str(directory / "ca.pem"), "-servername", "localhost"]
    client = ["-cert", str(directory / "client.pem"), "-key", str(directory / "client.key")]
    not_a_key = ["-cert", str(directory / "ca.pem"), "-key", str(directory / "ca.pem")]
    ok, no_client_cert, wrong_name, bad_key = all_at_once(
        lambda: cli(*trust, *client, "-d", '{"response_size": 1}', target, f"{TEST_SERVICE}/UnaryCall"),
        lambda: cli(*trust, target, "list"),
        lambda: cli("from_descriptors", "-cacert", str(directory / "ca.pem"), *client, target, "list"),
        lambda: cli(*trust, *not_a_key, target, "list"),
    )
    assert ok.code == 0, ok
    assert json_values(ok.stdout) == [{"payload": {"body": "YQ=="}}]
    assert no_client_cert.code == 1, no_client_cert
    assert "(UNAVAILABLE)" in no_client_cert.error_line()
    assert wrong_name.code == 1
    assert "IP address mismatch" in wrong_name.error_line(), wrong_name
    assert bad_key.code == 1 and bad_key.error_line().startswith("error: cannot load --cert"), bad_key
