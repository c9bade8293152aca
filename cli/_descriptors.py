"""Where chatter-from-descriptors finds descriptors: server reflection, .proto files, descriptor sets.

Every source fills a private `DescriptorPool` (never the default one, so nothing clashes with what this
process imports itself) and answers two questions: which services it knows, and "make sure the file that
declares this symbol is in the pool". Reflection asks the server lazily, one file and its imports at a
time, over one v1 stream, or v1alpha when the server lacks v1. Files are compiled at run time with
grpcio-tools' protoc, imported only then (it is the `tools` extra, not a dependency of trio_grpc).
"""

from __future__ import annotations

import contextlib
import importlib.resources
import os
import tempfile
from collections.abc import Iterable
from types import ModuleType, TracebackType
from typing import Any, Protocol

from google.protobuf import descriptor_pb2, descriptor_pool
from google.protobuf.message import DecodeError

from trio_grpc import Call, Channel, RpcError, StatusCode, Stub
from trio_grpc._proto.grpc.reflection.v1 import reflection_pb2 as reflection_v1
from trio_grpc._proto.grpc.reflection.v1alpha import reflection_pb2 as reflection_v1alpha

from ._common import CliError


class DescriptorSource(Protocol):
    pool: descriptor_pool.DescriptorPool

    async def services(self) -> list[str]:
        """Full names of the services this source knows, sorted."""

    async def load(self, symbol: str) -> bool:
        """Put the file declaring `symbol` (and its imports) in the pool; False if no file declares it."""


def _declares(pool: descriptor_pool.DescriptorPool, symbol: str) -> bool:
    for find in (pool.FindFileContainingSymbol, pool.FindMethodByName):  # the first misses methods
        with contextlib.suppress(KeyError):
            find(symbol)
            return True
    return False


def _has_file(pool: descriptor_pool.DescriptorPool, name: str) -> bool:
    try:
        pool.FindFileByName(name)
    except KeyError:
        return False
    return True


def add_files(
    pool: descriptor_pool.DescriptorPool, files: dict[str, descriptor_pb2.FileDescriptorProto]
) -> None:
    """Add those of `files` the pool lacks, each after the files it imports."""
    adding: set[str] = set()

    def add(name: str, importer: str) -> None:
        if _has_file(pool, name):
            return
        if name not in files:
            raise CliError(
                f"{importer} imports {name}, which the descriptors do not include",
                "build descriptor sets with protoc --include_imports",
            )
        if name in adding:
            raise CliError(f"the descriptors import each other in a cycle ({importer} and {name})")
        adding.add(name)
        for dependency in files[name].dependency:
            add(dependency, name)
        pool.AddSerializedFile(files[name].SerializeToString())

    for name in files:
        add(name, name)


class FileSource:
    """Descriptors known up front: a descriptor set, or .proto files compiled into one."""

    def __init__(self, files: Iterable[descriptor_pb2.FileDescriptorProto]) -> None:
        self.pool = descriptor_pool.DescriptorPool()
        by_name = {file.name: file for file in files}
        add_files(self.pool, by_name)
        self._services = sorted(
            f"{file.package}.{service.name}" if file.package else service.name
            for file in by_name.values()
            for service in file.service
        )

    async def services(self) -> list[str]:
        return self._services

    async def load(self, symbol: str) -> bool:
        return _declares(self.pool, symbol)


def read_descriptor_set(path: str) -> list[descriptor_pb2.FileDescriptorProto]:
    try:
        with open(path, "rb") as file:
            data = file.read()
    except OSError as exc:
        raise CliError(f"cannot read --protoset {path}: {exc.strerror}") from None
    descriptor_set = descriptor_pb2.FileDescriptorSet()
    try:
        descriptor_set.ParseFromString(data)
    except DecodeError:
        raise CliError(
            f"{path} is not a descriptor set",
            "make one with protoc --descriptor_set_out=FILE --include_imports",
        ) from None
    return list(descriptor_set.file)


def compile_protos(
    proto_files: list[str], import_paths: list[str]
) -> list[descriptor_pb2.FileDescriptorProto]:
    """Compile .proto files with grpcio-tools' protoc into descriptors, imports included."""
    try:
        from grpc_tools import protoc  # type: ignore[import-untyped]
    except ImportError:
        raise CliError(
            "compiling .proto files needs grpcio-tools",
            "install it with: pip install 'trio-grpc[tools]' (or give a --protoset instead)",
        ) from None
    well_known = importlib.resources.files("grpc_tools") / "_proto"
    with tempfile.TemporaryDirectory() as directory:
        output = os.path.join(directory, "descriptors.pb")
        command = [
            "protoc",
            f"--descriptor_set_out={output}",
            "--include_imports",
            *(f"--proto_path={path}" for path in import_paths or ["."]),
            f"--proto_path={well_known}",
            *proto_files,
        ]
        if protoc.main(command) != 0:  # protoc has printed what is wrong
            hint = "give the directories that imports are relative to with -I" if not import_paths else ""
            raise CliError("protoc could not compile the --proto files", hint)
        return read_descriptor_set(output)


class ReflectionSource:
    """Descriptors asked from the server over grpc.reflection.v1 (or v1alpha) ServerReflectionInfo."""

    def __init__(
        self, channel: Channel, metadata: list[tuple[str, str | bytes]], timeout: float | None
    ) -> None:
        self.pool = descriptor_pool.DescriptorPool()
        self._channel = channel
        self._metadata = metadata
        self._timeout = timeout
        self._versions: list[ModuleType] = [reflection_v1, reflection_v1alpha]
        self._stack = contextlib.AsyncExitStack()
        self._call: Call | None = None
        self._files: dict[str, descriptor_pb2.FileDescriptorProto] = {}

    async def __aenter__(self) -> ReflectionSource:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._call is not None and exc is None:
            with contextlib.suppress(RpcError):
                await self._call.done_writing()
                while await self._call.receive() is not None:
                    pass
        await self._stack.aclose()

    async def _ask(self, **request: object) -> Any:
        """One reflection request and its response, opening the stream (v1, else v1alpha) at first."""
        while True:
            module = self._versions[0]
            if self._call is None:
                stub = Stub(self._channel, module.DESCRIPTOR.services_by_name["ServerReflection"])
                call = stub.ServerReflectionInfo.open(metadata=self._metadata, timeout=self._timeout)
                self._call = await self._stack.enter_async_context(call)
            try:
                await self._call.send(module.ServerReflectionRequest(**request))
                response: Any = await self._call.receive()
            except RpcError as exc:
                if exc.code != StatusCode.UNIMPLEMENTED:
                    raise
                self._call = None
                self._versions.pop(0)
                if not self._versions:
                    raise CliError(
                        f"the server does not offer reflection ({exc.message or 'UNIMPLEMENTED'})",
                        "give the descriptors with --proto FILE or --protoset FILE",
                    ) from None
                continue
            if response is None:
                raise CliError("the server ended the reflection stream without answering (OK)")
            if response.HasField("error_response"):
                error = response.error_response
                if error.error_code == StatusCode.NOT_FOUND:
                    raise LookupError(error.error_message)
                code = StatusCode(error.error_code).name
                raise CliError(f"reflection failed: {error.error_message} ({code})")
            return response

    async def services(self) -> list[str]:
        response = await self._ask(list_services="")
        return sorted(service.name for service in response.list_services_response.service)

    async def load(self, symbol: str) -> bool:
        if _declares(self.pool, symbol):
            return True
        if await self._load_file_of(symbol):
            return _declares(self.pool, symbol)
        # grpcio's reflection finds services but not their methods: ask for the service of a method.
        service = symbol.rpartition(".")[0]
        return bool(service) and await self._load_file_of(service) and _declares(self.pool, symbol)

    async def _load_file_of(self, symbol: str) -> bool:
        try:
            response = await self._ask(file_containing_symbol=symbol)
        except LookupError:
            return False
        await self._add(response)
        return True

    async def _add(self, response: Any) -> None:
        """Add the files of a file_descriptor_response, asking for imports the server left out."""
        for serialized in response.file_descriptor_response.file_descriptor_proto:
            file = descriptor_pb2.FileDescriptorProto.FromString(serialized)
            self._files.setdefault(file.name, file)
        for file in list(self._files.values()):
            for name in file.dependency:
                if name not in self._files and not _has_file(self.pool, name):
                    with contextlib.suppress(LookupError):  # add_files reports it, naming the importer
                        await self._add(await self._ask(file_by_filename=name))
        add_files(self.pool, self._files)
