"""protoc-gen-trio_grpc as a user meets it: compile one's own .proto, serve and call it, check it with mypy.

The generated module and a user-style program live in a temporary directory. The program runs for real (all
four kinds, through a typed base and a typed stub) and is checked by `mypy --strict`, which must find it
clean, reveal the message types, and reject a wrong request type and a misspelled method in a second
program. The check follows into trio_grpc with no configuration of the project's, so it covers the shipped
.pyi files too.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
MYPY = Path(sys.executable).parent / "mypy"

PROTO = """\
syntax = "proto3";
package demo;

message Number { int64 value = 1; }
message Total { int64 sum = 1; message Part { int64 value = 1; } repeated Part parts = 2; }

service Counter {
  rpc Add(Number) returns (Total);
  rpc Count(Number) returns (stream Number);
  rpc Sum(stream Number) returns (Total);
  rpc Echo(stream Number) returns (stream Number);
}
"""

PROGRAM = """\
from collections.abc import AsyncIterator
from typing import reveal_type

import trio

import trio_grpc
from demo import counter_pb2, counter_trio_grpc


class Counter(counter_trio_grpc.CounterBase):
    async def Add(self, request: counter_pb2.Number, context: trio_grpc.ServicerContext) -> counter_pb2.Total:
        return counter_pb2.Total(sum=request.value + 1)

    async def Count(self, request: counter_pb2.Number, context: trio_grpc.ServicerContext) -> None:
        for value in range(request.value):
            await context.send(counter_pb2.Number(value=value))

    async def Sum(
        self, requests: AsyncIterator[counter_pb2.Number], context: trio_grpc.ServicerContext
    ) -> counter_pb2.Total:
        parts = [counter_pb2.Total.Part(value=request.value) async for request in requests]
        return counter_pb2.Total(sum=sum(part.value for part in parts), parts=parts)

    async def Echo(
        self, requests: AsyncIterator[counter_pb2.Number], context: trio_grpc.ServicerContext
    ) -> None:
        async for request in requests:
            await context.send(request)


async def main() -> None:
    server = trio_grpc.Server([Counter().bind()])
    async with trio.open_nursery() as nursery:
        port = await nursery.start(server.serve_tcp, 0, "127.0.0.1")
        async with trio_grpc.Channel(f"127.0.0.1:{port}") as channel:
            stub = counter_trio_grpc.CounterStub(channel)
            total = await stub.Add(counter_pb2.Number(value=41), timeout=5)
            reveal_type(total)
            async with stub.Count(counter_pb2.Number(value=3)) as call:
                counted = [number.value async for number in call]
                reveal_type(call)
            summed = await stub.Sum([counter_pb2.Number(value=2), counter_pb2.Number(value=3)])
            reveal_type(summed.parts[0])
            async with stub.Echo() as echo:
                await echo.send(counter_pb2.Number(value=7))
                await echo.done_writing()
                echoed = await echo.receive()
                reveal_type(echoed)
        await server.shutdown()
    print(total.sum, counted, summed.sum, echoed)


trio.run(main)
"""

WRONG = """\
import trio_grpc
from demo import counter_pb2, counter_trio_grpc


async def wrong(channel: trio_grpc.Channel) -> None:
    stub = counter_trio_grpc.CounterStub(channel)
    await stub.Add(counter_pb2.Total())
    await stub.Cuont(counter_pb2.Number())
"""


def compile_project(root: Path, proto: str, programs: dict[str, str]) -> None:
    """A user's project: demo/counter.proto compiled with `python -m trio_grpc.codegen`, and programs."""
    pytest.importorskip("grpc_tools")
    (root / "demo").mkdir()
    (root / "demo" / "counter.proto").write_text(proto, encoding="utf-8")
    outputs = ["--python_out=.", "--pyi_out=.", "--trio_grpc_out=."]
    command = [sys.executable, "-m", "trio_grpc.codegen", "-I.", *outputs, "demo/counter.proto"]
    subprocess.run(command, cwd=root, env=_env(root), check=True, timeout=60)
    for name, source in programs.items():
        (root / name).write_text(source, encoding="utf-8")


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("project")
    compile_project(root, PROTO, {"program.py": PROGRAM, "wrong.py": WRONG})
    return root


def _env(root: Path) -> dict[str, str]:
    # The user's project first, then this tree's trio_grpc, as an installed package would be found.
    return {**os.environ, "PYTHONPATH": f"{root}{os.pathsep}{REPO_ROOT}", "MYPYPATH": str(REPO_ROOT)}


def _run(project: Path, program: str) -> str:
    command = [sys.executable, program]
    result = subprocess.run(
        command, cwd=project, env=_env(project), capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def _mypy(project: Path, *programs: str) -> list[str]:
    command = [str(MYPY), "--strict", "--cache-dir", str(project / ".mypy_cache"), *programs]
    result = subprocess.run(
        command, cwd=project, env=_env(project), capture_output=True, text=True, timeout=300
    )
    return result.stdout.splitlines()


def test_the_plugin_writes_a_module_with_base_and_stub_and_no_grpcio(project: Path) -> None:
    source = (project / "demo" / "counter_trio_grpc.py").read_text(encoding="utf-8")
    assert "class CounterBase(abc.ABC):" in source
    assert "class CounterStub:" in source
    assert "grpc." not in source.replace("trio_grpc.", "")
    assert "import grpc\n" not in source


def test_a_typed_server_and_client_run_all_four_kinds(project: Path) -> None:
    assert _run(project, "program.py").split("\n")[0] == "42 [0, 1, 2] 5 value: 7"


def test_mypy_strict_is_clean_reveals_the_types_and_rejects_mistakes(project: Path) -> None:
    lines = _mypy(project, "program.py", "wrong.py")
    output = "\n".join(lines)
    program = [line for line in lines if line.startswith("program.py")]
    assert all(": note: Revealed type is" in line for line in program), output
    revealed = [line.split("Revealed type is ")[1] for line in program]
    assert revealed == [
        '"demo.counter_pb2.Total"',
        '"trio_grpc._typed.StreamingCall[demo.counter_pb2.Number, demo.counter_pb2.Number]"',
        '"demo.counter_pb2.Total.Part"',
        '"demo.counter_pb2.Number | None"',
    ]
    wrong = [line for line in lines if line.startswith("wrong.py")]
    assert len(wrong) == 2, output
    assert 'Argument 1 to "__call__" of "UnaryUnaryMethod" has incompatible type "Total"' in wrong[0]
    assert 'wrong.py:8: error: "CounterStub" has no attribute "Cuont"' in wrong[1]
    # Nothing in trio_grpc, its shipped _pb2.pyi files or the generated module: a user has no overrides.
    assert lines[-1].startswith("Found 2 errors in 1 file"), output


def test_the_plugin_refuses_an_rpc_named_bind(tmp_path: Path) -> None:
    pytest.importorskip("grpc_tools")
    (tmp_path / "clash.proto").write_text(
        'syntax = "proto3"; message M {} service S { rpc bind(M) returns (M); }', encoding="utf-8"
    )
    command = [sys.executable, "-m", "trio_grpc.codegen", "-I.", "--trio_grpc_out=.", "clash.proto"]
    result = subprocess.run(
        command, cwd=tmp_path, env=_env(tmp_path), capture_output=True, text=True, timeout=60
    )
    assert result.returncode != 0
    assert "service S has an RPC named bind" in result.stderr


def _docs_block(language: str) -> str:
    """The first `language` code block of docs/api.md's "Your own .proto from zero"."""
    docs = (REPO_ROOT / "docs" / "api.md").read_text(encoding="utf-8")
    section = docs.split("## Your own .proto from zero", 1)[1].split("\n## ", 1)[0]
    return section.split(f"```{language}\n", 1)[1].split("```", 1)[0]


def test_the_docs_example_compiles_runs_and_checks_clean(tmp_path: Path) -> None:
    compile_project(tmp_path, _docs_block("proto"), {"example.py": _docs_block("python")})
    assert _run(tmp_path, "example.py") == "42 [0, 1, 2] 5 value: 7\n\n"
    lines = _mypy(tmp_path, "example.py")
    assert lines[-1].startswith("Success: no issues found"), "\n".join(lines)
