"""`smart … --help` reads as a manual: every argument says what it is and its default, and every
subcommand ends with an example command line."""

import argparse

import pytest

from engine.cli import build_parser


def _subcommands(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()):
    """(("taste", "fit"), parser) for every subcommand, nested ones included."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            seen = set()
            for name, sub in action.choices.items():
                if id(sub) not in seen:  # aliases map to the same parser
                    seen.add(id(sub))
                    yield path + (name,), sub
                    yield from _subcommands(sub, path + (name,))


COMMANDS = list(_subcommands(build_parser()))
IDS = [" ".join(path) for path, _ in COMMANDS]


def _arguments(parser: argparse.ArgumentParser):
    return [a for a in parser._actions if not isinstance(a, (argparse._HelpAction, argparse._SubParsersAction))
            and a.help is not argparse.SUPPRESS]


def _has_default(action: argparse.Action) -> bool:
    # A value the option takes when not given; None is "unset", a flag's False is its off state,
    # and a repeatable option's [] is "none given".
    return action.default not in (None, argparse.SUPPRESS, False, []) and action.nargs != 0 and (
        bool(action.option_strings) or action.nargs in (argparse.OPTIONAL, argparse.ZERO_OR_MORE))


def test_the_commands_the_issue_names_are_walked():
    assert {"render", "score", "generate", "serve", "pretrain", "grpo", "taste fit"} <= set(IDS)


@pytest.mark.parametrize(("path", "parser"), COMMANDS, ids=IDS)
def test_every_argument_says_what_it_does_and_its_default(path, parser):
    formatter = parser._get_formatter()
    for action in _arguments(parser):
        name = "/".join(action.option_strings) or action.dest
        text = formatter._expand_help(action) if action.help else ""
        assert text.strip(), f"smart {' '.join(path)} {name}: no help"
        if _has_default(action):
            assert "default" in text.lower(), f"smart {' '.join(path)} {name}: help does not state the default " \
                                              f"{action.default!r}: {text!r}"


@pytest.mark.parametrize(("path", "parser"), COMMANDS, ids=IDS)
def test_every_subcommand_help_ends_with_an_example(path, parser):
    last = parser.format_help().rstrip().splitlines()[-1].strip()
    assert last.startswith(f"smart {' '.join(path)}"), f"smart {' '.join(path)} --help ends with {last!r}"


def test_help_states_each_default_once_and_never_an_unset_placeholder():
    generate = dict(COMMANDS)[("generate",)]
    expand = generate._get_formatter()._expand_help
    by_flag = {a.option_strings[0]: a for a in generate._actions if a.option_strings}
    assert expand(by_flag["--candidates"]).endswith("(default: 4)")
    assert expand(by_flag["--top-p"]).lower().count("default") == 1  # says it in words: nothing appended
    for path, parser in COMMANDS:
        text = " ".join(parser.format_help().split())
        for placeholder in ("(default: None)", "(default: False)", "(default: [])"):
            assert placeholder not in text, f"smart {' '.join(path)} --help: {placeholder}"
