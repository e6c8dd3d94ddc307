"""The published reference: all-MiniLM-L6-v2 on the full SciFact test split (minutes on 2 CPUs).

nDCG@10 = 0.6451 and R@100 = 0.9250 are MTEB's figures, reproduced independently here; RR@10,
AP@100 and P@10 are the README's reference figures. A different number means a bug in
encoding, search or metrics.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from synthrank.evaluate import evaluate


@pytest.mark.slow
def test_minilm_on_scifact_matches_published_figures(tmp_path: Path) -> None:
    result = evaluate("minilm", "beir:scifact", "test", max_length=256, cache_dir=tmp_path)
    assert result.n_queries == 300
    assert result.settings["corpus_size"] == 5183
    assert result.metrics["nDCG@10"] == pytest.approx(0.6451, abs=5e-4)
    assert result.metrics["R@100"] == pytest.approx(0.9250, abs=1e-3)
    assert result.metrics["RR@10"] == pytest.approx(0.6047, abs=5e-4)
    assert result.metrics["AP@100"] == pytest.approx(0.6031, abs=5e-4)
    assert result.metrics["P@10"] == pytest.approx(0.0883, abs=5e-4)
    again = evaluate("minilm", "beir:scifact", "test", max_length=256, cache_dir=tmp_path)
    assert again.settings["embeddings_encoded"] == 0
    assert again.metrics == result.metrics
