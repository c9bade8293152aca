"""Boolean flags spelled as the standard interop programs take them: `--use_tls=true`, `--use_tls`."""

from __future__ import annotations

import argparse


def _parse_bool(value: str) -> bool:
    lowered = value.lower()
    if lowered not in ("true", "false", "1", "0"):
        raise argparse.ArgumentTypeError(f"expected true or false, got {value!r}")
    return lowered in ("true", "1")


def add_bool_flag(parser: argparse.ArgumentParser, name: str, help: str) -> None:
    parser.add_argument(
        name, type=_parse_bool, nargs="?", const=True, default=False, metavar="BOOLEAN", help=help
    )
