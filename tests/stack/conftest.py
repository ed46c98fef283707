"""Fixtures for the stack's tests: a PostgreSQL server (or a skip), a folder of the test's
own that the server can use, no STACK_* variable from the shell."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from stack.balancer import haproxy_version
from stack.postgres import INSTALL_HINT, candidates
from stack.processes import StackError
from tests.stack.helpers import reachable_folder


@pytest.fixture(scope="session")
def servers_available() -> None:
    """Skip without the stack's servers from the system (PostgreSQL, HAProxy); with
    REQUIRE_STACK=1 (CI), fail."""
    missing = [] if candidates() else [INSTALL_HINT]
    try:
        haproxy_version()
    except StackError as error:
        missing.append(str(error))
    if not missing:
        return
    if os.environ.get("REQUIRE_STACK") == "1":
        pytest.fail(f"REQUIRE_STACK=1 but {'; '.join(missing)}", pytrace=False)
    pytest.skip("; ".join(missing))


@pytest.fixture
def stack_folder() -> Iterator[Path]:
    """A folder for a stack that its PostgreSQL can reach (see reachable_folder)."""
    with reachable_folder() as folder:
        yield folder


@pytest.fixture(autouse=True)
def no_stack_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No STACK_* variable of the caller's shell reaches a test."""
    for name in list(os.environ):
        if name.startswith("STACK_"):
            monkeypatch.delenv(name)
