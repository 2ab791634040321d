"""Interleaved A/B of batching set-ups on batching.py's MLP: is a layout, a parameter or a change faster?

    python benchmarks/batching_ab.py [--seconds=5] [--rounds=3] [--concurrency=32,64,128]
                                     [--protocol=rest|grpc]
        --variant 'NAME|SERVER FLAGS|MAX_BATCH,TIMEOUT_MICROS,BATCH_THREADS|MODEL CONFIG FIELDS|GIT REF' ...

Every variant is a batching-on server of its own, all started side by side and loaded one at a time:
each round runs every concurrency, and at each one every variant in turn (after an uncounted second
at that load, once all servers are idle), REST through ``wrk`` or gRPC through ``h2load``. This
machine's speed drifts by up to 2× within minutes, so only such interleaved figures compare; the table
gives medians of the rounds and each variant's ratio to the first. Empty fields take batching.py's
set-up (``max_batch_size`` 128, 100 ms, one batch thread). A git ref runs that variant's server from a
temporary worktree of that commit, e.g. the code before a change against the working tree::

    python benchmarks/batching_ab.py --variant 'now' --variant 'before||||HEAD~1'
    python benchmarks/batching_ab.py --variant 'default' \\
        --variant '2x1|--tensorflow_intra_op_parallelism=1|64,100000,2|placement { instances: 2 }'
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from batching import SIZES, Cell, Setup, grpc_frame, measure, server, wait_idle
from common import ROOT, ensure_tools, median

sys.path.insert(0, str(ROOT))
from modelserve.demo import mlp


def parse_variant(text: str, work: Path) -> tuple[Setup, str]:
    """The variant's server set-up (its batching file written in ``work``) and its git ref."""
    name, flags, batching, model_config, ref = [*text.split("|"), "", "", "", ""][:5]
    size, timeout, threads = [*batching.split(","), "", "", ""][:3]
    params = work / f"batching-{name}.txt"
    params.write_text(
        f"max_batch_size {{ value: {size or 128} }}\nbatch_timeout_micros {{ value: {timeout or 100000} }}\n"
        f"max_enqueued_batches {{ value: 100 }}\nnum_batch_threads {{ value: {threads or 1} }}\n"
    )
    setup = Setup(name, ["--enable_batching", f"--batching_parameters_file={params}", *flags.split()], model_config)
    print(
        f"{name}: {flags or '(no flags)'}; {params.read_text().strip()!r}; "
        f"{model_config or '(model config: defaults)'}; {ref or 'working tree'}",
        flush=True,
    )
    return setup, ref


@contextlib.contextmanager
def worktree(ref: str, work: Path) -> Iterator[Path]:
    """The checkout at ``ref`` (the working tree itself when empty)."""
    if not ref:
        yield ROOT
        return
    path = work / f"tree-{ref.replace('/', '_').replace('~', '-')}"
    subprocess.run(
        ["git", "worktree", "add", "--detach", "-f", str(path), ref], cwd=ROOT, check=True, capture_output=True
    )
    try:
        yield path
    finally:
        subprocess.run(["git", "worktree", "remove", "--force", str(path)], cwd=ROOT, check=False, capture_output=True)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--concurrency", default="32,64,128")
    parser.add_argument("--protocol", default="rest", choices=["rest", "grpc"])
    parser.add_argument(
        "--variant",
        action="append",
        required=True,
        help="NAME|SERVER FLAGS|MAX_BATCH,TIMEOUT_MICROS,BATCH_THREADS|MODEL CONFIG FIELDS|GIT REF",
    )
    args = parser.parse_args()
    levels = [int(c) for c in args.concurrency.split(",")]
    ensure_tools("wrk", "h2load")
    work = Path(tempfile.mkdtemp(prefix="bench-batching-ab-"))
    variants = [parse_variant(v, work) for v in args.variant]
    base = work / "mlp"
    (base / "1").mkdir(parents=True)
    (base / "1" / "model.onnx").write_bytes(mlp(SIZES, seed=0, softmax=False))
    x = np.random.default_rng(0).standard_normal((1, SIZES[0])).astype(np.float32)
    (work / "body.json").write_text(json.dumps({"instances": x.tolist()}))
    grpc_frame(work / "body.bin", x)
    runs: dict[tuple[str, int], list[Cell]] = {}
    with contextlib.ExitStack() as stack:
        servers = []
        for setup, ref in variants:
            tree = stack.enter_context(worktree(ref, work))
            servers.append(stack.enter_context(server(setup, base, work, tree)))
        pids = [pid for _, _, pid in servers]
        for round_ in range(args.rounds):
            print(f"round {round_ + 1}/{args.rounds}", flush=True)
            for c in levels:
                for (setup, _), server_ in zip(variants, servers, strict=True):
                    wait_idle(pids)
                    runs.setdefault((setup.name, c), []).append(
                        measure(setup, server_, work, args.protocol, c, args.seconds)
                    )
    print("\n| variant | c | rows/s | p50 / p99 ms | server CPU ms/row | ratio to first |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for c in levels:
        first = median([cell.load for cell in runs[variants[0][0].name, c]]).rps
        for setup, _ in variants:
            load = median([cell.load for cell in runs[setup.name, c]])
            cpu_ms = statistics.median(cell.cpu_ms_per_row for cell in runs[setup.name, c])
            print(
                f"| {setup.name} | {c} | {load.rps:,.0f} | {load.p50_ms:.1f} / {load.p99_ms:.1f} | {cpu_ms:.2f} "
                f"| {load.rps / first:.2f} |"
            )


if __name__ == "__main__":
    main()
