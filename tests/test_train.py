"""Training: learning on graded data, resume, NaN stop, data assembly, the CLI."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from sentence_transformers import SentenceTransformer
from transformers import TrainerCallback

from synthrank.cli import main
from synthrank.data import BeirDataset
from synthrank.errors import SettingError, SynthrankError
from synthrank.train import SourceSpec, TrainConfig, assemble_groups, train
from synthrank.train import modules as loss_modules


def _level_means(model_dir: Path, dataset: BeirDataset, split: str) -> dict[int, float]:
    model = SentenceTransformer(str(model_dir), device="cpu")
    corpus, queries, qrels = dataset.corpus(), dataset.queries(), dataset.qrels(split)
    scores: dict[int, list[float]] = {}
    for query_id, judged in qrels.items():
        q = model.encode_query([queries[query_id].text])
        docs = list(judged)
        d = model.encode_document([corpus[doc].text for doc in docs])
        for doc, score in zip(docs, (q @ d.T)[0], strict=True):
            scores.setdefault(judged[doc], []).append(float(score))
    return {level: float(np.mean(values)) for level, values in scores.items()}


def _config(dataset: BeirDataset, base: Path, out: Path, **overrides) -> TrainConfig:
    settings = dict(
        data=[SourceSpec(str(dataset.root))],
        out=out,
        base_model=str(base),
        loss="ws2",
        batch_size=8,
        lr=2e-3,
        epochs=6,
        warmup=0.1,
        max_length=32,
        target_temperature=0.25,
        save_steps=1000,
    )
    settings.update(overrides)
    return TrainConfig(**settings)


@pytest.mark.parametrize("loss", ["ws2", "w1"])
def test_training_lowers_loss_and_orders_levels(
    loss: str, graded_toy: BeirDataset, tiny_model_dir: Path, tmp_path: Path
) -> None:
    before = _level_means(tiny_model_dir, graded_toy, "test")
    config = _config(graded_toy, tiny_model_dir, tmp_path / "model", loss=loss)
    result = train(config, progress=False)
    assert result.steps == 48 and result.temperature == 0.05
    log = [json.loads(line) for line in (tmp_path / "model" / "train_log.jsonl").open()]
    assert [r["step"] for r in log] == list(range(1, 49))
    losses = [r["loss"] for r in log]
    assert np.mean(losses[-8:]) < 0.7 * np.mean(losses[:8])
    after = _level_means(tmp_path / "model", graded_toy, "test")
    assert after[3] > after[2] > after[1] > after[0], after
    assert after[3] - after[0] > before[3] - before[0], "training widened the level margin"


def test_output_is_a_sentence_transformers_folder_with_a_card(
    graded_toy: BeirDataset, tiny_model_dir: Path, tmp_path: Path
) -> None:
    out = tmp_path / "model"
    # No target temperature or lr given: a normalised encoder gets 0.25, not the released 1.0,
    # and lr 1e-4, not the paper's 1e-5.
    train(
        _config(graded_toy, tiny_model_dir, out, epochs=1, target_temperature=None, lr=None),
        progress=False,
    )
    model = SentenceTransformer(str(out), device="cpu")
    assert model.encode(["a query"]).shape == (1, 32)
    card = (out / "README.md").read_text()
    assert (
        "loss: `ws2` (score temperature 0.05, target `softmax` at temperature 0.25, scope batch)"
        in card
    )
    assert "batch 8, lr 0.0001, epochs 1" in card
    summary = json.loads((out / "synthrank_train.json").read_text())
    assert summary["data"] == {"queries": 64, "used": 64, "skipped": {}, "dropped_per_epoch": 0}
    assert summary["config"]["target_temperature"] == 0.25
    assert summary["config"]["lr"] == 1e-4


def test_dot_product_encoder_defaults_to_the_papers_settings(
    graded_toy: BeirDataset, tiny_model_dir: Path, tmp_path: Path
) -> None:
    """Without a Normalize layer the scores are dot products: temperature 1.0, the released
    softmax(labels) target and lr 1e-5, as in the paper."""
    from sentence_transformers.sentence_transformer import modules as models

    dot = SentenceTransformer(str(tiny_model_dir), device="cpu")
    SentenceTransformer(modules=[dot[0], dot[1]], device="cpu").save(str(tmp_path / "dot"))
    out = tmp_path / "model"
    config = _config(graded_toy, tmp_path / "dot", out, epochs=1, target_temperature=None, lr=None)
    result = train(config, progress=False)
    assert not isinstance(SentenceTransformer(str(out), device="cpu")[-1], models.Normalize)
    assert result.temperature == 1.0
    summary = json.loads((out / "synthrank_train.json").read_text())
    assert summary["config"]["target_temperature"] == 1.0
    assert summary["config"]["lr"] == 1e-5


def test_learned_temperature_moves_and_is_recorded(
    graded_toy: BeirDataset, tiny_model_dir: Path, tmp_path: Path
) -> None:
    """The score temperature is a trained parameter with its own learning rate: it moves from
    its start (more with a larger rate), and the card and summary give start and end."""
    moved = {}
    for rate in (1e-3, 5e-2):
        out = tmp_path / f"lr{rate}"
        config = _config(
            graded_toy, tiny_model_dir, out, epochs=1, learn_temperature=True, temperature_lr=rate
        )
        result = train(config, progress=False)
        moved[rate] = abs(np.log(result.temperature / 0.05))
        summary = json.loads((out / "synthrank_train.json").read_text())
        assert summary["config"]["temperature"] == result.temperature
        assert summary["config"]["initial_temperature"] == 0.05
        card = (out / "README.md").read_text()
        assert f"score temperature {result.temperature:.4g}, learned from 0.05" in card
    assert 0 < moved[1e-3] < moved[5e-2]
    with pytest.raises(SynthrankError, match="full-batch"):
        _config(
            graded_toy, tiny_model_dir, tmp_path / "x", learn_temperature=True, mini_batch_size=4
        ).validate()


class _Crash(TrainerCallback):
    def __init__(self, at_step: int) -> None:
        self.at_step = at_step

    def on_step_begin(self, args, state, control, **kwargs):
        if state.global_step == self.at_step:
            raise KeyboardInterrupt


@pytest.mark.parametrize("learn_temperature", [False, True])
def test_interrupted_and_resumed_equals_uninterrupted(
    learn_temperature: bool, graded_toy: BeirDataset, tiny_model_dir: Path, tmp_path: Path
) -> None:
    settings = dict(epochs=1, save_steps=3, learn_temperature=learn_temperature)
    config = _config(graded_toy, tiny_model_dir, tmp_path / "full", **settings)
    uninterrupted = train(config, progress=False)
    config = _config(graded_toy, tiny_model_dir, tmp_path / "resumed", **settings)
    with pytest.raises(KeyboardInterrupt):
        train(config, progress=False, callbacks=[_Crash(at_step=5)])
    assert (tmp_path / "resumed" / "checkpoints" / "checkpoint-3").is_dir()
    resumed_result = train(config, resume=True, progress=False)
    assert resumed_result.temperature == pytest.approx(uninterrupted.temperature, rel=1e-6)
    assert (uninterrupted.temperature != 0.05) == learn_temperature
    full = SentenceTransformer(str(tmp_path / "full"), device="cpu").state_dict()
    resumed = SentenceTransformer(str(tmp_path / "resumed"), device="cpu").state_dict()
    for name, tensor in full.items():
        torch.testing.assert_close(resumed[name], tensor, rtol=0, atol=1e-6, msg=name)
    log = [json.loads(line) for line in (tmp_path / "resumed" / "train_log.jsonl").open()]
    assert [r["step"] for r in log] == list(range(1, 9)), "the log keeps each step once"
    mean = np.mean([r["loss"] for r in log])
    assert resumed_result.final_loss == pytest.approx(mean, rel=1e-12), "all 8 steps, not 5"
    summary = json.loads((tmp_path / "resumed" / "synthrank_train.json").read_text())
    assert summary["mean_training_loss"] == resumed_result.final_loss
    assert resumed_result.final_loss == pytest.approx(uninterrupted.final_loss, rel=1e-6)


def test_non_finite_loss_stops_with_clear_message(
    graded_toy: BeirDataset, tiny_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = loss_modules.WS2Loss.compute
    calls = []

    def nan_at_fourth_step(self, scores, labels, own_mask):
        calls.append(1)
        value = real(self, scores, labels, own_mask)
        return value * float("nan") if len(calls) == 4 else value

    monkeypatch.setattr(loss_modules.WS2Loss, "compute", nan_at_fourth_step)
    config = _config(graded_toy, tiny_model_dir, tmp_path / "m", epochs=1, save_steps=2)
    with pytest.raises(SynthrankError, match=r"stopped at step 4: ws2 loss is nan.*checkpoint-2"):
        train(config, progress=False)
    assert (tmp_path / "m" / "checkpoints" / "checkpoint-2").is_dir()


def _graded_folder(root: Path, judgments: dict[str, dict[str, int]]) -> Path:
    """A small BEIR folder with a ``train`` split: one passage per judged document id."""
    from synthrank.data import Document, Query, write_corpus, write_qrels, write_queries

    doc_ids = sorted({d for judged in judgments.values() for d in judged})
    write_corpus(root / "corpus.jsonl", [Document(d, f"passage {d} about coffee") for d in doc_ids])
    write_queries(root / "queries.jsonl", [Query(q, f"question {q}") for q in judgments])
    write_qrels(root / "qrels" / "train.tsv", judgments)
    return root


def test_fewer_groups_than_one_batch_is_a_one_line_error(
    tiny_model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Two queries and the default batch of 16: no step could run, so nothing is saved as a
    trained model, with or without --max-steps."""
    levels = {"a": 3, "b": 2, "c": 1, "d": 0}
    data = _graded_folder(
        tmp_path / "data", {q: {f"{q}{d}": g for d, g in levels.items()} for q in ("q1", "q2")}
    )
    out = tmp_path / "model"
    argv = ["train", "--data", str(data), "--base", str(tiny_model_dir), "--out", str(out)]
    for extra in ([], ["--max-steps", "2"]):
        assert main([*argv, "--quiet", *extra]) == 2
        assert capsys.readouterr().err.splitlines() == [
            "synthrank: error: 2 training groups do not fill one batch of 16, so no step would "
            "run: lower --batch-size to at most 2 or add queries"
        ]
        assert not (out / "synthrank_train.json").exists() and not (out / "modules.json").exists()


def test_what_reading_a_source_found_is_in_the_training_report(
    tiny_model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A corpus id with a trailing space (read as the id without it) and a judged document
    missing from the corpus: both warnings reach the report that train prints."""
    from synthrank.data import write_qrels

    levels = {"a": 3, "b": 2, "c": 1, "d": 0}
    judgments = {q: {f"{q}{d}": g for d, g in levels.items()} for q in ("q1", "q2")}
    data = _graded_folder(tmp_path / "data", judgments)
    corpus = data / "corpus.jsonl"
    docs = [json.loads(line) for line in corpus.read_text().splitlines()]
    docs[0]["_id"] += " "
    corpus.write_text("".join(json.dumps(d) + "\n" for d in docs))
    judgments["q2"]["gone"] = 1
    write_qrels(data / "qrels" / "train.tsv", judgments)
    warnings = [
        f'{corpus}, line 1, field "_id": "q1a " has trailing whitespace; read as "q1a"',
        f"{data / 'qrels' / 'train.tsv'}: 1 judgments name 1 document ids missing from "
        'corpus.jsonl (e.g. "gone"); they count as relevant but cannot be retrieved',
    ]
    groups, report = assemble_groups([SourceSpec(str(data))], 4)
    assert len(groups) == 2 and report.warnings == warnings
    assert report.lines()[-2:] == [f"  warning: {w}" for w in warnings]

    out = tmp_path / "model"
    argv = ["train", "--data", str(data), "--base", str(tiny_model_dir), "--out", str(out)]
    assert main([*argv, "--batch-size", "2", "--max-steps", "1", "--quiet"]) == 0
    printed = capsys.readouterr().out.splitlines()
    assert printed[:3] == ["2 of 2 queries form training groups"] + [
        f"  warning: {w}" for w in warnings
    ]


def test_groups_left_out_of_the_last_batch_are_counted(
    graded_toy: BeirDataset, tiny_model_dir: Path, tmp_path: Path
) -> None:
    config = _config(graded_toy, tiny_model_dir, tmp_path / "m", batch_size=10, max_steps=1)
    result = train(config, progress=False)
    assert result.steps == 1 and result.report.dropped_per_epoch == 64 % 10
    assert "  left out of each epoch 4: the last, incomplete batch" in result.report.lines()
    summary = json.loads((tmp_path / "m" / "synthrank_train.json").read_text())
    assert summary["data"]["dropped_per_epoch"] == 4


def test_negative_grades_train_as_level_zero(tiny_model_dir: Path, tmp_path: Path) -> None:
    """TREC qrels grade spam -1 or -2: read as 0 (no gain, as in trec_eval), so kl with the gain
    target trains on them instead of stopping at a NaN."""
    data = _graded_folder(
        tmp_path / "data", {"q1": {"d1": 2, "d5": 1, "d3": -2, "d4": -1}, "q2": {"d2": 2, "d1": -2}}
    )
    groups, report = assemble_groups([SourceSpec(str(data))], 4)
    assert [(g.query_id, g.labels) for g in groups] == [("q1", (2, 1, 0, 0))]
    assert report.skipped == {"fewer than 4 passages": 1}
    config = _config(
        BeirDataset(data, "negative"),
        tiny_model_dir,
        tmp_path / "m",
        loss="kl",
        target="gain",
        batch_size=1,
        max_steps=1,
    )
    result = train(config, progress=False)
    assert result.steps == 1 and result.final_loss is not None and result.final_loss >= 0
    with pytest.raises(SynthrankError, match="labels are grades >= 0, got -1"):
        SourceSpec.parse(f"{data},bm25=2:-1")


def test_max_length_beyond_the_models_positions_is_a_clear_error(
    graded_toy: BeirDataset, tiny_model_dir: Path, tmp_path: Path
) -> None:
    config = _config(graded_toy, tiny_model_dir, tmp_path / "m", max_length=1024)
    with pytest.raises(SynthrankError) as caught:
        train(config, progress=False)
    assert str(caught.value) == (
        f"max length 1024 is beyond the 512 tokens model {tiny_model_dir} takes "
        "(its position embeddings); give --max-length 512 or less"
    )


def test_scifact_groups_with_relabel_and_bm25_negatives(scifact: BeirDataset) -> None:
    spec = SourceSpec.parse("beir:scifact,split=train,relabel=1:3,bm25=2:1,random=1:0")
    assert spec == SourceSpec("beir:scifact", "train", {1: 3}, 2, 1, 1, 0)
    groups, report = assemble_groups([spec], 4)
    assert report.queries == 809 and report.used == len(groups) > 800
    qrels, corpus = scifact.qrels("train"), scifact.corpus()
    positives = {q: {corpus[d].full_text() for d in judged} for q, judged in qrels.items()}
    for group in groups[:50]:
        assert group.labels[0] == 3 and group.passages[0] in positives[group.query_id]
        assert len(group.labels) == 4 and set(group.labels) == {0, 1, 3}
        hard = [p for p, label in zip(group.passages, group.labels, strict=True) if label == 1]
        assert not set(hard) & positives[group.query_id], "BM25 negatives exclude judged docs"


def test_binary_view_and_merged_sources(graded_toy: BeirDataset) -> None:
    groups, _ = assemble_groups([SourceSpec(str(graded_toy.root))], 3, binary_threshold=2)
    assert all(g.labels == (1, 0, 0) for g in groups)
    merged, report = assemble_groups(
        [SourceSpec(str(graded_toy.root)), SourceSpec(str(graded_toy.root), relabel={0: 1})], 4
    )
    assert report.queries == 64, "same id and text: one list per query"
    assert len(merged) == 64


def test_skipped_queries_are_reported(graded_toy: BeirDataset) -> None:
    with pytest.raises(SynthrankError, match="skipped 64: fewer than 5 passages"):
        assemble_groups([SourceSpec(str(graded_toy.root))], 5)
    groups, report = assemble_groups([SourceSpec(str(graded_toy.root), random_negatives=1)], 5)
    assert report.used == len(groups) == 64 and not report.skipped


def test_bad_config_values_are_clear_errors(graded_toy: BeirDataset, tmp_path: Path) -> None:
    for field, value, fragment in (
        ("loss", "hinge", "loss must be one of infonce, kl, w1, ws2 \\(got 'hinge'\\)"),
        ("target", "ndcg", "target must be one of softmax, gain"),
        ("target_scope", "all", "target_scope must be one of batch, group"),
        ("warmup", 1.5, "warmup is a fraction"),
        ("batch_size", 0, "batch_size must be a positive integer"),
    ):
        config = _config(graded_toy, tmp_path, tmp_path / "m", **{field: value})
        with pytest.raises(SynthrankError, match=fragment):
            config.validate()


def test_bad_source_option_is_a_clear_error() -> None:
    with pytest.raises(SynthrankError, match="option 'bm25=two' is invalid"):
        SourceSpec.parse("beir:scifact,bm25=two")


def test_cli_train_then_evaluate(
    graded_toy: BeirDataset, tiny_model_dir: Path, tmp_path: Path, capsys
) -> None:
    out = tmp_path / "cli-model"
    code = main(
        [
            "train",
            "--data",
            f"{graded_toy.root},split=train",
            "--base",
            str(tiny_model_dir),
            "--loss",
            "infonce",
            "--out",
            str(out),
            "--batch-size",
            "8",
            "--max-steps",
            "3",
            "--max-length",
            "32",
            "--quiet",
        ]
    )
    assert code == 0
    printed = capsys.readouterr().out
    assert "64 of 64 queries form training groups" in printed and "3 steps" in printed
    assert (
        main(
            [
                "evaluate",
                "--model",
                str(out),
                "--dataset",
                str(graded_toy.root),
                "--output",
                str(tmp_path / "ev"),
                "--quiet",
            ]
        )
        == 0
    )
    assert json.loads((tmp_path / "ev" / "metrics.json").read_text())["n_queries"] == 16


def test_sweep_trains_each_combination_once_and_tabulates(
    graded_toy: BeirDataset, tiny_model_dir: Path, tmp_path: Path
) -> None:
    from synthrank.train.sweep import parse_grid, sweep

    grid = parse_grid(["loss=ws2,w1", "target-temperature=0.25"])
    assert grid == {"loss": ["ws2", "w1"], "target_temperature": [0.25]}
    base = _config(graded_toy, tiny_model_dir, tmp_path / "unused", max_steps=2)
    rows = sweep(base, grid, str(graded_toy.root), out=tmp_path / "sweep", progress=False)
    assert [r.name for r in rows] == [
        "base",
        "loss=ws2_target_temperature=0.25",
        "loss=w1_target_temperature=0.25",
    ]
    table = (tmp_path / "sweep" / "table.md").read_text().splitlines()
    assert table[0] == "| loss | target_temperature | nDCG@10 | R@100 | p (nDCG@10 vs base) |"
    assert len(table) == 2 + 3
    assert f"{rows[1].metrics['nDCG@10']:.4f}" in table[3]
    card = (tmp_path / "sweep" / "loss=w1_target_temperature=0.25" / "README.md").read_text()
    assert "loss: `w1`" in card
    log = tmp_path / "sweep" / "loss=ws2_target_temperature=0.25" / "train_log.jsonl"
    before = log.stat().st_mtime_ns
    again = sweep(base, grid, str(graded_toy.root), out=tmp_path / "sweep", progress=False)
    assert log.stat().st_mtime_ns == before, "a finished combination is not retrained"
    assert [r.metrics for r in again] == [r.metrics for r in rows]
    results = (tmp_path / "sweep" / "results.jsonl").read_text().splitlines()
    assert len(results) == 3, "each run is recorded once"


def test_sweep_table_gives_paired_p_against_the_base() -> None:
    from synthrank.train.sweep import SweepRow, format_table

    base = SweepRow(
        "base",
        {},
        {"nDCG@10": 0.4667, "R@100": 1.0},
        {q: {"nDCG@10": v} for q, v in zip("abc", (0.5, 0.7, 0.2), strict=True)},
    )
    run = SweepRow(
        "lr=1",
        {"lr": 1},
        {"nDCG@10": 0.5667, "R@100": 1.0},
        {q: {"nDCG@10": v} for q, v in zip("abc", (0.6, 0.9, 0.2), strict=True)},
    )
    lines = format_table([base, run], ["lr"]).splitlines()
    # differences 0.1, 0.2, 0: t = sqrt(3) with 2 degrees of freedom, where the two-sided
    # p-value is 1 - t / sqrt(2 + t^2) = 1 - sqrt(3/5)
    assert lines[2] == "| (base) | 0.4667 | 1.0000 |  |"
    assert lines[3] == f"| 1 | 0.5667 (+0.1000) | 1.0000 (+0.0000) | {1 - (3 / 5) ** 0.5:.3g} |"


def test_bad_grid_is_a_clear_error() -> None:
    from synthrank.train.sweep import parse_grid

    with pytest.raises(SynthrankError, match="SETTING one of"):
        parse_grid(["colour=red"])
    with pytest.raises(SynthrankError, match="'fast' is not a number"):
        parse_grid(["lr=fast"])


@pytest.mark.parametrize("loss_name", ["ws2", "infonce"])
def test_cached_gradients_equal_full_batch_gradients(loss_name: str, tiny_model_dir: Path) -> None:
    from synthrank.train import LOSSES

    queries = [f"query {i} about topic {i % 3}" for i in range(6)]
    passages = [[f"passage {j} of query {i} " * (j + 1) for j in range(3)] for i in range(6)]
    labels = torch.tensor([[3, 1, 0]] * 6)
    grads = []
    for mini_batch_size in (None, 4):
        model = SentenceTransformer(str(tiny_model_dir), device="cpu")
        features = [model.preprocess(queries)]
        features += [model.preprocess([p[j] for p in passages]) for j in range(3)]
        loss = LOSSES[loss_name](model, 0.5, mini_batch_size=mini_batch_size)(features, labels)
        loss.backward()
        grads.append({n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None})
    full, cached = grads
    assert set(cached) == set(full)
    for name, grad in full.items():
        torch.testing.assert_close(cached[name], grad, rtol=1e-4, atol=1e-7, msg=name)


def test_training_with_cached_gradients(
    graded_toy: BeirDataset, tiny_model_dir: Path, tmp_path: Path
) -> None:
    config = _config(graded_toy, tiny_model_dir, tmp_path / "m", max_steps=3, mini_batch_size=3)
    result = train(config, progress=False)
    assert result.steps == 3 and result.final_loss is not None
    assert "mini_batch_size" in (tmp_path / "m" / "synthrank_train.json").read_text()


def test_settings_the_hardware_cannot_run_are_refused(
    graded_toy: BeirDataset, tiny_model_dir: Path, tmp_path: Path, monkeypatch
) -> None:
    from synthrank.train.trainer import check_hardware

    config = _config(graded_toy, tiny_model_dir, tmp_path / "m", epochs=1)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(SynthrankError, match="fp16 needs a CUDA GPU"):
        train(_config(graded_toy, tiny_model_dir, tmp_path / "m", precision="fp16"))
    assert not (tmp_path / "m").exists()
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False)
    with pytest.raises(SynthrankError, match=r"bf16 is not supported on this CPU"):
        check_hardware(TrainConfig(**{**config.__dict__, "precision": "bf16"}))
    deepspeed = tmp_path / "ds.json"
    deepspeed.write_text("{}")
    with pytest.raises(SynthrankError, match="deepspeed needs CUDA GPUs"):
        check_hardware(TrainConfig(**{**config.__dict__, "deepspeed": str(deepspeed)}))
    with pytest.raises(SynthrankError, match="precision must be one of fp32, bf16, fp16"):
        TrainConfig(**{**config.__dict__, "precision": "int8"}).validate()


@pytest.mark.skipif(
    not (torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()),
    reason="this CPU has no bf16 instructions",
)
def test_bf16_training_on_a_cpu_with_bf16(
    graded_toy: BeirDataset, tiny_model_dir: Path, tmp_path: Path
) -> None:
    out = tmp_path / "bf16"
    result = train(
        _config(graded_toy, tiny_model_dir, out, epochs=1, max_steps=3, precision="bf16"),
        progress=False,
    )
    fp32 = train(
        _config(graded_toy, tiny_model_dir, tmp_path / "fp32", epochs=1, max_steps=3),
        progress=False,
    )
    assert result.steps == 3 and result.final_loss is not None
    # bf16 changes the encoder's arithmetic, not the training: the losses stay close.
    assert result.final_loss == pytest.approx(fp32.final_loss, rel=0.05)
    assert "precision bf16" in (out / "README.md").read_text()
    summary = json.loads((out / "synthrank_train.json").read_text())
    assert summary["config"]["precision"] == "bf16"


def test_gradient_checkpointing_gives_the_same_weights(
    graded_toy: BeirDataset, tiny_model_dir: Path, tmp_path: Path
) -> None:
    weights = []
    for checkpointing in (False, True):
        out = tmp_path / f"gc-{checkpointing}"
        config = _config(
            graded_toy,
            tiny_model_dir,
            out,
            epochs=1,
            max_steps=2,
            gradient_checkpointing=checkpointing,
        )
        train(config, progress=False)
        model = SentenceTransformer(str(out), device="cpu")
        weights.append(torch.cat([p.detach().flatten() for p in model.parameters()]))
    assert torch.allclose(weights[0], weights[1], atol=1e-6)
    assert "gradient checkpointing" in (tmp_path / "gc-True" / "README.md").read_text()


def test_pairs_with_in_batch_negatives_equal_sentence_transformers_mnrl(
    graded_toy: BeirDataset, tiny_model_dir: Path, tmp_path: Path
) -> None:
    """Group size 1: (query, top passage) pairs whose only negatives are the batch's other
    passages; InfoNCE on them is MultipleNegativesRankingLoss (sentence-transformers) with
    scale 1 / temperature and dot-product scores."""
    from sentence_transformers import util
    from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss

    from synthrank.train import LOSSES

    groups, report = assemble_groups([SourceSpec(str(graded_toy.root))], 1)
    assert report.used == len(groups) == 64
    assert all(len(g.passages) == 1 and g.labels == (3,) for g in groups)
    model = SentenceTransformer(str(tiny_model_dir), device="cpu")
    batch = groups[:6]
    features = [model.preprocess([g.query for g in batch])]
    features.append(model.preprocess([g.passages[0] for g in batch]))
    labels = torch.tensor([list(g.labels) for g in batch])
    ours = LOSSES["infonce"](model, 0.5)(features, labels)
    theirs = MultipleNegativesRankingLoss(model, scale=2.0, similarity_fct=util.dot_score)(
        features, labels
    )
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-6)
    result = train(
        _config(
            graded_toy, tiny_model_dir, tmp_path / "m", loss="infonce", group_size=1, max_steps=2
        ),
        progress=False,
    )
    assert result.steps == 2


def test_a_list_wise_loss_over_groups_of_one_is_refused(
    graded_toy: BeirDataset, tmp_path: Path
) -> None:
    config = _config(graded_toy, tmp_path, tmp_path / "m", loss="kl", group_size=1)
    with pytest.raises(SynthrankError, match=r"group_size 1 .* trains with infonce; kl compares"):
        config.validate()


def _keys_of(error: pytest.ExceptionInfo) -> tuple[str, str]:
    return error.value.key, error.value.problem


def test_each_bad_value_names_its_setting(graded_toy: BeirDataset, tmp_path: Path) -> None:
    """The error carries the setting, so an experiment file can point at file, table and key."""
    for field, value, problem in (
        ("batch_size", 0, "must be a positive integer (got 0)"),
        ("temperature", -0.05, "must be positive (got -0.05)"),
        ("lr", 0.0, "must be positive (got 0.0)"),
        ("epochs", float("nan"), "must be positive (got nan)"),
        ("target_temperature", -1.0, "must be positive (got -1.0)"),
        ("warmup", 1.5, "is a fraction of the steps in [0, 1) (got 1.5)"),
        ("dataloader_workers", -1, "must be >= 0 (got -1)"),
    ):
        config = _config(graded_toy, tmp_path, tmp_path / "m", **{field: value})
        with pytest.raises(SettingError) as caught:
            config.validate()
        assert _keys_of(caught) == (field, problem)
        assert str(caught.value) == f"{field} {problem}"
    config = _config(graded_toy, tmp_path, tmp_path / "m", learn_temperature=True, temperature_lr=0)
    with pytest.raises(SettingError) as caught:
        config.validate()
    assert _keys_of(caught) == ("temperature_lr", "must be positive (got 0)")


class _SettingsAtFirstStep(TrainerCallback):
    """Reads the run's settings record as the first step begins (before any checkpoint)."""

    def __init__(self, path: Path) -> None:
        self.path, self.seen = path, None

    def on_step_begin(self, args, state, control, **kwargs):
        if state.global_step == 0:
            self.seen = json.loads(self.path.read_text())


def _four_level_folder(root: Path, queries: int, doc_text: str = "passage {} about coffee") -> Path:
    judgments = {f"q{i}": {f"d{i}-{g}": g for g in range(4)} for i in range(queries)}
    _graded_folder(root, judgments)
    if doc_text != "passage {} about coffee":
        from synthrank.data import Document, write_corpus

        docs = [Document(d, doc_text.format(d)) for j in judgments.values() for d in j]
        write_corpus(root / "corpus.jsonl", sorted(docs, key=lambda d: d.id))
    return root


def test_resume_with_other_settings_is_refused_and_length_may_grow(
    graded_toy: BeirDataset, tiny_model_dir: Path, tmp_path: Path
) -> None:
    out = tmp_path / "m"
    checkpoints = out / "checkpoints"
    first = _config(graded_toy, tiny_model_dir, out, max_steps=2, save_steps=1)
    recorder = _SettingsAtFirstStep(checkpoints / "run_settings.json")
    train(first, progress=False, callbacks=[recorder])
    assert recorder.seen is not None and recorder.seen["loss"] == "ws2"
    assert recorder.seen["batch_size"] == 8 and recorder.seen["lr"] == 2e-3
    assert recorder.seen["data"]["sources"] == [f"{graded_toy.root},split=train"]
    before = {p.name: p.stat().st_mtime_ns for p in checkpoints.iterdir()}

    changed = replace(first, loss="kl", batch_size=4, max_steps=4)
    with pytest.raises(SynthrankError) as caught:
        train(changed, resume=True, progress=False)
    assert str(caught.value) == (
        f"checkpoints in {out} were made with loss ws2, batch_size 8; now loss kl, batch_size 4: "
        "run without --resume, or with the same settings"
    )
    other = _four_level_folder(tmp_path / "other", 16)
    with pytest.raises(SynthrankError) as caught:
        train(replace(first, data=[SourceSpec(str(other))]), resume=True, progress=False)
    assert str(caught.value) == (
        f"checkpoints in {out} were made with data {graded_toy.root},split=train; now data "
        f"{other},split=train: run without --resume, or with the same settings"
    )
    assert {p.name: p.stat().st_mtime_ns for p in checkpoints.iterdir()} == before

    # Longer, saved less often, other speed settings: the same run, continued.
    longer = replace(first, max_steps=4, save_steps=2, dataloader_workers=1, mini_batch_size=4)
    lines: list[str] = []
    result = train(longer, resume=True, progress=False, log=lines.append)
    assert result.steps == 4 and lines == []
    log = [json.loads(line) for line in (out / "train_log.jsonl").open()]
    assert [r["step"] for r in log] == [1, 2, 3, 4]
    assert json.loads((checkpoints / "run_settings.json").read_text()) == recorder.seen

    # Without --resume the earlier run's checkpoints go: none is mixed with the new run's.
    train(changed, progress=False, log=lines.append)
    assert lines == [
        f"starting over: removed checkpoint-2, checkpoint-4 of an earlier run from {checkpoints}"
    ]
    assert json.loads((checkpoints / "run_settings.json").read_text())["loss"] == "kl"


def test_resume_on_the_same_sources_with_other_content_is_refused(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    data = _four_level_folder(tmp_path / "data", 16)
    config = replace(
        _config(BeirDataset(data, "d"), tiny_model_dir, tmp_path / "m"), max_steps=1, save_steps=1
    )
    train(config, progress=False)
    recorded = json.loads((tmp_path / "m" / "checkpoints" / "run_settings.json").read_text())
    _four_level_folder(data, 16, doc_text="regenerated passage {} about tea")
    with pytest.raises(SynthrankError) as caught:
        train(replace(config, max_steps=2), resume=True, progress=False)
    groups, _ = assemble_groups(config.data, config.group_size)
    from synthrank.train.trainer import run_settings

    now = run_settings(config, groups)["data"]["groups_sha256"]
    was = recorded["data"]["groups_sha256"]
    assert was != now
    assert str(caught.value) == (
        f"checkpoints in {tmp_path / 'm'} were made with data {data},split=train (groups sha256 "
        f"{was[:12]}); now data {data},split=train (groups sha256 {now[:12]}): run without "
        "--resume, or with the same settings"
    )


def _cut_short(checkpoints: Path, complete: str, cut: str) -> None:
    """What a kill during the save of checkpoint ``cut`` leaves: the weights cut short, no
    trainer state, optimizer or RNG state."""
    shutil.copytree(checkpoints / complete, checkpoints / cut)
    for name in ("trainer_state.json", "optimizer.pt", "scheduler.pt", "rng_state.pth"):
        (checkpoints / cut / name).unlink()
    with (checkpoints / cut / "model.safetensors").open("r+b") as handle:
        handle.truncate(1000)


def test_resume_sets_an_incomplete_checkpoint_aside_and_continues_the_last_complete_one(
    graded_toy: BeirDataset, tiny_model_dir: Path, tmp_path: Path, monkeypatch
) -> None:
    from transformers import Trainer

    out = tmp_path / "m"
    checkpoints = out / "checkpoints"
    config = _config(graded_toy, tiny_model_dir, out, max_steps=2, save_steps=1)
    train(config, progress=False)
    _cut_short(checkpoints, "checkpoint-2", "checkpoint-3")
    resumed_from = []
    real_train = Trainer.train

    def recording(self, resume_from_checkpoint=None, **kwargs):
        resumed_from.append(resume_from_checkpoint)
        return real_train(self, resume_from_checkpoint=resume_from_checkpoint, **kwargs)

    monkeypatch.setattr(Trainer, "train", recording)
    lines: list[str] = []
    result = train(replace(config, max_steps=4), resume=True, progress=False, log=lines.append)
    assert lines == [
        f"checkpoint-3 is incomplete (no trainer_state.json): set aside in "
        f"{checkpoints / 'incomplete'}, resuming from checkpoint-2"
    ]
    assert resumed_from == [str(checkpoints / "checkpoint-2")]
    assert (
        checkpoints / "incomplete" / "checkpoint-3" / "model.safetensors"
    ).stat().st_size == 1000
    assert result.steps == 4
    log = [json.loads(line) for line in (out / "train_log.jsonl").open()]
    assert [r["step"] for r in log] == [1, 2, 3, 4]
    assert (checkpoints / "checkpoint-3" / "trainer_state.json").is_file()  # saved anew


def test_resume_with_no_complete_checkpoint_starts_from_step_zero(
    graded_toy: BeirDataset, tiny_model_dir: Path, tmp_path: Path
) -> None:
    out = tmp_path / "m"
    checkpoints = out / "checkpoints"
    config = _config(graded_toy, tiny_model_dir, out, max_steps=1, save_steps=1)
    train(config, progress=False)
    (checkpoints / "checkpoint-1" / "trainer_state.json").write_text('{"global_step": ')
    lines: list[str] = []
    result = train(replace(config, max_steps=2), resume=True, progress=False, log=lines.append)
    assert lines == [
        f"checkpoint-1 is incomplete (trainer_state.json unreadable): set aside in "
        f"{checkpoints / 'incomplete'}, no complete checkpoint is left: starting from step 0"
    ]
    assert result.steps == 2
    log = [json.loads(line) for line in (out / "train_log.jsonl").open()]
    assert [r["step"] for r in log] == [1, 2]


def test_only_complete_checkpoints_count(tmp_path: Path) -> None:
    from synthrank.train.trainer import checkpoint_folders, last_checkpoint

    for step, files in (
        (1, {"trainer_state.json": "{}", "synthrank_loss.json": "{}"}),
        (2, {"trainer_state.json": "{}"}),
        (3, {"trainer_state.json": "{"}),
        (4, {"model.safetensors": ""}),
        (10, {}),
    ):
        folder = tmp_path / f"checkpoint-{step}"
        folder.mkdir()
        for name, text in files.items():
            (folder / name).write_text(text)
    (tmp_path / "checkpoint-5.tmp").mkdir()
    assert [p.name for p in checkpoint_folders(tmp_path)] == [
        "checkpoint-1", "checkpoint-2", "checkpoint-3", "checkpoint-4", "checkpoint-10"
    ]  # fmt: skip
    assert last_checkpoint(tmp_path) == tmp_path / "checkpoint-2"
    assert last_checkpoint(tmp_path, learned_temperature=True) == tmp_path / "checkpoint-1"
    assert last_checkpoint(tmp_path / "none") is None
