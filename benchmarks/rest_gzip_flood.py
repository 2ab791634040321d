"""Good REST requests during back-to-back gzip bombs (issue 17, finding 4), against quiet rounds in the same run.

    python benchmarks/rest_gzip_flood.py [--src TREE] [--seconds 5] [--rounds 3]

Starts ``python -m modelserve`` from TREE (default: this checkout; give an older checkout to compare)
under ``prlimit --as=3GB`` serving half_plus_two, then alternates quiet rounds and flood rounds. The
good client is open-loop: a predict every 5 ms over 32 keep-alive connections, each latency counted
from when its request was due (a stalled loop shows, it is not hidden by a client that waits). In a
flood round two attacker processes each send gzip bombs (256 MiB of zeros, 261 KB compressed) back
to back on one connection. Prints p50/p99 per round and the bombs sent.
"""

from __future__ import annotations

import argparse
import asyncio
import gzip
import json
import multiprocessing as mp
import os
import re
import socket
import subprocess
import sys
import tempfile
import time
from multiprocessing.synchronize import Event
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from tests import onnx_models as om  # noqa: E402

RATE = 200.0  # good requests a second
POOL = 32  # good keep-alive connections


def _response(sock: socket.socket, buf: bytes) -> tuple[int, bytes]:
    """(status, what is left after it) of one Content-Length answer."""
    while b"\r\n\r\n" not in buf:
        data = sock.recv(65536)
        if not data:
            raise ConnectionError("closed")
        buf += data
    head, buf = buf.split(b"\r\n\r\n", 1)
    match = re.search(rb"content-length: (\d+)", head, re.I)
    length = int(match.group(1)) if match else 0
    while len(buf) < length:
        buf += sock.recv(65536)
    return int(head.split()[1]), buf[length:]


def attacker(port: int, stop: Event) -> None:
    body = gzip.compress(b"0" * (256 * 1024 * 1024), 9)
    head = b"POST /v1/models/half:predict HTTP/1.1\r\nHost: x\r\nContent-Encoding: gzip\r\n"
    request = head + b"Content-Length: %d\r\n\r\n" % len(body) + body
    sent = 0
    while not stop.is_set():
        try:
            with socket.create_connection(("127.0.0.1", port)) as sock:
                buf = b""
                while not stop.is_set():
                    sock.sendall(request)
                    _, buf = _response(sock, buf)
                    sent += 1
        except OSError:
            time.sleep(0.01)
    print(f"  attacker: {sent} bombs of {len(body)} bytes", flush=True)


async def _good(port: int, seconds: float) -> list[float]:
    body = json.dumps({"instances": [1.0, 2.0, 3.0]}).encode()
    request = b"POST /v1/models/half:predict HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)
    free: asyncio.Queue[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = asyncio.Queue()
    for _ in range(POOL):
        free.put_nowait(await asyncio.open_connection("127.0.0.1", port))
    latencies: list[float] = []

    async def one(due: float) -> None:
        reader, writer = await free.get()
        writer.write(request)
        head = await reader.readuntil(b"\r\n\r\n")
        match = re.search(rb"content-length: (\d+)", head, re.I)
        await reader.readexactly(int(match.group(1)) if match else 0)
        assert head.split()[1] == b"200", head
        latencies.append(time.perf_counter() - due)
        free.put_nowait((reader, writer))

    start = time.perf_counter()
    tasks = []
    while (due := start + len(tasks) / RATE) < start + seconds:
        await asyncio.sleep(max(0.0, due - time.perf_counter()))
        tasks.append(asyncio.ensure_future(one(due)))
    await asyncio.gather(*tasks)
    return latencies


def good(port: int, seconds: float) -> str:
    latencies = sorted(asyncio.run(_good(port, seconds)))
    p50, p99 = latencies[len(latencies) // 2], latencies[int(len(latencies) * 0.99)]
    return f"n={len(latencies)} p50={p50 * 1e3:.2f} ms p99={p99 * 1e3:.2f} ms"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--src", type=Path, default=ROOT, help="the modelserve checkout to serve from")
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp())
    om.write(tmp / "half", 1, om.half_plus_two())
    log = tmp / "server.log"
    command = ["prlimit", "--as=3000000000", sys.executable, "-m", "modelserve", "--model_name=half"]
    command += [f"--model_base_path={tmp / 'half'}", "--port=-1", "--rest_api_port=-1", "--host=127.0.0.1"]
    with log.open("w") as out:
        env = dict(os.environ, PYTHONPATH=str(args.src))
        proc = subprocess.Popen(command, stdout=out, stderr=out, env=env, cwd=args.src)
    try:
        deadline = time.monotonic() + 120
        while not (match := re.search(r"Exporting HTTP/REST API at:localhost:(\d+)", log.read_text())):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(log.read_text())
            time.sleep(0.1)
        port = int(match.group(1))
        good(port, 1.0)  # warm-up
        for _ in range(args.rounds):
            print(f"{args.src}: quiet {good(port, args.seconds)}", flush=True)
            stop = mp.Event()
            attackers = [mp.Process(target=attacker, args=(port, stop)) for _ in range(2)]
            for a in attackers:
                a.start()
            time.sleep(1.0)
            print(f"{args.src}: bombs {good(port, args.seconds)}", flush=True)
            stop.set()
            for a in attackers:
                a.join(120)
            time.sleep(1.0)
    finally:
        proc.kill()
        proc.wait()


if __name__ == "__main__":
    main()
