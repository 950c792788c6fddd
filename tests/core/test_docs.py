"""Documentation keeps up with the code: these fail when an option or a catalog key lacks docs."""

from __future__ import annotations

from pathlib import Path

import typer.main

from ptmt.cli import app
from ptmt.schema import load_schema

DOCS = Path(__file__).resolve().parents[2] / "docs"


def walk(command, prefix: str = "ptmt"):
    yield prefix, command
    if hasattr(command, "commands"):
        for name, sub in command.commands.items():
            yield from walk(sub, f"{prefix} {name}")


def test_every_command_and_option_has_help():
    missing = []
    for name, command in walk(typer.main.get_command(app)):
        if not (command.help or command.short_help):
            missing.append(name)
        for param in command.params:
            if param.param_type_name == "option" and not param.help:
                missing.append(f"{name} {param.opts[0]}")
    assert missing == []


def test_every_catalog_key_is_documented():
    schema = load_schema("catalog")
    keys = set(schema["properties"]) | set(schema["$defs"]["knob_common"]["properties"]) \
        | set(schema["$defs"]["knob"]["properties"]) | set(schema["$defs"]["activation"]["properties"]) \
        | set(schema["$defs"]["requires"]["properties"])
    text = (DOCS / "catalogs.md").read_text()
    assert [k for k in sorted(keys) if f"`{k}`" not in text] == []
