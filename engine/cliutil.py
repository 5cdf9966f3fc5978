"""One look for every `smart` subcommand's --help: what each option does, its default, and examples.

Each `register(subparsers)` passes `formatter_class=HelpFormatter, epilog=examples("smart …")` to
`add_parser`; tests/test_cli_help.py checks every subcommand does.
"""

from __future__ import annotations

import argparse
import textwrap


def states_default(action: argparse.Action) -> bool:
    """Whether the option has a default worth saying in its help: a value, not "unset" (None), not the
    off state of a flag, not an empty list of a repeatable option."""
    if action.default in (None, argparse.SUPPRESS) or action.nargs == 0 or action.default == []:
        return False
    return bool(action.option_strings) or action.nargs in (argparse.OPTIONAL, argparse.ZERO_OR_MORE)


class HelpFormatter(argparse.HelpFormatter):
    """Wraps long lines of descriptions and epilogs but keeps their line breaks and indented lines
    (example commands), and ends an option's help with "(default: X)" unless the help already says
    its default in words."""

    def _fill_text(self, text, width, indent):
        return "\n".join(indent + line if line[:1].isspace() or len(indent + line) <= width
                         else textwrap.fill(line, width, initial_indent=indent, subsequent_indent=indent)
                         for line in text.splitlines())

    def _get_help_string(self, action):
        help_ = action.help or ""
        if "default" in help_.lower() or not states_default(action):
            return help_
        return f"{help_} (default: %(default)s)"


def examples(*command_lines: str) -> str:
    """An epilog of example command lines, each a full `smart …` invocation."""
    heading = "example:" if len(command_lines) == 1 else "examples:"
    return "\n".join([heading, *(f"  {line}" for line in command_lines)])


def option_type(parse):
    """`parse` (text → value, ValueError naming what is wrong) as an argparse `type=`: its message becomes the
    usage error (argparse would otherwise say only "invalid value")."""
    def convert(text: str):
        try:
            return parse(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    convert.__name__ = parse.__name__
    return convert
