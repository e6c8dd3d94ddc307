"""The lowest sentence-transformers that pyproject.toml allows runs synthrank's imports: that
release is installed on its own (pure Python, --no-deps, into a temporary folder that shadows
the installed one) and every module of the package, and every sentence-transformers name the
tests and benchmarks import, is imported under it."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

CHECK = r"""
import importlib, pkgutil, sys
import sentence_transformers
from packaging.version import Version
version = sentence_transformers.__version__
assert Version(version) == Version(sys.argv[1]), version
import synthrank
for module in pkgutil.walk_packages(synthrank.__path__, "synthrank."):
    importlib.import_module(module.name)
for line in sys.argv[2:]:
    exec(line)
for name in synthrank.__all__:
    getattr(synthrank, name)
print("ok")
"""


def _floor() -> str:
    text = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    match = re.search(r'"sentence-transformers\[train\]>=([0-9.]+)"', text)
    assert match, "pyproject.toml names no sentence-transformers floor"
    return match.group(1)


def _imports() -> list[str]:
    """Every `from sentence_transformers... import ...` statement of the tests and benchmarks,
    on one line."""
    found = set()
    for path in [*ROOT.glob("tests/*.py"), *ROOT.glob("benchmarks/*.py")]:
        text = path.read_text(encoding="utf-8")
        for match in re.finditer(
            r"^\s*(from sentence_transformers[\w.]* import \(?[^)\n]*\)?)", text, re.M
        ):
            statement = match.group(1)
            if statement.endswith("("):  # a parenthesised list on the following lines
                start = match.end()
                statement += text[start : text.index(")", start) + 1]
            found.add(" ".join(statement.replace("\n", " ").split()))
    return sorted(found)


def test_the_declared_floor_of_sentence_transformers_runs_the_imports(tmp_path: Path) -> None:
    floor = _floor()
    target = tmp_path / "floor"
    install = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target",
         str(target), f"sentence-transformers=={floor}"],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    if install.returncode != 0:
        pytest.skip(
            f"sentence-transformers=={floor} could not be installed: {install.stderr[-300:]}"
        )
    imports = _imports()
    assert any("sentence_transformer." in line for line in imports)  # the paths new in 5.4
    result = subprocess.run(
        [sys.executable, "-c", CHECK, floor, *imports],
        capture_output=True, text=True, timeout=600,
        env={"PYTHONPATH": str(target), "PATH": "/usr/bin:/bin", "HF_HUB_OFFLINE": "1"},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip().endswith("ok")
