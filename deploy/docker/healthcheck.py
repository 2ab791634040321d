"""The image's HEALTHCHECK: exit 0 when the server answers 200 on /readyz (models loaded, not draining).

The REST port is the one the server was started with: the last --rest_api_port among the container's
command-line arguments (PID 1's, which carry the `docker run IMAGE ...` flags), else the entrypoint's 8501.
Standard library only: the image has no curl.
"""

import sys
import urllib.error
import urllib.request


def rest_port(argv: list[str]) -> int:
    port = 8501
    for i, arg in enumerate(argv):
        if arg.startswith("--rest_api_port="):
            port = int(arg.partition("=")[2])
        elif arg == "--rest_api_port" and i + 1 < len(argv):
            port = int(argv[i + 1])
    return port


def main() -> int:
    with open("/proc/1/cmdline", "rb") as f:
        argv = f.read().decode(errors="replace").split("\0")
    port = rest_port(argv)
    if port <= 0:
        print("the REST API is off (--rest_api_port=0): no /readyz to probe", file=sys.stderr)
        return 1
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=3) as answer:
            return 0 if answer.status == 200 else 1
    except (urllib.error.URLError, OSError) as exc:
        print(f"http://127.0.0.1:{port}/readyz: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
