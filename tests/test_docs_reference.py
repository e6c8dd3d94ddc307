"""The documentation's generated reference pages list every command, option and experiment-file
key the code accepts, and the site builds with --strict (a broken link fails)."""

from __future__ import annotations

import argparse
import os
import runpy
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from synthrank.cli import build_parser

ROOT = Path(__file__).resolve().parents[1]
GENERATOR = runpy.run_path(str(ROOT / "docs" / "gen_reference.py"), run_name="docs_reference")


def _commands() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(sub.choices)


def _sections(markdown: str) -> dict[str, str]:
    sections, name = {}, None
    for line in markdown.splitlines():
        if line.startswith("## "):
            name = line[3:].strip()
            sections[name] = ""
        elif name is not None:
            sections[name] += line + "\n"
    return sections


def test_cli_reference_lists_every_command_and_option() -> None:
    sections = _sections(GENERATOR["cli_reference"]())
    commands = _commands()
    assert set(sections) == {f"synthrank {name}" for name in commands}
    for name, command in commands.items():
        text = sections[f"synthrank {name}"]
        for action in command._actions:
            if isinstance(action, argparse._HelpAction):
                continue
            if action.help == argparse.SUPPRESS and not action.option_strings:
                continue  # an old positional spelling, read for compatibility
            for option in action.option_strings or [action.metavar or action.dest]:
                if isinstance(option, tuple):
                    continue
                assert f"`{option}`" in text, (name, option)
            if action.help not in (None, argparse.SUPPRESS) and action.default not in (
                None,
                False,
                [],
                argparse.SUPPRESS,
            ):
                assert f"(default: {action.default})" in text or "(default" in action.help, (
                    name,
                    action.option_strings,
                )


def test_experiment_reference_lists_every_table_and_key() -> None:
    from synthrank.experiment.config import experiment_reference

    sections = _sections(GENERATOR["experiment_reference"]())
    tables = experiment_reference()
    headings = [f"`{t['header']}`" if t["header"] else "Top level" for t in tables]
    assert headings == list(sections)
    for table, heading in zip(tables, headings, strict=True):
        text = sections[heading]
        assert table["keys"], table["header"]
        for key in table["keys"]:
            assert f"| `{key['name']}` |" in text, (table["header"], key["name"])
            assert key["doc"].strip(), (table["header"], key["name"])


@pytest.mark.skipif(
    shutil.which("mkdocs", path=str(Path(sys.executable).parent)) is None,
    reason="mkdocs is not installed (the docs extra)",
)
def test_the_site_builds_strictly(tmp_path: Path) -> None:
    mkdocs = Path(sys.executable).parent / "mkdocs"
    result = subprocess.run(
        [str(mkdocs), "build", "--strict", "--site-dir", str(tmp_path / "site")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={**os.environ, "DISABLE_MKDOCS_2_WARNING": "true"},
        timeout=600,
    )
    # --strict counts warnings only when they are logged: no --quiet.
    warnings = [line for line in result.stderr.splitlines() if line.startswith("WARNING")]
    assert result.returncode == 0 and not warnings, "\n".join(warnings) or result.stderr[-3000:]
    assert (tmp_path / "site" / "reference" / "cli" / "index.html").is_file()
    assert (tmp_path / "site" / "reference" / "experiment-file" / "index.html").is_file()
