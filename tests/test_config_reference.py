"""The experiment file's reference comes from the code: every key load_experiment takes is in
EXPERIMENT_TABLES with a doc, a type and its real default, and the annotated example file that
synthrank config --example prints is read by synthrank run as it is."""

from __future__ import annotations

import dataclasses
import json
import re
import typing
from pathlib import Path

import pytest
from conftest import forbid_stages

from synthrank.cli import main
from synthrank.config import field_docs, toml_value, tomllib, type_text
from synthrank.errors import SynthrankError
from synthrank.evaluate.models import Runtime
from synthrank.experiment.config import (
    EXPERIMENT_TABLES,
    REQUIRED,
    TRAIN_SET_BY_EXPERIMENT,
    UNSET,
    EvaluateSection,
    Fields,
    TableDoc,
    example_experiment,
    experiment_reference,
    load_experiment,
    plain,
)
from synthrank.generate import BackendSpec, GenerationConfig
from synthrank.generate.config import LEVEL_PRESETS
from synthrank.generate.doc2query import QueryGenConfig
from synthrank.generate.judge import JudgeConfig
from synthrank.train import TrainConfig


@dataclasses.dataclass
class _Base:
    size: int = 1
    """Items per step."""
    name: str = "a"
    """The base's name."""


@dataclasses.dataclass
class _Child(_Base):
    name: str = "b"
    """The child's own name."""
    plain: float = 0.5
    mode: str = "x"
    """``x`` or ``y``:
    the mode."""

    def method(self) -> None:
        """A method's docstring is no field's."""


def test_field_docs_reads_each_fields_docstring_from_the_class_and_its_bases() -> None:
    assert field_docs(_Child) == {
        "size": "Items per step.",
        "name": "The child's own name.",
        "mode": "``x`` or ``y``:\nthe mode.",
    }
    assert field_docs(_Base)["name"] == "The base's name."


def test_field_docs_of_a_class_without_source_says_which_class() -> None:
    made = dataclasses.make_dataclass("Made", [("size", int)])
    with pytest.raises(SynthrankError, match=r"cannot read the source of .*Made"):
        field_docs(made)


def test_type_text_and_toml_value_write_what_a_config_file_holds() -> None:
    hints = typing.get_type_hints(TrainConfig)
    assert type_text(hints["group_strategy"]) == '"one-per-level" or "random"'
    assert type_text(hints["lr"]) == "number"
    assert type_text(typing.get_type_hints(EvaluateSection)["splits"]) == "table of strings"
    assert type_text(typing.get_type_hints(BackendSpec)["endpoints"]) == "list of strings"
    value = {"beir:arguana": "dev", "n": [1, 2.5e-05, True], "s": 'a"b\n'}
    assert tomllib.loads(f"v = {toml_value(value)}")["v"] == value
    with pytest.raises(SynthrankError, match="no null"):
        toml_value(None)


def _undocumented(table: TableDoc) -> list[str]:
    """Fields of the table's dataclasses that are keys of the table without a docstring, and
    excluded fields that are neither a sub-table, nor set by the experiment, nor a dataclass
    whose fields are keys of the same table."""
    children = {t.path[-1] for t in EXPERIMENT_TABLES if t.path[:-1] == table.path and t.path}
    same_table = {group.cls for group in table.fields}
    problems = []
    for group in table.fields:
        docs = field_docs(group.cls)
        hints = typing.get_type_hints(group.cls)
        for f in dataclasses.fields(group.cls):
            where = f"{table.header or 'top level'}: {group.cls.__name__}.{f.name}"
            if group.only is not None and f.name not in group.only:
                continue
            if f.name in group.exclude:
                known = f.name in children | set(TRAIN_SET_BY_EXPERIMENT)
                if not known and hints[f.name] not in same_table:
                    problems.append(f"{where} is excluded but is no sub-table")
            elif not docs.get(f.name, "").strip():
                problems.append(f"{where} has no docstring")
    return problems


def test_every_field_of_every_table_is_a_documented_key() -> None:
    """Iterates the dataclasses' fields: a setting added without a docstring fails here."""
    assert [p for table in EXPERIMENT_TABLES for p in _undocumented(table)] == []

    @dataclasses.dataclass
    class Grown:
        kept: int = 1
        """Documented."""
        added: int = 2

    assert _undocumented(TableDoc("[grown]", "A table.", (Fields(Grown),))) == [
        "[grown]: Grown.added has no docstring"
    ]


def test_every_key_has_a_type_a_doc_and_its_real_default() -> None:
    for table in EXPERIMENT_TABLES:
        assert table.purpose.strip(), table.header
        names = [key.name for key in table.key_docs()]
        assert len(names) == len(set(names)), table.header
        for key in table.key_docs():
            where = f"{table.header} {key.name}"
            assert key.doc.strip() and key.type.strip(), where
            assert "``" not in key.doc and ":data:" not in key.doc, where
            if key.default in (REQUIRED, UNSET):
                continue
            value = tomllib.loads(f"v = {key.default}")["v"]
            if key.field is None:
                continue
            group = next(
                g
                for g in table.fields
                if key.field == f"{g.cls.__module__}.{g.cls.__qualname__}.{key.name}"
            )
            f = next(f for f in dataclasses.fields(group.cls) if f.name == key.name)
            default = f.default if f.default_factory is dataclasses.MISSING else f.default_factory()
            if key.name == "levels":
                assert LEVEL_PRESETS[value] == default, where
            else:
                assert value == plain(default), where


def test_reference_is_plain_data_for_a_docs_page() -> None:
    reference = experiment_reference()
    assert json.loads(json.dumps(reference)) == reference
    headers = [table["header"] for table in reference]
    assert headers[0] == "" and "[[train]]" in headers and "[generate.backend]" in headers
    train = reference[headers.index("[[train]]")]
    assert train["repeats"] and not train["optional"]
    keys = {key["name"]: key for key in train["keys"]}
    assert keys["name"]["default"] == REQUIRED and keys["name"]["field"] is None
    assert keys["seeds"]["default"] == UNSET and keys["data"]["default"] == '["synthetic"]'
    assert keys["loss"] == {
        "name": "loss",
        "type": "string",
        "default": '"ws2"',
        "doc": keys["loss"]["doc"],
        "field": "synthrank.train.trainer.TrainConfig.loss",
    }
    assert "ws2" in keys["loss"]["doc"] and "infonce" in keys["loss"]["doc"]
    assert not {"out", "base_model", "data"} & {
        k["name"] for k in train["keys"] if k["field"] is not None
    }


MINIMAL = 'name = "t"\n[[train]]\nname = "a"\ndata = ["beir:scifact"]\n'


def _known_keys(tmp_path: Path, table: TableDoc) -> set[str]:
    """The keys load_experiment's error lists for an unknown key in ``table``."""
    if table.header:
        text = f"{MINIMAL}\n{table.header}\nno_such_key = 1\n"
    else:
        text = f"no_such_key = 1\n{MINIMAL}"
    path = tmp_path / "unknown.toml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(SynthrankError, match="unknown key 'no_such_key'") as caught:
        load_experiment(path)
    listed = re.search(r"known(?: keys)?: ([\w, ]+)$", str(caught.value))
    assert listed, str(caught.value)
    return set(listed.group(1).split(", "))


def test_reference_keys_are_the_keys_load_experiment_takes(tmp_path) -> None:
    """Per table, the keys an unknown-key error lists are the reference's (a sub-table counts
    as its own table)."""
    for table in EXPERIMENT_TABLES:
        children = {t.path[-1] for t in EXPERIMENT_TABLES if t.path and t.path[:-1] == table.path}
        documented = {key.name for key in table.key_docs()}
        assert _known_keys(tmp_path, table) - children == documented - children, table.header


def test_example_file_loads_at_the_defaults_and_dry_runs(tmp_path, monkeypatch, capsys) -> None:
    assert main(["config", "--example"]) == 0
    printed = capsys.readouterr().out
    assert printed == example_experiment()
    path = tmp_path / "example.toml"
    path.write_text(printed, encoding="utf-8")
    experiment = load_experiment(path)
    assert experiment.generation == GenerationConfig()
    assert experiment.backend == BackendSpec()
    assert experiment.judge == JudgeConfig()
    assert experiment.judge.runtime == Runtime()
    assert experiment.doc2query.config == QueryGenConfig()
    assert experiment.doc2query.backend is None and experiment.graded.backend is None
    assert experiment.evaluation == EvaluateSection()
    (run,) = experiment.runs
    config = run.config(Path("out"), experiment.base_model, {"synthetic": Path("lists")})
    expected = TrainConfig(data=config.data, out=Path("out"), base_model="minilm")
    assert config == expected
    assert [c.id for c in experiment.report.claims] == ["C1"]
    forbid_stages(monkeypatch)
    root = tmp_path / "run"
    assert main(["run", str(path), "--dry-run", "--quiet", "--out", str(root)]) == 0
    stages = [line.split()[0] for line in capsys.readouterr().out.splitlines()[1:]]
    assert {"generate", "judge", "split", "doc2query", "graded", "train", "evaluate"} <= set(stages)
    assert not root.exists()


def _tables(text: str) -> list[tuple[str, list[str]]]:
    """The example's lines grouped by table: (header line, the lines up to the next header)."""
    groups: list[tuple[str, list[str]]] = [("", [])]
    for line in text.splitlines():
        if re.fullmatch(r"(# )?\[\[?[\w.]+\]\]?", line):
            groups.append((line, []))
        else:
            groups[-1][1].append(line)
    return groups


def _text(groups: list[tuple[str, list[str]]]) -> str:
    return "\n".join(line for header, lines in groups for line in [header, *lines] if line)


def test_each_commented_out_key_of_the_example_is_a_key_of_the_right_type(tmp_path) -> None:
    """A key the example shows commented out, uncommented alone, is read: the file loads, or
    fails only on a rule between settings (int8 needs openvino, a teacher weight teacher
    scores, a teacher mask infonce), never on an unknown key or a wrong type."""
    groups = _tables(example_experiment())
    path = tmp_path / "one.toml"
    tried, refused = 0, []
    for g, (header, lines) in enumerate(groups):
        if header.startswith("#"):
            continue
        for i, line in enumerate(lines):
            if not re.match(r"# [a-z_]+ = ", line):
                continue
            changed = [*lines[:i], line[2:], *lines[i + 1 :]]
            path.write_text(_text([*groups[:g], (header, changed), *groups[g + 1 :]]))
            tried += 1
            try:
                load_experiment(path)
            except SynthrankError as exc:
                assert "unknown key" not in str(exc) and "expected" not in str(exc), line
                refused.append(line.split()[1])
    assert tried >= 15
    assert sorted(refused) == ["quantize", "quantize", "teacher_mask", "teacher_weight"]


def test_each_commented_out_table_of_the_example_loads_uncommented(tmp_path) -> None:
    """The example's commented-out tables (other stages' engines, levels spelled out) are
    valid as they are shown: uncommented, the file loads, with what they say."""
    groups = _tables(example_experiment())
    off = [g for g, (header, _) in enumerate(groups) if header.startswith("# [")]
    assert {groups[g][0] for g in off} >= {"# [doc2query.backend]", "# [[generate.levels]]"}
    uncommented = [
        (header[2:], [line[2:] for line in lines if re.match(r"# (# )?[a-z_]+ = ", line)])
        if g in off
        else (header, [line for line in lines if line != 'levels = "planned"'])
        for g, (header, lines) in enumerate(groups)
    ]
    path = tmp_path / "all.toml"
    path.write_text(_text(uncommented), encoding="utf-8")
    experiment = load_experiment(path)
    assert experiment.generation.levels == LEVEL_PRESETS["planned"]
    assert experiment.doc2query.backend == experiment.graded.backend == BackendSpec()


def test_config_needs_what_to_print(capsys) -> None:
    with pytest.raises(SystemExit):
        main(["config"])
    assert "--example" in capsys.readouterr().err
    assert main(["config", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == experiment_reference()


def test_an_llm_judge_in_an_experiment_is_refused_when_the_file_is_read(tmp_path) -> None:
    """The experiment's judge stage hands the judge no LLM engine: the file says so up front,
    not after the generation stage has run."""
    path = tmp_path / "llm-judge.toml"
    path.write_text(
        f'{MINIMAL}\n[queries]\nsource = "beir:scifact"\n[judge]\njudge = "llm"\n',
        encoding="utf-8",
    )
    with pytest.raises(SynthrankError, match=r"\[judge\], key 'judge': .*\[graded\]"):
        load_experiment(path)


def test_a_base_model_that_is_not_a_name_is_refused_with_its_key(tmp_path) -> None:
    path = tmp_path / "base.toml"
    path.write_text(f"base_model = 3\n{MINIMAL}", encoding="utf-8")
    with pytest.raises(SynthrankError, match=r"base.toml, key 'base_model': .*got 3"):
        load_experiment(path)
