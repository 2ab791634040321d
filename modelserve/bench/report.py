"""A step's figures, and the bench's outputs: the terminal table, JSON, CSV and the plot.

A step's JSON object::

    {"target": ..., "protocol": ..., "concurrency": 8,          # or "rate": 500.0
     "requests": 8123, "errors": 0, "errors_by_kind": {},     # measured requests (warm-up left out)
     "warmup_requests": 800, "seconds": 10.0, "throughput": 812.3,   # successful answers per second
     "latency_ms": {"p50": ..., "p90": ..., "p95": ..., "p99": ..., "max": ...},
     "generator_cpu": 0.41, "processes": 1, "stopped": "", "server": {...}}
    # a rate step also has "send_lag_ms_p99": how late the generator's own loop sent (p99)

``throughput`` counts successes only, and latencies are those of successes: a fast failure is never
throughput. ``generator_cpu`` is the busiest generator process's share of one core.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .load import StepRecord

PERCENTILES = {"p50": 50, "p90": 90, "p95": 95, "p99": 99}
# A generator process busier than this may have been the limit, not the server.
BUSY = 0.8


def step(record: StepRecord, level: dict[str, Any], processes: int, server: dict[str, float]) -> dict[str, Any]:
    ms = record.latencies * 1000.0
    latency = {k: float(np.percentile(ms, p)) if ms.size else 0.0 for k, p in PERCENTILES.items()}
    latency["max"] = float(ms.max()) if ms.size else 0.0
    errors = sum(record.errors.values())
    figures: dict[str, Any] = {
        **level,
        "requests": int(ms.size) + errors,
        "errors": errors,
        "errors_by_kind": dict(sorted(record.errors.items())),
        "warmup_requests": record.warmup_requests,
        "seconds": record.seconds,
        "throughput": ms.size / record.seconds if record.seconds else 0.0,
        "latency_ms": latency,
        "generator_cpu": round(record.cpu_seconds / record.seconds, 3) if record.seconds else 0.0,
        "processes": processes,
        "stopped": record.stopped,
    }
    if "rate" in level:
        figures["send_lag_ms_p99"] = round(record.send_lag_p99 * 1000.0, 3)
    if server:
        figures["server"] = server
    return figures


def warnings(figures: dict[str, Any]) -> list[str]:
    """What makes a step's figures doubtful: a busy generator, an open loop that fell behind, an early stop."""
    out = []
    if figures["generator_cpu"] > BUSY:
        out.append(
            f"the generator used {figures['generator_cpu']:.0%} of a core: it may be the bottleneck "
            f"(try --processes={figures['processes'] + 1}, on cores the server does not use)"
        )
    if figures.get("send_lag_ms_p99", 0.0) > max(5.0, figures["latency_ms"]["p50"]):
        out.append(f"requests went out up to {figures['send_lag_ms_p99']:.1f} ms late (p99): the generator fell behind")
    if figures["stopped"]:
        out.append(figures["stopped"])
    return out


def level_name(figures: dict[str, Any]) -> str:
    return f"c={figures['concurrency']}" if "concurrency" in figures else f"rate={figures['rate']:g}/s"


def table(steps: Sequence[dict[str, Any]]) -> str:
    head = ["target", "step", "req/s", "p50 ms", "p90 ms", "p99 ms", "max ms", "requests", "errors", "gen cpu"]
    rows = [
        [
            s["target"],
            level_name(s),
            f"{s['throughput']:,.0f}",
            *(f"{s['latency_ms'][k]:.2f}" for k in ("p50", "p90", "p99", "max")),
            str(s["requests"]),
            str(s["errors"]),
            f"{s['generator_cpu']:.0%}",
        ]
        for s in steps
    ]
    if len({s["target"] for s in steps}) == 1:
        head, rows = head[1:], [r[1:] for r in rows]
    widths = [max(len(str(x)) for x in col) for col in zip(head, *rows, strict=False)]
    lines = ["  ".join(c.rjust(w) for c, w in zip(r, widths, strict=False)) for r in [head, *rows]]
    return "\n".join(lines)


def write_json(path: Path, document: dict[str, Any]) -> None:
    path.write_text(json.dumps(document, indent=2) + "\n")


CSV_COLUMNS = ["target", "protocol", "concurrency", "rate", "requests", "errors", "throughput"]


def write_csv(path: Path, steps: Sequence[dict[str, Any]]) -> None:
    with path.open("w", newline="") as out:
        writer = csv.writer(out)
        writer.writerow([*CSV_COLUMNS, *(f"latency_ms_{k}" for k in (*PERCENTILES, "max")), "generator_cpu", "stopped"])
        for s in steps:
            writer.writerow(
                [
                    *(s.get(c, "") for c in CSV_COLUMNS),
                    *(round(s["latency_ms"][k], 4) for k in (*PERCENTILES, "max")),
                    s["generator_cpu"],
                    s["stopped"],
                ]
            )


def plot(path: Path, steps: Sequence[dict[str, Any]], title: str) -> None:
    """Latency (p50 and p99) against throughput, one line per target, each point named by its step."""
    try:
        import matplotlib
    except ImportError:
        raise PlotUnavailable(
            "--plot needs matplotlib: pip install 'modelserve[bench-plot]' (or pip install matplotlib)"
        ) from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(7, 4.5))
    for target in dict.fromkeys(s["target"] for s in steps):
        mine = [s for s in steps if s["target"] == target]
        x = [s["throughput"] for s in mine]
        for key, style in (("p50", "o-"), ("p99", "s--")):
            axes.plot(x, [s["latency_ms"][key] for s in mine], style, label=f"{target} {key}")
        for s in mine:
            axes.annotate(level_name(s), (s["throughput"], s["latency_ms"]["p99"]), fontsize=7)
    axes.set_xlabel("throughput (successful requests/s)")
    axes.set_ylabel("latency (ms)")
    axes.set_yscale("log")
    axes.set_title(title, fontsize=9)
    axes.grid(True, alpha=0.3)
    axes.legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)


class PlotUnavailable(Exception):
    """--plot was asked for without matplotlib installed."""
