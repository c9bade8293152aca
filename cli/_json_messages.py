"""JSON in and out for chatter-from-descriptors: request objects to messages, messages to JSON text.

Requests follow the proto3 JSON mapping (field names as in the .proto or in lowerCamelCase). Before
`json_format` parses a request, `_check` walks it against the message descriptor so that a mistake is
reported by its path and the message type it belongs to, with the fields that type does have; what the
walk lets through (well-known types, numbers out of range...) gets json_format's own words.
`JsonObjects` splits a text stream into the JSON values it holds, as they complete.
"""

from __future__ import annotations

import difflib
import json
import re

from google.protobuf import descriptor_pool, json_format
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message

_INTEGER_TYPES = {
    FieldDescriptor.TYPE_INT32,
    FieldDescriptor.TYPE_INT64,
    FieldDescriptor.TYPE_UINT32,
    FieldDescriptor.TYPE_UINT64,
    FieldDescriptor.TYPE_SINT32,
    FieldDescriptor.TYPE_SINT64,
    FieldDescriptor.TYPE_FIXED32,
    FieldDescriptor.TYPE_FIXED64,
    FieldDescriptor.TYPE_SFIXED32,
    FieldDescriptor.TYPE_SFIXED64,
}
_FLOAT_TYPES = {FieldDescriptor.TYPE_FLOAT, FieldDescriptor.TYPE_DOUBLE}
_STRING_TYPES = {FieldDescriptor.TYPE_STRING, FieldDescriptor.TYPE_BYTES}
_MESSAGE_TYPES = {FieldDescriptor.TYPE_MESSAGE, FieldDescriptor.TYPE_GROUP}


class RequestError(ValueError):
    """A request that does not fit its message type: `detail` names the field."""

    def __init__(self, message_type: str, detail: str) -> None:
        super().__init__(f"does not fit {message_type}: {detail}")
        self.message_type = message_type
        self.detail = detail


class InvalidJson(ValueError):
    pass


def to_message(value: object, message_type: type[Message], pool: descriptor_pool.DescriptorPool) -> Message:
    descriptor: Descriptor = message_type.DESCRIPTOR  # type: ignore[assignment]  # the upb class is the same
    if not isinstance(value, dict):
        raise RequestError(descriptor.full_name, f"it must be a JSON object, not {_json_kind(value)}")
    try:
        _check(value, descriptor, "")
    except _Mismatch as exc:
        raise RequestError(descriptor.full_name, str(exc)) from None
    message = message_type()
    try:
        json_format.ParseDict(value, message, descriptor_pool=pool)
    except json_format.ParseError as exc:
        raise RequestError(descriptor.full_name, _clean(str(exc))) from None
    return message


def to_json(message: Message, pool: descriptor_pool.DescriptorPool, *, emit_defaults: bool) -> str:
    return json_format.MessageToJson(
        message, indent=2, descriptor_pool=pool, always_print_fields_with_no_presence=emit_defaults
    )


class _Mismatch(Exception):
    pass


def _check(value: dict[object, object], message: Descriptor, path: str) -> None:
    """Unknown fields and JSON kinds that cannot be right, reported with their path."""
    if message.full_name.startswith("google.protobuf."):
        return  # well-known types have JSON forms of their own: json_format knows them
    by_name = {field.name: field for field in message.fields}
    by_name.update({field.json_name: field for field in message.fields})
    for key, item in value.items():
        field = by_name.get(str(key))
        where = f"{path}{key}"
        if field is None:
            names = [field.name for field in message.fields]
            close = difflib.get_close_matches(str(key), names, n=1)
            suggestion = f"; did you mean {json.dumps(close[0])}?" if close else ""
            has = ", ".join(names) or "no fields"
            raise _Mismatch(f"no field {json.dumps(where)} ({message.full_name} has: {has}){suggestion}")
        if item is None:
            continue
        if field.message_type is not None and field.message_type.GetOptions().map_entry:
            _check_map(item, field, where)
        elif field.is_repeated:
            if not isinstance(item, list):
                raise _mismatch(where, item, "a JSON array")
            for index, element in enumerate(item):
                _check_value(element, field, f"{where}[{index}]")
        else:
            _check_value(item, field, where)


def _check_map(item: object, field: FieldDescriptor, where: str) -> None:
    if not isinstance(item, dict):
        raise _mismatch(where, item, "a JSON object (a map)")
    assert field.message_type is not None
    value_field = field.message_type.fields_by_name["value"]
    for key, element in item.items():
        if element is not None:
            _check_value(element, value_field, f"{where}[{json.dumps(key)}]")


def _check_value(item: object, field: FieldDescriptor, where: str) -> None:
    kind = field.type
    if kind in _MESSAGE_TYPES:
        assert field.message_type is not None
        if field.message_type.full_name.startswith("google.protobuf."):
            return
        if not isinstance(item, dict):
            raise _mismatch(where, item, f"a JSON object ({field.message_type.full_name})")
        _check(item, field.message_type, where + ".")
    elif kind in _STRING_TYPES and not isinstance(item, str):
        raise _mismatch(where, item, "a JSON string" + (" (base64)" if kind == field.TYPE_BYTES else ""))
    elif kind == FieldDescriptor.TYPE_BOOL and not isinstance(item, bool):
        raise _mismatch(where, item, "true or false")
    elif kind in _INTEGER_TYPES and not _is_integer(item):
        raise _mismatch(where, item, "an integer")
    elif kind in _FLOAT_TYPES and not _is_number(item):
        raise _mismatch(where, item, "a number")
    elif kind == FieldDescriptor.TYPE_ENUM and (isinstance(item, bool) or not isinstance(item, int | str)):
        assert field.enum_type is not None
        names = ", ".join(value.name for value in field.enum_type.values)
        raise _mismatch(where, item, f"one of {names}")


def _is_integer(item: object) -> bool:
    """A JSON number with an integral value, or a string of one (how 64-bit integers travel)."""
    if isinstance(item, str):
        return re.fullmatch(r"-?[0-9]+", item) is not None
    return isinstance(item, int | float) and not isinstance(item, bool) and float(item).is_integer()


def _is_number(item: object) -> bool:
    if isinstance(item, str):
        return (
            item in ("NaN", "Infinity", "-Infinity")
            or re.fullmatch(r"-?[0-9.]+([eE][-+]?[0-9]+)?", item) is not None
        )
    return isinstance(item, int | float) and not isinstance(item, bool)


def _mismatch(where: str, item: object, expected: str) -> _Mismatch:
    return _Mismatch(
        f"field {json.dumps(where)} takes {expected}, not {_json_kind(item)}: {json.dumps(item)}"
    )


def _json_kind(value: object) -> str:
    match value:
        case bool():
            return "a boolean"
        case int() | float():
            return "a number"
        case str():
            return "a string"
        case list():
            return "an array"
        case dict():
            return "an object"
    return "null"


def _clean(text: str) -> str:
    """json_format's 'Failed to parse a field: Failed to parse b field: reason.' -> 'field "a.b": reason'."""
    path = re.findall(r"Failed to parse (\S+) field: ", text)
    reason = re.sub(r"Failed to parse \S+ field: ", "", text).split("\n")[0].strip().rstrip(".")
    return f"field {json.dumps('.'.join(path))}: {reason}" if path else reason


class JsonObjects:
    """Feed text, get the JSON values completed so far (whitespace between them is optional)."""

    def __init__(self) -> None:
        self._buffer = ""
        self._decoder = json.JSONDecoder()
        self.count = 0

    def feed(self, text: str, *, final: bool = False) -> list[object]:
        self._buffer += text
        values = []
        position = 0
        while True:
            while position < len(self._buffer) and self._buffer[position].isspace():
                position += 1
            if position == len(self._buffer):
                break
            try:
                value, position = self._decoder.raw_decode(self._buffer, position)
            except json.JSONDecodeError as exc:
                if not final:
                    break  # perhaps incomplete: wait for more
                raise InvalidJson(f"{exc.msg} at line {exc.lineno} column {exc.colno}") from None
            self.count += 1
            values.append(value)
        self._buffer = self._buffer[position:]
        return values
