"""docs/cli.md documents exactly the commands and flags that ``openhi.cli.build_parser()`` defines."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

from openhi.cli import build_parser

DOC = Path(__file__).resolve().parents[2] / "docs" / "cli.md"
_SECTION = re.compile(r"^## `openhi (\w+)`$", re.MULTILINE)
_OPTION = re.compile(r"`(--?[a-z][a-z0-9-]*)")


def _commands() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    assert len(subs) == 1
    return dict(subs[0].choices)


def _options(parser: argparse.ArgumentParser) -> set[str]:
    return {
        opt
        for action in parser._actions
        if not isinstance(action, argparse._HelpAction)
        for opt in action.option_strings
    }


def _positionals(parser: argparse.ArgumentParser) -> set[str]:
    return {
        str(action.metavar or action.dest)
        for action in parser._actions
        if not action.option_strings and not isinstance(action, argparse._SubParsersAction)
    }


def _sections() -> tuple[str, dict[str, str]]:
    """The text before the first command section, and each ``## `openhi X``` section's text."""
    text = DOC.read_text()
    parts = re.split(r"^(?=## )", text, flags=re.MULTILINE)
    sections: dict[str, str] = {}
    for part in parts[1:]:
        match = _SECTION.match(part)
        if match is not None:
            assert match[1] not in sections, f"docs/cli.md has two sections for openhi {match[1]}"
            sections[match[1]] = part
    return parts[0], sections


def test_every_command_has_a_section_and_a_line_in_the_overview() -> None:
    intro, sections = _sections()
    commands = _commands()
    assert sorted(sections) == sorted(commands), "docs/cli.md sections vs the parser's commands"
    for name in commands:
        assert f"| `openhi {name}` |" in intro, f"openhi {name} is missing from the overview table"


def test_every_flag_is_documented_in_its_command_section() -> None:
    _, sections = _sections()
    for name, parser in _commands().items():
        documented = set(_OPTION.findall(sections[name]))
        for option in _options(parser):
            assert option in documented, f"docs/cli.md does not document openhi {name} {option}"
        for positional in _positionals(parser):
            assert f"`{positional}`" in sections[name], f"openhi {name}: positional {positional} undocumented"


def test_the_doc_mentions_no_flag_that_does_not_exist() -> None:
    intro, sections = _sections()
    commands = _commands()
    for name, text in sections.items():
        unknown = set(_OPTION.findall(text)) - _options(commands[name])
        assert not unknown, f"docs/cli.md documents openhi {name} {sorted(unknown)}, which the parser lacks"
    top = _options(build_parser()) | {"-h", "--help"}
    everywhere = top.union(*(_options(p) for p in commands.values()))
    assert "--version" in _OPTION.findall(intro)
    rest = DOC.read_text().split("\n## ")
    for chunk in [intro, *(c for c in rest[1:] if not c.startswith("`openhi "))]:
        unknown = set(_OPTION.findall(chunk)) - everywhere
        assert not unknown, f"docs/cli.md mentions {sorted(unknown)}, which no command has"
