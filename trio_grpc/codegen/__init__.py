"""Code generation for trio_grpc: the protoc plugin `protoc-gen-trio_grpc`, and a protoc wrapper.

    python -m trio_grpc.codegen -I. --python_out=. --pyi_out=. --trio_grpc_out=. x.proto

runs grpcio-tools' protoc (the `tools` extra) with this package's plugin, with no PATH setup; with the
package installed, `python -m grpc_tools.protoc ... --trio_grpc_out=.` finds the console script instead.
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

from google.protobuf.compiler import plugin_pb2

from ._generator import generate

__all__ = ["generate", "main", "plugin_executable", "protoc"]


def main() -> None:
    """The plugin: a CodeGeneratorRequest on stdin, a CodeGeneratorResponse on stdout."""
    request = plugin_pb2.CodeGeneratorRequest.FromString(sys.stdin.buffer.read())
    sys.stdout.buffer.write(generate(request).SerializeToString())


@contextlib.contextmanager
def plugin_executable() -> Iterator[Path]:
    """A temporary executable that runs `main` with this interpreter and this copy of trio_grpc.

    protoc runs plugins as programs; this one needs neither an installed console script nor PATH.
    """
    package_root = Path(__file__).resolve().parent.parent.parent
    with tempfile.TemporaryDirectory() as scratch:
        script = Path(scratch) / "protoc-gen-trio_grpc"
        script.write_text(
            f"#!{sys.executable}\n"
            "import sys\n"
            f"sys.path.insert(0, {str(package_root)!r})\n"
            "from trio_grpc.codegen import main\n"
            "main()\n",
            encoding="utf-8",
        )
        script.chmod(0o755)
        yield script


def protoc(args: list[str]) -> int:
    """Run grpc_tools.protoc with `args` (protoc's own), the trio_grpc plugin and the well-known types."""
    try:
        import grpc_tools  # type: ignore[import-untyped]
        from grpc_tools import protoc as grpc_protoc
    except ImportError:
        sys.exit("trio_grpc.codegen needs grpcio-tools: pip install 'trio-grpc[tools]'")
    well_known = os.path.join(os.path.dirname(grpc_tools.__file__), "_proto")
    with plugin_executable() as plugin:
        return int(
            grpc_protoc.main(["protoc", f"--plugin=protoc-gen-trio_grpc={plugin}", *args, f"-I{well_known}"])
        )
