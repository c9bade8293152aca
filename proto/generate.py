"""Regenerate the committed protobuf code from the .proto files in this directory.

Run from anywhere: ``python proto/generate.py``. ``tests/test_generated.py`` calls :func:`generate` into a
temporary directory and compares the result with the committed files: edit the .proto files, never the output.

protoc writes ``_pb2`` modules and, with this tree's plugin (``trio_grpc.codegen``), ``_trio_grpc`` modules
of typed stubs and servicer bases. Its output is kept as it is except for two rewrites, each in one small
function below:

- imports between generated modules are made absolute to where the modules live in this repository
  (protoc writes ``from grpc.testing import empty_pb2``, which would find the grpcio package ``grpc``);
- the health and reflection modules register into the private pool ``trio_grpc._proto.POOL`` instead of
  the default one, where grpcio-health-checking and grpcio-reflection define the same symbols under other
  file names.

Every directory under an output root is a generated package: the script owns these roots entirely and removes
files it no longer generates.
"""

from __future__ import annotations

import re
import shutil
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:  # run as a script from proto/: the plugin is this tree's trio_grpc.codegen
    sys.path.insert(0, str(REPO_ROOT))
# The include root: protoc sees "rpc/chat.proto", the name the seed's Go server reports through reflection.
PROTO_ROOT = REPO_ROOT / "proto"

PRIVATE_POOL_MODULE = "trio_grpc._proto"
PRIVATE_POOL_INIT = '''\
"""Generated code for the gRPC health and reflection protos, registered in a private descriptor pool.

grpcio-health-checking and grpcio-reflection define the same symbols (grpc.health.v1.HealthCheckRequest, ...)
in the default pool under other file names, so ours live in POOL to let both be imported in one process.
Written by proto/generate.py: edit that script, not this file.
"""

from google.protobuf import descriptor_pool

__all__ = ["POOL"]

POOL = descriptor_pool.DescriptorPool()
'''


@dataclass(frozen=True)
class Target:
    """Some .proto files and the Python package their generated modules go under."""

    protos: tuple[str, ...]  # paths relative to PROTO_ROOT, as protoc sees them
    package: str  # "chat._proto": rpc/chat.proto becomes chat._proto.rpc.chat_pb2
    private_pool: bool = False


MESSAGE_TARGETS = (
    Target(("rpc/chat.proto", "rpc/catalog.proto"), "chat._proto"),
    Target(
        (
            "grpc/health/v1/health.proto",
            "grpc/reflection/v1/reflection.proto",
            "grpc/reflection/v1alpha/reflection.proto",
        ),
        PRIVATE_POOL_MODULE,
        private_pool=True,
    ),
    Target(
        ("grpc/testing/empty.proto", "grpc/testing/messages.proto", "grpc/testing/test.proto"),
        "tests.interop._proto",
    ),
)

# grpcio stubs (they import grpc) are for tests only: flat in one package, never under trio_grpc/ or chat/.
STUB_PACKAGE = "tests.grpcio_stubs"
STUB_PROTOS = ("rpc/chat.proto", "rpc/catalog.proto", "grpc/testing/test.proto")

OUTPUT_ROOTS = tuple(
    Path(*package.split(".")) for package in (*(t.package for t in MESSAGE_TARGETS), STUB_PACKAGE)
)


def protoc_module(proto: str, suffix: str = "_pb2") -> str:
    """The module name protoc gives a .proto file: "grpc/testing/empty.proto" -> "grpc.testing.empty_pb2"."""
    return proto.removesuffix(".proto").replace("/", ".") + suffix


def module_map() -> dict[str, str]:
    """protoc's module name of every generated message module -> its module name in this repository."""
    return {
        protoc_module(proto): f"{target.package}.{protoc_module(proto)}"
        for target in MESSAGE_TARGETS
        for proto in target.protos
    }


_FROM_IMPORT = re.compile(r"^from ([\w.]+) import (\w+)( as \w+)?$", re.MULTILINE)


def rewrite_imports(source: str, modules: dict[str, str]) -> str:
    """Point ``from grpc.testing import empty_pb2 as ...`` lines at where those modules live here."""

    def replace(match: re.Match[str]) -> str:
        target = modules.get(f"{match[1]}.{match[2]}")
        if target is None:
            return match[0]
        package, _, name = target.rpartition(".")
        return f"from {package} import {name}{match[3] or ''}"

    return _FROM_IMPORT.sub(replace, source)


_DEFAULT_POOL_IMPORT = "from google.protobuf import descriptor_pool as _descriptor_pool\n"
_DEFAULT_POOL_ADD = "_descriptor_pool.Default().AddSerializedFile("


def use_private_pool(source: str) -> str:
    """Register the file in ``trio_grpc._proto.POOL`` instead of the default descriptor pool."""
    if source.count(_DEFAULT_POOL_IMPORT) != 1 or source.count(_DEFAULT_POOL_ADD) != 1:
        raise RuntimeError("protoc output changed shape: cannot redirect it to the private descriptor pool")
    source = source.replace(_DEFAULT_POOL_IMPORT, f"from {PRIVATE_POOL_MODULE} import POOL as _POOL\n")
    return source.replace(_DEFAULT_POOL_ADD, "_POOL.AddSerializedFile(")


def run_protoc(protos: tuple[str, ...], out_dir: Path, *, grpc_stubs: bool) -> None:
    # Imported here so that `import generate` works without grpcio-tools (the test skips instead).
    from trio_grpc import codegen

    if grpc_stubs:
        outputs = [f"--grpc_python_out={out_dir}"]
    else:
        outputs = [f"--python_out={out_dir}", f"--pyi_out={out_dir}", f"--trio_grpc_out={out_dir}"]
    out_dir.mkdir(parents=True, exist_ok=True)
    args = [f"-I{PROTO_ROOT}", *outputs, *protos]
    if codegen.protoc(args) != 0:
        raise RuntimeError(f"protoc failed: {' '.join(args)}")


def _package_inits(root: Path, module_dir: Path) -> Iterator[Path]:
    """Every package directory from root down to module_dir (inclusive)."""
    yield root
    for part in module_dir.relative_to(root).parts:
        root = root / part
        yield root


def generate(out_dir: Path) -> list[Path]:
    """Generate every file into out_dir (laid out like the repository); return their paths relative to it."""
    modules = module_map()
    files: dict[Path, str] = {}
    with tempfile.TemporaryDirectory() as scratch_name:
        scratch = Path(scratch_name)
        for target in MESSAGE_TARGETS:
            target_scratch = scratch / target.package
            run_protoc(target.protos, target_scratch, grpc_stubs=False)
            root = Path(*target.package.split("."))
            for proto in target.protos:
                for suffix in ("_pb2.py", "_pb2.pyi", "_trio_grpc.py"):
                    relative = Path(proto.removesuffix(".proto") + suffix)
                    if not (target_scratch / relative).exists():  # no _trio_grpc.py without services
                        continue
                    source = rewrite_imports((target_scratch / relative).read_text(encoding="utf-8"), modules)
                    if target.private_pool and suffix == "_pb2.py":
                        source = use_private_pool(source)
                    files[root / relative] = source
                for package_dir in _package_inits(root, root / Path(proto).parent):
                    files.setdefault(package_dir / "__init__.py", "")
            if target.private_pool:
                files[root / "__init__.py"] = PRIVATE_POOL_INIT

        stub_root = Path(*STUB_PACKAGE.split("."))
        run_protoc(STUB_PROTOS, scratch / STUB_PACKAGE, grpc_stubs=True)
        files[stub_root / "__init__.py"] = ""
        for proto in STUB_PROTOS:
            generated = scratch / STUB_PACKAGE / (proto.removesuffix(".proto") + "_pb2_grpc.py")
            source = generated.read_text(encoding="utf-8")
            files[stub_root / generated.name] = rewrite_imports(source, modules)

    for relative, text in sorted(files.items()):
        path = out_dir / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8", newline="\n")
    return sorted(files)


def committed_files(repo_root: Path) -> list[Path]:
    """The files now under the output roots (relative to repo_root), caches left out."""
    found = []
    for root in OUTPUT_ROOTS:
        for path in (repo_root / root).rglob("*"):
            if path.is_file() and "__pycache__" not in path.parts:
                found.append(path.relative_to(repo_root))
    return sorted(found)


def main() -> None:
    with tempfile.TemporaryDirectory() as fresh_name:
        fresh = Path(fresh_name)
        generated = generate(fresh)
        for stale in set(committed_files(REPO_ROOT)) - set(generated):
            (REPO_ROOT / stale).unlink()
            print(f"removed {stale}")
        for relative in generated:
            target = REPO_ROOT / relative
            if not target.exists() or target.read_bytes() != (fresh / relative).read_bytes():
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(fresh / relative, target)
                print(f"wrote {relative}")
    print(f"{len(generated)} generated files up to date")


if __name__ == "__main__":
    main()
