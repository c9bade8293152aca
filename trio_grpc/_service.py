"""Protobuf service descriptors bound to handlers (server) and to call specs (client).

Message classes come from the descriptors themselves (`message_factory.GetMessageClass`), so a generated
`_pb2` module and descriptors fetched by reflection serve equally; no grpcio code is involved.
"""

from __future__ import annotations

import dataclasses
import enum
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

    A method the implementation lacks answers UNIMPLEMENTED, as grpcio's generated base classes do.
    """
    handlers = {}
    for method in descriptor.methods:
        handler = getattr(implementation, method.name, None)
        if handler is not None:
            spec = MethodSpec.from_descriptor(method)
            handlers[spec.path] = (spec, handler)
    return ServiceBinding(descriptor.full_name, descriptor, handlers)
