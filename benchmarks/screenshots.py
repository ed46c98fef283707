"""Screenshots of two monitor reports for docs/monitoring.md, taken with headless Chromium.

    python benchmarks/screenshots.py NO_DRIFT.html DRIFT.html   # -> docs/images/*.png

`make bench-monitoring` keeps the report of each scenario's first run in .bench/monitoring/
(`python benchmarks/monitoring.py --skip-timing --seeds 1 --results /tmp` makes just
those). Needs Chromium (Debian: apt-get install chromium).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # run as a script: tests.browser must be importable
from tests.browser import ARGS as CHROMIUM_ARGS  # noqa: E402
from tests.browser import find_chromium  # noqa: E402

IMAGES = REPO / "docs" / "images"
# The browser tests' switches (tests/browser.py), plus the page's size and time to draw.
FLAGS = [
    "--headless",
    *CHROMIUM_ARGS,
    "--hide-scrollbars",
    "--window-size=1280,2300",
    "--virtual-time-budget=15000",  # the report draws itself with JavaScript
]


def screenshot(browser: str, page: Path, target: Path) -> None:
    with tempfile.TemporaryDirectory() as profile:
        subprocess.run(
            [
                browser,
                *FLAGS,
                f"--user-data-dir={profile}",
                f"--screenshot={target}",
                page.resolve().as_uri(),
            ],
            check=True,
            capture_output=True,
            timeout=180,
        )


def main() -> int:
    cli = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    cli.add_argument("no_drift", type=Path)
    cli.add_argument("drift", type=Path)
    args = cli.parse_args()
    browser = find_chromium()
    if browser is None:
        print("needs Chromium: apt-get install chromium", file=sys.stderr)
        return 2
    IMAGES.mkdir(parents=True, exist_ok=True)
    for page, name in (
        (args.no_drift, "monitoring-no-drift.png"),
        (args.drift, "monitoring-drift.png"),
    ):
        screenshot(str(browser), page, IMAGES / name)
        print(IMAGES / name)
    return 0


if __name__ == "__main__":
    sys.exit(main())
