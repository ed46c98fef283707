"""The system's Chromium for the browser tests, driven by Playwright (no browser download).

    from tests.browser import chromium
    browser = playwright.chromium.launch(**chromium().launch_options())

Without Chromium the test is skipped, saying so; with ``REQUIRE_BROWSER=1`` (CI sets it)
it fails instead, saying how to install it, so a CI machine cannot skip it silently.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
from pathlib import Path
from typing import Any

import pytest

CANDIDATES = ("/usr/bin/chromium", "chromium", "chromium-browser")
INSTALL = "install it with `apt-get install chromium` (Debian/Ubuntu)"
# As root (containers, CI) Chromium needs --no-sandbox; the rest keeps it from spending its
# start-up reaching Google's hosts (benchmarks/screenshots.py takes them from here).
ARGS = (
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)
# No host name resolves except the loopback address: the network is off for the page.
OFFLINE_ARGS = ("--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1",)


@dataclasses.dataclass(frozen=True)
class Chromium:
    executable: Path
    args: tuple[str, ...] = ARGS

    def launch_options(self, *, offline: bool = True) -> dict[str, Any]:
        """Keyword arguments for Playwright's ``chromium.launch``."""
        args = [*self.args, *(OFFLINE_ARGS if offline else ())]
        return {"executable_path": str(self.executable), "args": args, "headless": True}


def find_chromium() -> Path | None:
    for candidate in CANDIDATES:
        found = shutil.which(candidate)
        if found:
            return Path(found)
    return None


def chromium() -> Chromium:
    """The Chromium to test with; skips the test if there is none (fails with
    ``REQUIRE_BROWSER=1``), or if Playwright is not installed."""
    required = os.environ.get("REQUIRE_BROWSER") == "1"
    executable = find_chromium()
    problem = None
    if executable is None:
        problem = f"no Chromium ({', '.join(CANDIDATES)}): {INSTALL}"
    else:
        try:
            import playwright.sync_api  # noqa: F401, PLC0415
        except ImportError:
            problem = "Playwright is not installed: `make install` (the dev group has it)"
    if problem is not None:
        if required:
            pytest.fail(f"REQUIRE_BROWSER=1 but {problem}", pytrace=False)
        pytest.skip(f"browser test: {problem}")
    assert executable is not None
    return Chromium(executable)
