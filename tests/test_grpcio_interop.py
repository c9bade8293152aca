"""trio_grpc against the real grpcio, both directions, in one test run.

- grpcio clients (sync, and grpc.aio on its own event loop) against our server; the blocking grpcio calls
  run in threads (trio.to_thread), so the trio server keeps running in the test's own loop.
- our client against a grpcio server (grpc.server on a thread pool, one per module, plaintext and TLS ports).

The service is the interop TestService; the behaviour a test wants is picked by request metadata (`mode`),
and a `call-id` lets a test find out, from the grpcio server's termination callbacks, that its call ended.
"""

from __future__ import annotations

import asyncio
import itertools
import queue
import ssl
import threading
from collections.abc import AsyncIterator, Iterator
from concurrent import futures
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import grpc  # type: ignore[import-untyped]
import pytest
import trio
import trio.testing
import trustme
from google.protobuf import any_pb2
from google.rpc import error_details_pb2, status_pb2  # type: ignore[import-untyped]
from grpc_status import rpc_status  # type: ignore[import-untyped]

import trio_grpc
from tests.grpcio_stubs import test_pb2_grpc
from tests.interop._proto.grpc.testing import messages_pb2, test_pb2
from trio_grpc import RpcError, StatusCode

SERVICE = test_pb2.DESCRIPTOR.services_by_name["TestService"]
TIMEOUT = 15
MiB = 1024 * 1024
CONCURRENT = 100
UNICODE_MESSAGE = "ünïcødé ☃ 100% sûr\n"

Context = trio_grpc.ServicerContext
SimpleRequest = messages_pb2.SimpleRequest
SimpleResponse = messages_pb2.SimpleResponse
StreamingOutputCallRequest = messages_pb2.StreamingOutputCallRequest
StreamingOutputCallResponse = messages_pb2.StreamingOutputCallResponse
StreamingInputCallRequest = messages_pb2.StreamingInputCallRequest
StreamingInputCallResponse = messages_pb2.StreamingInputCallResponse

_call_ids = itertools.count()


def payload(size: int, fill: bytes = b"x") -> messages_pb2.Payload:
    return messages_pb2.Payload(body=fill * size)


def sizes(*values: int) -> list[messages_pb2.ResponseParameters]:
    return [messages_pb2.ResponseParameters(size=value) for value in values]


def rich_status(code: StatusCode, message: str) -> status_pb2.Status:
    """A google.rpc.Status with a BadRequest detail, as grpcio-status users build them."""
    detail = any_pb2.Any()
    detail.Pack(
        error_details_pb2.BadRequest(
            field_violations=[
                error_details_pb2.BadRequest.FieldViolation(field="payload", description="trop grand ☃")
            ]
        )
    )
    return status_pb2.Status(code=int(code), message=message, details=[detail])


def assert_rich_status(status: status_pb2.Status, code: StatusCode, message: str) -> None:
    assert (status.code, status.message) == (int(code), message)
    bad_request = error_details_pb2.BadRequest()
    assert status.details[0].Unpack(bad_request)
    assert bad_request.field_violations[0].description == "trop grand ☃"


def echo_metadata(metadata: Any) -> list[tuple[str, Any]]:
    """The metadata a server echoes: the client's `x-` keys (ASCII and -bin)."""
    return [(key, value) for key, value in metadata if key.startswith("x-")]


async def in_thread(function: Any, *args: Any) -> Any:
    """Run blocking grpcio code off the trio loop; a timed-out test abandons the thread instead of hanging."""
    return await trio.to_thread.run_sync(partial(function, *args), abandon_on_cancel=True)


# -- our server, for grpcio clients ------------------------------------------------------------------------


class TrioService:
    def __init__(self) -> None:
        self.cancelled = trio.Event()
        self.peers: set[str] = set()
        self.request_compressed: list[bool] = []
        self._arrived = 0
        self._all_arrived = trio.Event()

    async def _blocked_until_cancelled(self) -> None:
        try:
            await trio.sleep_forever()
        except trio.Cancelled:
            self.cancelled.set()
            raise

    async def UnaryCall(self, request: SimpleRequest, context: Context) -> SimpleResponse:
        self.peers.add(context.peer)
        self.request_compressed.append(context.request_compressed)
        metadata = dict(context.invocation_metadata)
        mode = metadata.get("mode")
        if mode == "block":
            await self._blocked_until_cancelled()
        if mode == "gather":  # wait until CONCURRENT calls are in their handlers at once
            self._arrived += 1
            if self._arrived == CONCURRENT:
                self._all_arrived.set()
            await self._all_arrived.wait()
        echo = echo_metadata(context.invocation_metadata)
        if echo:
            await context.send_initial_metadata(echo)
            context.set_trailing_metadata([(f"trailing-{key}", value) for key, value in echo])
        if request.response_status.code:
            code, message = StatusCode(request.response_status.code), request.response_status.message
            raise RpcError(code, message, details=rich_status(code, message).SerializeToString())
        if request.response_compressed.value:
            context.set_compression(metadata.get("encoding", "gzip"))  # type: ignore[arg-type]
        return SimpleResponse(payload=payload(request.response_size, b"r"))

    async def StreamingOutputCall(self, request: StreamingOutputCallRequest, context: Context) -> None:
        if dict(context.invocation_metadata).get("mode") == "forever":
            try:
                while True:
                    await context.send(StreamingOutputCallResponse(payload=payload(1000)))
            except trio.Cancelled:
                self.cancelled.set()
                raise
        for parameters in request.response_parameters:
            await context.send(StreamingOutputCallResponse(payload=payload(parameters.size)))

    async def StreamingInputCall(
        self, requests: AsyncIterator[StreamingInputCallRequest], context: Context
    ) -> StreamingInputCallResponse:
        total = 0
        async for request in requests:
            total += len(request.payload.body)
        return StreamingInputCallResponse(aggregated_payload_size=total)

    async def FullDuplexCall(
        self, requests: AsyncIterator[StreamingOutputCallRequest], context: Context
    ) -> None:
        async for request in requests:
            for parameters in request.response_parameters:
                await context.send(StreamingOutputCallResponse(payload=payload(parameters.size)))


@dataclass
class Ours:
    port: int
    service: TrioService
    server: trio_grpc.Server

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"


@pytest.fixture
async def ours() -> AsyncIterator[Ours]:
    service = TrioService()
    server = trio_grpc.Server([trio_grpc.bind_service(SERVICE, service)])
    async with trio.open_nursery() as nursery:
        port = await nursery.start(partial(server.serve_tcp, 0, host="127.0.0.1"))
        yield Ours(port, service, server)
        await server.shutdown(grace=1)
    assert not server._connections


# -- the grpcio server, for our client ---------------------------------------------------------------------


@dataclass
class GrpcioService(test_pb2_grpc.TestServiceServicer):  # type: ignore[misc]
    """Sync grpcio handlers; `call-id` metadata registers an event set when grpcio ends the call."""

    ended: dict[str, threading.Event] = field(default_factory=dict)
    peers: set[str] = field(default_factory=set)
    barrier: threading.Barrier = field(default_factory=lambda: threading.Barrier(CONCURRENT))

    def ended_event(self, call_id: str) -> threading.Event:
        return self.ended.setdefault(call_id, threading.Event())

    def _start(self, context: grpc.ServicerContext) -> dict[str, Any]:
        metadata = dict(context.invocation_metadata())
        if "call-id" in metadata:
            context.add_callback(self.ended_event(metadata["call-id"]).set)
        return metadata

    def UnaryCall(self, request: SimpleRequest, context: grpc.ServicerContext) -> SimpleResponse:
        metadata = self._start(context)
        mode = metadata.get("mode")
        if mode == "block":
            self.ended_event(metadata["call-id"]).wait(TIMEOUT)
            assert not context.is_active()
            return SimpleResponse()
        if mode == "barrier":
            self.peers.add(context.peer())
            self.barrier.wait(TIMEOUT)
        echo = echo_metadata(context.invocation_metadata())
        if echo:
            context.send_initial_metadata(echo)
            context.set_trailing_metadata([(f"trailing-{key}", value) for key, value in echo])
        if request.response_status.code:
            code, message = StatusCode(request.response_status.code), request.response_status.message
            context.abort_with_status(rpc_status.to_status(rich_status(code, message)))
        if request.response_compressed.value:
            deflate = metadata.get("encoding") == "deflate"
            context.set_compression(grpc.Compression.Deflate if deflate else grpc.Compression.Gzip)
        return SimpleResponse(payload=payload(request.response_size, b"r"))

    def StreamingOutputCall(
        self, request: StreamingOutputCallRequest, context: grpc.ServicerContext
    ) -> Iterator[StreamingOutputCallResponse]:
        metadata = self._start(context)
        if metadata.get("mode") == "forever":
            while context.is_active():
                yield StreamingOutputCallResponse(payload=payload(1000))
            return
        for parameters in request.response_parameters:
            yield StreamingOutputCallResponse(payload=payload(parameters.size))

    def StreamingInputCall(
        self, requests: Iterator[StreamingInputCallRequest], context: grpc.ServicerContext
    ) -> StreamingInputCallResponse:
        return StreamingInputCallResponse(aggregated_payload_size=sum(len(r.payload.body) for r in requests))

    def FullDuplexCall(
        self, requests: Iterator[StreamingOutputCallRequest], context: grpc.ServicerContext
    ) -> Iterator[StreamingOutputCallResponse]:
        for request in requests:
            for parameters in request.response_parameters:
                yield StreamingOutputCallResponse(payload=payload(parameters.size))


@dataclass
class Theirs:
    port: int
    tls_port: int
    service: GrpcioService

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture(scope="module")
def server_cert(ca: trustme.CA) -> trustme.LeafCert:
    return ca.issue_cert("localhost", "127.0.0.1")


@pytest.fixture(scope="module")
def theirs(server_cert: trustme.LeafCert) -> Iterator[Theirs]:
    service = GrpcioService()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=CONCURRENT + 20))
    test_pb2_grpc.add_TestServiceServicer_to_server(service, server)
    port = server.add_insecure_port("127.0.0.1:0")
    credentials = grpc.ssl_server_credentials(
        [(server_cert.private_key_pem.bytes(), server_cert.cert_chain_pems[0].bytes())]
    )
    tls_port = server.add_secure_port("127.0.0.1:0", credentials)
    server.start()
    yield Theirs(port, tls_port, service)
    server.stop(grace=None)


@asynccontextmanager
async def our_stub(target: str, **options: Any) -> AsyncIterator[trio_grpc.Stub]:
    async with trio_grpc.Channel(target, **options) as channel:
        yield trio_grpc.Stub(channel, SERVICE)


def new_call_id() -> str:
    return f"call-{next(_call_ids)}"


# == grpcio clients -> our server ==========================================================================


def sync_four_kinds(target: str) -> tuple[Any, ...]:
    with grpc.insecure_channel(target) as channel:
        stub = test_pb2_grpc.TestServiceStub(channel)
        unary = stub.UnaryCall(SimpleRequest(response_size=5), timeout=TIMEOUT)
        server_stream = stub.StreamingOutputCall(
            StreamingOutputCallRequest(response_parameters=sizes(1, 2, 100_000)), timeout=TIMEOUT
        )
        streamed = [len(message.payload.body) for message in server_stream]
        requests = [StreamingInputCallRequest(payload=payload(size)) for size in (1, 2, 100_000)]
        client_stream = stub.StreamingInputCall(iter(requests), timeout=TIMEOUT)
        # Ping-pong: each reply is read before the next request is written.
        outgoing: queue.Queue[StreamingOutputCallRequest | None] = queue.Queue()
        replies = stub.FullDuplexCall(iter(outgoing.get, None), timeout=TIMEOUT)
        bidi = []
        for size in (1, 10, 100_000):
            outgoing.put(StreamingOutputCallRequest(response_parameters=sizes(size)))
            bidi.append(len(next(replies).payload.body))
        outgoing.put(None)
        assert list(replies) == []
        return unary.payload.body, streamed, client_stream.aggregated_payload_size, bidi


async def aio_four_kinds(target: str) -> tuple[Any, ...]:
    async with grpc.aio.insecure_channel(target) as channel:
        stub = test_pb2_grpc.TestServiceStub(channel)
        unary = await stub.UnaryCall(SimpleRequest(response_size=5), timeout=TIMEOUT)
        server_stream = stub.StreamingOutputCall(
            StreamingOutputCallRequest(response_parameters=sizes(1, 2, 100_000)), timeout=TIMEOUT
        )
        streamed = [len(message.payload.body) async for message in server_stream]
        requests = [StreamingInputCallRequest(payload=payload(size)) for size in (1, 2, 100_000)]
        client_stream = await stub.StreamingInputCall(iter(requests), timeout=TIMEOUT)
        call = stub.FullDuplexCall(timeout=TIMEOUT)
        bidi = []
        for size in (1, 10, 100_000):
            await call.write(StreamingOutputCallRequest(response_parameters=sizes(size)))
            bidi.append(len((await call.read()).payload.body))
        await call.done_writing()
        assert await call.read() is grpc.aio.EOF
        return unary.payload.body, streamed, client_stream.aggregated_payload_size, bidi


@pytest.mark.parametrize("client", ["sync", "aio"])
async def test_grpcio_client_four_kinds(ours: Ours, client: str) -> None:
    with trio.fail_after(TIMEOUT):
        if client == "sync":
            result = await in_thread(sync_four_kinds, ours.target)
        else:
            result = await in_thread(asyncio.run, aio_four_kinds(ours.target))
    assert result == (b"rrrrr", [1, 2, 100_000], 100_003, [1, 10, 100_000])


async def test_grpcio_client_metadata_and_rich_status(ours: Ours) -> None:
    metadata = [("x-k", "v"), ("x-k-bin", b"\x00\xff\x01")]

    def run() -> None:
        with grpc.insecure_channel(ours.target) as channel:
            stub = test_pb2_grpc.TestServiceStub(channel)
            response, call = stub.UnaryCall.with_call(
                SimpleRequest(response_size=1), metadata=metadata, timeout=TIMEOUT
            )
            assert response.payload.body == b"r"
            assert [item for item in call.initial_metadata() if item[0].startswith("x-")] == metadata
            assert [item for item in call.trailing_metadata() if item[0].startswith("trailing-")] == [
                ("trailing-x-k", "v"),
                ("trailing-x-k-bin", b"\x00\xff\x01"),
            ]
            for echo in (metadata, []):  # after initial metadata, and Trailers-Only
                status = messages_pb2.EchoStatus(code=StatusCode.INVALID_ARGUMENT, message=UNICODE_MESSAGE)
                with pytest.raises(grpc.RpcError) as caught:
                    stub.UnaryCall(SimpleRequest(response_status=status), metadata=echo, timeout=TIMEOUT)
                error = caught.value
                assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
                assert error.details() == UNICODE_MESSAGE
                assert_rich_status(rpc_status.from_call(error), StatusCode.INVALID_ARGUMENT, UNICODE_MESSAGE)
                assert ("trailing-x-k", "v") in error.trailing_metadata() or not echo

    with trio.fail_after(TIMEOUT):
        await in_thread(run)


async def test_grpcio_client_deadline_cancels_our_handler(ours: Ours) -> None:
    def run() -> grpc.StatusCode:
        with grpc.insecure_channel(ours.target) as channel:
            stub = test_pb2_grpc.TestServiceStub(channel)
            with pytest.raises(grpc.RpcError) as caught:
                stub.UnaryCall(SimpleRequest(), metadata=[("mode", "block")], timeout=0.3)
            return caught.value.code()

    with trio.fail_after(TIMEOUT):
        assert await in_thread(run) == grpc.StatusCode.DEADLINE_EXCEEDED
        await ours.service.cancelled.wait()


@pytest.mark.parametrize("client", ["sync", "aio"])
async def test_grpcio_client_cancels_mid_stream(ours: Ours, client: str) -> None:
    request = StreamingOutputCallRequest()
    metadata = [("mode", "forever")]

    def run_sync() -> grpc.StatusCode:
        with grpc.insecure_channel(ours.target) as channel:
            call = test_pb2_grpc.TestServiceStub(channel).StreamingOutputCall(request, metadata=metadata)
            assert len(next(call).payload.body) == 1000
            call.cancel()
            return call.code()

    async def run_aio() -> grpc.StatusCode:
        async with grpc.aio.insecure_channel(ours.target) as channel:
            call = test_pb2_grpc.TestServiceStub(channel).StreamingOutputCall(request, metadata=metadata)
            assert len((await call.read()).payload.body) == 1000
            call.cancel()
            return await call.code()

    with trio.fail_after(TIMEOUT):
        code = await in_thread(run_sync) if client == "sync" else await in_thread(asyncio.run, run_aio())
        assert code == grpc.StatusCode.CANCELLED
        await ours.service.cancelled.wait()


@pytest.mark.parametrize(("encoding", "compression"), [("gzip", "Gzip"), ("deflate", "Deflate")])
async def test_grpcio_client_compression(ours: Ours, encoding: str, compression: str) -> None:
    def run() -> bytes:
        with grpc.insecure_channel(ours.target) as channel:
            response = test_pb2_grpc.TestServiceStub(channel).UnaryCall(
                SimpleRequest(
                    payload=payload(100_000, b"\0"),
                    response_size=100_000,
                    response_compressed=messages_pb2.BoolValue(value=True),
                ),
                metadata=[("encoding", encoding)],
                compression=getattr(grpc.Compression, compression),
                timeout=TIMEOUT,
            )
            return bytes(response.payload.body)

    with trio.fail_after(TIMEOUT):
        assert await in_thread(run) == b"r" * 100_000
    assert ours.service.request_compressed == [True]


async def test_grpcio_client_large_messages(ours: Ours) -> None:
    def run() -> list[grpc.StatusCode]:
        codes = []
        with grpc.insecure_channel(ours.target) as channel:
            stub = test_pb2_grpc.TestServiceStub(channel)
            response = stub.UnaryCall(SimpleRequest(payload=payload(3 * MiB), response_size=3 * MiB))
            assert len(response.payload.body) == 3 * MiB
            for request in (SimpleRequest(payload=payload(5 * MiB)), SimpleRequest(response_size=5 * MiB)):
                with pytest.raises(grpc.RpcError) as caught:
                    stub.UnaryCall(request, timeout=TIMEOUT)
                codes.append(caught.value.code())
            assert stub.UnaryCall(SimpleRequest(response_size=2), timeout=TIMEOUT).payload.body == b"rr"
        return codes

    with trio.fail_after(TIMEOUT):
        # Refused by our server (5 MiB request), then by grpcio's own limit (5 MiB response).
        assert await in_thread(run) == [grpc.StatusCode.RESOURCE_EXHAUSTED] * 2


async def test_grpcio_aio_client_100_concurrent_streams(ours: Ours) -> None:
    async def run() -> list[bytes]:
        async with grpc.aio.insecure_channel(ours.target) as channel:
            stub = test_pb2_grpc.TestServiceStub(channel)
            calls = [
                stub.UnaryCall(
                    SimpleRequest(response_size=index), metadata=[("mode", "gather")], timeout=TIMEOUT
                )
                for index in range(CONCURRENT)
            ]
            return [bytes(response.payload.body) for response in await asyncio.gather(*calls)]

    with trio.fail_after(TIMEOUT):
        assert await in_thread(asyncio.run, run()) == [b"r" * index for index in range(CONCURRENT)]
    assert len(ours.service.peers) == 1  # one connection


async def test_grpcio_aio_client_respects_our_max_concurrent_streams() -> None:
    limit = 4
    active = peak = 0

    class Service:
        async def UnaryCall(self, request: SimpleRequest, context: Context) -> SimpleResponse:
            nonlocal active, peak
            active += 1
            peak = max(peak, active)
            await trio.testing.wait_all_tasks_blocked()
            active -= 1
            return SimpleResponse()

    async def run(target: str) -> int:
        async with grpc.aio.insecure_channel(target) as channel:
            stub = test_pb2_grpc.TestServiceStub(channel)
            calls = [stub.UnaryCall(SimpleRequest(), timeout=TIMEOUT) for _ in range(50)]
            return len(await asyncio.gather(*calls))

    server = trio_grpc.Server(
        [trio_grpc.bind_service(SERVICE, Service())],
        settings=trio_grpc.ServerSettings(max_concurrent_streams=limit),
    )
    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            port = await nursery.start(partial(server.serve_tcp, 0, host="127.0.0.1"))
            assert await in_thread(asyncio.run, run(f"127.0.0.1:{port}")) == 50
            await server.shutdown(grace=1)
    assert 1 <= peak <= limit


async def test_grpcio_tls_client_against_our_tls_server(
    ca: trustme.CA, server_cert: trustme.LeafCert
) -> None:
    tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_cert.configure_cert(tls)
    server = trio_grpc.Server([trio_grpc.bind_service(SERVICE, TrioService())])

    def run(port: int) -> bytes:
        credentials = grpc.ssl_channel_credentials(root_certificates=ca.cert_pem.bytes())
        options = [("grpc.ssl_target_name_override", "localhost")]
        with grpc.secure_channel(f"127.0.0.1:{port}", credentials, options=options) as channel:
            stub = test_pb2_grpc.TestServiceStub(channel)
            return bytes(stub.UnaryCall(SimpleRequest(response_size=3), timeout=TIMEOUT).payload.body)

    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            port = await nursery.start(partial(server.serve_tcp, 0, host="127.0.0.1", tls=tls))
            assert await in_thread(run, port) == b"rrr"
            await server.shutdown(grace=1)


# == our client -> grpcio server ===========================================================================


async def test_our_client_four_kinds(theirs: Theirs) -> None:
    with trio.fail_after(TIMEOUT):
        async with our_stub(theirs.target) as stub:
            assert (await stub.UnaryCall(SimpleRequest(response_size=4))).payload.body == b"rrrr"
            request = StreamingOutputCallRequest(response_parameters=sizes(1, 2, 100_000))
            async with stub.StreamingOutputCall(request) as call:
                assert [len(message.payload.body) async for message in call] == [1, 2, 100_000]
            requests = [StreamingInputCallRequest(payload=payload(size)) for size in (1, 2, 100_000)]
            assert (await stub.StreamingInputCall(requests)).aggregated_payload_size == 100_003
            async with stub.FullDuplexCall(timeout=TIMEOUT) as call:
                for size in (1, 10, 100_000):
                    await call.send(StreamingOutputCallRequest(response_parameters=sizes(size)))
                    reply = await call.receive()
                    assert reply is not None and len(reply.payload.body) == size
                await call.done_writing()
                assert await call.receive() is None
            assert call.code == StatusCode.OK


async def test_our_client_metadata_and_rich_status(theirs: Theirs) -> None:
    metadata = [("x-k", "v"), ("x-k-bin", b"\x00\xff\x01")]
    with trio.fail_after(TIMEOUT):
        async with our_stub(theirs.target) as stub:
            response, call = await stub.UnaryCall.with_call(SimpleRequest(response_size=1), metadata=metadata)
            assert response.payload.body == b"r"
            assert [item for item in await call.initial_metadata() if item[0].startswith("x-")] == metadata
            assert [item for item in call.trailing_metadata if item[0].startswith("trailing-")] == [
                ("trailing-x-k", "v"),
                ("trailing-x-k-bin", b"\x00\xff\x01"),
            ]
            status = messages_pb2.EchoStatus(code=StatusCode.FAILED_PRECONDITION, message=UNICODE_MESSAGE)
            with pytest.raises(RpcError) as caught:
                await stub.UnaryCall(SimpleRequest(response_status=status))
            error = caught.value
            assert (error.code, error.message) == (StatusCode.FAILED_PRECONDITION, UNICODE_MESSAGE)
            assert error.details is not None
            assert_rich_status(
                status_pb2.Status.FromString(error.details), StatusCode.FAILED_PRECONDITION, UNICODE_MESSAGE
            )


async def test_our_client_deadline_cancels_the_grpcio_handler(theirs: Theirs) -> None:
    call_id = new_call_id()
    with trio.fail_after(TIMEOUT):
        async with our_stub(theirs.target) as stub:
            with pytest.raises(RpcError) as caught:
                await stub.UnaryCall(
                    SimpleRequest(), metadata=[("mode", "block"), ("call-id", call_id)], timeout=0.3
                )
            assert caught.value.code == StatusCode.DEADLINE_EXCEEDED
            assert await in_thread(theirs.service.ended_event(call_id).wait, TIMEOUT)


async def test_our_client_cancels_mid_stream(theirs: Theirs) -> None:
    call_id = new_call_id()
    with trio.fail_after(TIMEOUT):
        async with our_stub(theirs.target) as stub:
            metadata = [("mode", "forever"), ("call-id", call_id)]
            async with stub.StreamingOutputCall(StreamingOutputCallRequest(), metadata=metadata) as call:
                async for message in call:
                    assert len(message.payload.body) == 1000
                    break
            assert call.code == StatusCode.CANCELLED
            assert await in_thread(theirs.service.ended_event(call_id).wait, TIMEOUT)
            assert (await stub.UnaryCall(SimpleRequest(response_size=1))).payload.body == b"r"


@pytest.mark.parametrize("encoding", ["gzip", "deflate"])
async def test_our_client_compression(theirs: Theirs, encoding: str) -> None:
    with trio.fail_after(TIMEOUT):
        async with our_stub(theirs.target) as stub:
            request = SimpleRequest(
                payload=payload(100_000, b"\0"),
                response_size=100_000,
                response_compressed=messages_pb2.BoolValue(value=True),
            )
            response, call = await stub.UnaryCall.with_call(
                request, compression=encoding, metadata=[("encoding", encoding)]
            )
            assert response.payload.body == b"r" * 100_000
            assert call.response_compressed


async def test_our_client_large_messages(theirs: Theirs) -> None:
    with trio.fail_after(TIMEOUT):
        async with our_stub(theirs.target) as stub, stub.FullDuplexCall() as parallel:
            await parallel.send(StreamingOutputCallRequest(response_parameters=sizes(1)))
            assert await parallel.receive() is not None
            response = await stub.UnaryCall(SimpleRequest(payload=payload(3 * MiB), response_size=3 * MiB))
            assert len(response.payload.body) == 3 * MiB
            # Refused by grpcio (5 MiB request), then by our client (5 MiB response).
            for request in (SimpleRequest(payload=payload(5 * MiB)), SimpleRequest(response_size=5 * MiB)):
                with pytest.raises(RpcError) as caught:
                    await stub.UnaryCall(request)
                assert caught.value.code == StatusCode.RESOURCE_EXHAUSTED
            # The call in parallel and the connection carry on.
            await parallel.send(StreamingOutputCallRequest(response_parameters=sizes(3 * MiB)))
            reply = await parallel.receive()
            assert reply is not None and len(reply.payload.body) == 3 * MiB
            await parallel.done_writing()
            assert await parallel.receive() is None
            assert (await stub.UnaryCall(SimpleRequest(response_size=2))).payload.body == b"rr"


async def test_our_client_100_concurrent_streams(theirs: Theirs) -> None:
    theirs.service.peers.clear()
    results: dict[int, bytes] = {}

    async def call(stub: trio_grpc.Stub, index: int) -> None:
        response = await stub.UnaryCall(SimpleRequest(response_size=index), metadata=[("mode", "barrier")])
        results[index] = response.payload.body

    with trio.fail_after(TIMEOUT):
        async with our_stub(theirs.target) as stub, trio.open_nursery() as nursery:
            for index in range(CONCURRENT):  # the grpcio handlers meet at a barrier: all at once
                nursery.start_soon(call, stub, index)
    assert results == {index: b"r" * index for index in range(CONCURRENT)}
    assert len(theirs.service.peers) == 1


async def test_our_tls_client_against_grpcio_tls_server(theirs: Theirs, ca: trustme.CA) -> None:
    tls = ssl.create_default_context()
    ca.configure_trust(tls)
    with trio.fail_after(TIMEOUT):
        target = f"127.0.0.1:{theirs.tls_port}"
        async with our_stub(target, tls=tls, server_hostname="localhost") as stub:
            assert (await stub.UnaryCall(SimpleRequest(response_size=3))).payload.body == b"rrr"

        # TLS to a plaintext server, and plaintext to a TLS server: a clear UNAVAILABLE.
        async with our_stub(theirs.target, tls=tls, server_hostname="localhost") as stub:
            with pytest.raises(RpcError) as caught:
                await stub.UnaryCall(SimpleRequest())
            assert caught.value.code == StatusCode.UNAVAILABLE
            assert "TLS handshake" in caught.value.message and "plaintext" in caught.value.message
        async with our_stub(target) as stub:
            with pytest.raises(RpcError) as caught:
                await stub.UnaryCall(SimpleRequest())
            assert caught.value.code == StatusCode.UNAVAILABLE
            assert "TLS" in caught.value.message
