// The Prometheus text exposition format (version 0.0.4), read into samples, and the arithmetic the
// dashboard does on two successive scrapes: counter rates and histogram quantiles, as PromQL's
// rate() and histogram_quantile() compute them. No DOM here: tests run it on its own.
"use strict";

(function (global) {
  // One sample line: name, optional {labels}, value, optional timestamp.
  const SAMPLE = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{.*\})?\s+(\S+)(?:\s+\S+)?\s*$/;
  const LABEL = /\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*=\s*"((?:[^"\\]|\\.)*)"\s*,?/y;

  function unescape(text) {
    return text.replace(/\\(.)/g, (_, c) => (c === "n" ? "\n" : c));
  }

  function parseLabels(text) {
    const labels = {};
    const inner = text.slice(1, -1);
    LABEL.lastIndex = 0;
    while (LABEL.lastIndex < inner.length) {
      const start = LABEL.lastIndex;
      const match = LABEL.exec(inner);
      if (match === null) {
        if (inner.slice(start).trim() === "") break;
        throw new Error("bad labels: " + text);
      }
      labels[match[1]] = unescape(match[2]);
    }
    return labels;
  }

  function parseValue(text) {
    if (text === "+Inf" || text === "Inf") return Infinity;
    if (text === "-Inf") return -Infinity;
    if (text === "NaN") return NaN;
    const value = Number(text);
    if (Number.isNaN(value)) throw new Error("bad value: " + text);
    return value;
  }

  // text -> {samples: Map(sample name -> [{labels, value}]), types: Map(family -> type), help: Map}.
  // Lines that do not parse are skipped (counted in `skipped`): one odd line must not blank the page.
  function parse(text) {
    const samples = new Map();
    const types = new Map();
    const help = new Map();
    let skipped = 0;
    for (const raw of text.split("\n")) {
      const line = raw.trim();
      if (line === "") continue;
      if (line[0] === "#") {
        const words = line.split(/\s+/);
        if (words[1] === "TYPE" && words.length >= 4) types.set(words[2], words[3]);
        if (words[1] === "HELP" && words.length >= 3) help.set(words[2], line.split(/\s+/).slice(3).join(" "));
        continue;
      }
      const match = SAMPLE.exec(line);
      try {
        if (match === null) throw new Error("bad line");
        const labels = match[2] ? parseLabels(match[2]) : {};
        const value = parseValue(match[3]);
        if (!samples.has(match[1])) samples.set(match[1], []);
        samples.get(match[1]).push({ labels, value });
      } catch (err) {
        skipped += 1;
      }
    }
    return { samples, types, help, skipped };
  }

  function matches(labels, filter) {
    for (const key in filter) {
      const want = filter[key];
      const have = labels[key] === undefined ? "" : labels[key];
      if (typeof want === "function" ? !want(have) : have !== want) return false;
    }
    return true;
  }

  // The sum of every sample of `name` whose labels match `filter` ({label: value or predicate}).
  function sum(scrape, name, filter) {
    let total = 0;
    for (const s of scrape.samples.get(name) || []) if (matches(s.labels, filter || {})) total += s.value;
    return total;
  }

  // Distinct values of `label` among the samples of `name`.
  function labelValues(scrape, name, label) {
    const seen = new Set();
    for (const s of scrape.samples.get(name) || []) seen.add(s.labels[label] === undefined ? "" : s.labels[label]);
    return [...seen];
  }

  // A counter's increase from `before` to `after` (a reset — the process restarted — counts from 0).
  function increase(before, after) {
    return after >= before ? after - before : after;
  }

  // Per second between two scrapes taken `seconds` apart; null when there is no earlier scrape.
  function rate(before, after, seconds, name, filter) {
    if (before === null || seconds <= 0) return null;
    return increase(sum(before, name, filter), sum(after, name, filter)) / seconds;
  }

  // Cumulative bucket counts of histogram `name` (matching `filter`, summed over other labels): [[le, count]].
  function buckets(scrape, name, filter) {
    const byLe = new Map();
    for (const s of scrape.samples.get(name + "_bucket") || []) {
      if (!matches(s.labels, filter || {})) continue;
      const le = parseValue(s.labels.le);
      byLe.set(le, (byLe.get(le) || 0) + s.value);
    }
    return [...byLe.entries()].sort((a, b) => a[0] - b[0]);
  }

  // The q-quantile of the observations made between two scrapes, interpolated linearly inside the
  // bucket it falls in (PromQL's histogram_quantile); null when nothing was observed. A quantile in
  // the +Inf bucket answers the highest finite bound.
  function quantile(q, before, after, name, filter) {
    const now = buckets(after, name, filter);
    const then = new Map(before === null ? [] : buckets(before, name, filter));
    const delta = now.map(([le, count]) => [le, increase(then.get(le) || 0, count)]);
    return quantileOf(q, delta);
  }

  function quantileOf(q, cumulative) {
    if (cumulative.length === 0) return null;
    const total = cumulative[cumulative.length - 1][1];
    if (!(total > 0)) return null;
    const rank = q * total;
    let lower = 0;
    let below = 0;
    for (const [le, count] of cumulative) {
      if (count >= rank) {
        if (le === Infinity) return lower;
        if (count === below) return le;
        return lower + ((le - lower) * (rank - below)) / (count - below);
      }
      lower = le;
      below = count;
    }
    return lower;
  }

  // The mean of the observations between two scrapes (Δsum / Δcount); null when none.
  function mean(before, after, name, filter) {
    if (before === null) return null;
    const count = increase(sum(before, name + "_count", filter), sum(after, name + "_count", filter));
    if (count <= 0) return null;
    return increase(sum(before, name + "_sum", filter), sum(after, name + "_sum", filter)) / count;
  }

  global.PromText = { parse, sum, labelValues, rate, buckets, quantile, quantileOf, mean, increase };
})(globalThis);
