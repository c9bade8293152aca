"""Descriptors shown as .proto source, for `chatter-from-descriptors describe` (in grpcurl's layout).

Rendered from the descriptor protos (`CopyToProto`), which keep what the source said: labels, proto3
`optional`, oneofs, map fields (as their synthetic *Entry messages), nested types. Type names are fully
qualified with a leading dot, so every one is unambiguous. Options other than `deprecated` are left out.
"""

from __future__ import annotations

import contextlib

from google.protobuf import descriptor_pb2, descriptor_pool
from google.protobuf.descriptor import Descriptor, EnumDescriptor, MethodDescriptor, ServiceDescriptor

_Field = descriptor_pb2.FieldDescriptorProto

_SCALARS = {
    _Field.TYPE_DOUBLE: "double",
    _Field.TYPE_FLOAT: "float",
    _Field.TYPE_INT64: "int64",
    _Field.TYPE_UINT64: "uint64",
    _Field.TYPE_INT32: "int32",
    _Field.TYPE_FIXED64: "fixed64",
    _Field.TYPE_FIXED32: "fixed32",
    _Field.TYPE_BOOL: "bool",
    _Field.TYPE_STRING: "string",
    _Field.TYPE_BYTES: "bytes",
    _Field.TYPE_UINT32: "uint32",
    _Field.TYPE_SFIXED32: "sfixed32",
    _Field.TYPE_SFIXED64: "sfixed64",
    _Field.TYPE_SINT32: "sint32",
    _Field.TYPE_SINT64: "sint64",
}

INDENT = "  "


def describe(pool: descriptor_pool.DescriptorPool, symbol: str) -> str | None:
    """`symbol` (a service, method, message or enum in `pool`) as grpcurl shows it; None if not one."""
    with contextlib.suppress(KeyError):
        return f"{symbol} is a service:\n{service_text(pool.FindServiceByName(symbol))}"
    with contextlib.suppress(KeyError):
        return method_text(pool.FindMethodByName(symbol))
    with contextlib.suppress(KeyError):
        return f"{symbol} is a message:\n{message_text(pool.FindMessageTypeByName(symbol))}"
    with contextlib.suppress(KeyError):
        return f"{symbol} is an enum:\n{enum_text(pool.FindEnumTypeByName(symbol))}"
    return None


def method_line(method: MethodDescriptor) -> str:
    request = (
        f"stream .{method.input_type.full_name}"
        if method.client_streaming
        else f".{method.input_type.full_name}"
    )
    response = (
        f"stream .{method.output_type.full_name}"
        if method.server_streaming
        else f".{method.output_type.full_name}"
    )
    return f"rpc {method.name} ( {request} ) returns ( {response} );"


def method_text(method: MethodDescriptor) -> str:
    """The method, then every message its request and response are made of (well-known types aside)."""
    texts = [f"{method.full_name} is a method:\n{method_line(method)}"]
    for message in _messages_used(method):
        texts.append(f"{message.full_name} is a message:\n{message_text(message)}")
    return "\n\n".join(texts)


def _messages_used(method: MethodDescriptor) -> list[Descriptor]:
    """The request and response types and the message types of their fields, each once, in the order met."""
    found: dict[str, Descriptor] = {}
    pending = [method.input_type, method.output_type]
    while pending:
        message = pending.pop(0)
        if message.full_name in found or message.full_name.startswith("google.protobuf."):
            continue
        if not message.GetOptions().map_entry:  # a map's entry is shown as map<K, V> in its field
            found[message.full_name] = message
        pending += [field.message_type for field in message.fields if field.message_type is not None]
    return list(found.values())


def service_text(service: ServiceDescriptor) -> str:
    lines = [f"service {service.name} {{"]
    lines += [INDENT + method_line(method) for method in service.methods]
    return "\n".join([*lines, "}"])


def message_text(message: Descriptor) -> str:
    proto = descriptor_pb2.DescriptorProto()
    message.CopyToProto(proto)
    file = descriptor_pb2.FileDescriptorProto()
    message.file.CopyToProto(file)
    return "\n".join(_message_lines(proto, file.syntax in ("", "proto2")))


def enum_text(enum: EnumDescriptor) -> str:
    proto = descriptor_pb2.EnumDescriptorProto()
    enum.CopyToProto(proto)
    return "\n".join(_enum_lines(proto))


def _enum_lines(enum: descriptor_pb2.EnumDescriptorProto) -> list[str]:
    values = [f"{INDENT}{value.name} = {value.number};" for value in enum.value]
    return [f"enum {enum.name} {{", *values, "}"]


def _message_lines(message: descriptor_pb2.DescriptorProto, proto2: bool) -> list[str]:
    map_entries = {nested.name: nested for nested in message.nested_type if nested.options.map_entry}
    body: list[str] = []
    oneofs_shown: set[int] = set()
    for field in message.field:
        in_oneof = field.HasField("oneof_index") and not field.proto3_optional
        if not in_oneof:
            body.append(_field_line(field, map_entries, proto2))
        elif field.oneof_index not in oneofs_shown:  # the whole oneof, where its first field is
            oneofs_shown.add(field.oneof_index)
            members = [
                f for f in message.field if f.HasField("oneof_index") and f.oneof_index == field.oneof_index
            ]
            body.append(f"oneof {message.oneof_decl[field.oneof_index].name} {{")
            body += [INDENT + _field_line(member, map_entries, proto2) for member in members]
            body.append("}")
    for nested in message.nested_type:
        if not nested.options.map_entry:
            body += _message_lines(nested, proto2)
    for enum in message.enum_type:
        body += _enum_lines(enum)
    return [f"message {message.name} {{", *(INDENT + line for line in body), "}"]


def _field_line(
    field: descriptor_pb2.FieldDescriptorProto,
    map_entries: dict[str, descriptor_pb2.DescriptorProto],
    proto2: bool,
) -> str:
    entry = (
        map_entries.get(field.type_name.rpartition(".")[2]) if field.label == _Field.LABEL_REPEATED else None
    )
    if entry is not None:
        key, value = entry.field[0], entry.field[1]
        kind = f"map<{_type_name(key)}, {_type_name(value)}>"
    else:
        label = ""
        if field.label == _Field.LABEL_REPEATED:
            label = "repeated "
        elif field.label == _Field.LABEL_REQUIRED:
            label = "required "
        elif proto2 or field.proto3_optional:
            label = "optional "
        kind = label + _type_name(field)
    options = " [deprecated = true]" if field.options.deprecated else ""
    return f"{kind} {field.name} = {field.number}{options};"


def _type_name(field: descriptor_pb2.FieldDescriptorProto) -> str:
    return _SCALARS.get(field.type, field.type_name)
