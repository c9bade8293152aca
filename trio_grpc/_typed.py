"""Typed methods for generated stubs: one class per RPC kind, generic in its request and response types.

Each wraps the untyped `Method` and returns its runtime objects unchanged; only the static types are narrower,
so that mypy checks the request a call is given and knows the response it gives back. `StreamingCall` is the
statically typed view of a `Call` for the kinds that are driven with `async with`.
"""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator, Iterable
from typing import Generic, Protocol, TypeVar, cast

from google.protobuf.descriptor import MethodDescriptor
from google.protobuf.message import Message

from ._client import Call, Channel, Method
from ._metadata import Metadata, MetadataValue
from ._service import MethodSpec
from ._status import StatusCode

RequestT = TypeVar("RequestT", bound=Message)
ResponseT = TypeVar("ResponseT", bound=Message)
RequestT_contra = TypeVar("RequestT_contra", bound=Message, contravariant=True)
ResponseT_co = TypeVar("ResponseT_co", bound=Message, covariant=True)


class StreamingCall(Protocol[RequestT_contra, ResponseT_co]):
    """What mypy sees of a `Call` (the object is one): see `Call` for what each operation does."""

    code: StatusCode | None
    message: str
    details: bytes | None
    trailing_metadata: tuple[tuple[str, MetadataValue], ...]

    async def __aenter__(self) -> StreamingCall[RequestT_contra, ResponseT_co]: ...
    async def __aexit__(self, *exc_info: object) -> None: ...
    def __aiter__(self) -> AsyncIterator[ResponseT_co]: ...
    async def send(self, message: RequestT_contra, *, compress: bool = True) -> None: ...
    async def done_writing(self) -> None: ...
    async def receive(self) -> ResponseT_co | None: ...
    async def response(self) -> ResponseT_co: ...
    async def initial_metadata(self) -> tuple[tuple[str, MetadataValue], ...]: ...
    @property
    def done(self) -> bool: ...
    @property
    def response_compressed(self) -> bool: ...


class _TypedMethod(Generic[RequestT, ResponseT]):
    def __init__(self, channel: Channel, descriptor: MethodDescriptor) -> None:
        self.method = Method(channel, MethodSpec.from_descriptor(descriptor))

    @property
    def spec(self) -> MethodSpec:
        return self.method.spec


class UnaryUnaryMethod(_TypedMethod[RequestT, ResponseT]):
    """`await stub.M(request)` gives the response; `with_call` also gives the finished `Call`."""

    async def __call__(
        self,
        request: RequestT,
        *,
        timeout: float | None = None,  # noqa: ASYNC109 (the call's gRPC deadline, sent to the server)
        metadata: Metadata | None = None,
        compression: str | None = None,
    ) -> ResponseT:
        response, _ = await self.with_call(
            request, timeout=timeout, metadata=metadata, compression=compression
        )
        return response

    async def with_call(
        self,
        request: RequestT,
        *,
        timeout: float | None = None,  # noqa: ASYNC109 (the call's gRPC deadline, sent to the server)
        metadata: Metadata | None = None,
        compression: str | None = None,
    ) -> tuple[ResponseT, Call]:
        response, call = await self.method.with_call(
            request, timeout=timeout, metadata=metadata, compression=compression
        )
        return cast(ResponseT, response), call

    def open(
        self,
        request: RequestT,
        *,
        timeout: float | None = None,
        metadata: Metadata | None = None,
        compression: str | None = None,
    ) -> StreamingCall[RequestT, ResponseT]:
        """The call as an async context manager, to read its metadata as it comes."""
        call = self.method.open(request, timeout=timeout, metadata=metadata, compression=compression)
        return cast(StreamingCall[RequestT, ResponseT], call)


class UnaryStreamMethod(_TypedMethod[RequestT, ResponseT]):
    """`async with stub.M(request) as call: async for response in call: ...`"""

    def __call__(
        self,
        request: RequestT,
        *,
        timeout: float | None = None,
        metadata: Metadata | None = None,
        compression: str | None = None,
    ) -> StreamingCall[RequestT, ResponseT]:
        call = self.method.open(request, timeout=timeout, metadata=metadata, compression=compression)
        return cast(StreamingCall[RequestT, ResponseT], call)


class StreamUnaryMethod(_TypedMethod[RequestT, ResponseT]):
    """`await stub.M(requests)` with any (async) iterable; `open()` to send them by hand."""

    async def __call__(
        self,
        requests: Iterable[RequestT] | AsyncIterable[RequestT],
        *,
        timeout: float | None = None,  # noqa: ASYNC109 (the call's gRPC deadline, sent to the server)
        metadata: Metadata | None = None,
        compression: str | None = None,
    ) -> ResponseT:
        response, _ = await self.with_call(
            requests, timeout=timeout, metadata=metadata, compression=compression
        )
        return response

    async def with_call(
        self,
        requests: Iterable[RequestT] | AsyncIterable[RequestT],
        *,
        timeout: float | None = None,  # noqa: ASYNC109 (the call's gRPC deadline, sent to the server)
        metadata: Metadata | None = None,
        compression: str | None = None,
    ) -> tuple[ResponseT, Call]:
        response, call = await self.method.with_call(
            requests, timeout=timeout, metadata=metadata, compression=compression
        )
        return cast(ResponseT, response), call

    def open(
        self,
        *,
        timeout: float | None = None,
        metadata: Metadata | None = None,
        compression: str | None = None,
    ) -> StreamingCall[RequestT, ResponseT]:
        call = self.method.open(timeout=timeout, metadata=metadata, compression=compression)
        return cast(StreamingCall[RequestT, ResponseT], call)


class StreamStreamMethod(_TypedMethod[RequestT, ResponseT]):
    """`async with stub.M() as call: await call.send(request) ... async for response in call: ...`"""

    def __call__(
        self,
        *,
        timeout: float | None = None,
        metadata: Metadata | None = None,
        compression: str | None = None,
    ) -> StreamingCall[RequestT, ResponseT]:
        call = self.method.open(timeout=timeout, metadata=metadata, compression=compression)
        return cast(StreamingCall[RequestT, ResponseT], call)
