"""The public Python API: the names ``import synthrank`` gives, training data and losses for
sentence-transformers' own trainer, the graded evaluator, and the encoder defaults of the losses.
"""

from __future__ import annotations

import json
import math
import pkgutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import synthrank
from synthrank.errors import SettingError, SynthrankError


@pytest.fixture(scope="module")
def tiny_cosine(tiny_model_dir):
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(tiny_model_dir), device="cpu")


@pytest.fixture(scope="module")
def tiny_dot(tiny_model_dir):
    """The tiny encoder without its Normalize layer: dot-product scores, as Contriever's."""
    from sentence_transformers import SentenceTransformer

    cosine = SentenceTransformer(str(tiny_model_dir), device="cpu")
    model = SentenceTransformer(modules=[cosine[0], cosine[1]], device="cpu")
    model.similarity_fn_name = "dot"
    return model


# The names


def test_import_synthrank_loads_no_torch():
    code = (
        "import sys, synthrank; "
        "print(sorted(m for m in ('torch', 'sentence_transformers', 'transformers', 'datasets') "
        "if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == "[]"


def test_every_public_name_resolves_and_dir_lists_it():
    assert sorted(synthrank.__all__) == sorted(synthrank._EXPORTS)
    assert set(synthrank.__all__) <= set(dir(synthrank))
    for name in synthrank.__all__:
        value = getattr(synthrank, name)
        assert getattr(value, "__name__", None) == name
        assert (value.__doc__ or "").strip(), f"{name} has no docstring"
    with pytest.raises(AttributeError, match="no attribute 'training'"):
        synthrank.__getattr__("training")


def test_no_public_name_is_shadowed_by_a_subpackage():
    """``import synthrank.train`` sets the attribute ``train`` of the package: a public name
    equal to a submodule's would then be that module."""
    submodules = {m.name for m in pkgutil.iter_modules(synthrank.__path__)}
    assert {"train", "evaluate", "generate", "data", "experiment", "report"} <= submodules
    assert not submodules & set(synthrank.__all__)
    for module in submodules - {"cli"}:
        __import__(f"synthrank.{module}")
    for name in synthrank.__all__:
        assert not isinstance(getattr(synthrank, name), type(synthrank)), name


def test_star_import_gives_the_public_names():
    namespace: dict = {}
    exec("from synthrank import *", namespace)
    assert {name for name in namespace if not name.startswith("__")} == set(synthrank.__all__)


# Loss temperatures from the encoder


@pytest.mark.parametrize(
    ("encoder", "temperature", "target_temperature"),
    [("tiny_cosine", 0.05, 0.25), ("tiny_dot", 1.0, 1.0)],
)
def test_loss_modules_take_the_encoders_temperatures(
    request, encoder, temperature, target_temperature
):
    from synthrank.train.trainer import TrainConfig, _with_encoder_defaults

    model = request.getfixturevalue(encoder)
    for name in ("ws2", "w1", "kl"):
        loss = {"ws2": synthrank.WS2Loss, "w1": synthrank.W1Loss, "kl": synthrank.KLLoss}[name](
            model
        )
        assert loss.temperature == temperature
        assert loss.target_temperature == target_temperature
        assert loss.get_config_dict()["temperature"] == temperature
    assert synthrank.InfoNCELoss(model).temperature == temperature
    # The trainer (and so the CLI, which leaves both at None) fills the same values.
    config = _with_encoder_defaults(TrainConfig(data=[], out=Path(".")), model)
    assert (config.temperature, config.target_temperature) == (temperature, target_temperature)
    given = synthrank.WS2Loss(model, temperature=0.3, target_temperature=2.0)
    assert (given.temperature, given.target_temperature) == (0.3, 2.0)


def test_learned_temperature_starts_at_the_encoders(tiny_cosine):
    loss = synthrank.KLLoss(tiny_cosine, learn_temperature=True)
    assert loss.temperature_value == pytest.approx(0.05)


# training_dataset


def test_training_dataset_holds_the_groups_assembly_picks(graded_toy, tiny_cosine):
    from synthrank.train import SourceSpec, assemble_groups

    data = synthrank.training_dataset(str(graded_toy.root), tiny_cosine)
    groups, report = assemble_groups([SourceSpec(str(graded_toy.root))], 4)
    assert data.dataset.column_names == [
        "query",
        "passage_0",
        "passage_1",
        "passage_2",
        "passage_3",
        "label",
    ]
    assert len(data.dataset) == len(groups) == report.used == 64
    for row, group in zip(data.dataset, groups, strict=True):
        assert row["query"] == group.query
        assert [row[f"passage_{j}"] for j in range(4)] == list(group.passages)
        assert row["label"] == [3, 2, 1, 0]
    assert isinstance(data.loss, synthrank.WS2Loss) and data.loss.model is tiny_cosine
    assert (data.loss.temperature, data.loss.target_temperature) == (0.05, 0.25)
    assert data.model is tiny_cosine and data.report.used == 64


def test_training_dataset_settings_and_sources(graded_toy, tiny_model_dir):
    source = f"{graded_toy.root},split=train,random=1:0"
    data = synthrank.training_dataset(
        [source], str(tiny_model_dir), loss="kl", group_size=5, max_length=32, seed=3
    )
    assert isinstance(data.loss, synthrank.KLLoss) and data.model.max_seq_length == 32
    assert [c for c in data.dataset.column_names if c.startswith("passage_")] == [
        f"passage_{j}" for j in range(5)
    ]
    assert all(row["label"][:4] == [3, 2, 1, 0] for row in data.dataset)
    binary = synthrank.training_dataset(
        graded_toy.root, str(tiny_model_dir), loss="infonce", binary_threshold=2, group_size=3
    )
    assert isinstance(binary.loss, synthrank.InfoNCELoss)
    assert all(row["label"] == [1, 0, 0] for row in binary.dataset)


def test_training_dataset_refuses_what_is_not_a_data_setting(graded_toy, tiny_cosine):
    with pytest.raises(SettingError, match=r"^lr is not a setting of the training data") as err:
        synthrank.training_dataset(str(graded_toy.root), tiny_cosine, lr=1e-4)
    assert err.value.key == "lr"
    with pytest.raises(SettingError, match="loss must be one of"):
        synthrank.training_dataset(str(graded_toy.root), tiny_cosine, loss="mse")
    with pytest.raises(SynthrankError, match="option 'bm2=1' is invalid"):
        synthrank.training_dataset(f"{graded_toy.root},bm2=1", tiny_cosine)


# GradedIREvaluator


def _hand_measures(model, queries, corpus, qrels):
    """nDCG@10 (gain = grade, discount log2(i + 1), ideal over the judged grades), RR@10 and
    R@100 at level 1, from cosine scores ranked in NumPy: no trec_eval, no synthrank search."""
    doc_ids = list(corpus)
    docs = model.encode_document([corpus[d] for d in doc_ids], convert_to_numpy=True)
    docs = docs / np.linalg.norm(docs, axis=1, keepdims=True)
    values = {"nDCG@10": [], "RR@10": [], "R@100": []}
    for query_id, text in queries.items():
        vector = model.encode_query([text], convert_to_numpy=True)[0]
        ranked = [doc_ids[i] for i in np.argsort(-(docs @ (vector / np.linalg.norm(vector))))]
        grades = [qrels[query_id].get(d, 0) for d in ranked]
        dcg = sum(g / math.log2(i + 2) for i, g in enumerate(grades[:10]))
        ideal = sorted(qrels[query_id].values(), reverse=True)[:10]
        values["nDCG@10"].append(dcg / sum(g / math.log2(i + 2) for i, g in enumerate(ideal)))
        first = next((i for i, g in enumerate(grades[:10]) if g >= 1), None)
        values["RR@10"].append(0.0 if first is None else 1 / (first + 1))
        relevant = [d for d, g in qrels[query_id].items() if g >= 1]
        values["R@100"].append(sum(d in ranked[:100] for d in relevant) / len(relevant))
    return {m: float(np.mean(v)) for m, v in values.items()}


def test_evaluator_matches_a_hand_computed_graded_ndcg(graded_toy, tiny_cosine):
    split = graded_toy.load_split("test")
    queries = {q: split.queries[q].text for q in sorted(split.queries)}
    corpus = {d: doc.full_text() for d, doc in split.corpus.items()}
    evaluator = synthrank.GradedIREvaluator(queries, corpus, split.qrels, name="toy")
    metrics = evaluator(tiny_cosine)
    expected = _hand_measures(tiny_cosine, queries, corpus, split.qrels)
    assert metrics == pytest.approx(
        {
            "toy_ndcg@10": expected["nDCG@10"],
            "toy_rr@10": expected["RR@10"],
            "toy_r@100": expected["R@100"],
        },
        abs=1e-6,
    )
    assert evaluator.primary_metric == "toy_ndcg@10" and evaluator.greater_is_better
    # Graded, not binary: the same ranking with every judged grade set to 1 scores otherwise.
    binary = {q: {d: int(g > 0) for d, g in judged.items()} for q, judged in split.qrels.items()}
    flat = synthrank.GradedIREvaluator(queries, corpus, binary)(tiny_cosine)
    assert flat["ndcg@10"] != pytest.approx(metrics["toy_ndcg@10"], abs=1e-3)
    assert flat["r@100"] == pytest.approx(metrics["toy_r@100"])


def test_evaluator_agrees_with_synthrank_evaluate(mini_scifact, tiny_cosine):
    from synthrank.evaluate import evaluate

    result = evaluate(tiny_cosine, mini_scifact, "test", cache_dir=None, progress=False)
    evaluator = synthrank.GradedIREvaluator.from_beir(
        mini_scifact, "test", measures=("nDCG@10", "RR@10", "R@100", "AP@100", "P@10")
    )
    metrics = evaluator(tiny_cosine)
    assert evaluator.name == f"{mini_scifact.name}-test"
    for measure, value in result.metrics.items():
        assert metrics[f"{evaluator.name}_{measure.lower()}"] == pytest.approx(value, abs=1e-12)
    assert evaluator.per_query(tiny_cosine) == result.per_query


def test_evaluator_from_beir_takes_the_dataset_profile(graded_toy, tmp_path):
    """A dataset named like TREC DL counts grade >= 2 as relevant, as synthrank evaluate does."""
    import shutil

    dl = tmp_path / "dl19"
    shutil.copytree(graded_toy.root, dl)
    assert synthrank.GradedIREvaluator.from_beir(dl, "test").relevance_level == 2
    toy = synthrank.GradedIREvaluator.from_beir(graded_toy.root, "test", name="t")
    assert (toy.relevance_level, toy.name, len(toy.queries)) == (1, "t", 16)
    with pytest.raises(SynthrankError, match="nDCG@20 is not one of nDCG@10"):
        synthrank.GradedIREvaluator.from_beir(graded_toy.root, "test", measures=["nDCG@20"])
    with pytest.raises(SynthrankError, match="no query has both text and judgments"):
        synthrank.GradedIREvaluator({"a": "text"}, {"d": "doc"}, {"b": {"d": 1}})


def test_hf_trainer_trains_on_training_dataset_and_evaluates_graded(
    graded_toy, tiny_model_dir, tmp_path
):
    """The notebook path: sentence-transformers' trainer with synthrank's data, loss and
    evaluator, evaluating during training."""
    from sentence_transformers import (
        SentenceTransformerTrainer,
        SentenceTransformerTrainingArguments,
    )

    data = synthrank.training_dataset(graded_toy.root, str(tiny_model_dir), max_length=32)
    evaluator = synthrank.GradedIREvaluator.from_beir(graded_toy.root, "test", name="toy")
    before = evaluator(data.model)["toy_ndcg@10"]
    args = SentenceTransformerTrainingArguments(
        output_dir=str(tmp_path / "out"),
        max_steps=4,
        per_device_train_batch_size=16,
        learning_rate=1e-3,
        eval_strategy="steps",
        eval_steps=2,
        logging_steps=1,
        save_strategy="no",
        dataloader_drop_last=True,
        use_cpu=True,
        report_to=[],
        disable_tqdm=True,
    )
    trainer = SentenceTransformerTrainer(
        model=data.model,
        args=args,
        train_dataset=data.dataset,
        loss=data.loss,
        evaluator=evaluator,
    )
    trainer.train()
    evals = [e for e in trainer.state.log_history if "eval_toy_ndcg@10" in e]
    assert [e["step"] for e in evals] == [2, 4]
    assert all({"eval_toy_rr@10", "eval_toy_r@100"} <= set(e) for e in evals)
    after = evaluator(data.model)
    assert evals[-1]["eval_toy_ndcg@10"] == pytest.approx(after["toy_ndcg@10"], abs=1e-9)
    losses = [e["loss"] for e in trainer.state.log_history if "loss" in e]
    assert len(losses) == 4 and all(math.isfinite(x) for x in losses)
    assert after["toy_ndcg@10"] != before


# The stage functions


def test_train_model_and_evaluate_model_take_strings(graded_toy, tiny_model_dir, tmp_path):
    trained = synthrank.train_model(
        str(graded_toy.root),
        str(tmp_path / "model"),
        base_model=str(tiny_model_dir),
        loss="w1",
        batch_size=16,
        max_steps=2,
        max_length=32,
        progress=False,
    )
    assert isinstance(trained, synthrank.TrainResult) and trained.steps == 2
    assert trained.temperature == 0.05
    result = synthrank.evaluate_model(
        trained.out, graded_toy.root, "test", output=tmp_path / "eval", progress=False
    )
    saved = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert saved["metrics"] == result.metrics and result.n_queries == 16
    evaluator = synthrank.GradedIREvaluator.from_beir(graded_toy.root, "test", name="")
    assert evaluator(synthrank.load_model(str(trained.out)))["ndcg@10"] == pytest.approx(
        result.metrics["nDCG@10"], abs=1e-6
    )
    with pytest.raises(
        SettingError,
        match=r"^learning_rate is not a training setting \(the CLI's --learning-rate is 'lr' "
        r"here\); known:",
    ):
        synthrank.train_model(graded_toy.root, tmp_path / "m2", learning_rate=1e-4)


def test_load_beir_and_score_lists(data_root, graded_toy, tiny_model_dir, tmp_path):
    scifact = synthrank.load_beir("beir:scifact")
    assert isinstance(scifact, synthrank.BeirDataset)
    assert scifact.root == data_root / "beir" / "scifact"
    with pytest.raises(SynthrankError, match="not found: give a BEIR folder path"):
        synthrank.load_beir(tmp_path / "nowhere")
    meta = synthrank.score_lists(
        graded_toy.root, str(tmp_path / "scores"), teacher=str(tiny_model_dir), progress=False
    )
    assert meta["counts"] == {"queries": 64, "pairs": 256}
    assert (tmp_path / "scores" / "scores.jsonl").is_file()


def test_generate_lists_writes_a_graded_folder(tmp_path):
    sys.path.insert(0, str(Path(__file__).parent))
    from fake_llm_server import FakeLLMServer

    from synthrank.data import Query, write_queries

    queries = tmp_path / "queries.jsonl"
    write_queries(queries, [Query(f"q{i}", f"what is topic {i}") for i in range(3)])
    with FakeLLMServer() as server:
        backend = synthrank.BackendSpec(
            backend="openai", model="other", endpoints=(server.url,), retry_backoff_s=0.01
        )
        result = synthrank.generate_lists(
            queries,
            tmp_path / "gen",
            model="fake",
            backend=backend,
            config=synthrank.GenerationConfig(min_words=10),
            progress=False,
        )
        calls = list(server.bodies)
    assert result.unfinished == [] and result.counts["passages"] == 12
    assert {call["model"] for call in calls} == {"fake"}
    qrels = synthrank.load_beir(tmp_path / "gen").qrels("train")
    assert all(sorted(judged.values()) == [0, 1, 2, 3] for judged in qrels.values())


def test_run_experiment_takes_a_file(tmp_path):
    stages = synthrank.run_experiment(
        Path(__file__).parents[1] / "examples" / "quickstart.toml",
        tmp_path / "run",
        dry_run=True,
    )
    assert stages and {stage.kind for stage in stages} >= {"train", "evaluate"}
    with pytest.raises(SynthrankError, match="not found"):
        synthrank.run_experiment(tmp_path / "missing.toml", tmp_path / "run", dry_run=True)
