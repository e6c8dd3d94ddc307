"""Reference pages generated from the code at build time (mkdocs-gen-files runs this file):
every CLI command and option from the argparse parser, every experiment-file table and key from
the config dataclasses. tests/test_docs_reference.py checks them against the parser and the
dataclasses."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

from synthrank.cli import build_parser


def _commands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(sub.choices)


def _cell(text: str) -> str:
    return " ".join(str(text).split()).replace("|", "\\|").replace("[", "\\[")


def _option_row(action: argparse.Action, formatter: argparse.HelpFormatter) -> str:
    names = (
        ", ".join(f"`{o}`" for o in action.option_strings) or f"`{action.metavar or action.dest}`"
    )
    if action.choices and not isinstance(action, argparse._SubParsersAction):
        names += " {" + ", ".join(str(c) for c in action.choices) + "}"
    help_text = formatter._expand_help(action) if action.help else ""
    return f"| {names} | {_cell(help_text)} |"


def cli_reference() -> str:
    """Markdown of every command: its description, usage and a table of its options (the
    deprecated spellings, hidden from --help, are listed per command below the table)."""
    parser = build_parser()
    lines = [
        "# Command line",
        "",
        "Generated from the parser (`synthrank COMMAND --help` prints the same). "
        "Every option shows its default where it has one.",
        "",
        "```",
        parser.format_help().strip(),
        "```",
        "",
    ]
    for name, command in _commands(parser).items():
        formatter = command._get_formatter()
        lines += [f"## synthrank {name}", "", _cell(command.description or ""), ""]
        lines += ["```", command.format_usage().strip(), "```", ""]
        lines += ["| option | what it does |", "|---|---|"]
        hidden = []
        for action in command._actions:
            if isinstance(action, argparse._HelpAction):
                continue
            if action.help == argparse.SUPPRESS:
                hidden += [o for o in action.option_strings]
                continue
            lines.append(_option_row(action, formatter))
        lines.append("")
        if hidden:
            lines += [
                "Deprecated spellings, still read with a warning: "
                + ", ".join(f"`{o}`" for o in hidden)
                + ".",
                "",
            ]
    return "\n".join(lines)


def _heading(header: str) -> str:
    return f"`{header}`" if header else "Top level"


def experiment_reference() -> str:
    """Markdown of every experiment-file table and key: type, default and what it does."""
    from synthrank.experiment.config import experiment_reference as tables

    lines = [
        "# Experiment file",
        "",
        "Generated from the config dataclasses and their field docstrings. "
        "`synthrank config --example` prints a complete annotated file; "
        "[experiment files](../guides/experiments.md) explains how a run uses it.",
        "",
    ]
    for table in tables():
        lines += [f"## {_heading(table['header'])}", "", _cell(table["purpose"]), ""]
        lines += ["| key | type | default | what it does |", "|---|---|---|---|"]
        for key in table["keys"]:
            lines.append(
                f"| `{key['name']}` | {_cell(key['type'])} | `{_cell(key['default'])}` | "
                f"{_cell(key['doc'])} |"
            )
        lines.append("")
    return "\n".join(lines)


def home_page(readme: str) -> str:
    """The README as the site's home page: links into docs/ made relative to the site, links
    to files outside it (examples, LICENSE) kept as their names."""
    readme = readme.replace("](docs/", "](").replace("](CHANGELOG.md)", "](changelog.md)")
    return re.sub(r"\[([^\]]+)\]\((?!https?://)([^)]+\.(?:toml|cff)|LICENSE)\)", r"\1", readme)


def main() -> None:
    import mkdocs_gen_files

    with mkdocs_gen_files.open("reference/cli.md", "w") as page:
        page.write(cli_reference())
    with mkdocs_gen_files.open("reference/experiment-file.md", "w") as page:
        page.write(experiment_reference())
    with mkdocs_gen_files.open("index.md", "w") as page:
        page.write(home_page(Path("README.md").read_text(encoding="utf-8")))
    with mkdocs_gen_files.open("changelog.md", "w") as page:
        page.write(Path("CHANGELOG.md").read_text(encoding="utf-8"))


if __name__ in ("__main__", "<run_path>") or __name__.startswith("mkdocs"):
    main()
