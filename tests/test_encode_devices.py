"""Encoding on several devices: two CPU processes (sentence-transformers' multi-process pool)
give the embeddings and the metrics of one process; device lists that cannot run are one-line
errors. Two CUDA devices are not run here."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from sentence_transformers import SentenceTransformer
from test_encode import TEXTS

from synthrank.cli import build_parser, main
from synthrank.data import BeirDataset
from synthrank.errors import SettingError, SynthrankError
from synthrank.evaluate import evaluate
from synthrank.evaluate.encode import (
    EmbeddingCache,
    EncodeStats,
    encode_texts,
    encoding_devices,
    grouped_scores,
    parse_devices,
)
from synthrank.experiment.config import EvaluateSection

TWO_CPUS = ["cpu", "cpu"]


@pytest.fixture
def pool_starts(monkeypatch: pytest.MonkeyPatch) -> list[list[str]]:
    """The devices of each pool started, and a check that each one was stopped."""
    started: list[list[str]] = []
    live: list[dict] = []
    start, stop = (
        SentenceTransformer.start_multi_process_pool,
        SentenceTransformer.stop_multi_process_pool,
    )

    def counted_start(self, target_devices=None):
        started.append(list(target_devices))
        pool = start(self, target_devices)
        live.append(pool)
        return pool

    def counted_stop(pool):
        live.remove(pool)
        stop(pool)

    monkeypatch.setattr(SentenceTransformer, "start_multi_process_pool", counted_start)
    monkeypatch.setattr(SentenceTransformer, "stop_multi_process_pool", staticmethod(counted_stop))
    yield started
    assert not live, "a pool was left running"


def test_two_cpu_processes_encode_as_one_with_one_pool_per_call_set(
    tiny: SentenceTransformer, tmp_path: Path, pool_starts: list[list[str]]
) -> None:
    single = encode_texts(tiny, TEXTS, role="document", batch_size=3, progress=False)
    single_queries = encode_texts(tiny, TEXTS[:3], role="query", batch_size=3, progress=False)
    cache = EmbeddingCache(tmp_path / "emb")
    first, second = EncodeStats(), EncodeStats()
    with encoding_devices("cpu,cpu") as devices:
        assert devices == ("cpu", "cpu")
        # Chunks of 3 texts and batches of 3: several pool calls, one pool.
        both = encode_texts(
            tiny, TEXTS, role="document", batch_size=3, chunk_size=3, cache=cache,
            progress=False, stats=first,
        )  # fmt: skip
        again = encode_texts(
            tiny, [*TEXTS[:2], "a text not seen before"], role="document", batch_size=3,
            cache=cache, progress=False, stats=second,
        )  # fmt: skip
        queries = encode_texts(tiny, TEXTS[:3], role="query", batch_size=3, progress=False)
    assert pool_starts == [TWO_CPUS]
    assert both.dtype == np.float32 and both.shape == single.shape
    assert np.allclose(both, single, atol=1e-5)
    assert np.allclose(queries, single_queries, atol=1e-5)
    assert (first.encoded, second.encoded, second.from_cache) == (7, 1, 2)
    assert np.allclose(again[:2], single[:2], atol=1e-5)
    assert tiny.device.type == "cpu"


def test_a_fully_cached_encoding_starts_no_pool(
    tiny: SentenceTransformer, tmp_path: Path, pool_starts: list[list[str]]
) -> None:
    cache = EmbeddingCache(tmp_path / "emb")
    encode_texts(tiny, TEXTS, role="document", cache=cache, progress=False)
    encode_texts(tiny, TEXTS, role="document", cache=cache, progress=False, devices=TWO_CPUS)
    assert pool_starts == []


def test_grouped_scores_on_two_cpu_processes(
    tiny: SentenceTransformer, pool_starts: list[list[str]]
) -> None:
    groups = [TEXTS[:4], TEXTS[4:]]
    one = grouped_scores(tiny, TEXTS[:2], groups, progress=False)
    two = grouped_scores(tiny, TEXTS[:2], groups, progress=False, devices=TWO_CPUS)
    assert pool_starts == [TWO_CPUS]
    for row_one, row_two in zip(one, two, strict=True):
        assert np.allclose(row_one, row_two, atol=1e-5)


def test_pool_is_stopped_when_encoding_fails(
    tiny: SentenceTransformer, monkeypatch: pytest.MonkeyPatch, pool_starts: list[list[str]]
) -> None:
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt), encoding_devices(TWO_CPUS):
        encode_texts(tiny, TEXTS[:2], role="document", progress=False)
        monkeypatch.setattr(tiny, "encode_document", interrupted)
        encode_texts(tiny, TEXTS[2:], role="document", progress=False)
    assert pool_starts == [TWO_CPUS]  # and the fixture checks it was stopped


def test_evaluate_on_two_cpu_processes_gives_the_same_metrics(
    tiny_model_dir: Path, mini_scifact: BeirDataset, pool_starts: list[list[str]]
) -> None:
    one = evaluate(str(tiny_model_dir), mini_scifact, cache_dir=None, progress=False)
    two = evaluate(
        str(tiny_model_dir), mini_scifact, cache_dir=None, progress=False, devices="cpu,cpu"
    )
    assert pool_starts == [TWO_CPUS]  # queries and corpus share it
    assert two.settings["devices"] == TWO_CPUS and one.settings["devices"] is None
    assert one.metrics.keys() == two.metrics.keys()
    for measure, value in one.metrics.items():
        assert two.metrics[measure] == pytest.approx(value, abs=1e-6), measure


def test_one_device_is_the_single_process_path(
    tiny: SentenceTransformer, pool_starts: list[list[str]]
) -> None:
    single = encode_texts(tiny, TEXTS, role="document", progress=False)
    on_cpu = encode_texts(tiny, TEXTS, role="document", progress=False, devices="cpu")
    assert pool_starts == []
    np.testing.assert_array_equal(on_cpu, single)


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ("cuda:0,", r"item 2 is empty"),
        (",cpu", r"item 1 is empty"),
        ("", r"item 1 is empty"),
        ([], r"empty list"),
        ("cpu,gpu9", r"'gpu9' is no torch device"),
    ],
)
def test_malformed_device_lists_are_one_line_errors(value, problem: str) -> None:
    with pytest.raises(SettingError, match=problem) as caught:
        parse_devices(value)
    assert "\n" not in str(caught.value)


def test_repeated_cpu_is_several_processes() -> None:
    assert parse_devices("cpu, cpu") == ("cpu", "cpu")
    assert parse_devices(["cpu"]) == ("cpu",)
    assert parse_devices(None) == ()


def test_cuda_on_a_machine_without_it_says_so(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(SettingError, match=r"cuda:1: this machine has no CUDA device"):
        parse_devices("cpu,cuda:1")


def test_a_device_named_twice_and_one_beyond_the_machines(monkeypatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert parse_devices("cuda:0,cuda:1") == ("cuda:0", "cuda:1")
    with pytest.raises(SettingError, match=r"cuda:1 and cuda:1 are the same device"):
        parse_devices("cuda:1,cuda:1")
    with pytest.raises(SettingError, match=r"cuda and cuda:0 are the same device"):
        parse_devices(["cuda", "cuda:0"])
    with pytest.raises(SettingError, match=r"cuda:2: this machine has 2 CUDA device\(s\)"):
        parse_devices("cuda:0,cuda:2")


def test_openvino_takes_no_device_list(tiny: SentenceTransformer, monkeypatch) -> None:
    with pytest.raises(SettingError, match=r"OpenVINO encodes on the cpu only"):
        parse_devices("cpu,cpu", backend="openvino")
    assert parse_devices("cpu", backend="openvino") == ("cpu",)
    # A model loaded in OpenVINO, whatever asked for the devices.
    monkeypatch.setattr(tiny, "backend", "openvino", raising=False)
    with pytest.raises(SettingError, match=r"OpenVINO encodes on the cpu only"):
        encode_texts(tiny, TEXTS, role="document", progress=False, devices=TWO_CPUS)


def test_cli_reads_a_comma_list_of_devices() -> None:
    parser = build_parser()
    for command in (
        ["evaluate", "--model", "m", "--dataset", "d"],
        ["inspect", "folder"],
        ["judge", "folder", "--out", "o"],
        ["score", "--dataset", "d", "--out", "o"],
    ):
        args = parser.parse_args([*command, "--device", "cpu,cpu"])
        assert args.device == "cpu,cpu", command


def test_cli_device_errors_are_one_line(
    tiny_model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    common = ["evaluate", "--model", str(tiny_model_dir), "--dataset", str(tmp_path / "nothing")]
    assert main([*common, "--device", "cpu,,cpu"]) == 2
    assert "synthrank: error: --device 'cpu,,cpu': item 2 is empty" in capsys.readouterr().err
    assert main([*common, "--device", "cpu,cpu", "--encoder-backend", "openvino"]) == 2
    err = capsys.readouterr().err.strip()
    assert "OpenVINO encodes on the cpu only" in err and "\n" not in err


def test_experiment_evaluate_device_is_a_list_or_a_comma_string() -> None:
    assert EvaluateSection(device=("cpu", "cpu")).devices == tuple(TWO_CPUS)
    assert EvaluateSection(device="cpu,cpu").devices == tuple(TWO_CPUS)
    assert EvaluateSection().devices == ()


def test_experiment_file_with_a_bad_device_names_table_and_key(tmp_path: Path) -> None:
    from synthrank.experiment import load_experiment

    path = tmp_path / "exp.toml"
    path.write_text(
        'name = "x"\n[[train]]\nname = "ws2"\nloss = "ws2"\ndata = ["beir:scifact"]\n'
        '[evaluate]\ndevice = "cpu,"\n',
        encoding="utf-8",
    )
    with pytest.raises(SynthrankError, match=r"\[evaluate\], key 'device': 'cpu,': item 2 is"):
        load_experiment(path)


def test_the_devices_are_not_part_of_an_evaluations_identity(tmp_path: Path) -> None:
    from synthrank.experiment import load_experiment
    from synthrank.experiment.config import digest

    assert digest(EvaluateSection(device=("cpu", "cpu"))) == digest(EvaluateSection())
    assert digest(EvaluateSection(max_length=128)) != digest(EvaluateSection())
    path = tmp_path / "exp.toml"
    path.write_text(
        'name = "x"\n[[train]]\nname = "ws2"\nloss = "ws2"\ndata = ["beir:scifact"]\n'
        '[evaluate]\ndevice = ["cpu", "cpu"]\n',
        encoding="utf-8",
    )
    assert load_experiment(path).evaluation.devices == ("cpu", "cpu")
