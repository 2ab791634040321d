"""Interleaved A/B of batching set-ups on batching.py's MLP: is a layout, a parameter or a change faster?

    python benchmarks/batching_ab.py [--seconds=5] [--rounds=3] [--concurrency=32,64,128]
        --variant 'NAME|SERVER FLAGS|MAX_BATCH,TIMEOUT_MICROS,BATCH_THREADS|MODEL CONFIG FIELDS|GIT REF' ...

Every variant is a batching-on server of its own, all started side by side and loaded one at a time:
each round runs every concurrency, and at each one every variant in turn (after an uncounted second
at that load, once all servers are idle), REST through ``wrk``. This machine's speed drifts by up to
2× within minutes, so only such interleaved figures compare; the table gives medians of the rounds and
each variant's ratio to the first. Empty fields take batching.py's set-up (``max_batch_size`` 128,
100 ms, one batch thread). A git ref runs that variant's server from a temporary worktree of that
commit, e.g. the code before a change against the working tree::

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
from dataclasses import dataclass
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from batching import ALL_CPUS, COMMON_FLAGS, REST_PATH, SIZES, cpu_seconds, wait_idle
from common import ROOT, LoadResult, ensure_tools, free_port, median, pinned, python, wait_http, wrk

sys.path.insert(0, str(ROOT))
from modelserve.demo import mlp


@dataclass
class Variant:
    name: str
    flags: list[str]
    batching: str  # BatchingParameters text
    model_config: str  # extra ModelConfig fields
    ref: str  # git ref to run the server from ("": the working tree)


def parse_variant(text: str) -> Variant:
    name, flags, batching, model_config, ref = (text.split("|") + [""] * 4)[:5]
    size, timeout, threads = ([*batching.split(","), "", "", ""] if batching else ["", "", ""])[:3]
    params = (f"max_batch_size {{ value: {size or 128} }}\nbatch_timeout_micros {{ value: {timeout or 100000} }}\n"
              f"max_enqueued_batches {{ value: 100 }}\nnum_batch_threads {{ value: {threads or 1} }}\n")
    return Variant(name, flags.split(), params, model_config, ref)


@contextlib.contextmanager
def worktree(ref: str, work: Path) -> Iterator[Path]:
    """The checkout at ``ref`` (the working tree itself when empty)."""
    if not ref:
        yield ROOT
        return
    path = work / f"tree-{ref.replace('/', '_').replace('~', '-')}"
    subprocess.run(["git", "worktree", "add", "--detach", "-f", str(path), ref], cwd=ROOT, check=True,
                   capture_output=True)
    try:
        yield path
    finally:
        subprocess.run(["git", "worktree", "remove", "--force", str(path)], cwd=ROOT, check=False,
                       capture_output=True)


@contextlib.contextmanager
def server(variant: Variant, index: int, base: Path, work: Path, tree: Path) -> Iterator[tuple[int, int]]:
    """Yields the variant's REST port and pid."""
    config, params = work / f"models-{index}.config", work / f"batching-{index}.txt"
    config.write_text(f'model_config_list {{ config {{ name: "mlp" base_path: "{base}" model_platform: "onnx" '
                      f"{variant.model_config} }} }}\n")
    params.write_text(variant.batching)
    rest = free_port()
    cmd = [python(), "-m", "modelserve", f"--model_config_file={config}", f"--rest_api_port={rest}",
           f"--port={free_port()}", *COMMON_FLAGS.split(), "--enable_batching",
           f"--batching_parameters_file={params}", *variant.flags]
    with pinned(cmd, ALL_CPUS, cwd=tree, log=work / f"server-{index}.log") as process:
        wait_http(f"http://127.0.0.1:{rest}/v1/models/mlp", timeout=120)
        yield rest, process.pid


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--concurrency", default="32,64,128")
    parser.add_argument("--variant", action="append", required=True,
                        help="NAME|SERVER FLAGS|MAX_BATCH,TIMEOUT_MICROS,BATCH_THREADS|MODEL CONFIG FIELDS|GIT REF")
    args = parser.parse_args()
    variants = [parse_variant(v) for v in args.variant]
    levels = [int(c) for c in args.concurrency.split(",")]
    ensure_tools("wrk")
    work = Path(tempfile.mkdtemp(prefix="bench-batching-ab-"))
    base = work / "mlp"
    (base / "1").mkdir(parents=True)
    (base / "1" / "model.onnx").write_bytes(mlp(SIZES, seed=0, softmax=False))
    x = np.random.default_rng(0).standard_normal((1, SIZES[0])).astype(np.float32)
    body = work / "body.json"
    body.write_text(json.dumps({"instances": x.tolist()}))
    runs: dict[tuple[str, int], list[tuple[LoadResult, float]]] = {}
    with contextlib.ExitStack() as stack:
        servers = []
        for i, v in enumerate(variants):
            tree = stack.enter_context(worktree(v.ref, work))
            servers.append(stack.enter_context(server(v, i, base, work, tree)))
            print(f"{v.name}: {' '.join(v.flags) or '(flags: none)'}; {v.batching.strip()!r}; "
                  f"{v.model_config or '(model config: defaults)'}; {v.ref or 'working tree'}", flush=True)
        pids = [pid for _, pid in servers]
        for round_ in range(args.rounds):
            for c in levels:
                for v, (port, pid) in zip(variants, servers, strict=True):
                    url = f"http://127.0.0.1:{port}{REST_PATH}"
                    wait_idle(pids)
                    wrk(url, body, c, 1, cpu=ALL_CPUS)  # uncounted: the queue adapts to the new load
                    before = cpu_seconds(pid)
                    load = wrk(url, body, c, args.seconds, cpu=ALL_CPUS)
                    cpu_ms = (cpu_seconds(pid) - before) * 1000 / max(1.0, load.rps * args.seconds)
                    runs.setdefault((v.name, c), []).append((load, cpu_ms))
                    print(f"  round {round_ + 1} c={c:<4} {v.name:>12} {load.rps:8.1f} rows/s  p50 {load.p50_ms:6.1f}"
                          f"  p99 {load.p99_ms:6.1f} ms  server CPU {cpu_ms:5.2f} ms/row"
                          + (f"  {load.errors} failed" if load.errors else ""), flush=True)
    print("\n| variant | c | rows/s | p50 / p99 ms | server CPU ms/row | ratio to first |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for c in levels:
        first = median([r for r, _ in runs[variants[0].name, c]]).rps
        for v in variants:
            load = median([r for r, _ in runs[v.name, c]])
            cpu_ms = statistics.median(m for _, m in runs[v.name, c])
            print(f"| {v.name} | {c} | {load.rps:,.0f} | {load.p50_ms:.1f} / {load.p99_ms:.1f} | {cpu_ms:.2f} "
                  f"| {load.rps / first:.2f} |")


if __name__ == "__main__":
    main()
