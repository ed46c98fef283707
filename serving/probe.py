"""``python -m serving.probe [PATH]``: ask this container's service for PATH (default
/ready) with one of its own API keys; exit 0 on a 200, else 1 with one line saying why.

The Kubernetes readiness probe (deploy/kubernetes/deployment.yaml): /ready needs a key
when the service has keys, and an httpGet probe can only send headers written into the
manifest, where a key must not be. This runs in the container, reads the key from the
same settings the service reads (SERVING_API_KEYS, SERVING_API_KEYS_FILE) and never
prints it. Standard library only: it starts every few seconds (about 40 ms here).
"""

from __future__ import annotations

import os
import sys
import urllib.error
import urllib.request
from pathlib import Path

from serving.keys import HEADER, configured_keys

TIMEOUT_SECONDS = 2.0


def own_key() -> str | None:
    """The first key the service accepts, or None when it has none."""
    file = os.environ.get("SERVING_API_KEYS_FILE")
    keys = configured_keys(os.environ.get("SERVING_API_KEYS"), Path(file) if file else None)
    return keys[0] if keys else None


def main(argv: list[str]) -> int:
    path = argv[0] if argv else "/ready"
    url = f"http://127.0.0.1:{os.environ.get('SERVING_PORT', '8000')}{path}"
    try:
        key = own_key()
    except ValueError as error:
        print(f"probe: SERVING_API_KEYS_FILE: {error}", file=sys.stderr)
        return 1
    request = urllib.request.Request(url, headers={HEADER: key} if key else {})
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT_SECONDS) as answer:
            status = int(answer.status)
    except urllib.error.HTTPError as error:
        status = error.code
    except (urllib.error.URLError, OSError) as error:
        print(f"probe: GET {url}: {error}", file=sys.stderr)
        return 1
    if status != 200:
        print(f"probe: GET {url} answered {status}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
