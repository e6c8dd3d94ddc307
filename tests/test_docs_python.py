"""Every ```python block of README.md and docs/**/*.md runs.

The examples are written for real data (``"minilm"``, ``"beir:scifact"``, a graded folder at
``"runs/gen/scifact"``); the test runs each with those string literals replaced by the tiny
fixtures (a 2-layer encoder, 40 SciFact test queries, the graded toy folder), in a fresh
namespace and an empty working folder, so an example is the code a reader runs and still takes
seconds here. A block that cannot run here (it needs an LLM, a GPU, a download) says so with
``<!-- not run by the tests: REASON -->`` on the line before its fence, and is reported skipped
with that reason.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]
FENCE = re.compile(r"^```python\n(.*?)^```", re.S | re.M)
NOT_RUN = re.compile(r"<!-- not run by the tests: (.+?) -->\s*$")


def _blocks() -> list:
    pages = [ROOT / "README.md", *sorted((ROOT / "docs").glob("**/*.md"))]
    found = []
    for page in pages:
        if not page.is_file():
            continue
        text = page.read_text(encoding="utf-8")
        for number, match in enumerate(FENCE.finditer(text), start=1):
            before = text[: match.start()].rstrip("\n").rsplit("\n", 1)[-1]
            reason = NOT_RUN.search(before)
            found.append(
                pytest.param(
                    match.group(1),
                    id=f"{page.relative_to(ROOT)}#{number}",
                    marks=[pytest.mark.skip(reason=reason.group(1))] if reason else [],
                )
            )
    return found


BLOCKS = _blocks()


def test_the_docs_have_python_examples():
    assert any(param.id.startswith("docs/python.md#") for param in BLOCKS)


def _substitute(code: str, replacements: dict[str, str]) -> str:
    for literal, value in replacements.items():
        for quote in ('"', "'"):
            code = code.replace(f"{quote}{literal}{quote}", repr(value))
    return code


@pytest.mark.parametrize("code", BLOCKS)
def test_python_example_runs(code, tiny_model_dir, mini_scifact, graded_toy, tmp_path, monkeypatch):
    replacements = {
        "minilm": str(tiny_model_dir),
        "beir:scifact": str(mini_scifact.root),
        "runs/gen/scifact": str(graded_toy.root),
    }
    monkeypatch.chdir(tmp_path)
    source = _substitute(code, replacements)
    exec(compile(source, "<example>", "exec"), {"__name__": "__example__"})
