"""`synthrank run` and `synthrank report` end to end on a fake LLM server and a tiny encoder:
stages run once, are skipped when complete, re-run only where the config changed, and the
report shows the numbers of the metrics files (checked in headless Chromium when installed)."""

from __future__ import annotations

import collections
import itertools
import json
import re
import shutil
import subprocess
import time
from html import escape
from html.parser import HTMLParser
from pathlib import Path

import pytest
from fake_llm_server import FakeLLMServer

from synthrank.cli import main
from synthrank.data import read_qrels
from synthrank.errors import SynthrankError
from synthrank.evaluate import MEASURES, load_metrics
from synthrank.experiment import load_experiment, run_experiment
from synthrank.report import build_report

TOML = """
name = "tiny"
base_model = "{model}"

[queries]
source = "{queries}"
heldout = 0.25

[generate]
levels = "related"   # a plan and four passages a query: the call counts below
min_words = 10

[generate.backend]
backend = "openai"
model = "fake"
endpoints = ["{url}"]

[judge]
encoder = "{model}"
rule = "keep"

[[train]]
name = "ws2"
loss = "ws2"
batch_size = 2
max_steps = 2
lr = {lr}

[[train]]
name = "infonce"
loss = "infonce"
binary_threshold = 2
group_size = 3
batch_size = 2
max_steps = 2

[evaluate]
datasets = ["{dataset}"]
split = "test"
"""


def _write(tmp_path, url, model, dataset, lr="1e-4") -> Path:
    queries = tmp_path / "queries.tsv"
    queries.write_text("".join(f"q{i}\thow does thing {i} work\n" for i in range(8)))
    path = tmp_path / "exp.toml"
    path.write_text(TOML.format(model=model, queries=queries, url=url, dataset=dataset.root, lr=lr))
    return path


def _stage_times(root: Path) -> dict[str, float]:
    return {str(p.parent): p.stat().st_mtime for p in root.rglob("stage.json")}


class _Cells(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.cells: dict[tuple[str, str], str] = {}
        self._key = None

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "td" and "data-measure" in attrs:
            self._key = (attrs["data-model"], attrs["data-measure"])

    def handle_data(self, data):
        if self._key is not None:
            self.cells[self._key] = data.strip()
            self._key = None


def _check_best_and_intervals(markdown: str, html: str, root: Path) -> None:
    """'best' only for a model that beats every other on nDCG@10 by a paired t-test (p < 0.05,
    SciPy's ttest_rel on the per-query values), and each delta's 95% interval from SciPy."""
    from scipy import stats

    plan = json.loads((root / "experiment.json").read_text())
    runs = {
        s["model"]: load_metrics(root / s["folder"])["per_query"]
        for s in plan["stages"]
        if s["kind"] == "evaluate"
    }
    queries = sorted(runs["base"])
    score = {m: [runs[m][q]["nDCG@10"] for q in queries] for m in runs}
    top = max(score, key=lambda m: sum(score[m]))
    significant = all(
        stats.ttest_rel(score[top], score[m]).pvalue < 0.05 and sum(score[top]) > sum(score[m])
        for m in score
        if m != top
    )
    if significant:
        assert markdown.count("(best)") == 1 and f"**{top}" in markdown
    else:
        assert "(best)" not in markdown and "none is marked best" in markdown
    for model in score:
        if model == "base":
            continue
        diff = [b - a for a, b in zip(score["base"], score[model], strict=True)]
        if max(diff) == min(diff):
            continue
        interval = stats.ttest_rel(score[model], score["base"]).confidence_interval()
        assert f"[{interval.low:+.4f}, {interval.high:+.4f}]" in markdown
    assert html.count("<circle") == len(score) - 1  # one forest-plot row per trained model
    assert "ws2 loss per logged step" in html and "infonce loss per logged step" in html


def _check_numbers(html: str, root: Path) -> None:
    parser = _Cells()
    parser.feed(html)
    plan = json.loads((root / "experiment.json").read_text())
    evaluations = [s for s in plan["stages"] if s["kind"] == "evaluate"]
    assert len(evaluations) == 3
    for stage in evaluations:
        metrics = load_metrics(root / stage["folder"])["metrics"]
        for measure in MEASURES:
            assert parser.cells[(stage["model"], measure)] == f"{metrics[measure]:.4f}"


def test_run_skips_finished_stages_and_reruns_only_what_changed(
    tmp_path, tiny_model_dir, mini_scifact
):
    root = tmp_path / "run"
    with FakeLLMServer() as server:
        path = _write(tmp_path, server.url, tiny_model_dir, mini_scifact)
        experiment = load_experiment(path)
        logged: list[str] = []
        run_experiment(experiment, root, progress=False, log=logged.append)
        first = _stage_times(root)
        assert len(first) == 12  # generate, judge, split, inspect, 2 x train, 3 x evaluate,
        # 3 x held-out
        lines: list[str] = []
        run_experiment(experiment, root, progress=False, log=lines.append)
        assert _stage_times(root) == first
        assert all(" done " in line for line in lines[1:13]) and len(lines) == 13
        changed = load_experiment(
            _write(tmp_path, server.url, tiny_model_dir, mini_scifact, "2e-4")
        )
        stages = run_experiment(changed, root, progress=False, log=lambda _: None)
    after = _stage_times(root)
    new = set(after) - set(first)
    kinds = sorted(json.loads((Path(p) / "stage.json").read_text())["kind"] for p in new)
    assert kinds == ["evaluate", "heldout", "train"]  # ws2's training and what depends on it
    assert all(Path(p).name.startswith("ws2-") for p in new)
    assert all(after[p] == first[p] for p in first)
    assert len(stages) == 12

    markdown, html = build_report(root)
    text = markdown.read_text()
    assert f"| base ({Path(tiny_model_dir).name}) |" in text  # the base row names its model
    assert re.search(r"\| ws2 \| train \| \d+\.\d \|", text)  # each stage's time
    _check_best_and_intervals(text, html.read_text(), root)
    assert "## Scores per level on held-out synthetic lists" in text
    # How hard the training lists are for the untrained base model: its pairs counted here.
    (inspected,) = (root / "inspect").glob("*/inspect.json")
    difficulty = json.loads(inspected.read_text())["difficulty"]
    (split_dir,) = (root / "data").glob("*")
    train_lists = read_qrels(split_dir / "qrels" / "train.tsv")
    grades = sorted({g for judged in train_lists.values() for g in judged.values()}, reverse=True)
    pairs = sum(
        sum(g == a for g in judged.values()) * sum(g == b for g in judged.values())
        for judged in train_lists.values()
        for a, b in itertools.pairwise(grades)
    )
    adjacent = difficulty["adjacent"]
    assert adjacent["pairs"] == pairs > 0 and difficulty["student"] == str(tiny_model_dir)
    line = f"{adjacent['rate']:.1%} of {pairs} adjacent-level passage pairs in the wrong order"
    assert line in text and line in html.read_text()
    # How often the judge (rule keep: it only measures) agrees with the intended levels, per
    # level, counted here from its decisions.
    (judged,) = (root / "judge").glob("*/judgments.jsonl")
    decisions = [json.loads(x) for x in judged.read_text().splitlines()]
    assert {d["decision"] for d in decisions} == {"keep"}
    passages = collections.Counter(d["intended"] for d in decisions)
    agreeing = collections.Counter(d["intended"] for d in decisions if d["agrees"])
    rates = ", ".join(
        f"{g}: {agreeing[g] / passages[g]:.0%}" for g in sorted(passages, reverse=True)
    )
    agree = sum(d["agrees"] for d in decisions)
    line = (
        f"Label correctness (encoder judge {tiny_model_dir}, rule keep): "
        f"{agree / len(decisions):.0%} of {len(decisions)} generated passages agree with their "
        f"intended level (per level {rates}; {len(decisions)} keep)"
    )
    assert line in text and escape(line) in html.read_text()
    assert "delta nDCG@10 vs base" in text
    assert re.search(r"\| ws2 \| ws2 \| grades softmax t [\d.]+, batch scope \| 2 \|", text)
    # The first three generated lists in full, passages by falling grade, in both reports.
    (lists_file,) = (root / "generate").glob("*/lists.jsonl")
    lists = [json.loads(line) for line in lists_file.read_text().splitlines()]
    page = html.read_text()
    assert "## 3 generated lists, in full" in text
    for record in lists[:3]:
        assert f"Query {record['query_id']}: *{record['query']}*" in text
        for passage in record["passages"]:
            assert " ".join(passage["text"].split()) in text
        grades = re.findall(
            r"<li data-grade='(\d)'>",
            page.split(f"data-query='{record['query_id']}'")[1].split("</section>")[0],
        )
        assert grades == sorted(grades, reverse=True) and len(grades) == len(record["passages"])
    assert f"Query {lists[3]['query_id']}:" not in text
    _check_numbers(html.read_text(), root)
    assert "<script" not in html.read_text() and "http" not in re.sub(
        r'xmlns="http://www.w3.org/2000/svg"', "", html.read_text()
    )


def test_report_renders_in_headless_chromium(tmp_path, tiny_model_dir, mini_scifact):
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.skip("Debian's chromium is not installed (.ci/run installs it)")
    root = tmp_path / "run"
    with FakeLLMServer() as server:
        path = _write(tmp_path, server.url, tiny_model_dir, mini_scifact)
        assert main(["run", str(path), "--out", str(root), "--quiet"]) == 0
    html = root / "report.html"
    dom = subprocess.run(
        [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--dump-dom", html.as_uri()],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    ).stdout
    assert "<svg" in dom and "synthrank report: tiny" in dom
    _check_numbers(dom, root)


def test_reused_lists_leave_every_stage_folder_as_it_was(tmp_path, tiny_model_dir, mini_scifact):
    """[queries] reuse takes published lists of the same settings (checked by the generate
    stage): a run given them continues in the folders of the run without them."""
    path = _write(tmp_path, "http://127.0.0.1:9/v1", tiny_model_dir, mini_scifact)
    before = run_experiment(
        load_experiment(path), tmp_path / "run", dry_run=True, log=lambda _: None
    )
    path.write_text(
        path.read_text().replace("heldout = 0.25", 'heldout = 0.25\nreuse = ["lists.jsonl.gz"]')
    )
    experiment = load_experiment(path)
    assert experiment.queries.reuse == ("lists.jsonl.gz",)
    after = run_experiment(experiment, tmp_path / "run", dry_run=True, log=lambda _: None)
    assert [s.folder for s in after] == [s.folder for s in before] and len(before) == 12


def test_reused_queries_for_documents_leave_every_stage_folder_as_it_was(
    tmp_path, tiny_model_dir, mini_scifact
):
    """[doc2query] reuse names published queries (checked by the stage, see test_doc2query):
    naming them keeps the plan's folders, so a run goes on where it was."""
    path = tmp_path / "alt.toml"
    text = ALTERNATIVES.format(
        model=tiny_model_dir, url="http://127.0.0.1:9/v1", dataset=mini_scifact.root
    )
    path.write_text(text)
    before = run_experiment(
        load_experiment(path), tmp_path / "run", dry_run=True, log=lambda _: None
    )
    path.write_text(text.replace("docs_limit = 12", 'docs_limit = 12\nreuse = ["d2q.jsonl.gz"]'))
    experiment = load_experiment(path)
    assert experiment.doc2query is not None and experiment.doc2query.reuse == ("d2q.jsonl.gz",)
    after = run_experiment(experiment, tmp_path / "run", dry_run=True, log=lambda _: None)
    assert [s.folder for s in after] == [s.folder for s in before]
    assert "doc2query" in [s.kind for s in after]


def test_experiment_errors_name_the_table_and_key(tmp_path):
    path = tmp_path / "bad.toml"
    base = 'name = "x"\n[queries]\nsource = "q.jsonl"\n'
    path.write_text(base + '[[train]]\nname = "a"\nlrate = 1\n[evaluate]\n')
    with pytest.raises(SynthrankError, match=r"\[\[train\]\] #1: unknown key 'lrate'"):
        load_experiment(path)
    path.write_text(base + '[[train]]\nname = "a"\nnum_train_epochs = 2\n[evaluate]\n')
    with pytest.raises(
        SynthrankError,
        match=r"#1: unknown key 'num_train_epochs' \(the CLI's --num-train-epochs is 'epochs' "
        r"here\)",
    ):
        load_experiment(path)
    path.write_text(base + '[generate]\ntarget_words = "many"\n[[train]]\nname = "a"\n')
    with pytest.raises(SynthrankError, match=r"\[generate\], key 'target_words': expected int"):
        load_experiment(path)
    path.write_text(base + "[evaluate]\n")
    with pytest.raises(SynthrankError, match=r"at least one \[\[train\]\]"):
        load_experiment(path)
    path.write_text('[queries]\nsource = "q"\n')
    assert main(["run", str(path), "--dry-run"]) == 2


def test_a_corpus_sample_keeps_its_datasets_scoring_profile(tmp_path, monkeypatch):
    """ArguAna's queries are also corpus documents; BEIR drops a query's own id from its results.
    A corpus sample, written to a folder of another name, must be scored the same way."""
    from synthrank.data import Document, Query, write_corpus, write_qrels, write_queries
    from synthrank.evaluate import evaluate
    from synthrank.experiment.runner import sample_corpus

    root = tmp_path / "data" / "beir" / "arguana"
    arguments = {
        "a1": "Zoos protect endangered species by running breeding programmes.",
        "a2": "Breeding programmes in zoos have saved species such as the Arabian oryx.",
        "a3": "Wild animals suffer stress and illness when they are kept in small enclosures.",
    }
    others = {
        f"d{i}": text
        for i, text in enumerate(
            [
                "Caffeine in coffee causes a short rise in blood pressure in most adults.",
                "The Eiffel Tower is a wrought-iron lattice tower in Paris, built in 1889.",
                "Tomatoes grow well on sunny balconies in large pots with daily watering.",
                "Green tea contains less caffeine than coffee but more than herbal tea.",
            ]
        )
    }
    write_corpus(
        root / "corpus.jsonl", [Document(i, t) for i, t in {**arguments, **others}.items()]
    )
    write_queries(root / "queries.jsonl", [Query("a1", arguments["a1"])])
    write_qrels(root / "qrels" / "test.tsv", {"a1": {"a2": 1}})
    monkeypatch.setenv("SYNTHRANK_DATA", str(tmp_path / "data"))

    full = evaluate("minilm", "beir:arguana", cache_dir=None, progress=False)
    sample = tmp_path / "sample"
    sample_corpus("beir:arguana", "test", sample, others=10)  # every document: a1 included
    sampled = evaluate("minilm", sample, cache_dir=None, progress=False)
    assert full.metrics["nDCG@10"] == pytest.approx(1.0)
    assert sampled.metrics["nDCG@10"] == pytest.approx(1.0)
    assert "a1" not in sampled.run["a1"]


def test_a_corpus_sample_shows_what_reading_its_dataset_found(tmp_path):
    from synthrank.data import Document, Query, write_corpus, write_qrels, write_queries
    from synthrank.experiment.runner import sample_corpus
    from synthrank.fileio import SynthrankWarning

    root = tmp_path / "toy"
    write_corpus(root / "corpus.jsonl", [Document("d1", "coffee"), Document("d2", "tea")])
    corpus = root / "corpus.jsonl"
    corpus.write_text(corpus.read_text().replace('"_id": "d2"', '"_id": "d2 "'))
    write_queries(root / "queries.jsonl", [Query("q1", "hot drinks")])
    write_qrels(root / "qrels" / "test.tsv", {"q1": {"d1": 1, "gone": 1}})
    found = [
        f'{corpus}, line 2, field "_id": "d2 " has trailing whitespace; read as "d2"',
        f"{root / 'qrels' / 'test.tsv'}: 1 judgments name 1 document ids missing from "
        'corpus.jsonl (e.g. "gone"); they count as relevant but cannot be retrieved',
    ]
    with pytest.warns(SynthrankWarning) as caught:
        sampled = sample_corpus(str(root), "test", tmp_path / "sample", others=0)
    assert [str(w.message) for w in caught] == found
    assert sampled == {"documents": 1, "of": 2, "judged": 1, "warnings": found}


EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def test_every_example_loads_and_dry_runs(tmp_path, monkeypatch, capsys):
    """Each experiment under examples/ parses and plans its stages under --dry-run, which runs
    none of them (no generation, training or evaluation) and writes nothing; each generation
    config under examples/levels/ loads."""
    from conftest import forbid_stages

    from synthrank.generate.config import load_config

    forbid_stages(monkeypatch)
    experiments = sorted(EXAMPLES.glob("*.toml"))
    assert {p.name for p in experiments} >= {"quickstart.toml", "scifact.toml"}
    for path in experiments:
        experiment = load_experiment(path)
        root = tmp_path / experiment.name
        assert main(["run", str(path), "--dry-run", "--quiet", "--out", str(root)]) == 0
        printed = capsys.readouterr().out.splitlines()
        stages = [line.split()[0] for line in printed[1:]]
        assert printed[0] == f"experiment {experiment.name}: {len(stages)} stages in {root}"
        assert stages[0] == "generate" and stages.count("train") == len(experiment.runs)
        assert all(" to do " in line and f" {root}/" in line for line in printed[1:])
        assert not root.exists()
    levels = sorted((EXAMPLES / "levels").glob("*.toml"))
    assert {p.name for p in levels} >= {"baseline.toml", "planned.toml", "hard.toml"}
    for path in levels:
        config = load_config(path)
        assert sorted(level.grade for level in config.levels) == [0, 1, 2, 3], path


def test_forest_plot_fills_the_points_whose_interval_excludes_zero():
    from synthrank.report.svg import forest_plot

    svg = forest_plot({"ws2": (0.02, 0.01, 0.03), "kl": (0.005, -0.01, 0.02)}, title="t")
    circles = re.findall(r'<circle cx="([\d.]+)" cy="[\d.]+" r="4" fill="(#\w+)"', svg)
    zero = float(re.search(r'<line x1="([\d.]+)" y1="24"', svg).group(1))
    (ws2_x, ws2_fill), (kl_x, kl_fill) = circles
    assert (ws2_fill, kl_fill) == ("#222", "#fff")
    assert zero < float(kl_x) < float(ws2_x)


ALTERNATIVES = """
name = "alternatives"
base_model = "{model}"

[generate.backend]
backend = "openai"
model = "fake"
endpoints = ["{url}"]

[doc2query]
corpus = "{dataset}"
docs_limit = 12
filter_top_k = 50
max_attempts = 2

[graded]
dataset = "{dataset}"
split = "test"
top_n = 3
limit = 6

[[train]]
name = "d2q-infonce"
loss = "infonce"
data = ["doc2query,bm25=1:0"]
group_size = 2
batch_size = 2
max_steps = 2

[[train]]
name = "graded-ws2"
loss = "ws2"
data = ["graded,random=1:0"]
batch_size = 2
max_steps = 2

[evaluate]
datasets = ["{dataset}"]
split = "test"
"""


def test_queries_for_documents_and_graded_lists_are_stages_of_a_run(
    tmp_path, tiny_model_dir, mini_scifact
):
    """[doc2query] and [graded] make the data of the runs that name them (options kept), with no
    [queries] table (nothing else is generated); the report says what each stage made."""
    root = tmp_path / "run"
    path = tmp_path / "alt.toml"
    with FakeLLMServer(grade="overlap") as server:
        path.write_text(
            ALTERNATIVES.format(model=tiny_model_dir, url=server.url, dataset=mini_scifact.root)
        )
        experiment = load_experiment(path)
        assert experiment.name == "alternatives"
        stages = run_experiment(experiment, root, progress=False, log=lambda _: None)
        assert [s.kind for s in stages] == [
            "evaluate",
            "doc2query",
            "train",
            "evaluate",
            "graded",
            "train",
            "evaluate",
        ]  # fmt: skip  (each data stage right before the first training that reads it)
        served = server.served
        assert served == 12 + 6 * 3  # one query per document, one grade per passage
        run_experiment(experiment, root, progress=False, log=lambda _: None)
        assert server.served == served  # finished stages are not redone
    d2q, graded = stages[1].folder, stages[4].folder
    d2q_meta = json.loads((d2q / "meta.json").read_text())
    assert d2q_meta["counts"]["documents"] == 12 and d2q_meta["counts"]["filter"]["top_k"] == 50
    trained = {
        s.name: json.loads((s.folder / "synthrank_train.json").read_text())["config"]
        for s in stages
        if s.kind == "train"
    }
    (d2q_source,) = trained["d2q-infonce"]["data"]
    assert d2q_source["dataset"] == str(d2q) and d2q_source["bm25_negatives"] == 1
    (graded_source,) = trained["graded-ws2"]["data"]
    assert graded_source["dataset"] == str(graded) and graded_source["random_negatives"] == 1
    markdown, _ = build_report(root)
    text = markdown.read_text()
    kept = d2q_meta["counts"]["filter"]["kept"]
    assert (
        f"Queries for documents: {d2q_meta['counts']['queries']} queries for 12 documents" in text
    )
    assert f"kept {kept} of {d2q_meta['counts']['queries']}" in text
    per_grade = json.loads((graded / "meta.json").read_text())["counts"]["per_grade"]
    assert len(per_grade) > 1  # the judge told passages apart, or the stage would have failed
    grades = ", ".join(f"{g}: {n}" for g, n in per_grade.items())
    assert (
        f"Real lists graded by an LLM: 18 passages of 6 queries graded by fake (per grade {grades}"
        in text
    )
    assert "Synthetic data:" not in text


def test_train_data_of_a_missing_stage_is_an_error_naming_the_table(tmp_path):
    REAL = '[[train]]\nname = "a"\ndata = ["beir:scifact"]\n'
    path = tmp_path / "bad.toml"
    path.write_text('name = "x"\n[[train]]\nname = "a"\ndata = ["graded,bm25=1:0"]\n')
    with pytest.raises(
        SynthrankError, match=r"#1 \(a\): data 'graded' is the output of the \[graded\]"
    ):
        load_experiment(path)
    path.write_text('name = "x"\n[[train]]\nname = "a"\n')  # default data: synthetic
    with pytest.raises(SynthrankError, match=r"'synthetic' is the output of the \[queries\]"):
        load_experiment(path)
    path.write_text('name = "x"\n[doc2query]\ncorpus = "c.jsonl"\ntemplat = "{document}"\n' + REAL)
    with pytest.raises(SynthrankError, match=r"\[doc2query\]: unknown key 'templat'"):
        load_experiment(path)
    path.write_text('name = "x"\n[doc2query]\ndocs_limit = 3\n' + REAL)
    with pytest.raises(SynthrankError, match=r"\[doc2query\]: missing key 'corpus'"):
        load_experiment(path)
    path.write_text('name = "x"\n[graded]\ndataset = "d"\ntop_n = 0\n' + REAL)
    with pytest.raises(SynthrankError, match=r"\[graded\], key 'top_n': \(--top-n\) must be"):
        load_experiment(path)
    path.write_text('name = "x"\n[graded]\ndataset = "d"\n[graded.backend]\nmodle = "m"\n' + REAL)
    with pytest.raises(SynthrankError, match=r"\[graded.backend\]: unknown key 'modle'"):
        load_experiment(path)


RECORDS = {
    "stage.json", "experiment.json", "meta.json", "metrics.json", "scores.json", "inspect.json",
    "judgments.jsonl", "train_log.jsonl", "synthrank_train.json", "examples.json",
}  # fmt: skip


def test_a_run_copied_without_weights_and_data_continues_and_rebuilds_only_what_it_needs(
    tmp_path, tiny_model_dir, mini_scifact, monkeypatch, capsys
):
    """A finished run folder carried elsewhere with only its records (no model weights, no data
    copies: what a published run holds) is done as it is; a new run in it rebuilds the
    finished stages it needs, and only those, from published lists without the LLM, and
    leaves their records as they were. A stage interrupted once counts both attempts' time."""
    from synthrank.generate import judge
    from synthrank.generate.publish import export_lists
    from synthrank.train import trainer

    root, copied = tmp_path / "run", tmp_path / "copied"
    with FakeLLMServer() as server:
        path = _write(tmp_path, server.url, tiny_model_dir, mini_scifact)
        run_experiment(load_experiment(path), root, progress=False, log=lambda _: None)
    (generated,) = (root / "generate").glob("*")
    export_lists(generated, tmp_path / "lists.jsonl.gz")
    for source in root.rglob("*"):
        if source.is_file() and source.name in RECORDS:
            target = copied / source.relative_to(root)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)
    assert not list(copied.rglob("model.safetensors")) and not list(copied.rglob("lists.jsonl"))
    records = {p: p.read_bytes() for p in copied.rglob("*") if p.is_file()}
    # The LLM server is gone: nothing may need it.
    lines: list[str] = []
    run_experiment(load_experiment(path), copied, progress=False, log=lines.append)
    assert all(" done " in line for line in lines[1:]) and len(lines) == 13
    published, full = build_report(copied)[0].read_text(), build_report(root)[0].read_text()
    assert published.count("| 0.") == full.count("| 0.")
    # The example lists travel without their queries' text.
    (first,) = re.findall(r"Query (\S+): \*", full)[:1]
    assert f"Query {first} (query text not reproduced)" in published
    assert published.split("generated lists, in full")[1].count("- **") == 3 * 4
    # A new model in the copied run: it needs the training lists, which need the judged and
    # generated lists; the reused file stands in for the LLM.
    text = path.read_text().replace("heldout = 0.25", 'heldout = 0.25\nreuse = ["lists.jsonl.gz"]')
    text += '\n[[train]]\nname = "kl"\nloss = "kl"\nbatch_size = 2\nmax_steps = 2\n'
    path.write_text(text)
    monkeypatch.chdir(tmp_path)
    calls = []
    real_train = trainer.train

    def interrupted_once(config, **kwargs):
        calls.append(config.out)
        if len(calls) == 1:
            time.sleep(0.5)
            raise KeyboardInterrupt  # Ctrl-C (or a scheduler's SIGTERM) in the first attempt
        return real_train(config, **kwargs)

    monkeypatch.setattr("synthrank.train.train", interrupted_once)
    # The judge's rebuild is interrupted once, after it cleared its folder: its record is put
    # back all the same.
    real_judge = judge.judge_dataset

    def judge_interrupted(*args, **kwargs):
        monkeypatch.setattr(judge, "judge_dataset", real_judge)
        raise KeyboardInterrupt

    monkeypatch.setattr(judge, "judge_dataset", judge_interrupted)
    lines.clear()
    with pytest.raises(KeyboardInterrupt):
        run_experiment(load_experiment(path), copied, progress=False, log=lines.append)
    planned = {line.split()[0]: line.split()[2] for line in lines[1:] if " rebuild " in line}
    assert planned == {"generate": "rebuild", "judge": "rebuild", "split": "rebuild"}
    assert [line.split(":")[0] for line in lines if "(rebuilding" in line] == ["generate", "judge"]
    assert all(p.read_bytes() == data for p, data in records.items() if "judge" in p.parts)
    assert not (copied / ".rebuild").exists()
    lines.clear()
    with pytest.raises(KeyboardInterrupt):
        run_experiment(load_experiment(path), copied, progress=False, log=lines.append)
    rebuilt = [line.split(":")[0] for line in lines if "(rebuilding" in line]
    assert rebuilt == ["judge", "split"] and lines[-1] == "train: kl"
    lines.clear()
    stages = run_experiment(load_experiment(path), copied, progress=False, log=lines.append)
    assert not [line for line in lines if "rebuild" in line]
    started = [line for line in lines if not line.startswith(("experiment ", "  "))]
    assert started == ["train: kl", f"evaluate: kl on {mini_scifact.root}", "heldout: kl"]
    (kl,) = [s for s in stages if s.kind == "train" and s.name == "kl"]
    record = json.loads((kl.folder / "stage.json").read_text())
    assert record["attempts"] == 2 and record["seconds"] >= 0.5 and calls[-1] == kl.folder
    assert (kl.folder / "model.safetensors").is_file()
    # The rebuilt stages' records are the ones that were carried (the plan is the new one);
    # the other models stay without weights: their results were already there.
    changed = [p.name for p, data in records.items() if p.read_bytes() != data]
    assert changed == ["experiment.json"]
    assert [p.parent for p in copied.glob("train/*/model.safetensors")] == [kl.folder]
    assert (stages[0].folder / "lists.jsonl").is_file()
    # Retraining one published row from the published lists, in a new folder, with the
    # documented command: only that model's stages and what they need run, without the LLM,
    # and give its numbers again (the tiny model trains deterministically).
    fresh = tmp_path / "retrained"
    command = ["run", str(path), "--out", str(fresh), "--quiet", "--only", "kl"]
    assert main(command) == 0
    plan = json.loads((fresh / "experiment.json").read_text())["stages"]
    assert [(s["kind"], s["model"]) for s in plan] == [
        ("generate", None), ("judge", None), ("split", None),
        ("train", "kl"), ("evaluate", "kl"), ("heldout", "kl"),
    ]  # fmt: skip
    (evaluated,) = [s for s in stages if s.kind == "evaluate" and s.model == "kl"]
    again = load_metrics(fresh / plan[4]["folder"])
    assert again["per_query"] == load_metrics(evaluated.folder)["per_query"]
    assert main([*command[:-1], "kl2"]) == 2
    assert "synthrank: error: --only 'kl2': no such model" in capsys.readouterr().err


def test_sigterm_stops_a_run_as_ctrl_c_does_keeping_work_and_time(
    tmp_path, tiny_model_dir, mini_scifact
):
    """`kill` (a cluster scheduler's SIGTERM) in the middle of generation: the command exits
    130 with the resume hint, the finished lists stay in the journal, and the stage's attempt
    is on record with its time, which the finished stage then counts."""
    import os
    import signal
    import sys

    root = tmp_path / "run"
    with FakeLLMServer(delay_s=1.0) as server:
        path = _write(tmp_path, server.url, tiny_model_dir, mini_scifact)
        command = [sys.executable, "-m", "synthrank.cli", "run", str(path), "--out", str(root)]
        process = subprocess.Popen(
            [*command, "--quiet"], stderr=subprocess.PIPE, text=True, env=os.environ.copy()
        )
        deadline = time.monotonic() + 120
        journal = None
        while time.monotonic() < deadline and process.poll() is None:
            journal = next(iter((root / "generate").glob("*/lists.jsonl")), None)
            if journal is not None and journal.read_text().count("\n") >= 1:
                break
            time.sleep(0.2)
        assert process.poll() is None, process.stderr.read()
        process.send_signal(signal.SIGTERM)
        _, err = process.communicate(timeout=60)
        assert process.returncode == 130
        assert "interrupted; run the same command again to resume" in err
        kept = [json.loads(x) for x in journal.read_text().splitlines()]
        assert 1 <= len(kept) < 8
        attempt = json.loads((journal.parent / "attempts.json").read_text())
        assert attempt["attempts"] == 1 and attempt["seconds"] > 1.0
        assert json.loads((journal.parent / "meta.json").read_text())["status"] == "incomplete"
        time.sleep(server.delay_s + 1.0)  # calls the stopped process left in flight end
        served = server.served
        assert main(["run", str(path), "--out", str(root), "--quiet"]) == 0
    # The continuation generated only the rest: five calls a query (a plan and four levels).
    assert server.served - served == 5 * (8 - len(kept))
    record = json.loads((journal.parent / "stage.json").read_text())
    assert record["attempts"] == 2 and record["seconds"] > attempt["seconds"]
    assert not (journal.parent / "attempts.json").exists()


VALUES = """name = "values"
[queries]
source = "q.jsonl"
{queries}
[generate]
{generate}
[judge]
{judge}
[[train]]
name = "a"
data = ["beir:scifact,bm25=1:0"]
seeds = [0, 1]
{train_a}
[[train]]
name = "b"
{train_b}
[evaluate]
datasets = ["beir:scifact"]
{evaluate}
[report]
[[report.claims]]
id = "C1"
text = "a beats b"
model = "a"
than = "b"
dataset = "beir:scifact"
{claim}
"""


def test_value_errors_name_the_file_table_and_key(tmp_path, capsys):
    """A wrong value in any table is reported with the file, the table (a [[train]] table by
    number and name) and the key, as an unknown key or a wrong type is."""
    path = tmp_path / "values.toml"
    tables = ("queries", "generate", "judge", "train_a", "train_b", "evaluate", "claim")
    for table, line, expected in (
        ("train_b", "batch_size = 0", "[[train]] #2 (b), key 'batch_size': must be a positive "
         "integer (got 0)"),
        ("train_a", "temperature = -0.05", "[[train]] #1 (a), key 'temperature': must be "
         "positive (got -0.05)"),
        ("train_b", 'loss = "hinge"', "[[train]] #2 (b), key 'loss': must be one of infonce, kl, "
         "w1, ws2 (got 'hinge')"),
        ("train_a", "group_size = 1", "[[train]] #1 (a), key 'group_size': 1 ((query, positive) "
         "pairs, in-batch negatives only) trains with infonce; ws2 compares the grades of a "
         "list: use group_size >= 2"),
        ("train_b", 'data = ["synthetic,bm25=two"]', "[[train]] #2, key 'data': data source "
         "'synthetic,bm25=two': option 'bm25=two' is invalid (invalid literal for int() with "
         "base 10: 'two'); expected split=NAME, relabel=FROM:TO[;FROM:TO], bm25=COUNT:LABEL, "
         "random=COUNT:LABEL, teacher=FOLDER"),
        ("evaluate", "batch_size = 0", "[evaluate], key 'batch_size': must be >= 1 (got 0)"),
        ("evaluate", "max_length = 0", "[evaluate], key 'max_length': must be >= 1 (got 0)"),
        ("evaluate", "corpus_sample = -5", "[evaluate], key 'corpus_sample': must be >= 0 "
         "(got -5)"),
        ("queries", "limit = 0", "[queries], key 'limit': must be >= 1 (got 0)"),
        ("queries", 'shard = "4/2"', "[queries], key 'shard': expected 'i/n' with 0 <= i < n, "
         "e.g. '0/4' (got '4/2')"),
        ("queries", "heldout = 1.5", "[queries], key 'heldout': a share in [0, 1) (got 1.5)"),
        ("claim", "margin = 0.0", "[report], [[report.claims]] #1, key 'margin': must be a "
         "number > 0 (got 0.0)"),
        ("claim", 'kind = "worse"', "[report], [[report.claims]] #1, key 'kind': must be one of "
         "better, matches (got 'worse')"),
        ("judge", "margin = -1.0", "[judge], key 'margin': must be >= 0 (got -1.0)"),
        ("judge", 'runtime = "openvino"', "[judge], key 'runtime': expected a table (keys: "
         "backend, precision, quantize), got str 'openvino'"),
        ("judge", 'runtime = {backend = "onnx"}', "[judge], key 'backend': onnx: choose one of "
         "torch, openvino"),
        ("generate", "temperature = -1.0", "[generate], key 'temperature': must be >= 0 "
         "(got -1.0)"),
    ):  # fmt: skip
        path.write_text(VALUES.format(**{t: line if t == table else "" for t in tables}))
        with pytest.raises(SynthrankError) as caught:
            load_experiment(path)
        assert str(caught.value) == f"{path}, {expected}", line
    path.write_text(VALUES.format(**dict.fromkeys(tables, "")))
    assert [run.name for run in load_experiment(path).runs] == ["a@0", "a@1", "b"]
    # The command line prints it as one line.
    path.write_text(
        VALUES.format(**{t: "batch_size = 0" if t == "train_b" else "" for t in tables})
    )
    assert main(["run", str(path), "--dry-run", "--out", str(tmp_path / "x")]) == 2
    assert capsys.readouterr().err == (
        f"synthrank: error: {path}, [[train]] #2 (b), key 'batch_size': must be a positive "
        "integer (got 0)\n"
    )


def test_a_train_stage_resumes_past_an_incomplete_checkpoint(
    tmp_path, tiny_model_dir, mini_scifact, capsys
):
    """A training stage killed while it saved a checkpoint continues from the last complete
    one, the cut one set aside, instead of failing on it at every run."""
    from dataclasses import replace

    from synthrank.train import train

    path = tmp_path / "real.toml"
    path.write_text(
        f'name = "real"\nbase_model = "{tiny_model_dir}"\n'
        f'[[train]]\nname = "ws2"\ndata = ["{mini_scifact.root},split=test,bm25=1:0"]\n'
        "group_size = 2\nbatch_size = 4\nmax_steps = 3\nsave_steps = 1\nmax_length = 32\n"
        f'[evaluate]\ndatasets = ["{mini_scifact.root}"]\n'
    )
    experiment = load_experiment(path)
    root = tmp_path / "run"
    planned = run_experiment(experiment, root, dry_run=True, log=lambda _: None)
    (stage,) = [s for s in planned if s.kind == "train"]
    (run,) = experiment.runs
    # What the stage leaves when it is killed while saving checkpoint-3.
    config = run.config(stage.folder, experiment.base_model, {})
    train(replace(config, max_steps=2), progress=False)
    checkpoints = stage.folder / "checkpoints"
    shutil.copytree(checkpoints / "checkpoint-2", checkpoints / "checkpoint-3")
    for name in ("trainer_state.json", "optimizer.pt", "scheduler.pt", "rng_state.pth"):
        (checkpoints / "checkpoint-3" / name).unlink()
    with (checkpoints / "checkpoint-3" / "model.safetensors").open("r+b") as handle:
        handle.truncate(1000)
    capsys.readouterr()
    run_experiment(experiment, root, progress=False, log=lambda _: None, only=["ws2"])
    printed = capsys.readouterr().out.splitlines()
    assert (
        f"checkpoint-3 is incomplete (no trainer_state.json): set aside in "
        f"{checkpoints / 'incomplete'}, resuming from checkpoint-2"
    ) in printed
    log = [json.loads(line) for line in (stage.folder / "train_log.jsonl").open()]
    assert [r["step"] for r in log] == [1, 2, 3]
    assert json.loads((stage.folder / "synthrank_train.json").read_text())["steps"] == 3


def test_a_level_setting_error_names_its_level(tmp_path, capsys):
    path = tmp_path / "levels.toml"
    path.write_text(
        'name = "x"\n[queries]\nsource = "q.jsonl"\n[[generate.levels]]\ngrade = 3\n'
        'name = "a"\ndefinition = "b"\nstrategy = "guess"\n[[train]]\nname = "ws2"\n'
        '[evaluate]\ndatasets = ["beir:scifact"]\n'
    )
    assert main(["run", str(path), "--dry-run"]) == 2
    assert capsys.readouterr().err.startswith(
        f"synthrank: error: {path}, [generate], levels[0] (grade 3), key 'strategy': 'guess' is "
        "unknown; choose one of direct, "
    )
