"""A bench run: check each target's first answer, then run every step (in interleaved rounds when there
are two targets), and report."""

from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from . import inputs, report
from .generators import Generators, Job
from .load import StepPlan
from .scrape import Scraper, difference
from .transport import Refused, exchange, http_bytes
from .wire import Model, Spec, wire


@dataclass
class Prepared:
    target: str
    job: Job
    model: Model
    scraper: Scraper | None


def prepare(target: str, args: argparse.Namespace) -> Prepared:
    """The target's model, the request's bytes, and its first answer checked; ``Refused`` when it fails."""
    protocol = wire(args.protocol, args.v2_json)
    if protocol.rest and not target.startswith(("http://", "https://")):
        target = f"http://{target}"
    spec = Spec(args.model, args.version, args.label, args.signature)
    model = protocol.model(target, spec, args.timeout)
    if args.input is not None:
        tensors = inputs.from_file(args.input, model)
    else:
        tensors = inputs.generated(model, args.batch_size, dict(args.shape), args.seed)
    request = protocol.encode(spec, tensors)
    try:
        body, headers = exchange(target, protocol.rest, request, args.token, args.timeout)
    except Refused as exc:
        if protocol.name == "v2-rest" and not args.v2_json:
            hint = " (a server without Triton's binary tensor extension, such as MLServer, needs --v2-json)"
            raise Refused(f"{exc}{hint}") from None
        raise
    batch = None if args.input is not None or args.shape else args.batch_size
    expected = inputs.reference(args.reference) if args.reference is not None else None
    inputs.check(protocol.decode(body, headers, model), model, batch, expected, args.tolerance)
    raw = http_bytes(target, request, args.token) if protocol.rest else request.body
    job = Job(target, protocol.rest, raw, request.path, args.token, args.timeout, args.grpc_channels)
    url = args.metrics
    if url == "auto":
        url = target.rstrip("/") + "/metrics"
    elif url is not None and target != args.target:
        url = None  # a metrics URL names the first target's server
    return Prepared(target, job, model, Scraper(url) if url else None)


@contextlib.contextmanager
def progress(label: str, seconds: float | None, quiet: bool) -> Iterator[None]:
    """A bar that fills with time (a step's warm-up and measured seconds), drawn from a thread."""
    if quiet:
        yield
        return
    from tqdm import tqdm

    done = threading.Event()
    total = round(seconds, 1) if seconds else None
    # disable=None: no bar when stderr is not a terminal (a log, a pipe).
    bar = tqdm(total=total, desc=label, unit="s", leave=False, file=sys.stderr, disable=None)

    def tick() -> None:
        start = time.monotonic()
        while not done.wait(0.5):
            bar.n = round(min(time.monotonic() - start, total or float("inf")), 1)
            bar.refresh()

    thread = threading.Thread(target=tick, daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join()
        bar.close()


def levels(args: argparse.Namespace) -> list[dict[str, Any]]:
    if args.concurrency:
        return [{"concurrency": int(c)} for c in args.concurrency]
    return [{"rate": float(r)} for r in args.rate]


def plan(level: dict[str, Any], args: argparse.Namespace) -> StepPlan:
    return StepPlan(
        concurrency=level.get("concurrency", 0),
        rate=level.get("rate", 0.0),
        poisson=args.arrivals == "poisson",
        warmup=args.warmup,
        duration=args.duration,
        requests=args.requests,
        max_errors=args.max_errors,
        connections=args.connections,
        seed=args.seed,
    )


def one_step(
    target: Prepared, generator: Generators, level: dict[str, Any], args: argparse.Namespace
) -> dict[str, Any]:
    before = target.scraper.sample() if target.scraper else None
    seconds = None if args.requests else args.warmup + args.duration
    with progress(f"{target.target} {report.level_name(level)}", seconds, args.quiet):
        record = generator.run(plan(level, args))
    after = target.scraper.sample() if target.scraper else None
    figures = report.step(record, level, generator.processes, difference(before, after))
    return {"target": target.target, "protocol": args.protocol, **figures}


def combine(rounds: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Several rounds of one step: medians of the rates and latencies; counts added up."""
    if len(rounds) == 1:
        return rounds[0]
    out = dict(rounds[-1])
    for key in ("requests", "errors", "warmup_requests"):
        out[key] = sum(r[key] for r in rounds)
    out["throughput"] = statistics.median(r["throughput"] for r in rounds)
    out["latency_ms"] = {k: statistics.median(r["latency_ms"][k] for r in rounds) for k in rounds[0]["latency_ms"]}
    out["generator_cpu"] = max(r["generator_cpu"] for r in rounds)
    out["stopped"] = "; ".join(sorted({r["stopped"] for r in rounds if r["stopped"]}))
    out["rounds"] = [{k: r[k] for k in ("throughput", "latency_ms", "requests", "errors")} for r in rounds]
    return out


def ratios(steps: Sequence[dict[str, Any]], targets: Sequence[str]) -> list[dict[str, Any]]:
    """Per step: the second target's throughput and latencies over the first's."""
    first = [s for s in steps if s["target"] == targets[0]]
    second = [s for s in steps if s["target"] == targets[1]]
    out = []
    for a, b in zip(first, second, strict=False):
        level: dict[str, Any] = {k: a[k] for k in ("concurrency", "rate") if k in a}
        out.append(
            {
                **level,
                "throughput": b["throughput"] / a["throughput"] if a["throughput"] else None,
                **{
                    f"{k}_latency": b["latency_ms"][k] / a["latency_ms"][k] if a["latency_ms"][k] else None
                    for k in ("p50", "p99")
                },
            }
        )
    return out


def bench(args: argparse.Namespace, argv: Sequence[str]) -> dict[str, Any]:
    targets = [prepare(t, args) for t in (args.target, *([args.compare] if args.compare else []))]
    rounds = args.rounds or (3 if args.compare else 1)
    runs: dict[tuple[int, int], list[dict[str, Any]]] = {}
    with contextlib.ExitStack() as stack:
        generators = [stack.enter_context(Generators(t.job, args.processes)) for t in targets]
        for _ in range(rounds):
            for j, level in enumerate(levels(args)):
                for i, target in enumerate(targets):  # interleaved: noise falls on both alike
                    runs.setdefault((i, j), []).append(one_step(target, generators[i], level, args))
    steps = [combine(runs[key]) for key in sorted(runs)]
    document: dict[str, Any] = {
        "command": ["modelserve", "bench", *argv],
        "protocol": args.protocol,
        "model": args.model,
        "targets": [t.target for t in targets],
        "rounds": rounds,
        "steps": steps,
        "notes": [t.scraper.note for t in targets if t.scraper and t.scraper.note],
    }
    if args.compare:
        document["compare"] = ratios(steps, document["targets"])
    return document


def print_report(document: dict[str, Any]) -> None:
    print(report.table(document["steps"]))
    for s in document["steps"]:
        for warning in report.warnings(s):
            print(f"warning: {s['target']} {report.level_name(s)}: {warning}", file=sys.stderr)
        if s.get("server"):
            server = ", ".join(f"{k} {v:.3g}" for k, v in s["server"].items() if k.endswith("_mean"))
            print(f"server {report.level_name(s)}: {server}")
    for note in document["notes"]:
        print(note, file=sys.stderr)
    if "compare" in document:
        a, b = document["targets"]
        print(f"\n{b} / {a}, median of {document['rounds']} interleaved rounds:")
        for r in document["compare"]:
            figures = ", ".join(f"{k} {v:.2f}x" for k, v in r.items() if k not in ("concurrency", "rate") and v)
            print(f"  {report.level_name(r)}: {figures}")
