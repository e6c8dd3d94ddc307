"""Training step time of each synthrank loss against sentence-transformers' MNRL.

Same model, batch and data for all: real SciFact train groups (positive relabelled 3, two BM25
negatives at 1, one random at 0), ``--batch-size`` queries x 4 passages. MNRL sees the same five
columns (query, positive, three hard negatives) and scale 20 (temperature 0.05). Steps of the
losses are interleaved in one process so machine noise hits all alike; the median step time of
each is reported with its ratio to MNRL, and ws2's ratio to infonce (goal <= 1.10). Memory: a
fresh child process per loss runs the same steps while a thread samples the resident set size;
the peak above the size before the first step is reported. Last, ws2 in fp32 against bf16
autocast (``--bf16``) where the hardware has bf16.

    python benchmarks/bench_train.py [--model minilm] [--steps 4] [--batch-size 16]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import threading
import time

import torch

LOSS_NAMES = ("mnrl", "infonce", "ws2", "w1", "kl")


def build(model_name: str, batch_size: int, max_length: int):
    from synthrank.evaluate.models import load_model
    from synthrank.train import SourceSpec, assemble_groups

    spec = SourceSpec.parse("beir:scifact,split=train,relabel=1:3,bm25=2:1,random=1:0")
    groups, _ = assemble_groups([spec], 4, seed=0)
    groups = groups[:batch_size]
    model = load_model(model_name, max_length=max_length)
    model.train()
    features = [model.preprocess([g.query for g in groups])]
    features += [model.preprocess([g.passages[j] for g in groups]) for j in range(4)]
    labels = torch.tensor([list(g.labels) for g in groups])
    return model, features, labels


def make_loss(name: str, model):
    from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss

    from synthrank.train import LOSSES

    if name == "mnrl":
        return MultipleNegativesRankingLoss(model, scale=20.0)
    return LOSSES[name](model, 0.05)


def step(model, loss_fn, optimizer, features, labels) -> float:
    started = time.perf_counter()
    optimizer.zero_grad()
    loss_fn(features, labels).backward()
    optimizer.step()
    return time.perf_counter() - started


def resident_mb() -> float:
    with open("/proc/self/status", encoding="ascii") as status:
        line = next(line for line in status if line.startswith("VmRSS:"))
    return int(line.split()[1]) / 1024


class PeakSampler:
    """Highest resident set size seen while active, sampled every 5 ms."""

    def __init__(self) -> None:
        self.peak = resident_mb()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.005):
            self.peak = max(self.peak, resident_mb())

    def __enter__(self) -> PeakSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def peak_memory_child(args: argparse.Namespace, name: str) -> float:
    command = [
        sys.executable,
        __file__,
        "--model",
        args.model,
        "--steps",
        str(args.steps),
        "--per-device-train-batch-size",
        str(args.batch_size),
        "--max-length",
        str(args.max_length),
        "--only",
        name,
    ]
    done = subprocess.run(command, capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])["step_peak_mb"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="minilm")
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--max-length", type=int, default=256)
    parser.add_argument("--only", choices=LOSS_NAMES, help=argparse.SUPPRESS)
    args = parser.parse_args()

    model, features, labels = build(args.model, args.batch_size, args.max_length)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5)
    if args.only:
        loss_fn = make_loss(args.only, model)
        baseline = resident_mb()
        with PeakSampler() as sampler:
            for _ in range(args.steps):
                step(model, loss_fn, optimizer, features, labels)
        print(json.dumps({"step_peak_mb": sampler.peak - baseline}))
        return

    losses = {name: make_loss(name, model) for name in LOSS_NAMES}
    for loss_fn in losses.values():  # warm-up
        step(model, loss_fn, optimizer, features, labels)
    times: dict[str, list[float]] = {name: [] for name in LOSS_NAMES}
    for _ in range(args.steps):
        for name, loss_fn in losses.items():
            times[name].append(step(model, loss_fn, optimizer, features, labels))
    median = {name: statistics.median(values) for name, values in times.items()}
    print(
        f"model {args.model}, batch {args.batch_size} x 4 passages, max length "
        f"{args.max_length}, {args.steps} steps each, torch threads {torch.get_num_threads()}"
    )
    print(f"{'loss':<8} {'s/step':>8} {'steps/s':>8} {'vs MNRL':>8} {'step peak MB':>13}")
    for name in LOSS_NAMES:
        peak = peak_memory_child(args, name)
        print(
            f"{name:<8} {median[name]:>8.3f} {1 / median[name]:>8.3f} "
            f"{median[name] / median['mnrl']:>8.3f} {peak:>13.0f}"
        )
    print(f"ws2 / infonce step time: {median['ws2'] / median['infonce']:.3f} (goal <= 1.10)")
    compare_precision(model, losses["ws2"], optimizer, features, labels, args.steps)


def compare_precision(model, loss_fn, optimizer, features, labels, steps: int) -> None:
    """ws2 steps in fp32 against bf16 autocast (what --bf16 does), interleaved; skipped where
    the hardware has no bf16 (a CPU without AVX512-BF16 or AMX emulates it, slower)."""
    device = model.device.type
    supported = (
        torch.cuda.is_bf16_supported()
        if device == "cuda"
        else torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()
    )
    if not supported:
        print(f"bf16: not supported on this {device}; fp32 only (skipped)")
        return
    times: dict[str, list[float]] = {"fp32": [], "bf16": []}
    for _ in range(steps + 1):
        times["fp32"].append(step(model, loss_fn, optimizer, features, labels))
        with torch.autocast(device, dtype=torch.bfloat16):
            times["bf16"].append(step(model, loss_fn, optimizer, features, labels))
    fp32, bf16 = (statistics.median(times[k][1:]) for k in ("fp32", "bf16"))
    print(f"ws2 step fp32 {fp32:.3f}s, bf16 autocast {bf16:.3f}s: bf16 / fp32 {bf16 / fp32:.3f}")


if __name__ == "__main__":
    main()
