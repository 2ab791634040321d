"""``modelserve bench``: load any TF Serving or KServe V2 server and measure it (docs/bench.md).

::

    modelserve bench --target=http://127.0.0.1:8501 --protocol=tfs-rest --model=half_plus_two \\
        --concurrency=1,8,64 --duration=10 --json=out.json --csv=out.csv --plot=out.png

The request is built once from the model's metadata (or a file) and its first answer is checked for
the outputs' names, dtypes and shapes (and against ``--reference``) before any load: a server that
answers fast with errors, or with something else, is refused, not measured. Then each step of a
closed-loop concurrency sweep or an open-loop rate sweep (``load.py``) runs from one or more
generator processes (``generators.py``) replaying the same bytes (``transport.py``); the figures,
the generator's own CPU and the server's ``/metrics`` go to a table, JSON, CSV and a plot
(``report.py``). ``--compare`` runs a second target in interleaved rounds and prints ratios.

Layers: beside the server, like ``client/`` (which it uses): it imports the foundation and
``client/`` only.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from ..client import ClientError
from .options import parse
from .report import PlotUnavailable, plot, write_csv, write_json
from .transport import Refused


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse(argv)
    if args.plot is not None:
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            print("modelserve bench: --plot needs matplotlib: pip install 'modelserve[bench-plot]'", file=sys.stderr)
            return 2
    from .run import bench, print_report

    try:
        document = bench(args, argv)
    except (Refused, ClientError) as exc:
        print(f"modelserve bench: refused: {exc}", file=sys.stderr)
        return 1
    print_report(document)
    if args.json is not None:
        write_json(args.json, document)
    if args.csv is not None:
        write_csv(args.csv, document["steps"])
    if args.plot is not None:
        try:
            plot(args.plot, document["steps"], f"{args.model} over {args.protocol}")
        except PlotUnavailable as exc:
            print(f"modelserve bench: {exc}", file=sys.stderr)
            return 2
    return 0


__all__ = ["main"]
