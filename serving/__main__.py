"""``python -m serving``: check the settings, then run uvicorn with them."""

from __future__ import annotations

import logging
import os
import sys
import tempfile

from serving.metrics import MULTIPROCESS_ENV
from serving.settings import SettingsError, load_settings


def main() -> int:
    try:
        settings = load_settings()
    except SettingsError as error:
        print(f"serving: {error}", file=sys.stderr)
        return 2
    logging.basicConfig(
        level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s | %(message)s"
    )
    if settings.workers > 1 and not os.environ.get(MULTIPROCESS_ENV):
        # Each worker is a process: Prometheus needs a shared folder to add them up.
        os.environ[MULTIPROCESS_ENV] = tempfile.mkdtemp(prefix="prometheus-")
    import uvicorn  # noqa: PLC0415  (after the settings check: a typo fails in milliseconds)

    uvicorn.run(
        "serving.app:create_app",
        factory=True,
        host=settings.host,
        port=settings.port,
        workers=settings.workers,
        log_level=settings.log_level,
        # One line per request costs a fifth of the throughput; /metrics counts requests.
        access_log=settings.access_log,
        timeout_graceful_shutdown=30,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
