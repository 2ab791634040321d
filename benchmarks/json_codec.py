"""Micro-benchmark of the TF Serving REST JSON codec (modelserve.codecs.tfs_json).

    python benchmarks/json_codec.py [--rounds 15] [--number 500]

(with modelserve installed, e.g. ``pip install -e .``, or ``PYTHONPATH=.`` from the checkout)

Prints microseconds per call (best of interleaved rounds) for the REST hot path:
decoding one 784-float instance (an MNIST image) and encoding a 10-float
output, next to a baseline measured in the same run: plain orjson + numpy
with none of TF Serving's checks or its float formatting. Also times a
256-float and a 1M-float output and a few slow-path inputs for scale.
"""

from __future__ import annotations

import argparse
import timeit
from collections.abc import Callable
from typing import Any

import numpy as np
import orjson

from modelserve.codecs import tfs_json
from modelserve.dtypes import DType


def best_us(pairs: dict[str, Callable[[], Any]], number: int, rounds: int) -> dict[str, float]:
    """Best µs per call of each function, measured in interleaved rounds.

    Interleaving and keeping the minimum makes the ratio robust on a shared, noisy
    machine: every function sees the same quiet moments.
    """
    best = dict.fromkeys(pairs, float("inf"))
    for _ in range(rounds):
        for label, fn in pairs.items():
            best[label] = min(best[label], timeit.timeit(fn, number=number) / number * 1e6)
    return best


def report(label: str, fn: Callable[[], Any], baseline: Callable[[], Any] | None, number: int, rounds: int) -> None:
    pairs = {"ours": fn} if baseline is None else {"ours": fn, "base": baseline}
    best = best_us(pairs, number, rounds)
    ratio = f"{best['ours'] / best['base']:6.2f}x baseline ({best['base']:9.1f} µs)" if baseline else ""
    print(f"{label:<44} {best['ours']:11.1f} µs   {ratio}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--number", type=int, default=500)
    args = parser.parse_args()
    n, r = args.number, args.rounds
    rng = np.random.default_rng(0)
    row, col = tfs_json.Format.ROW, tfs_json.Format.COLUMNAR
    numpy_opt = orjson.OPT_SERIALIZE_NUMPY

    # Request: one 784-float instance, float32 values printed as doubles (json.dumps style).
    pixels = rng.random(784).astype(np.float32).astype(np.float64).tolist()
    body = orjson.dumps({"instances": [pixels]})
    inputs = {"x": DType.DT_FLOAT}

    def decode(raw: bytes) -> Callable[[], Any]:
        def run() -> Any:
            doc = tfs_json.loads(raw)
            tfs_json.signature_name(doc)
            return tfs_json.decode_predict(doc, inputs, body=raw)

        return run

    def decode_baseline(raw: bytes) -> Callable[[], Any]:
        return lambda: np.asarray(orjson.loads(raw)["instances"], dtype=np.float32)

    print(f"request: {len(body)} bytes; baseline = orjson.loads + np.asarray, no checks")
    report("decode 784 floats (loads+signature+decode)", decode(body), decode_baseline(body), n, r)
    short = orjson.dumps({"instances": [np.round(pixels, 3).tolist()]})
    report("decode 784 floats written with 3 decimals", decode(short), decode_baseline(short), n, r)

    # Response: one 10-float output (class scores); baseline = orjson's shortest floats.
    scores = {"scores": rng.random((1, 10)).astype(np.float32)}
    report(
        "encode a 10-float output (row)",
        lambda: tfs_json.encode_predict(scores, row),
        lambda: orjson.dumps({"predictions": scores["scores"]}, option=numpy_opt),
        n,
        r,
    )
    ten = {f"out{i}": rng.random((1, 1)).astype(np.float32) for i in range(10)}
    report(
        "encode 10 outputs of one float (row)",
        lambda: tfs_json.encode_predict(ten, row),
        lambda: orjson.dumps({"predictions": [ten]}, option=numpy_opt),
        n,
        r,
    )
    vector = np.random.default_rng(1).standard_normal((1, 256)).astype(np.float32)  # an embedding
    report(
        "encode a 256-float output (row)",
        lambda: tfs_json.encode_predict({"v": vector}, row),
        lambda: orjson.dumps({"predictions": vector}, option=numpy_opt),
        max(n // 10, 1),
        r,
    )

    # Scale and the exact paths.
    big = {"y": rng.standard_normal((1000, 1000)).astype(np.float32)}
    report(
        "encode a 1M-float output (columnar)",
        lambda: tfs_json.encode_predict(big, col),
        lambda: orjson.dumps({"outputs": big["y"]}, option=numpy_opt),
        1,
        3,
    )
    nan_body = body.replace(b"[[", b"[[NaN,", 1)
    report("decode 785 floats incl. NaN (exact parser)", decode(nan_body), None, max(n // 50, 1), r)
    strings = orjson.dumps({"instances": [{"b64": "aGVsbG8="}] * 100})
    string_inputs = {"x": DType.DT_STRING}
    report(
        "decode 100 b64 strings (exact walker)",
        lambda: tfs_json.decode_predict(tfs_json.loads(strings), string_inputs, body=strings),
        None,
        max(n // 10, 1),
        r,
    )


if __name__ == "__main__":
    main()
