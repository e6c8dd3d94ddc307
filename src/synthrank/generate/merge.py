"""Join the shards of one generation job (``--shard i/n`` on several machines) into one dataset."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from synthrank import __version__
from synthrank.errors import SynthrankError
from synthrank.fileio import TEXT_ENCODING, warn, write_json_atomic
from synthrank.llm.jobs import summarize
from synthrank.llm.store import (
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


def _missing_shards(parts: list[Path], metas: list[dict[str, Any]]) -> list[str]:
    """The shards ``i/n`` of the job that ``parts`` do not hold, after checking that each part
    is a shard (``--shard i/n``) of one n and that none is given twice; a single part made
    without ``--shard`` is the whole job (nothing missing)."""
    shards = [meta["job"].get("shard") for meta in metas]
    if shards == [None]:
        return []
    held: dict[int, Path] = {}
    count = None
    for part, shard in zip(parts, shards, strict=True):
        if shard is None:
            raise SynthrankError(
                f"merge: {part} is a whole job (made without --shard), not a shard: give only "
                "the folders made with --shard i/n"
            )
        index, n = (int(x) for x in shard.split("/"))
        if count is None:
            count = n
        elif n != count:
            raise SynthrankError(
                f"merge: {parts[0]} is shard {shards[0]} but {part} is shard {shard}: give the "
                "shards of one --shard n"
            )
        if index in held:
            raise SynthrankError(
                f"merge: {held[index]} and {part} are both shard {shard}: give each shard once"
            )
        held[index] = part
    return [f"{i}/{count}" for i in range(count or 0) if i not in held]


def merge(out: Path, parts: list[Path], *, allow_incomplete: bool = False) -> dict[str, Any]:
    """Write the union of ``parts`` (shards of the same job) to ``out``; return its counts.

    The parts must share queries, model and generation config, be the shards ``0/n`` to
    ``n-1/n`` of one n, each once (a single folder made without ``--shard`` passes as the whole
    job), and not repeat a query. A missing or unfinished shard is refused unless
    ``allow_incomplete``: then meta.json says ``"status": "incomplete"`` and lists
    ``missing_shards``."""
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
    missing = _missing_shards(parts, metas)
    if missing:
        shards = (
            f"shard {missing[0]} is" if len(missing) == 1 else f"shards {', '.join(missing)} are"
        )
        if not allow_incomplete:
            raise SynthrankError(
                f"merge: {shards} missing: give all {missing[0].split('/')[1]} shard folders, "
                "or pass --allow-incomplete"
            )
        warn(f"merge: {shards} missing: {out} is marked incomplete", None)
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
            if not missing and all(m.get("status") == "complete" for m in metas)
            else "incomplete",
            "missing_shards": missing,
            "job": {**metas[0]["job"], "shard": None},
            "merged_from": [
                {"folder": str(p), "shard": m["job"].get("shard")}
                for p, m in zip(parts, metas, strict=True)
            ],
            "counts": counts,
        },
    )
    return counts
