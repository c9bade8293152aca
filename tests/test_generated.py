"""The committed generated protobuf code is what proto/generate.py makes from the committed .proto files."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
REGENERATE = "run python proto/generate.py"


def load_generator() -> ModuleType:
    # proto/ is not a package: load the script by path, once.
    if "proto_generate" not in sys.modules:
        spec = importlib.util.spec_from_file_location("proto_generate", REPO_ROOT / "proto" / "generate.py")
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules["proto_generate"] = module
        spec.loader.exec_module(module)
    return sys.modules["proto_generate"]


def test_committed_generated_code_is_up_to_date(tmp_path: Path) -> None:
    pytest.importorskip("grpc_tools")
    generator = load_generator()
    generated = generator.generate(tmp_path)

    missing = [str(path) for path in generated if not (REPO_ROOT / path).is_file()]
    assert not missing, f"generated files not committed: {missing}; {REGENERATE}"
    extra = sorted(set(map(str, generator.committed_files(REPO_ROOT))) - set(map(str, generated)))
    assert not extra, f"files the generator no longer makes: {extra}; {REGENERATE}"
    for path in generated:
        committed = (REPO_ROOT / path).read_text(encoding="utf-8")
        assert committed == (tmp_path / path).read_text(encoding="utf-8"), f"{path} is stale; {REGENERATE}"


def test_generation_is_deterministic(tmp_path: Path) -> None:
    pytest.importorskip("grpc_tools")
    generator = load_generator()
    first = generator.generate(tmp_path / "first")
    assert generator.generate(tmp_path / "second") == first
    for path in first:
        assert (tmp_path / "first" / path).read_bytes() == (tmp_path / "second" / path).read_bytes(), path


def test_proto_file_names_are_as_protoc_sees_them_from_proto_root() -> None:
    from chat._proto.rpc import catalog_pb2, chat_pb2

    assert chat_pb2.DESCRIPTOR.name == "rpc/chat.proto"
    assert catalog_pb2.DESCRIPTOR.name == "rpc/catalog.proto"
    assert chat_pb2.DESCRIPTOR.package == catalog_pb2.DESCRIPTOR.package == "rpc"


def test_chat_service_methods_and_streaming_kinds() -> None:
    from chat._proto.rpc import chat_pb2

    service = chat_pb2.DESCRIPTOR.services_by_name["ChatService"]
    assert service.full_name == "rpc.ChatService"
    kinds = {method.name: (method.client_streaming, method.server_streaming) for method in service.methods}
    assert kinds == {
        "Chat": (True, True),
        "CreateChatRoom": (False, False),
        "ListChatRooms": (False, False),
        "DeleteChatRoom": (False, False),
        "Listen": (False, True),
        "Post": (True, False),
    }
    types = {
        method.name: (method.input_type.full_name, method.output_type.full_name) for method in service.methods
    }
    assert types == {
        "Chat": ("rpc.ChatMessage", "rpc.Message"),
        "CreateChatRoom": ("rpc.CreateChatRoomRequest", "rpc.ChatRoom"),
        "ListChatRooms": ("rpc.ListChatRoomsRequest", "rpc.ListChatRoomsResponse"),
        "DeleteChatRoom": ("rpc.DeleteChatRoomRequest", "rpc.ChatRoom"),
        "Listen": ("rpc.ListenRequest", "rpc.Message"),
        "Post": ("rpc.PostRequest", "rpc.PostSummary"),
    }


def test_health_and_reflection_live_in_a_private_pool_beside_grpcio_ones() -> None:
    from google.protobuf import descriptor_pool, message_factory

    from trio_grpc._proto import POOL
    from trio_grpc._proto.grpc.health.v1 import health_pb2
    from trio_grpc._proto.grpc.reflection.v1 import reflection_pb2 as reflection_v1
    from trio_grpc._proto.grpc.reflection.v1alpha import reflection_pb2 as reflection_v1alpha

    grpcio_health = pytest.importorskip("grpc_health.v1.health_pb2")
    pytest.importorskip("grpc_reflection.v1alpha.reflection_pb2")

    for module in (health_pb2, reflection_v1, reflection_v1alpha):
        assert module.DESCRIPTOR.pool is POOL
    assert POOL.FindFileContainingSymbol("grpc.health.v1.Health").name == "grpc/health/v1/health.proto"
    default_health_file = descriptor_pool.Default().FindFileContainingSymbol("grpc.health.v1.Health")
    assert default_health_file.name == "grpc_health/v1/health.proto"  # grpcio-health-checking's

    serving = health_pb2.HealthCheckResponse(status=health_pb2.HealthCheckResponse.SERVING)
    assert grpcio_health.HealthCheckResponse.FromString(serving.SerializeToString()).status == (
        grpcio_health.HealthCheckResponse.SERVING
    )
    check = health_pb2.DESCRIPTOR.services_by_name["Health"].methods_by_name["Check"]
    request = message_factory.GetMessageClass(check.input_type)(service="rpc.ChatService")
    assert (
        grpcio_health.HealthCheckRequest.FromString(request.SerializeToString()).service == "rpc.ChatService"
    )
