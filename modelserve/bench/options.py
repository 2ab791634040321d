"""``modelserve bench``'s flags."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from .wire import PROTOCOLS

EXAMPLE = """\
examples:
  modelserve bench --target=http://127.0.0.1:8501 --protocol=tfs-rest --model=half_plus_two \\
      --concurrency=1,8,64 --duration=10 --json=out.json --csv=out.csv --plot=out.png
  modelserve bench --target=127.0.0.1:8500 --protocol=v2-grpc --model=mlp --rate=500,1000 --arrivals=poisson
  modelserve bench --target=http://127.0.0.1:8501 --compare=http://127.0.0.1:8080 --protocol=v2-rest --model=mlp
"""


def _levels(text: str) -> list[float]:
    try:
        values = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected numbers separated by commas, got {text!r}") from None
    if not values or any(v <= 0 for v in values):
        raise argparse.ArgumentTypeError(f"expected positive numbers, got {text!r}")
    return values


def _shape(text: str) -> tuple[str, tuple[int, ...]]:
    name, _, dims = text.rpartition(":")
    try:
        return name, tuple(int(d) for d in dims.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected NAME:2x3, got {text!r}") from None


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="modelserve bench",
        description="Load a TF Serving or KServe V2 (Open Inference Protocol) server and measure it: "
        "throughput and latency per step of a concurrency or request-rate sweep.",
        epilog=EXAMPLE,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    what = p.add_argument_group("what to call")
    what.add_argument("--target", required=True, help="http://HOST:PORT for REST protocols, HOST:PORT for gRPC")
    what.add_argument("--protocol", choices=sorted(PROTOCOLS), default="tfs-rest", help="(default tfs-rest)")
    what.add_argument("--v2-json", action="store_true", help="v2-rest: JSON tensors instead of binary tensor data")
    what.add_argument("--model", required=True)
    what.add_argument("--version", type=int, help="a version number (default: the server's choice)")
    what.add_argument("--label", help="a version label (TF Serving's, or modelserve's on V2)")
    what.add_argument("--signature", help="the signature to call (TF Serving protocols; default serving_default)")
    what.add_argument("--token", help="a bearer token sent with every request")
    data = p.add_argument_group("inputs and checks")
    data.add_argument("--input", type=Path, help="inputs from a .npy, .npz or JSON request file (default: random)")
    data.add_argument("--batch-size", type=int, default=1, help="rows for a free first dimension (default 1)")
    data.add_argument("--shape", type=_shape, action="append", default=[], help="NAME:2x3, an input's whole shape")
    data.add_argument("--reference", type=Path, help="expected outputs (.npz, .npy, JSON) for the first answer")
    data.add_argument("--tolerance", type=float, default=1e-4, help="of the reference check (default 1e-4)")
    data.add_argument("--seed", type=int, default=0, help="of the random inputs and arrivals")
    load = p.add_argument_group("load")
    load.add_argument("--concurrency", type=_levels, help="closed loop: requests in flight per step (default 1,8,64)")
    load.add_argument("--rate", type=_levels, help="open loop: requests per second per step")
    load.add_argument("--arrivals", choices=("poisson", "constant"), default="poisson", help="open loop gaps")
    load.add_argument("--duration", type=float, default=10.0, help="measured seconds per step (default 10)")
    load.add_argument("--requests", type=int, default=0, help="measured requests per step instead of a duration")
    load.add_argument("--warmup", type=float, default=1.0, help="seconds per step left out of the figures (1)")
    load.add_argument("--max-errors", type=float, default=0.1, help="failed share that stops a step (default 0.1)")
    load.add_argument("--timeout", type=float, default=30.0, help="seconds before a request counts as failed")
    load.add_argument("--processes", type=int, default=1, help="generator processes (default 1)")
    load.add_argument("--connections", type=int, default=256, help="open loop: most connections (default 256)")
    load.add_argument("--grpc-channels", type=int, default=0, help="gRPC channels (default one per 8 callers)")
    load.add_argument("--compare", metavar="TARGET", help="a second target, run in interleaved rounds")
    load.add_argument("--rounds", type=int, default=0, help="rounds of every step (default 1; 3 with --compare)")
    out = p.add_argument_group("output")
    out.add_argument(
        "--metrics", nargs="?", const="auto", help="scrape the server's /metrics before and after each step (URL)"
    )
    out.add_argument("--json", type=Path, help="write one object per step to this JSON file")
    out.add_argument("--csv", type=Path, help="write one row per step to this CSV file")
    out.add_argument("--plot", type=Path, help="draw latency against throughput (.png or .svg; needs matplotlib)")
    out.add_argument("--quiet", action="store_true", help="no progress bars")
    return p


def parse(argv: Sequence[str]) -> argparse.Namespace:
    p = parser()
    args = p.parse_args(list(argv))
    if args.concurrency and args.rate:
        p.error("give --concurrency or --rate, not both")
    if args.concurrency is None and args.rate is None:
        args.concurrency = [1.0, 8.0, 64.0]
    if args.concurrency and any(c != int(c) for c in args.concurrency):
        p.error("--concurrency takes whole numbers")
    if args.version is not None and args.label:
        p.error("give --version or --label, not both")
    if args.metrics == "auto" and args.protocol.endswith("grpc"):
        p.error("--metrics needs the server's metrics URL with a gRPC protocol (e.g. http://HOST:8501/metrics)")
    if args.processes < 1 or args.batch_size < 1 or args.duration <= 0 or args.warmup < 0:
        p.error("--processes, --batch-size and --duration must be positive, --warmup not negative")
    return args
