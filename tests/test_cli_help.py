"""The `dibao` command's help: every document it names exists."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import click

from server.cli import cli
from sms.cli import campaign_group, sms_group

ROOT = Path(__file__).resolve().parent.parent
DOC = re.compile(r"(?:docs|deploy)/[\w./-]*\w")


def _helps(command: click.Command, ctx: click.Context) -> Iterator[tuple[str, str]]:
    yield ctx.command_path, command.get_help(ctx)
    if isinstance(command, click.Group):
        for name, sub in command.commands.items():
            yield from _helps(sub, click.Context(sub, info_name=name, parent=ctx))


def test_every_document_named_in_a_commands_help_exists() -> None:
    named = []
    for group, name in ((cli, "dibao"), (sms_group, "sms"), (campaign_group, "campaign")):
        for path, text in _helps(group, click.Context(group, info_name=name)):
            named += [(path, doc) for doc in DOC.findall(" ".join(text.split()))]
    assert ("dibao serve", "docs/operations.md") in named
    missing = [(path, doc) for path, doc in named if not (ROOT / doc).exists()]
    assert missing == []
