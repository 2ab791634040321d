"""The ``modelserve`` command: TF Serving's flags and syntax, plus subcommands.

``modelserve --port=8500 --model_name=m --model_base_path=/models/m`` runs the
server exactly like ``tensorflow_model_server``. A first argument that is not
a flag names a subcommand (``modelserve demo``), so the two forms never collide.
"""

from __future__ import annotations

import sys
import textwrap
from collections.abc import Callable, Sequence

from . import __version__
from .options import FLAGS, GROUPS, UsageError, parse_flags


def usage() -> str:
    lines = [
        "usage: modelserve [--flag=value ...]          run the server (tensorflow_model_server's flags)",
        "       modelserve demo [--dir=DIR] [flags]    serve a generated demo model repository",
        "       modelserve convert pb|keras|torch|sklearn SOURCE BASE_PATH ...   convert a model into a version",
        "       modelserve bench --target=URL --protocol=tfs-rest|tfs-grpc|v2-rest|v2-grpc --model=NAME ...",
        "                                              load a server and measure it ('modelserve bench --help')",
        "",
        "Flags take --name=value (or --name value); booleans also take a bare --name.",
        "Flags marked * are accepted for compatibility with TF Serving and have no effect yet.",
    ]
    for group in GROUPS:
        lines += ["", f"{group}:"]
        for flag in (f for f in FLAGS if f.group == group):
            default = str(flag.default).lower() if flag.kind == "bool" else repr(flag.default)
            mark = "*" if not flag.effect else " "
            head = f" {mark}--{flag.name}={flag.kind} (default {default})"
            lines.append(head)
            lines += textwrap.wrap(flag.help, 96, initial_indent="        ", subsequent_indent="        ")
    return "\n".join(lines)


def version_text() -> str:
    try:
        from .platforms import before_tensorflow

        before_tensorflow()
        import tensorflow as tf

        tf_version = tf.__version__
    except ImportError:
        tf_version = "not installed"
    return f"TensorFlow ModelServer: {__version__}-modelserve\nTensorFlow Library: {tf_version}"


def _serve(argv: Sequence[str]) -> int:
    options = parse_flags(argv)
    if options.version:
        print(version_text())
        return 0
    from .server import run

    status = run(options)
    if status and not options.model_base_path and not options.model_config_file:
        # TF Serving's own line says what is missing; a newcomer also needs where to go next.
        print(
            "modelserve: no model to serve. 'modelserve --help' lists the flags; "
            "'modelserve demo' serves example models.",
            file=sys.stderr,
        )
    return status


def _demo(argv: Sequence[str]) -> int:
    from .demo import main as demo_main

    return demo_main(argv)


def _convert_command(argv: Sequence[str]) -> int:
    from .convert import main as convert_main

    return convert_main(argv)


def _bench(argv: Sequence[str]) -> int:
    from .bench import main as bench_main

    return bench_main(argv)


SUBCOMMANDS: dict[str, Callable[[Sequence[str]], int]] = {
    "demo": _demo,
    "convert": _convert_command,
    "bench": _bench,
}


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if args and args[0] in ("-h", "--help", "help"):
        print(usage())
        return 0
    try:
        if args and not args[0].startswith("-"):
            command = SUBCOMMANDS.get(args[0])
            if command is None:
                raise UsageError(f"unknown command: {args[0]} (commands: {', '.join(SUBCOMMANDS)})")
            return command(args[1:])
        return _serve(args)
    except UsageError as exc:
        print(f"modelserve: {exc}\nRun 'modelserve --help' for the list of flags.", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
