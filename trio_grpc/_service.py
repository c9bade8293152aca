"""Protobuf service descriptors bound to handlers (server) and to call specs (client).

Message classes come from the descriptors themselves (`message_factory.GetMessageClass`), so a generated
`_pb2` module and descriptors fetched by reflection serve equally; no grpcio code is involved.
"""

from __future__ import annotations

import dataclasses
import difflib
import enum
import inspect
from collections.abc import Awaitable, Callable
from typing import Any

from google.protobuf import message_factory
from google.protobuf.descriptor import MethodDescriptor, ServiceDescriptor
from google.protobuf.message import Message


class Kind(enum.Enum):
    UNARY_UNARY = (False, False)
    UNARY_STREAM = (False, True)
    STREAM_UNARY = (True, False)
    STREAM_STREAM = (True, True)

    @property
    def client_streaming(self) -> bool:
        return self.value[0]

    @property
    def server_streaming(self) -> bool:
        return self.value[1]


@dataclasses.dataclass(frozen=True, slots=True)
class MethodSpec:
    """What both sides need to know about one RPC method."""

    path: str  # "/package.Service/Method"
    kind: Kind
    request_type: type[Message]
    response_type: type[Message]

    @classmethod
    def from_descriptor(cls, method: MethodDescriptor) -> MethodSpec:
        return cls(
            path=f"/{method.containing_service.full_name}/{method.name}",
            kind=Kind((method.client_streaming, method.server_streaming)),
            request_type=message_factory.GetMessageClass(method.input_type),
            response_type=message_factory.GetMessageClass(method.output_type),
        )


Handler = Callable[[Any, Any], Awaitable[Any]]


@dataclasses.dataclass(frozen=True)
class ServiceBinding:
    """A service's methods bound to an implementation, ready for `Server`."""

    name: str
    descriptor: ServiceDescriptor
    handlers: dict[str, tuple[MethodSpec, Handler]]


def bind_service(descriptor: ServiceDescriptor, implementation: object) -> ServiceBinding:
    """Bind every method of `descriptor` to the coroutine method of the same name on `implementation`.

    A method the implementation lacks answers UNIMPLEMENTED, as grpcio's generated base classes do, unless
    it has a method of a similar name (a misspelling). That, and a handler that is not a coroutine function,
    raise TypeError here rather than fail every call.
    """
    handlers = {}
    for method in descriptor.methods:
        handler = getattr(implementation, method.name, None)
        if handler is None:
            _refuse_misspelling(descriptor, method, implementation)
            continue
        _check_handler(method, handler)
        spec = MethodSpec.from_descriptor(method)
        handlers[spec.path] = (spec, handler)
    return ServiceBinding(descriptor.full_name, descriptor, handlers)


def _refuse_misspelling(
    descriptor: ServiceDescriptor, method: MethodDescriptor, implementation: object
) -> None:
    rpc_names = set(descriptor.methods_by_name)
    candidates = [name for name in dir(implementation) if not name.startswith("_") and name not in rpc_names]
    close = difflib.get_close_matches(method.name, candidates, n=1, cutoff=0.75)
    if close:
        raise TypeError(
            f"{type(implementation).__name__} has no {method.name} for {descriptor.full_name}, "
            f"but has {close[0]}: did you mean {method.name}?"
        )


def _check_handler(method: MethodDescriptor, handler: object) -> None:
    name = f"{method.containing_service.full_name}.{method.name}"
    if inspect.isasyncgenfunction(handler):
        raise TypeError(
            f"the handler of {name} is an async generator: send each response with "
            "`await context.send(response)` instead of yielding it"
        )
    if not inspect.iscoroutinefunction(handler):
        raise TypeError(
            f"the handler of {name} must be a coroutine function: write `async def {method.name}`"
        )
