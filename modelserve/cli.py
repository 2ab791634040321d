"""The ``modelserve`` command: TF Serving's flags and syntax, plus subcommands.

``modelserve --port=8500 --model_name=m --model_base_path=/models/m`` runs the
server exactly like ``tensorflow_model_server``. A first argument that is not
a flag names a subcommand (``modelserve demo``), so the two forms never collide.
"""

from __future__ import annotations

import sys
import textwrap
from collections.abc import Callable, Sequence
from typing import Any

from . import __version__
from .options import FLAGS, FLAGS_BY_NAME, GROUPS, Flag, ServerOptions


class UsageError(Exception):
    """A command line that cannot be understood (exit status 2)."""


_TRUE = {"true": True, "false": False}


def _convert(flag: Flag, text: str) -> Any:
    try:
        if flag.kind == "bool":
            return _TRUE[text]
        if flag.kind == "int":
            return int(text)
        if flag.kind == "float":
            return float(text)
    except (KeyError, ValueError):
        kind = "true or false" if flag.kind == "bool" else f"a{'n' if flag.kind == 'int' else ''} {flag.kind}"
        raise UsageError(f"--{flag.name}: expected {kind}, got {text!r}") from None
    return text


def parse_flags(argv: Sequence[str]) -> ServerOptions:
    """``--name=value``, bare ``--flag`` for booleans, and ``--name value`` (which TF Serving ignores)."""
    values = {f.name: f.default for f in FLAGS}
    explicit: set[str] = set()
    args = list(argv)
    i = 0
    while i < len(args):
        arg = args[i]
        i += 1
        if not arg.startswith("--") or arg == "--":
            raise UsageError(f"unexpected argument: {arg}")
        name, eq, text = arg[2:].partition("=")
        flag = FLAGS_BY_NAME.get(name)
        if flag is None:
            raise UsageError(f"unknown flag: --{name}")
        if not eq:
            if flag.kind == "bool":
                text = "true"
            elif i < len(args) and not args[i].startswith("--"):
                text = args[i]
                i += 1
            else:
                raise UsageError(f"--{name} needs a value: --{name}=VALUE")
        values[name] = _convert(flag, text)
        explicit.add(name)
    return ServerOptions(values, frozenset(explicit))


def usage() -> str:
    lines = [
        "usage: modelserve [--flag=value ...]          run the server (tensorflow_model_server's flags)",
        "       modelserve demo [--dir=DIR] [flags]    serve a generated demo model repository",
        "       modelserve convert pb|keras|torch|sklearn SOURCE BASE_PATH ...   convert a model into a version",
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

    return run(options)


def _demo(argv: Sequence[str]) -> int:
    from .demo import main as demo_main

    return demo_main(argv)


def _convert_command(argv: Sequence[str]) -> int:
    from .convert import main as convert_main

    return convert_main(argv)


SUBCOMMANDS: dict[str, Callable[[Sequence[str]], int]] = {
    "demo": _demo,
    "convert": _convert_command,
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
