"""`smart`: the command-line face of the engine, pretraining, GRPO, evaluation and the policy host.

Subcommands come from the packaging entry points of group `smart.commands` (pyproject.toml): each
names a module with `register(subparsers)`, whose subcommands set `func=run(args) -> int`. The engine
thus names no higher layer; `training` registers its own commands. Known problems (bad files, missing
weights, unloadable models) print one line on stderr and exit non-zero, without a traceback.
"""

from __future__ import annotations

import argparse
import os
import sys
from importlib.metadata import entry_points

from engine.errors import UserError, first_line, os_error_line

COMMANDS_GROUP = "smart.commands"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="smart", description="SMART Studio engine: render, score, generate, train.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    unavailable = []
    # Sorted by entry-point name (pyproject.toml's names carry the --help order). A module that is not
    # importable (an optional feature whose dependencies are missing) is skipped with a note in --help.
    found = sorted(entry_points(group=COMMANDS_GROUP), key=lambda ep: ep.name)
    if not found:
        parser.epilog = (f"no commands are registered (entry points {COMMANDS_GROUP!r} are missing: "
                         "install the project, e.g. `uv sync`)")
    for ep in found:
        try:
            module = ep.load()
        except ModuleNotFoundError as exc:
            if exc.name and (exc.name == ep.value or ep.value.startswith(exc.name + ".")):
                continue  # feature not part of this build
            unavailable.append(f"{ep.name} ({exc})")
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
    except OSError as exc:  # a file that cannot be read or written: say which, no traceback
        print(f"smart {args.command}: {os_error_line(exc)}", file=sys.stderr)
        return 1
    except (MemoryError, OverflowError) as exc:  # input far beyond what the engine is sized for
        print(f"smart {args.command}: the input is too large ({type(exc).__name__}: {first_line(exc)})",
              file=sys.stderr)
        return 2
    return int(code or 0)


if __name__ == "__main__":
    sys.exit(main())
