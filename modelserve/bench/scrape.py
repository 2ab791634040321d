"""The server's own view of a step, from its Prometheus ``/metrics`` read before and after.

Only three histograms are read: time in the queue, time in the model, and batch sizes. A server
without them (or without ``/metrics`` at all) gives no server figures, and the bench says so once.
"""

from __future__ import annotations

import re
import urllib.error
import urllib.request

HISTOGRAMS = {
    "queue_ms": "modelserve_queue_duration_seconds",
    "inference_ms": "modelserve_inference_duration_seconds",
    "batch_size": "modelserve_batch_size",
}
_LINE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)")

Sample = dict[str, float]  # "<histogram>_sum" / "<histogram>_count" -> value, summed over labels


def parse(text: str) -> Sample:
    """Every ``_sum`` and ``_count`` of ``HISTOGRAMS`` in Prometheus' text format, added over labels."""
    wanted = {f"{name}{end}" for name in HISTOGRAMS.values() for end in ("_sum", "_count")}
    found: Sample = {}
    for line in text.splitlines():
        match = _LINE.match(line)
        if match and match.group(1) in wanted:
            try:
                found[match.group(1)] = found.get(match.group(1), 0.0) + float(match.group(3))
            except ValueError:
                continue
    return found


class Scraper:
    """Reads ``url``; after a failure it stops trying and ``note`` says why."""

    def __init__(self, url: str, timeout: float = 5.0) -> None:
        self.url = url
        self.timeout = timeout
        self.note = ""

    def sample(self) -> Sample | None:
        if self.note:
            return None
        try:
            with urllib.request.urlopen(self.url, timeout=self.timeout) as answer:
                text = answer.read().decode("utf-8", "replace")
        except urllib.error.HTTPError as exc:
            self.note = f"server metrics: {self.url} answered HTTP {exc.code}"
            return None
        except OSError as exc:
            self.note = f"server metrics: {self.url} could not be read ({exc})"
            return None
        found = parse(text)
        if not found:
            self.note = f"server metrics: {self.url} has none of {', '.join(HISTOGRAMS.values())}"
            return None
        return found


def difference(before: Sample | None, after: Sample | None) -> dict[str, float]:
    """Mean queue and inference time (ms) and mean batch size between two samples; what is missing is left out."""
    if before is None or after is None:
        return {}
    out = {}
    for key, name in HISTOGRAMS.items():
        count = after.get(f"{name}_count", 0.0) - before.get(f"{name}_count", 0.0)
        total = after.get(f"{name}_sum", 0.0) - before.get(f"{name}_sum", 0.0)
        if count > 0:
            out[f"{key}_mean"] = total / count * (1000.0 if key.endswith("_ms") else 1.0)
            out[f"{key}_count"] = count
    return out
