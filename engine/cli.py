"""`smart`: the command-line face of the engine, pretraining, GRPO, evaluation and the policy host.

Each feature module exposes `register(subparsers)`; its subcommands set `func=run(args) -> int`.
Known problems (bad files, missing weights, unloadable models) print one line on stderr and exit
non-zero, without a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

from engine.errors import UserError

# Modules that contribute subcommands, in the order they appear in --help. A module that is not
# importable (an optional feature whose dependencies are missing) is skipped with a note in --help.
COMMAND_MODULES = [
    "engine.commands",
    "training.data",
    "training.pretrain",
    "training.nll",
    "training.grpo_cli",
    "training.evaluate",
    "engine.host.serve",
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="smart", description="SMART Studio engine: render, score, generate, train.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    unavailable = []
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name and (exc.name == name or name.startswith(exc.name + ".")):
                continue  # feature not part of this build yet
            unavailable.append(f"{name} ({exc})")
            continue
        register = getattr(module, "register", None)
        if register is not None:
            register(sub)
    if unavailable:
        parser.epilog = "unavailable: " + "; ".join(unavailable)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        code = args.func(args)
    except UserError as exc:
        print(f"smart {args.command}: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"smart {args.command}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # stdout closed early (e.g. `| head`): not an error worth a traceback.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    return int(code or 0)


if __name__ == "__main__":
    sys.exit(main())
