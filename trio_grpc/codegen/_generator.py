"""The protoc plugin's core: a CodeGeneratorRequest in, one `x_trio_grpc.py` per `x.proto` with services out.

For each service `Foo` the module has `FooBase` (an abstract servicer: one typed async method per RPC, and
`bind()`) and `FooStub(channel)` (one typed method per RPC). Message types are imported from the modules
protoc's `--python_out` writes, under the names grpcio's plugin gives them, so that tools that rewrite those
imports (proto/generate.py) treat both alike. The output imports trio_grpc and protobuf only, never grpcio.
"""

from __future__ import annotations

from collections.abc import Iterator

from google.protobuf import descriptor_pb2
from google.protobuf.compiler import plugin_pb2

# The typed stub method class of each (client_streaming, server_streaming) kind.
_STUB_CLASS = {
    (False, False): "UnaryUnaryMethod",
    (False, True): "UnaryStreamMethod",
    (True, False): "StreamUnaryMethod",
    (True, True): "StreamStreamMethod",
}


def module_name(proto_file: str) -> str:
    """ "rpc/catalog.proto" -> "rpc.catalog_pb2", as protoc's python generator names it."""
    return proto_file.removesuffix(".proto").replace("/", ".") + "_pb2"


def module_alias(proto_file: str) -> str:
    """The local name of an imported _pb2 module, as grpcio's plugin spells it: rpc_dot_catalog__pb2."""
    return proto_file.removesuffix(".proto").replace("_", "__").replace("/", "_dot_") + "__pb2"


def _message_paths(file: descriptor_pb2.FileDescriptorProto) -> Iterator[tuple[str, str]]:
    """(".package.Outer.Inner", "Outer.Inner") for every message of the file, nested ones included."""
    prefix = f".{file.package}" if file.package else ""

    def walk(messages: list[descriptor_pb2.DescriptorProto], scope: str) -> Iterator[tuple[str, str]]:
        for message in messages:
            path = f"{scope}.{message.name}" if scope else message.name
            yield f"{prefix}.{path}", path
            yield from walk(list(message.nested_type), path)

    yield from walk(list(file.message_type), "")


class _Types:
    """Python expressions for message types, and the _pb2 modules they need."""

    def __init__(self, files: list[descriptor_pb2.FileDescriptorProto]) -> None:
        self._where = {
            full_name: (file.name, path) for file in files for full_name, path in _message_paths(file)
        }
        self.used_files: set[str] = set()

    def expression(self, full_name: str) -> str:
        file_name, path = self._where[full_name]
        self.used_files.add(file_name)
        return f"{module_alias(file_name)}.{path}"


def _servicer_method(method: descriptor_pb2.MethodDescriptorProto, types: _Types) -> list[str]:
    request, response = types.expression(method.input_type), types.expression(method.output_type)
    argument = f"requests: AsyncIterator[{request}]" if method.client_streaming else f"request: {request}"
    if method.server_streaming:
        returns, doc = "None", "Send each response with `await context.send(response)`; return None."
    else:
        returns, doc = response, "Return the response."
    return [
        "    @abc.abstractmethod",
        f"    async def {method.name}(",
        f"        self, {argument}, context: trio_grpc.ServicerContext",
        f"    ) -> {returns}:",
        f'        """{doc}"""',
        "",
    ]


def _service_code(
    file: descriptor_pb2.FileDescriptorProto, service: descriptor_pb2.ServiceDescriptorProto, types: _Types
) -> list[str]:
    full_name = f"{file.package}.{service.name}" if file.package else service.name
    descriptor = f'{module_alias(file.name)}.DESCRIPTOR.services_by_name["{service.name}"]'
    lines = [
        "",
        "",
        f"class {service.name}Base(abc.ABC):",
        f'    """Servicer of {full_name}: implement every method, serve with `Server([servicer.bind()])`."""',
        "",
    ]
    for method in service.method:
        lines += _servicer_method(method, types)
    lines += [
        "    def bind(self) -> trio_grpc.ServiceBinding:",
        "        return trio_grpc.bind_service(",
        f"            {descriptor}, self",
        "        )",
        "",
        "",
        f"class {service.name}Stub:",
        f'    """Client of {full_name}: `{service.name}Stub(channel)`, one typed method per RPC."""',
        "",
        "    def __init__(self, channel: trio_grpc.Channel) -> None:",
        f"        methods = {descriptor}.methods_by_name",
    ]
    for method in service.method:
        kind = _STUB_CLASS[method.client_streaming, method.server_streaming]
        request, response = types.expression(method.input_type), types.expression(method.output_type)
        lines += [
            f"        self.{method.name}: trio_grpc.{kind}[{request}, {response}] = trio_grpc.{kind}(",
            f'            channel, methods["{method.name}"]',
            "        )",
        ]
    return lines


def file_code(
    file: descriptor_pb2.FileDescriptorProto, all_files: list[descriptor_pb2.FileDescriptorProto]
) -> str:
    """The whole `_trio_grpc.py` module for one .proto file with services."""
    types = _Types(all_files)
    types.used_files.add(file.name)  # for DESCRIPTOR
    body: list[str] = []
    for service in file.service:
        body += _service_code(file, service, types)
    imports = []
    for used in sorted(types.used_files):
        package, _, name = module_name(used).rpartition(".")
        alias = module_alias(used)
        imports.append(f"from {package} import {name} as {alias}" if package else f"import {name} as {alias}")
    exported = [f'"{service.name}{suffix}"' for service in file.service for suffix in ("Base", "Stub")]
    head = [
        f'"""trio_grpc servicers and stubs for {file.name}; written by protoc-gen-trio_grpc: do not edit."""',
        "",
        "from __future__ import annotations",
        "",
        "import abc",
        "from collections.abc import AsyncIterator",
        "",
        "import trio_grpc",
        *imports,
        "",
        f"__all__ = [{', '.join(exported)}]",
    ]
    return "\n".join([*head, *body]) + "\n"


def generate(request: plugin_pb2.CodeGeneratorRequest) -> plugin_pb2.CodeGeneratorResponse:
    response = plugin_pb2.CodeGeneratorResponse(
        supported_features=plugin_pb2.CodeGeneratorResponse.FEATURE_PROTO3_OPTIONAL
    )
    files = list(request.proto_file)
    by_name = {file.name: file for file in files}
    for name in request.file_to_generate:
        file = by_name[name]
        if not file.service:
            continue
        clashes = [s.name for s in file.service for m in s.method if m.name == "bind"]
        if clashes:
            response.error = f"{name}: service {clashes[0]} has an RPC named bind, which FooBase.bind() takes"
            return response
        response.file.add(name=name.removesuffix(".proto") + "_trio_grpc.py", content=file_code(file, files))
    return response
