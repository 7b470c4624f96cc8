"""Container HEALTHCHECK for the gateway: exit 0 when GET /healthz on the configured port answers 200.

Standard library only (the slim image has no curl); reads FER_PORT like the gateway's Settings does.
"""

from __future__ import annotations

import os
import sys
import urllib.error
import urllib.request


def main() -> int:
    url = f"http://127.0.0.1:{os.environ.get('FER_PORT', '8080')}/healthz"
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # never via an *_proxy variable
    try:
        with opener.open(url, timeout=4.0) as response:
            return 0 if int(response.status) == 200 else 1
    except (OSError, urllib.error.URLError):
        return 1


if __name__ == "__main__":
    sys.exit(main())
