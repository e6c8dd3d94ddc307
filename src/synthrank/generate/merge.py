"""Join the shards of one generation job (``--shard i/n`` on several machines) into one dataset."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from synthrank import __version__
from synthrank.errors import SynthrankError
from synthrank.fileio import TEXT_ENCODING, write_json_atomic
from synthrank.generate.runner import summarize
from synthrank.generate.store import (
    CALLS,
    JOURNAL,
    META,
    GenerationStore,
    iter_calls,
    read_journal,
)


def _read_meta(folder: Path) -> dict[str, Any]:
    path = folder / META
    if not path.is_file():
        raise SynthrankError(f"{folder}: not a generation folder ({META} not found)")
    return json.loads(path.read_text(encoding=TEXT_ENCODING))


def merge(out: Path, parts: list[Path], *, allow_incomplete: bool = False) -> dict[str, Any]:
    """Write the union of ``parts`` (shards of the same job) to ``out``; return its counts.

    The parts must share queries, model and generation config, and not repeat a query; an
    unfinished shard is refused unless ``allow_incomplete``."""
    if not parts:
        raise SynthrankError("merge: give the shard folders to join")
    if out.exists() and any(out.iterdir()):
        raise SynthrankError(f"merge: {out} is not empty; choose a new output folder")
    metas = [_read_meta(part) for part in parts]
    reference = {k: v for k, v in metas[0]["job"].items() if k != "shard"}
    for part, meta in zip(parts, metas, strict=True):
        job = {k: v for k, v in meta["job"].items() if k != "shard"}
        changed = [k for k in reference if job.get(k) != reference[k]]
        if changed:
            raise SynthrankError(
                f"merge: {part} is another job ({changed[0]} {job.get(changed[0])!r}, while "
                f"{parts[0]} has {reference[changed[0]]!r})"
            )
        if meta.get("status") != "complete" and not allow_incomplete:
            raise SynthrankError(
                f"merge: {part} is {meta.get('status')}; finish it by running its command again, "
                "or pass --allow-incomplete"
            )
    seen: dict[str, Path] = {}
    journals = []
    for part in parts:
        records = read_journal(part)
        for record in records:
            if record.query_id in seen:
                raise SynthrankError(
                    f'merge: query "{record.query_id}" is in both '
                    f"{seen[record.query_id]} and {part}"
                )
            seen[record.query_id] = part
        journals.append(records)
    out.mkdir(parents=True, exist_ok=True)
    with (out / JOURNAL).open("w", encoding="utf-8") as journal:
        for records in journals:
            journal.writelines(record.to_json() + "\n" for record in records)
    with (out / CALLS).open("w", encoding="utf-8") as calls:
        for part in parts:
            calls.writelines(json.dumps(c, ensure_ascii=False) + "\n" for c in iter_calls(part))
    store = GenerationStore(out)
    store.open()
    store.close()
    counts = summarize(out)
    write_json_atomic(
        out / META,
        {
            **metas[0],
            "synthrank_version": __version__,
            "status": "complete"
            if all(m.get("status") == "complete" for m in metas)
            else "incomplete",
            "job": {**metas[0]["job"], "shard": None},
            "merged_from": [
                {"folder": str(p), "shard": m["job"].get("shard")}
                for p, m in zip(parts, metas, strict=True)
            ],
            "counts": counts,
        },
    )
    return counts
