"""What a stage reads from outside the run folder, and whether it changed since the stage
finished.

A stage's folder is named by a digest of its settings (``train/ws2-3f9a...``): the same config
finds the same folders, here or on another machine. The data a setting names can change under
it, though: a relative path read from another working directory, a dataset fixed in place, a
model folder retrained. So each stage also lists the files it reads (:func:`dataset_reads`,
:func:`model_reads`, :func:`query_source_reads`), ``stage.json`` records their content
(:func:`synthrank.fingerprint.fingerprints`) and a ``content`` digest that covers them and the
content of every stage it needs, and a finished stage whose content differs now is run again
(:func:`content_id`, :func:`changed_read`). Relative paths are read from the working directory;
the record holds the resolved path.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from synthrank.fingerprint import MISSING


def local_dataset_root(spec: str) -> Path | None:
    """The BEIR folder that dataset ``spec`` (a folder or ``beir:NAME``) names on this machine,
    without downloading it; None when it is not here (yet)."""
    from synthrank.data.resolve import local_beir

    path = Path(spec).expanduser()
    if path.is_dir():
        return path
    return local_beir(spec.removeprefix("beir:")) if spec.startswith("beir:") else None


def dataset_reads(spec: str, split: str | None, *, prefix: str = "") -> dict[str, Path]:
    """The files of dataset ``spec`` that a stage reads: ``corpus.jsonl``, ``queries.jsonl``
    and, with ``split``, ``qrels/<split>.tsv`` (the other splits' qrels are not read: a
    test split kept back can change without touching the stages that never read it)."""
    root = local_dataset_root(spec)
    if root is None:
        return {}
    names = ["corpus.jsonl", "queries.jsonl"] + ([f"qrels/{split}.tsv"] if split else [])
    return {f"{prefix}{spec} {name}": root / name for name in names}


def query_source_reads(source: str, split: str | None) -> dict[str, Path]:
    """The files a generation job's query source reads: a ``.jsonl`` / ``.tsv`` file itself,
    or a dataset's queries (and the qrels of ``split``, which choose them)."""
    path = Path(source).expanduser()
    if path.suffix in (".jsonl", ".tsv") and path.is_file():
        return {f"queries {source}": path}
    reads = dataset_reads(source, split)
    return {k: v for k, v in reads.items() if not k.endswith("corpus.jsonl")}


def model_reads(spec: str | None, *, label: str = "model") -> dict[str, Path]:
    """A model given by path (a folder, a ``.gguf`` file): that path. A model given by name (an
    alias such as ``minilm``, whose files a pinned package ships and verifies) reads nothing the
    name does not already say."""
    if not spec:
        return {}
    path = Path(spec).expanduser()
    return {f"{label} {spec}": path} if path.exists() else {}


def content_id(reads: dict[str, dict[str, str]], needs: dict[str, str]) -> str:
    """The content digest of a stage: the SHA-256 of each file it reads (by label) and the
    content digest of each stage it needs (by folder)."""
    shas = {label: entry["sha256"] for label, entry in reads.items()}
    text = json.dumps({"reads": shas, "needs": needs}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def changed_read(record: dict[str, Any], reads: dict[str, dict[str, str]]) -> str | None:
    """The first file a finished stage read (its ``stage.json`` ``record``) whose content now
    differs from the record, as ``"LABEL changed: PATH"``; None when none does. A file missing
    now is not a change (the stage that needs it will say so)."""
    before = record.get("reads") or {}
    for label, entry in reads.items():
        if entry["sha256"] == MISSING:
            continue
        old = before.get(label)
        if old is None or old.get("sha256") != entry["sha256"]:
            was = f" (was {old['path']})" if old and old.get("path") != entry["path"] else ""
            return f"{label} changed: {entry['path']}{was}"
    return None
