"""What the command-line programs share: client TLS options, error lines with hints, the top-level runner.

Programs print to people: an expected failure is one `error: ...` line on stderr with the status name and,
where we know one, a hint of what to do next; never a traceback. Exit codes: 0 done, 1 failed, 2 usage
(argparse), 130 interrupted before anything could be cleaned up gracefully.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import os
import re
import ssl
import sys
import tomllib
from collections.abc import Awaitable, Callable
from pathlib import Path

import trio

from trio_grpc import Channel, RpcError, StatusCode


class CliError(Exception):
    """An expected failure, reported as one `error: ...` line (plus its hint) and exit code 1."""

    def __init__(self, message: str, hint: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def line(self) -> str:
        return f"error: {self.message}" + (f"; {self.hint}" if self.hint else "")


def add_tls_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_mutually_exclusive_group()
    group.add_argument(
        "--insecure",
        action="store_true",
        help="plaintext HTTP/2, no TLS (what `chatserver` serves unless given --tls-cert)",
    )
    group.add_argument(
        "--cacert",
        metavar="FILE",
        help="trust the CA certificate(s) in this PEM file instead of the system trust store",
    )


def client_tls(args: argparse.Namespace) -> ssl.SSLContext | None:
    """The TLS context the --insecure/--cacert options ask for (None: plaintext)."""
    if args.insecure:
        return None
    context = ssl.create_default_context()
    if args.cacert:
        try:
            context.load_verify_locations(cafile=args.cacert)
        except (OSError, ssl.SSLError) as exc:
            raise CliError(f"cannot load --cacert {args.cacert}: {exc}") from None
    return context


def open_channel(target: str, tls: ssl.SSLContext | None, option: str) -> Channel:
    """A Channel to `target`, or a CliError naming `option` when the address is malformed."""
    try:
        return Channel(target, tls=tls)
    except ValueError:
        raise CliError(f"{option} {target!r} is not HOST:PORT (or unix:PATH)") from None


def rpc_error(exc: RpcError, target: str, plaintext: bool, address_option: str = "--host") -> CliError:
    """A one-line error for a failed call; connection problems get a hint about the options to change."""
    text = exc.message or exc.code.name
    if exc.code == StatusCode.UNAVAILABLE:
        if "WRONG_VERSION_NUMBER" in text or "plaintext server" in text:
            return CliError(
                f"TLS handshake with {target} failed: the server speaks plaintext (UNAVAILABLE)",
                "add --insecure",
            )
        if "CERTIFICATE_VERIFY_FAILED" in text:
            reason = re.search(r"certificate verify failed: ([^(]*)", text)
            detail = reason.group(1).strip() if reason else "certificate verify failed"
            return CliError(
                f"TLS handshake with {target} failed: {detail} (UNAVAILABLE)",
                "pass the server's CA certificate with --cacert FILE",
            )
        if "TLS handshake" in text:
            return CliError(f"{text} (UNAVAILABLE)", "check the server's TLS setup, or add --insecure")
        if "did not speak HTTP/2" in text and plaintext:
            return CliError(
                f"{target} did not answer in plaintext HTTP/2 (UNAVAILABLE)",
                "if the server uses TLS, drop --insecure",
            )
        if "Name or service not known" in text or "nodename nor servname" in text:
            return CliError(f"{text} (UNAVAILABLE)", f"check the host name in {address_option}")
        if text.startswith(("cannot connect", "timed out connecting")):
            return CliError(
                f"{_short_connect_error(text)} (UNAVAILABLE)",
                f"is a server running there? ({address_option} sets the address; `chatserver` starts one)",
            )
    if exc.code == StatusCode.UNIMPLEMENTED:
        return CliError(f"{text} (UNIMPLEMENTED)", f"is {target} the right server?")
    return CliError(f"{text} ({exc.code.name})")


def _short_connect_error(text: str) -> str:
    """'cannot connect to h:p: all attempts to connect to h:p failed' -> 'cannot connect to h:p'."""
    head, _, detail = text.partition(": ")
    return head if not detail or "all attempts to connect" in detail else text


def sole_exception(exc: BaseException) -> BaseException:
    """The one exception inside nested single-member exception groups (a nursery wraps what it raises)."""
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    return exc


def run(main: Callable[[], Awaitable[int]]) -> None:
    """Run `main` under Trio and exit with its code; expected failures become one stderr line."""
    try:
        code = trio.run(main)
    except BaseException as exc:
        error = sole_exception(exc)
        if isinstance(error, CliError):
            print(error.line(), file=sys.stderr)
            code = 1
        elif isinstance(error, KeyboardInterrupt):
            print(file=sys.stderr)
            code = 130
        elif isinstance(error, BrokenPipeError):  # `... | head` stopped reading: nobody left to tell
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at exit
            code = 1
        else:
            raise
    sys.exit(code)


class UsageError(CliError):
    """A command line that cannot be run as written: one `error: ...` line and exit code 2, as argparse."""


def run_exiting_2_on_usage(main: Callable[[], Awaitable[int]]) -> None:
    """`run`, except that a UsageError (found after parsing, e.g. a malformed address) exits 2."""

    async def checked() -> int:
        try:
            return await main()
        except BaseException as exc:
            error = sole_exception(exc)
            if not isinstance(error, UsageError):
                raise
            print(error.line(), file=sys.stderr)
            return 2

    run(checked)


def add_version_argument(parser: argparse.ArgumentParser) -> None:
    """`--version`: the program's name and trio-grpc's version, then exit 0."""
    parser.add_argument("--version", action="version", version=f"%(prog)s (trio-grpc {_project_version()})")


def _project_version() -> str:
    """The installed distribution's version; run from a checkout, the one in pyproject.toml."""
    try:
        return importlib.metadata.version("trio-grpc")
    except importlib.metadata.PackageNotFoundError:
        pyproject = Path(__file__).resolve().parent.parent / "pyproject.toml"
        try:
            return str(tomllib.loads(pyproject.read_text())["project"]["version"])
        except (OSError, KeyError, tomllib.TOMLDecodeError):
            return "unknown version"


def with_default_port(target: str, port: int) -> str:
    """`target` with `:port` added when it names a host only: "localhost", "10.0.0.1", "[::1]", "::1"."""
    if target.startswith("unix:"):
        return target
    scheme = "dns:///" if target.startswith("dns:///") else ""
    host = target.removeprefix(scheme)
    if host.startswith("[") and host.endswith("]"):
        return f"{target}:{port}"
    if host.count(":") > 1 and not host.startswith("["):  # bare IPv6: brackets set its colons apart
        return f"{scheme}[{host}]:{port}"
    return target if ":" in host else f"{target}:{port}"
