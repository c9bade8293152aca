"""docs/api.md is code one can copy: its settings table matches the code, and its examples run.

The settings table is parsed from the markdown and compared with the dataclasses, so a field added to
`trio_grpc/_settings.py` without a row, or a default changed in one place only, fails here. Every python
block is run as a program of its own (cwd a temporary directory, this tree on PYTHONPATH), all at once;
the examples assert what they show, bind port 0 and stop their own servers.
"""

from __future__ import annotations

import ast
import dataclasses
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from trio_grpc import ChannelSettings, ServerSettings

REPO_ROOT = Path(__file__).resolve().parent.parent
API_MD = REPO_ROOT / "docs" / "api.md"


def _section(title: str) -> str:
    return API_MD.read_text(encoding="utf-8").split(f"\n## {title}\n", 1)[1].split("\n## ", 1)[0]


def _settings_rows() -> dict[str, tuple[str, str]]:
    """Setting name -> (default expression, side), from the table of "## Settings"."""
    rows = {}
    for line in _section("Settings").splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if len(cells) == 4 and cells[0].startswith("`"):
            rows[cells[0].strip("`")] = (cells[1].strip("`"), cells[2])
    return rows


def _documented_default(expression: str) -> object:
    # The table writes sizes as the code does (`4 * MiB`): evaluated with no builtins, only those two names.
    return eval(expression, {"__builtins__": {}}, {"KiB": 1024, "MiB": 1024 * 1024})


def _fields_by_side() -> dict[str, tuple[str, object]]:
    server = {field.name: field.default for field in dataclasses.fields(ServerSettings)}
    channel = {field.name: field.default for field in dataclasses.fields(ChannelSettings)}
    sides: dict[str, tuple[str, object]] = {}
    for name in server.keys() | channel.keys():
        side = "both" if name in server and name in channel else "server" if name in server else "channel"
        sides[name] = (side, server.get(name, channel.get(name)))
    return sides


def test_every_setting_is_in_the_table_with_its_side_and_default() -> None:
    rows = _settings_rows()
    fields = _fields_by_side()
    assert sorted(rows) == sorted(fields), "docs/api.md's settings table and _settings.py differ"
    for name, (side, default) in fields.items():
        documented, documented_side = rows[name]
        assert documented_side == side, f"{name}: the table says {documented_side}, the code {side}"
        assert _documented_default(documented) == default, f"{name}: the table says {documented}"


# Examples: every ```python block is a whole program that runs (and asserts what it shows), unless the line
# before it is one of these markers.
FRAGMENT = "<!-- fragment -->"  # a snippet in context: only compiled
RUN_BY_CODEGEN = "<!-- run by tests/test_codegen.py -->"  # needs protoc first; that test runs it
EXAMPLE_TIMEOUT = 60


@dataclasses.dataclass(frozen=True)
class Block:
    line: int  # of the opening fence, 1-based
    section: str  # the heading it is under
    marker: str
    source: str

    @property
    def name(self) -> str:
        return f"{self.section} (api.md:{self.line})"


def _python_blocks() -> list[Block]:
    lines = API_MD.read_text(encoding="utf-8").splitlines()
    blocks = []
    section = ""
    for number, line in enumerate(lines):
        if line.startswith(("## ", "### ")):
            section = line.lstrip("#").strip()
        if line.strip() != "```python":
            continue
        indent = line[: len(line) - len(line.lstrip())]  # a block in a list item is indented
        end = lines.index(f"{indent}```", number + 1)
        before = [text.strip() for text in lines[:number] if text.strip()]
        marker = before[-1] if before and before[-1].startswith("<!--") else ""
        source = textwrap.dedent("\n".join(lines[number + 1 : end]))
        blocks.append(Block(number + 1, section, marker, source))
    return blocks


BLOCKS = _python_blocks()
FULL = [block for block in BLOCKS if not block.marker]


def test_every_marker_is_known_and_the_codegen_test_runs_its_block() -> None:
    assert {block.marker for block in BLOCKS} <= {"", FRAGMENT, RUN_BY_CODEGEN}
    assert len([block for block in BLOCKS if block.marker == RUN_BY_CODEGEN]) == 1
    codegen_test = (REPO_ROOT / "tests" / "test_codegen.py").read_text(encoding="utf-8")
    assert "## Your own .proto from zero" in codegen_test


@pytest.mark.parametrize("block", [b for b in BLOCKS if b.marker == FRAGMENT], ids=lambda b: b.name)
def test_fragments_compile(block: Block) -> None:
    compile(block.source, block.name, "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)


@pytest.fixture(scope="module")
def example_results(tmp_path_factory: pytest.TempPathFactory) -> dict[str, subprocess.CompletedProcess[str]]:
    """Every full example, run at once (the machine is slow to start Python), each in its own directory."""
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    running = {}
    for block in FULL:
        cwd = tmp_path_factory.mktemp(f"example{block.line}")
        (cwd / "example.py").write_text(block.source, encoding="utf-8")
        running[block.name] = subprocess.Popen(
            [sys.executable, "example.py"],
            cwd=cwd,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
    results = {}
    for name, process in running.items():
        try:
            stdout, stderr = process.communicate(timeout=EXAMPLE_TIMEOUT)
        except subprocess.TimeoutExpired:
            process.kill()
            stdout, stderr = process.communicate()
            stderr += f"\n(killed after {EXAMPLE_TIMEOUT} s)"
        results[name] = subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)
    return results


@pytest.mark.parametrize("block", FULL, ids=lambda b: b.name)
def test_example_runs(block: Block, example_results: dict[str, subprocess.CompletedProcess[str]]) -> None:
    result = example_results[block.name]
    assert result.returncode == 0, f"{block.name} failed:\n{result.stderr}"
