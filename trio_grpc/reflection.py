"""Server reflection, grpc.reflection.v1 and v1alpha: `add_reflection(server)` and clients can discover it.

Owns answering reflection requests about the services registered on a server, whenever they were added.
Everything comes from the FileDescriptor objects reachable from those services' descriptors (their files
and, transitively, the files these import), never from a descriptor pool: applications' files live in the
default pool, ours (health, reflection) in a private one, reflected ones in yet another. A file goes out as
protoc describes it to every language, followed by the files it imports, each once: `serialized_pb` with
the `json_name` of each field filled in where it is missing (the Python generator drops the names protoc
computes, and tools that read JSON names from descriptors, grpcurl among them, would print `room_id`).
A request that names nothing we know gets an error_response (NOT_FOUND) and the stream goes on.
"""

from __future__ import annotations

from collections.abc import AsyncIterable, Callable, Iterable, Iterator

from google.protobuf import descriptor_pb2
from google.protobuf.descriptor import Descriptor, EnumDescriptor, FieldDescriptor, FileDescriptor
from google.protobuf.message import Message

from ._proto.grpc.reflection.v1 import reflection_pb2 as reflection_v1
from ._proto.grpc.reflection.v1alpha import reflection_pb2 as reflection_v1alpha
from ._server import Server, ServicerContext
from ._service import bind_service
from ._status import StatusCode

__all__ = ["SERVICE_NAMES", "add_reflection"]

SERVICE_NAMES = ("grpc.reflection.v1.ServerReflection", "grpc.reflection.v1alpha.ServerReflection")

# The v1alpha messages have exactly the fields of the v1 ones (the protos differ in package only), so one
# typed view of a request serves both versions.
_Request = reflection_v1.ServerReflectionRequest


class _NotFound(LookupError):
    pass


class _Catalog:
    """What reflection can tell about a set of services: their files, and the symbols in those files."""

    def __init__(self, service_names: Iterable[str], files: Iterable[FileDescriptor]) -> None:
        self.service_names = sorted(service_names)
        self.files: dict[str, FileDescriptor] = {}
        self.serialized: dict[str, bytes] = {}  # file name -> what goes on the wire
        self.file_of_symbol: dict[str, FileDescriptor] = {}
        self.message_types: set[str] = set()
        self.extensions: dict[str, dict[int, FileDescriptor]] = {}  # extendee -> number -> defining file
        for file in files:
            self._add(file)

    def _add(self, file: FileDescriptor) -> None:
        if file.name in self.files:
            return
        self.files[file.name] = file
        self.serialized[file.name] = _with_json_names(file.serialized_pb)
        for symbol in _symbols(file):
            self.file_of_symbol.setdefault(symbol, file)
        for message in _messages(file.message_types_by_name.values()):
            self.message_types.add(message.full_name)
        for extension in _extensions(file):
            assert extension.containing_type is not None  # an extension always names what it extends
            by_number = self.extensions.setdefault(extension.containing_type.full_name, {})
            by_number.setdefault(extension.number, file)
        for dependency in file.dependencies:
            self._add(dependency)

    def file_by_name(self, name: str) -> list[bytes]:
        if name not in self.files:
            raise _NotFound(f"file not found: {name}")
        return self._with_dependencies(self.files[name])

    def file_containing_symbol(self, symbol: str) -> list[bytes]:
        if symbol not in self.file_of_symbol:
            raise _NotFound(f"symbol not found: {symbol}")
        return self._with_dependencies(self.file_of_symbol[symbol])

    def file_containing_extension(self, extendee: str, number: int) -> list[bytes]:
        file = self.extensions.get(extendee, {}).get(number)
        if file is None:
            raise _NotFound(f"extension not found: {extendee} number {number}")
        return self._with_dependencies(file)

    def extension_numbers(self, extendee: str) -> list[int]:
        if extendee not in self.message_types:
            raise _NotFound(f"message type not found: {extendee}")
        return sorted(self.extensions.get(extendee, {}))

    def _with_dependencies(self, file: FileDescriptor) -> list[bytes]:
        """The file, then every file it imports directly or not, each once (as reflection clients expect)."""
        ordered: list[bytes] = []
        seen: set[str] = set()
        pending = [file]
        while pending:
            current = pending.pop()
            if current.name not in seen:
                seen.add(current.name)
                ordered.append(self.serialized[current.name])
                pending.extend(reversed(current.dependencies))
        return ordered


def _with_json_names(serialized: bytes) -> bytes:
    """A serialized FileDescriptorProto with `json_name` on every field and extension, as protoc sets it."""
    file = descriptor_pb2.FileDescriptorProto.FromString(serialized)
    for field in _field_protos(file.extension, file.message_type):
        if not field.HasField("json_name"):  # an explicit [json_name = ...] is kept as written
            field.json_name = _json_name(field.name)
    return file.SerializeToString()


def _field_protos(
    extensions: Iterable[descriptor_pb2.FieldDescriptorProto],
    messages: Iterable[descriptor_pb2.DescriptorProto],
) -> Iterator[descriptor_pb2.FieldDescriptorProto]:
    """The extensions, then the fields and extensions of the messages and of all their nested messages."""
    yield from extensions
    for message in messages:
        yield from message.field
        yield from _field_protos(message.extension, message.nested_type)


def _json_name(field_name: str) -> str:
    """protoc's default JSON name: each `_` is dropped and the character after it upper-cased.

    "room_id" -> "roomId", "a__b" -> "aB", "_x" -> "X", "x_" -> "x", "x_1y" -> "x1y"; nothing else changes.
    """
    parts = field_name.split("_")
    return parts[0] + "".join(part[:1].upper() + part[1:] for part in parts[1:])


def _messages(messages: Iterable[Descriptor]) -> Iterator[Descriptor]:
    for message in messages:
        yield message
        yield from _messages(message.nested_types)


def _enums(file: FileDescriptor) -> Iterator[EnumDescriptor]:
    yield from file.enum_types_by_name.values()
    for message in _messages(file.message_types_by_name.values()):
        yield from message.enum_types


def _extensions(file: FileDescriptor) -> Iterator[FieldDescriptor]:
    yield from file.extensions_by_name.values()
    for message in _messages(file.message_types_by_name.values()):
        yield from message.extensions


def _symbols(file: FileDescriptor) -> Iterator[str]:
    """Full names of everything `file` declares: what file_containing_symbol may ask for."""
    for service in file.services_by_name.values():
        yield service.full_name
        for method in service.methods:
            yield method.full_name
    for message in _messages(file.message_types_by_name.values()):
        yield message.full_name
        for field in message.fields:
            yield field.full_name
        for oneof in message.oneofs:
            yield oneof.full_name
    for enum in _enums(file):
        yield enum.full_name
        scope = enum.full_name.rpartition(".")[0]  # enum values are scoped beside their enum, not in it
        for value in enum.values:
            yield f"{scope}.{value.name}" if scope else value.name
    for extension in _extensions(file):
        yield extension.full_name


class _ReflectionServicer:
    """One version of the ServerReflection service; `response_type` is that version's response class."""

    def __init__(self, catalog: Callable[[], _Catalog], response_type: Callable[..., Message]) -> None:
        self._catalog = catalog
        self._response_type = response_type

    async def ServerReflectionInfo(self, requests: AsyncIterable[_Request], context: ServicerContext) -> None:
        async for request in requests:
            await context.send(self._respond(request))

    def _respond(self, request: _Request) -> Message:
        try:
            answer = _answer(self._catalog(), request)
        except _NotFound as exc:
            answer = _error(StatusCode.NOT_FOUND, str(exc))
        return self._response_type(valid_host=request.host, original_request=request, **answer)


def _answer(catalog: _Catalog, request: _Request) -> dict[str, object]:
    """The response fields for `request` (raises _NotFound)."""
    match request.WhichOneof("message_request"):
        case "list_services":
            services = [{"name": name} for name in catalog.service_names]
            return {"list_services_response": {"service": services}}
        case "file_by_filename":
            return _files(catalog.file_by_name(request.file_by_filename))
        case "file_containing_symbol":
            return _files(catalog.file_containing_symbol(request.file_containing_symbol))
        case "file_containing_extension":
            extension = request.file_containing_extension
            number = extension.extension_number
            return _files(catalog.file_containing_extension(extension.containing_type, number))
        case "all_extension_numbers_of_type":
            extendee = request.all_extension_numbers_of_type
            numbers = {"base_type_name": extendee, "extension_number": catalog.extension_numbers(extendee)}
            return {"all_extension_numbers_response": numbers}
        case _:
            return _error(StatusCode.INVALID_ARGUMENT, "the request asks for nothing this server knows")


def _files(serialized: list[bytes]) -> dict[str, object]:
    return {"file_descriptor_response": {"file_descriptor_proto": serialized}}


def _error(code: StatusCode, message: str) -> dict[str, object]:
    return {"error_response": {"error_code": code.value, "error_message": message}}


def add_reflection(server: Server) -> None:
    """Serve grpc.reflection.v1.ServerReflection and v1alpha on `server`.

    They describe every service registered on the server when a request comes, themselves included.
    """
    catalog: _Catalog | None = None

    def current_catalog() -> _Catalog:
        nonlocal catalog
        bindings = server.services
        if catalog is None or catalog.service_names != sorted(bindings):  # services were added since
            catalog = _Catalog(bindings, [binding.descriptor.file for binding in bindings.values()])
        return catalog

    for module in (reflection_v1, reflection_v1alpha):
        servicer = _ReflectionServicer(current_catalog, module.ServerReflectionResponse)
        server.add_service(bind_service(module.DESCRIPTOR.services_by_name["ServerReflection"], servicer))
