"""Fixtures the interop test modules share (each module gets its own instance)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.interop.harness import Ports, Tls, TrioServerThread


@pytest.fixture(scope="module")
def tls() -> Tls:
    """A CA and a certificate for *.test.google.fr, as the interop spec's test certificates."""
    return Tls.for_interop()


@pytest.fixture(scope="module")
def trio_server(tls: Tls) -> Iterator[Ports]:
    """trio_grpc's interop TestService, listening plaintext and TLS on 127.0.0.1."""
    thread = TrioServerThread(tls.server_context())
    yield thread.start()
    thread.stop()
