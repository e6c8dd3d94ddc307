"""The report's seed averaging, reference column and claim verdicts, on a run folder whose
metrics are made by hand, checked against SciPy's paired t-test."""

from __future__ import annotations

import json
import random
import re
from pathlib import Path

import pytest
from scipy import stats

from synthrank.errors import SynthrankError
from synthrank.evaluate import MEASURES
from synthrank.experiment import load_experiment, run_experiment
from synthrank.report import build_report
from synthrank.report.build import collect

QUERIES = [f"q{i}" for i in range(30)]
RNG = random.Random(0)
BASE = [RNG.uniform(0.2, 0.8) for _ in QUERIES]
# Per-query nDCG@10 of each model: "good" beats the base by about 0.1, "same" is the base plus
# noise around zero, each seed its own draw.
SCORES = {
    "base": BASE,
    "good@0": [b + 0.1 + RNG.gauss(0, 0.03) for b in BASE],
    "good@1": [b + 0.1 + RNG.gauss(0, 0.03) for b in BASE],
    "same@0": [b + RNG.gauss(0, 0.01) for b in BASE],
    "same@1": [b + RNG.gauss(0, 0.01) for b in BASE],
}
CLAIMS = [
    {
        "id": "C1",
        "text": "good beats same",
        "model": "good",
        "than": "same",
        "dataset": "d",
        "note": "student & base: minilm",
    },
    {"id": "C2", "text": "same beats good", "model": "same", "than": "good", "dataset": "d"},
    {"id": "C3", "text": "same beats base", "model": "same", "than": "base", "dataset": "d"},
    {
        "id": "C4",
        "text": "same matches base",
        "model": "same",
        "than": "base",
        "dataset": "d",
        "kind": "matches",
        "margin": 0.02,
    },
    {
        "id": "C5",
        "text": "good matches base",
        "model": "good",
        "than": "base",
        "dataset": "d",
        "kind": "matches",
        "margin": 0.02,
    },
]


def _run_folder(root: Path) -> Path:
    stages = []
    for model, values in SCORES.items():
        folder = root / "eval" / model.replace("@", "-")
        folder.mkdir(parents=True)
        per_query = {q: {m: v for m in MEASURES} for q, v in zip(QUERIES, values, strict=True)}
        metrics = {m: sum(values) / len(values) for m in MEASURES}
        (folder / "metrics.json").write_text(
            json.dumps(
                {
                    "model": model,
                    "dataset": "d",
                    "split": "test",
                    "metrics": metrics,
                    "per_query": per_query,
                }
            )
        )
        (folder / "stage.json").write_text(json.dumps({"seconds": 60.0 * (1 + len(stages))}))
        stages.append(
            {
                "kind": "evaluate",
                "name": model,
                "folder": str(folder.relative_to(root)),
                "model": model,
                "dataset": "d",
            }
        )
    plan = {
        "name": "seeds",
        "experiment": {"report": {"reference": "same", "claims": CLAIMS}},
        "stages": stages,
    }
    (root / "experiment.json").write_text(json.dumps(plan))
    return root


def _mean(*series: list[float]) -> list[float]:
    return [sum(v) / len(v) for v in zip(*series, strict=True)]


def test_seeds_are_averaged_and_compared_per_query(tmp_path: Path) -> None:
    data = collect(_run_folder(tmp_path))
    results = {r.model: r for r in data.datasets["d"]}
    assert list(results) == ["base", "good", "same"]
    good = _mean(SCORES["good@0"], SCORES["good@1"])
    same = _mean(SCORES["same@0"], SCORES["same@1"])
    assert results["good"].metrics["nDCG@10"] == pytest.approx(sum(good) / len(good))
    assert results["good"].seeds["1"]["nDCG@10"] == pytest.approx(
        sum(SCORES["good@1"]) / len(QUERIES)
    )
    delta, p, low, high = results["good"].deltas["nDCG@10"]
    test = stats.ttest_rel(good, BASE)
    interval = test.confidence_interval()
    assert p == pytest.approx(test.pvalue) and delta == pytest.approx(
        sum(good) / 30 - sum(BASE) / 30
    )
    assert (low, high) == pytest.approx((interval.low, interval.high))
    ref_delta, ref_p, *_ = results["good"].reference_deltas["nDCG@10"]
    assert ref_p == pytest.approx(stats.ttest_rel(good, same).pvalue)
    assert ref_delta == pytest.approx((sum(good) - sum(same)) / 30)
    assert "nDCG@10" not in results["same"].reference_deltas  # not against itself


def test_claims_are_held_not_held_or_undecided_as_the_tests_say(tmp_path: Path) -> None:
    data = collect(_run_folder(tmp_path))
    verdicts = {c.claim["id"]: c.verdict for c in data.claims}
    good = _mean(SCORES["good@0"], SCORES["good@1"])
    same = _mean(SCORES["same@0"], SCORES["same@1"])
    assert stats.ttest_rel(good, same).pvalue < 0.05  # the fixture's premise
    assert verdicts["C1"] == "held" and verdicts["C2"] == "not held"
    expected_c3 = (
        "undecided"
        if stats.ttest_rel(same, BASE).pvalue >= 0.05
        else ("held" if sum(same) > sum(BASE) else "not held")
    )
    assert verdicts["C3"] == expected_c3
    interval = stats.ttest_rel(same, BASE).confidence_interval()
    assert interval.low >= -0.02 and interval.high <= 0.02
    assert verdicts["C4"] == "held"
    assert verdicts["C5"] == "not held"  # good is about 0.1 above the base: outside +-0.02
    markdown, _ = build_report(tmp_path)
    text = markdown.read_text()
    assert "| C1: good beats same | d | good vs same, nDCG@10 |" in text
    assert re.search(r"\| \*\*held\*\* \| student & base: minilm \|\n", text)  # the note
    assert re.search(r"\| \*\*not held\*\* \|  \|\n", text)  # C2 has none: cell empty
    assert "verdict | note |" in text
    html = markdown.with_suffix(".html").read_text()
    assert "<td class='note'>student &amp; base: minilm</td>" in html
    assert "**held** |" in text and "**not held** |" in text
    assert re.search(r"\| \*\*good\*\* \(best\) \| 2: \d\.\d{4}, \d\.\d{4} \|", text)
    assert "delta vs same (p)" in text
    assert "| good@1 | evaluate | 3.0 |" in text  # the third stage: 180 s
    assert "Minutes per kind: evaluate 15.0" in text


def test_seeds_and_claims_in_the_experiment_file(tmp_path: Path) -> None:
    base = (
        'name = "x"\n[queries]\nsource = "q.jsonl"\n'
        '[[train]]\nname = "ws2"\nloss = "ws2"\nseeds = [0, 1]\n'
        '[[train]]\nname = "infonce"\nloss = "infonce"\n'
        '[evaluate]\ndatasets = ["beir:scifact"]\n'
    )
    path = tmp_path / "exp.toml"
    path.write_text(
        base + '[report]\nreference = "infonce"\n[[report.claims]]\nid = "C1"\ntext = "t"\n'
        'model = "ws2"\nthan = "infonce"\ndataset = "beir:scifact"\n'
    )
    experiment = load_experiment(path)
    assert [(r.name, r.settings.get("seed")) for r in experiment.runs] == [
        ("ws2@0", 0),
        ("ws2@1", 1),
        ("infonce", None),
    ]
    # Trained seed-major: one seed of every model before any second seed.
    stages = run_experiment(experiment, tmp_path / "run", dry_run=True, log=lambda _: None)
    assert [s.name for s in stages if s.kind == "train"] == ["ws2@0", "infonce", "ws2@1"]
    assert experiment.report.reference == "infonce"
    assert experiment.report.claims[0].than == "infonce"
    bad = {
        "seeds = [0, 0]\n": r"key 'seeds': expected a list of distinct integers",
        "seeds = [0]\nseed = 3\n": r"give seed or seeds, not both",
    }
    for extra, message in bad.items():
        path.write_text(base.replace("seeds = [0, 1]\n", extra))
        with pytest.raises(SynthrankError, match=message):
            load_experiment(path)
    path.write_text(base + '[report]\nreference = "kl"\n')
    with pytest.raises(SynthrankError, match=r"\[report\], key 'reference': 'kl' is not a model"):
        load_experiment(path)
    path.write_text(
        base + '[[report.claims]]\nid = "C1"\ntext = "t"\nmodel = "ws2"\nthan = "base"\n'
        'dataset = "beir:arguana"\n'
    )
    with pytest.raises(SynthrankError, match=r"#1, key 'dataset': 'beir:arguana' is not evaluated"):
        load_experiment(path)


def test_each_dataset_can_have_its_own_split(tmp_path: Path) -> None:
    base = (
        'name = "x"\n[queries]\nsource = "q.jsonl"\n[[train]]\nname = "ws2"\n'
        '[evaluate]\ndatasets = ["beir:scifact", "beir:arguana"]\nsplit = "test"\n'
    )
    path = tmp_path / "exp.toml"
    path.write_text(base + 'splits = {"beir:arguana" = "dev"}\n')
    evaluation = load_experiment(path).evaluation
    assert evaluation.split_of("beir:arguana") == "dev"
    assert evaluation.split_of("beir:scifact") == "test"
    path.write_text(base + 'splits = {"beir:nq" = "dev"}\n')
    with pytest.raises(SynthrankError, match=r"key 'splits': a table of dataset = split"):
        load_experiment(path)


@pytest.mark.parametrize(
    ("claim", "message"),
    [
        ('id = "C1"\ntext = "t"\nmodel = "ws2"\nthan = "ws2"\n', "model and than name the same"),
        (
            'id = "C1"\ntext = "t"\nmodel = "ws2"\nthan = "base"\nmeasure = "nDCG@20"\n',
            "key 'measure': 'nDCG@20' is not measured",
        ),
        (
            'id = "C1"\ntext = "t"\nmodel = "ws2"\nthan = "base"\nmargin = nan\n',
            r"key 'margin': must be a number > 0 \(got nan\)",
        ),
        ('text = "t"\nmodel = "ws2"\nthan = "base"\n', r"#1: missing key 'id'"),
    ],
)
def test_claims_that_cannot_be_decided_are_refused_at_load(tmp_path, claim, message) -> None:
    path = tmp_path / "exp.toml"
    path.write_text(
        'name = "x"\n[queries]\nsource = "q.jsonl"\n[[train]]\nname = "ws2"\n'
        '[evaluate]\ndatasets = ["beir:scifact"]\n[[report.claims]]\n'
        + claim
        + 'dataset = "beir:scifact"\n'
    )
    with pytest.raises(SynthrankError, match=message):
        load_experiment(path)


def test_a_claim_on_one_query_is_undecided_and_seeds_on_other_queries_are_named(
    tmp_path: Path,
) -> None:
    from synthrank.report.build import ModelResult, average_seeds, decide_claim

    one = {"q": {m: 0.5 for m in MEASURES}}
    better = {"q": {m: 0.9 for m in MEASURES}}
    results = {"d": [ModelResult("base", {}, one), ModelResult("ws2", {}, better)]}
    claim = {"id": "C", "text": "t", "model": "ws2", "than": "base", "dataset": "d"}
    assert decide_claim({**claim, "kind": "matches"}, results).verdict == "undecided"
    assert decide_claim(claim, results).verdict == "undecided"
    seeds = [
        ModelResult("ws2@0", {m: 0.5 for m in MEASURES}, {"a": one["q"], "b": one["q"]}),
        ModelResult("ws2@1", {m: 0.5 for m in MEASURES}, {"a": one["q"]}),
    ]
    with pytest.raises(SynthrankError, match=r"ws2: ws2@1 covers 1 queries and ws2@0 2"):
        average_seeds(seeds)


def test_generation_provenance_and_example_lists_without_query_text(tmp_path: Path) -> None:
    """The generation line says which lists were reused from which file and how long the jobs
    ran; with [report] query_text = false the example lists show query ids, not query text."""
    root = _run_folder(tmp_path)
    folder = root / "generate" / "synthetic"
    folder.mkdir(parents=True)
    lists = [
        {"query_id": f"c{i}", "query": f"secret claim {i}", "passages": [
            {"id": f"c{i}-{g}", "grade": g, "text": f"passage {i} at level {g}"} for g in (0, 3)
        ]}
        for i in range(4)
    ]  # fmt: skip
    (folder / "lists.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lists))
    meta = {
        "counts": {"queries": 4, "passages": 8},
        "backend": {"model": "m", "backend": "llama-cpp"},
        "reused": {
            "published/a.jsonl.gz": {"queries": 3, "seconds_total": 5400.0},
            "published/b.jsonl.gz": {"queries": 1, "seconds_total": None},
        },
        "seconds_total": 90.0,
    }
    (folder / "meta.json").write_text(json.dumps(meta))
    (folder / "stage.json").write_text(json.dumps({"seconds": 95.0}))
    plan = json.loads((root / "experiment.json").read_text())
    generate = {"kind": "generate", "name": "synthetic", "folder": "generate/synthetic"}
    plan["stages"].insert(0, generate)
    plan["experiment"]["report"]["query_text"] = False
    (root / "experiment.json").write_text(json.dumps(plan))
    markdown, html = build_report(root)
    text, page = markdown.read_text(), html.read_text()
    provenance = (
        "lists 3 reused from published/a.jsonl.gz (its job ran 90.0 min), 1 reused from "
        "published/b.jsonl.gz (time not recorded); generated here in 1.5 min"
    )
    assert provenance in text and provenance in page
    assert "secret claim" not in text and "secret claim" not in page
    assert "Query c0 (query text not reproduced)" in text
    assert "passage 0 at level 3" in text and "passage 2 at level 0" in page
    # Each stage's time, in both reports.
    assert "| synthetic | generate | 1.6 |" in text
    assert "<tr><td>synthetic</td><td>generate</td><td>1.6</td></tr>" in page
    plan["experiment"]["report"]["query_text"] = True
    (root / "experiment.json").write_text(json.dumps(plan))
    markdown, html = build_report(root)
    assert "Query c0: *secret claim 0*" in markdown.read_text()
    assert "Query c0: <em>secret claim 0</em>" in html.read_text()


def test_the_training_table_names_each_target_and_averages_the_ends_of_the_curve(
    tmp_path: Path,
) -> None:
    """Each trained model's row: its loss, what it learned towards, its steps and the mean loss
    of the first and the last tenth of its logged steps; a judge stage after the training
    stages leaves their settings alone."""
    root = _run_folder(tmp_path)
    plan = json.loads((root / "experiment.json").read_text())
    rng = random.Random(1)
    settings = {
        "grades": {"loss": "kl", "target": "softmax", "target_temperature": 0.25,
                   "target_scope": "batch", "teacher_weight": None},
        "mixed": {"loss": "kl", "target": "softmax", "target_temperature": 0.25,
                  "target_scope": "group", "teacher_weight": 0.5, "teacher_temperature": 0.05},
        "masked": {"loss": "infonce", "teacher_mask": 0.95, "binary_threshold": None},
        "binary": {"loss": "infonce", "binary_threshold": 2},
    }  # fmt: skip
    curves = {}
    for name, config in settings.items():
        folder = root / "train" / name
        folder.mkdir(parents=True)
        curves[name] = [rng.uniform(0, 2) for _ in range(23)]
        (folder / "train_log.jsonl").write_text(
            "".join(
                json.dumps({"step": i + 1, "loss": x}) + "\n" for i, x in enumerate(curves[name])
            )
        )
        (folder / "synthrank_train.json").write_text(json.dumps({"config": config}))
        (folder / "stage.json").write_text(json.dumps({"seconds": 1.0}))
        plan["stages"].append(
            {"kind": "train", "name": name, "folder": f"train/{name}", "model": name}
        )
    judge = root / "judge"
    judge.mkdir()
    (judge / "meta.json").write_text(json.dumps({"judge": {"loss": "not a training setting"}}))
    (judge / "stage.json").write_text(json.dumps({"seconds": 1.0}))
    plan["stages"].append({"kind": "judge", "name": "judge", "folder": "judge"})
    (root / "experiment.json").write_text(json.dumps(plan))
    text = build_report(root)[0].read_text()
    targets = {
        "grades": ("kl", "grades softmax t 0.25, batch scope"),
        "mixed": ("kl", "0.5 x teacher t 0.05 + 0.5 x grades softmax t 0.25"),
        "masked": ("infonce", "teacher's best, negatives below 0.95 x it"),
        "binary": ("infonce", "grade >= 2 vs below"),
    }
    for name, (loss, target) in targets.items():
        curve = curves[name]  # 23 steps: tenths of 2
        first, last = sum(curve[:2]) / 2, sum(curve[-2:]) / 2
        assert f"| {name} | {loss} | {target} | 23 | {first:.4f} | {last:.4f} |" in text
