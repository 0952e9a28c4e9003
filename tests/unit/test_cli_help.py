"""``--help`` shows every option's default, or says in words what leaving it out means."""

from __future__ import annotations

import argparse

import pytest

from tradeguard.cli import build_parser


def _subcommands() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    [sub] = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return dict(sub.choices)


@pytest.mark.parametrize("command", sorted(_subcommands()))
def test_every_option_with_a_default_shows_it(command: str) -> None:
    parser = _subcommands()[command]
    text = " ".join(parser.format_help().split())
    for action in parser._actions:
        if not action.option_strings or action.default in (None, False, "", argparse.SUPPRESS):
            continue
        assert f"(default: {action.default})" in text, (command, action.dest, text)


@pytest.mark.parametrize(("command", "phrase"), [
    ("run", "(default: the embedded paper config)"),
    ("run", "(default: TRADEGUARD_STATE_DIR, else the config's service.state_dir)"),
    ("flatten", "(default: 30.0)"),
    ("status", "(default: 5.0)"),
    ("status", "(default: the embedded paper config)"),
])
def test_help_names_the_defaults(command: str, phrase: str) -> None:
    assert phrase in " ".join(_subcommands()[command].format_help().split())
