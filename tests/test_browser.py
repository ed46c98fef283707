"""tests/browser.py: without Chromium a browser test is skipped, saying how to install it;
with REQUIRE_BROWSER=1 it fails instead."""

from __future__ import annotations

import pytest

from tests import browser


def test_no_chromium_skips_the_test(monkeypatch):
    monkeypatch.setattr(browser, "CANDIDATES", ("/nowhere/chromium",))
    monkeypatch.delenv("REQUIRE_BROWSER", raising=False)
    with pytest.raises(pytest.skip.Exception, match="apt-get install chromium"):
        browser.chromium()


def test_no_chromium_fails_the_test_when_a_browser_is_required(monkeypatch):
    monkeypatch.setattr(browser, "CANDIDATES", ("/nowhere/chromium",))
    monkeypatch.setenv("REQUIRE_BROWSER", "1")
    with pytest.raises(pytest.fail.Exception, match=r"REQUIRE_BROWSER=1 but .*apt-get install"):
        browser.chromium()


def test_launch_options(monkeypatch, tmp_path):
    executable = tmp_path / "chromium"
    executable.write_text("#!/bin/sh\n")
    executable.chmod(0o755)
    monkeypatch.setattr(browser, "CANDIDATES", (str(executable),))
    monkeypatch.delenv("REQUIRE_BROWSER", raising=False)
    found = browser.chromium()
    assert found.executable == executable
    options = found.launch_options()
    assert options["executable_path"] == str(executable)
    assert "--no-sandbox" in options["args"]
    assert any(arg.startswith("--host-resolver-rules=MAP * ~NOTFOUND") for arg in options["args"])
    online = browser.Chromium(executable).launch_options(offline=False)
    assert not any(arg.startswith("--host-resolver-rules") for arg in online["args"])
