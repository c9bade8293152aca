"""trio_grpc: gRPC for Trio on the pure-Python HTTP/2 stack h2.

Serve with `Server` and `bind_service`, call with `Channel` and `Stub`; see docs/api.md.
"""

from . import health, interceptors, reflection
from ._client import Call, Channel, Method, Stub
from ._metadata import Metadata, MetadataError
from ._server import Server, ServicerContext
from ._service import ServiceBinding, bind_service
from ._settings import ChannelSettings, ServerSettings
from ._status import RpcError, StatusCode
from ._typed import StreamingCall, StreamStreamMethod, StreamUnaryMethod, UnaryStreamMethod, UnaryUnaryMethod

__all__ = [
    "Call",
    "Channel",
    "ChannelSettings",
    "Metadata",
    "MetadataError",
    "Method",
    "RpcError",
    "Server",
    "ServerSettings",
    "ServiceBinding",
    "ServicerContext",
    "StatusCode",
    "StreamStreamMethod",
    "StreamUnaryMethod",
    "StreamingCall",
    "Stub",
    "UnaryStreamMethod",
    "UnaryUnaryMethod",
    "bind_service",
    "health",
    "interceptors",
    "reflection",
]
