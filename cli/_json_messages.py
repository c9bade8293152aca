"""JSON and protobuf text format in and out for chatter-from-descriptors: requests to messages and back.

Requests follow the proto3 JSON mapping (field names as in the .proto or in lowerCamelCase). Before
`json_format` parses a request, `_check` walks it against the message descriptor so that a mistake is
reported by its path and the message type it belongs to, with the fields that type does have; what the
walk lets through (well-known types, numbers out of range...) gets json_format's own words.
`JsonObjects` splits a text stream into the JSON values it holds, as they complete; `TextMessages` splits
protobuf text format at the ASCII record separator (0x1E), as grpcurl's `-format text` does.
"""

from __future__ import annotations

import difflib
import json
import re

from google.protobuf import descriptor_pool, json_format, text_format
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


def to_message(
    value: object,
    message_type: type[Message],
    pool: descriptor_pool.DescriptorPool,
    *,
    allow_unknown: bool = False,
) -> Message:
    """A JSON value as a message; `allow_unknown` drops fields the type lacks instead of refusing them."""
    descriptor: Descriptor = message_type.DESCRIPTOR  # type: ignore[assignment]  # the upb class is the same
    if not isinstance(value, dict):
        raise RequestError(descriptor.full_name, f"it must be a JSON object, not {_json_kind(value)}")
    try:
        _check(value, descriptor, "", allow_unknown)
    except _Mismatch as exc:
        raise RequestError(descriptor.full_name, str(exc)) from None
    message = message_type()
    try:
        json_format.ParseDict(value, message, ignore_unknown_fields=allow_unknown, descriptor_pool=pool)
    except json_format.ParseError as exc:
        raise RequestError(descriptor.full_name, _clean(str(exc))) from None
    return message


def text_to_message(
    text: str,
    message_type: type[Message],
    pool: descriptor_pool.DescriptorPool,
    *,
    allow_unknown: bool = False,
) -> Message:
    """A message in protobuf text format; text_format's own words (line:column) say what is wrong."""
    message = message_type()
    try:
        text_format.Parse(text, message, allow_unknown_field=allow_unknown, descriptor_pool=pool)
    except text_format.ParseError as exc:
        raise RequestError(message.DESCRIPTOR.full_name, str(exc)) from None
    return message


def to_json(message: Message, pool: descriptor_pool.DescriptorPool, *, emit_defaults: bool) -> str:
    """Indented JSON with non-ASCII text as UTF-8 (not \\u escapes: people read it)."""
    return json_format.MessageToJson(
        message,
        indent=2,
        descriptor_pool=pool,
        always_print_fields_with_no_presence=emit_defaults,
        ensure_ascii=False,
    )


def to_text(message: Message, pool: descriptor_pool.DescriptorPool) -> str:
    """Protobuf text format, UTF-8 strings kept as they are; no trailing newline."""
    return text_format.MessageToString(message, as_utf8=True, descriptor_pool=pool).rstrip("\n")


class _Mismatch(Exception):
    pass


def _check(value: dict[object, object], message: Descriptor, path: str, allow_unknown: bool) -> None:
    """Unknown fields and JSON kinds that cannot be right, reported with their path."""
    if message.full_name.startswith("google.protobuf."):
        return  # well-known types have JSON forms of their own: json_format knows them
    by_name = {field.name: field for field in message.fields}
    by_name.update({field.json_name: field for field in message.fields})
    for key, item in value.items():
        field = by_name.get(str(key))
        where = f"{path}{key}"
        if field is None and allow_unknown:
            continue
        if field is None:
            names = [field.name for field in message.fields]
            close = difflib.get_close_matches(str(key), names, n=1)
            suggestion = f"; did you mean {json.dumps(close[0])}?" if close else ""
            has = ", ".join(names) or "no fields"
            raise _Mismatch(f"no field {json.dumps(where)} ({message.full_name} has: {has}){suggestion}")
        if item is None:
            continue
        if field.message_type is not None and field.message_type.GetOptions().map_entry:
            _check_map(item, field, where, allow_unknown)
        elif field.is_repeated:
            if not isinstance(item, list):
                raise _mismatch(where, item, "a JSON array")
            for index, element in enumerate(item):
                _check_value(element, field, f"{where}[{index}]", allow_unknown)
        else:
            _check_value(item, field, where, allow_unknown)


def _check_map(item: object, field: FieldDescriptor, where: str, allow_unknown: bool) -> None:
    if not isinstance(item, dict):
        raise _mismatch(where, item, "a JSON object (a map)")
    assert field.message_type is not None
    value_field = field.message_type.fields_by_name["value"]
    for key, element in item.items():
        if element is not None:
            _check_value(element, value_field, f"{where}[{json.dumps(key)}]", allow_unknown)


def _check_value(item: object, field: FieldDescriptor, where: str, allow_unknown: bool) -> None:
    kind = field.type
    if kind in _MESSAGE_TYPES:
        assert field.message_type is not None
        if field.message_type.full_name.startswith("google.protobuf."):
            return
        if not isinstance(item, dict):
            raise _mismatch(where, item, f"a JSON object ({field.message_type.full_name})")
        _check(item, field.message_type, where + ".", allow_unknown)
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


class TextMessages:
    """Feed text, get the protobuf text format messages completed so far (each ends at a 0x1E or the end)."""

    SEPARATOR = "\x1e"

    def __init__(self) -> None:
        self._buffer = ""
        self.count = 0

    def feed(self, text: str, *, final: bool = False) -> list[str]:
        *messages, self._buffer = (self._buffer + text).split(self.SEPARATOR)
        if final:
            if self._buffer.strip():  # blank after the last separator: no message
                messages.append(self._buffer)
            self._buffer = ""
        self.count += len(messages)
        return messages


def template(message_type: type[Message], pool: descriptor_pool.DescriptorPool) -> str:
    """A JSON request of `message_type` with every field present: one element in each list and map, the
    first member of each oneof, and nested messages filled in the same way (a recursive type once)."""
    message = message_type()
    _fill(message, set())
    return to_json(message, pool, emit_defaults=True)


# Their JSON forms cannot be empty messages (a Value needs a kind): left out of templates.
_UNFILLABLE = {"google.protobuf.Value", "google.protobuf.ListValue", "google.protobuf.Struct"}


def _fill(message: Message, filling: set[str]) -> None:
    descriptor: Descriptor = message.DESCRIPTOR  # type: ignore[assignment]
    if descriptor.full_name.startswith("google.protobuf."):
        return  # a well-known type: its empty form is already a valid example
    filling = filling | {descriptor.full_name}
    for field in descriptor.fields:
        oneof = field.containing_oneof
        if oneof is not None and oneof.fields[0] is not field:
            continue  # the first member stands for its oneof
        nested = field.message_type
        if nested is not None and (nested.full_name in filling or nested.full_name in _UNFILLABLE):
            continue
        _fill_field(message, field, filling)


def _fill_field(message: Message, field: FieldDescriptor, filling: set[str]) -> None:
    value = getattr(message, field.name)
    nested = field.message_type
    if nested is not None and nested.GetOptions().map_entry:
        key = _example(nested.fields_by_name["key"])
        value_field = nested.fields_by_name["value"]
        if value_field.message_type is None:
            value[key] = _example(value_field)
        elif value_field.message_type.full_name not in filling | _UNFILLABLE:
            _fill(value[key], filling)
    elif field.is_repeated:
        if nested is None:
            value.append(_example(field))
        else:
            _fill(value.add(), filling)
    elif nested is not None:
        value.SetInParent()
        _fill(value, filling)
    else:
        setattr(message, field.name, _example(field))  # sets fields with presence, too


def _example(field: FieldDescriptor) -> object:
    if field.type == FieldDescriptor.TYPE_ENUM:
        assert field.enum_type is not None
        return field.enum_type.values[0].number
    return {
        FieldDescriptor.TYPE_STRING: "",
        FieldDescriptor.TYPE_BYTES: b"",
        FieldDescriptor.TYPE_BOOL: False,
    }.get(field.type, 0)
