from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from sentence_transformers import SentenceTransformer

from synthrank.evaluate import encode as encode_module
from synthrank.evaluate.encode import (
    EmbeddingCache,
    EncodeStats,
    encode_texts,
    length_buckets,
    model_fingerprint,
)

TEXTS = [
    "short",
    "a somewhat longer text about retrieval " * 3,
    "mid length text here",
    "the longest text of all, " * 20,
    "x",
    "retrieval with graded relevance",
    "another one",
]


def test_length_buckets_sort_longest_first() -> None:
    batches = length_buckets([3, 10, 1, 7, 7], 2)
    assert [b.tolist() for b in batches] == [[1, 3], [4, 0], [2]]


def test_encoding_matches_sentence_transformers(tiny: SentenceTransformer) -> None:
    ours = encode_texts(tiny, TEXTS, role="document", batch_size=3, progress=False)
    reference = tiny.encode_document(TEXTS, batch_size=64, convert_to_numpy=True)
    assert ours.dtype == np.float32
    np.testing.assert_allclose(ours, reference, atol=1e-5)


def test_cache_skips_encoding_and_is_keyed_by_role(
    tiny: SentenceTransformer, tmp_path: Path
) -> None:
    cache = EmbeddingCache(tmp_path / "emb")
    first_stats, second_stats, query_stats = EncodeStats(), EncodeStats(), EncodeStats()
    first = encode_texts(
        tiny, TEXTS, role="document", cache=cache, progress=False, stats=first_stats
    )
    second = encode_texts(
        tiny, TEXTS, role="document", cache=cache, progress=False, stats=second_stats
    )
    encode_texts(tiny, TEXTS, role="query", cache=cache, progress=False, stats=query_stats)
    assert (first_stats.encoded, first_stats.from_cache) == (7, 0)
    assert (second_stats.encoded, second_stats.from_cache) == (0, 7)
    assert query_stats.from_cache == 0
    np.testing.assert_array_equal(first, second)


def test_fingerprint_follows_weights_and_settings(tiny: SentenceTransformer) -> None:
    before = model_fingerprint(tiny)
    assert model_fingerprint(tiny) == before
    tiny.max_seq_length = 64
    shorter = model_fingerprint(tiny)
    assert shorter != before
    with torch.no_grad():
        next(tiny.parameters()).add_(1e-3)
    assert model_fingerprint(tiny) != shorter


def test_interrupted_encoding_resumes_from_cached_chunks(
    tiny: SentenceTransformer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache = EmbeddingCache(tmp_path / "emb")
    real_encode_chunk = encode_module._encode_chunk
    calls = []

    def crash_on_third_chunk(model, texts, role, batch_size, bar):
        calls.append(len(texts))
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real_encode_chunk(model, texts, role, batch_size, bar)

    monkeypatch.setattr(encode_module, "_encode_chunk", crash_on_third_chunk)
    with pytest.raises(KeyboardInterrupt):
        encode_texts(tiny, TEXTS, role="document", cache=cache, chunk_size=3, progress=False)
    monkeypatch.setattr(encode_module, "_encode_chunk", real_encode_chunk)
    stats = EncodeStats()
    resumed = encode_texts(
        tiny, TEXTS, role="document", cache=cache, chunk_size=3, progress=False, stats=stats
    )
    assert (stats.from_cache, stats.encoded) == (6, 1)
    np.testing.assert_allclose(
        resumed, encode_texts(tiny, TEXTS, role="document", progress=False), atol=1e-6
    )


def test_each_text_is_cached_once_whatever_list_it_comes_in(
    tiny: SentenceTransformer, tmp_path: Path
) -> None:
    """A corpus encoded for an evaluation is reused when its passages come back in other
    lists (BM25's top N of each query, a teacher's lists), in another order, with repeats."""
    cache = EmbeddingCache(tmp_path / "emb")
    whole = encode_texts(tiny, TEXTS, role="document", cache=cache, progress=False)
    stats = EncodeStats()
    picked = [TEXTS[3], TEXTS[0], "a text not seen before", TEXTS[3]]
    again = encode_texts(
        tiny, picked, role="document", cache=cache, progress=False, stats=stats, chunk_size=2
    )
    assert (stats.from_cache, stats.encoded) == (3, 1)
    np.testing.assert_array_equal(again[[0, 1, 3]], whole[[3, 0, 3]])
    fresh = encode_texts(tiny, ["a text not seen before"], role="document", progress=False)
    np.testing.assert_allclose(again[2], fresh[0], atol=1e-6)
    (database,) = (tmp_path / "emb").iterdir()
    assert database.suffix == ".sqlite"


# OpenVINO runtime (sentence-transformers' backend="openvino", through optimum-intel).


def _embed(model: SentenceTransformer, texts: list[str]) -> np.ndarray:
    return np.asarray(model.encode(texts, convert_to_numpy=True), dtype=np.float32)


OV_TEXTS = [
    "Vitamin D deficiency raises the risk of multiple sclerosis.",
    "A randomized trial of aspirin in elderly adults with no cardiovascular disease.",
    "short",
]


def test_openvino_fp32_gives_the_torch_embeddings_and_is_exported_once(
    tiny_model_dir: Path,
) -> None:
    from synthrank.data.resolve import cache_root
    from synthrank.evaluate.models import Runtime, load_model

    torch_model = load_model(str(tiny_model_dir))
    runtime = Runtime("openvino", "fp32")
    ov_model = load_model(str(tiny_model_dir), runtime=runtime)
    assert np.abs(_embed(ov_model, OV_TEXTS) - _embed(torch_model, OV_TEXTS)).max() < 1e-5
    (exported,) = (cache_root() / "openvino").glob("*/fp32/openvino/openvino_model.xml")
    stamp = exported.stat().st_mtime_ns
    again = load_model(str(tiny_model_dir), runtime=runtime, max_length=32)
    assert exported.stat().st_mtime_ns == stamp  # loaded from the cache, not exported again
    assert again.max_seq_length == 32
    # Each runtime has its own embeddings in the cache; the same runtime keeps its key.
    assert model_fingerprint(ov_model) != model_fingerprint(torch_model)
    assert model_fingerprint(ov_model) == model_fingerprint(
        load_model(str(tiny_model_dir), runtime=runtime)
    )
    assert model_fingerprint(again) != model_fingerprint(ov_model)  # max length differs


def test_openvino_int8_weights_stay_close_and_have_their_own_cache_key(
    tiny_model_dir: Path,
) -> None:
    from synthrank.evaluate.models import Runtime, load_model

    full = load_model(str(tiny_model_dir), runtime=Runtime("openvino", "fp32"))
    int8 = load_model(str(tiny_model_dir), runtime=Runtime("openvino", "fp32", "int8"))
    a, b = _embed(full, OV_TEXTS), _embed(int8, OV_TEXTS)
    cosines = (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
    assert cosines.min() > 0.99
    assert np.abs(a - b).max() > 1e-6  # the weights really are quantized
    assert model_fingerprint(int8) != model_fingerprint(full)


@pytest.mark.parametrize(
    ("runtime", "message"),
    [
        (("torch", "bf16", None), "bf16 and int8 need the openvino backend"),
        (("torch", "fp32", "int8"), "torch backend encodes in fp32 only"),
        (("onnx", "fp32", None), "backend onnx: choose one of torch, openvino"),
        (("openvino", "fp16", None), "precision fp16: choose one of fp32, bf16"),
        (("openvino", "fp32", "int4"), "quantize int4: choose int8"),
    ],
)
def test_runtime_combinations_that_cannot_run_are_refused(
    runtime: tuple[str, str, str | None], message: str
) -> None:
    from synthrank.errors import SynthrankError
    from synthrank.evaluate.models import Runtime

    with pytest.raises(SynthrankError, match=message):
        Runtime(*runtime).validate()


def test_bf16_encoding_is_refused_on_a_cpu_without_bf16(monkeypatch: pytest.MonkeyPatch) -> None:
    from synthrank.errors import SynthrankError
    from synthrank.evaluate.models import Runtime

    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False)
    with pytest.raises(SynthrankError, match="AVX512-BF16 or AMX"):
        Runtime("openvino", "bf16").validate()
