"""Publish generated lists without the queries' text, and rebuild the dataset from them.

A benchmark's licence may not allow copying its queries, and a replication must still let anyone
retrain on the same synthetic data without an LLM. :func:`export_lists` writes a gzipped JSONL
file: a first line with the generation's ``meta.json`` (job, config, model and its sha256), then
one line per query with its id, a digest of its text (``query_digest``,
:func:`~synthrank.llm.store.text_digest`), passages (id, grade, text, strategy), failures
and plan answers, and no query text. :func:`import_lists` joins it with the queries again (from
the job's own query source, or another) into a generation folder: the journal, ``meta.json`` and
the BEIR view, so ``synthrank train`` reads it, and the job's ``synthrank generate`` command
resumes it. A query whose text is not the one its list was written for (a benchmark re-released
under the same name, a query file edited since) is refused: its passages were graded for
another question.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import Any

from synthrank.errors import SynthrankError
from synthrank.fileio import listed, write_json_atomic
from synthrank.llm.jobs import load_queries, summarize
from synthrank.llm.store import (
    JOURNAL,
    LISTS_FORMAT,
    META,
    GenerationStore,
    QueryRecord,
    read_journal,
    read_lists_file,
    same_text,
    text_digest,
)


def export_lists(folder: Path, out: Path) -> int:
    """Write the committed lists of generation folder ``folder`` to ``out`` (``.jsonl.gz``)
    without query text; return the number of queries written."""
    meta_path = folder / META
    if not meta_path.is_file():
        raise SynthrankError(f"{folder}: not a generation folder ({META} not found)")
    meta = json.loads(meta_path.read_text(encoding="utf-8-sig"))
    records = read_journal(folder)
    out.parent.mkdir(parents=True, exist_ok=True)
    with gzip.open(out, "wt", encoding="utf-8") as handle:
        header = {"format": LISTS_FORMAT, "meta": {k: v for k, v in meta.items() if k != "counts"}}
        handle.write(json.dumps(header, ensure_ascii=False) + "\n")
        for record in records:
            line: dict[str, Any] = {
                "query_id": record.query_id,
                "query_digest": text_digest(record.query),
                "passages": [vars(p) for p in record.passages],
                "failures": list(record.failures),
                "plan": record.plan,
            }
            handle.write(json.dumps(line, ensure_ascii=False) + "\n")
    return len(records)


def import_lists(
    archive: Path, out: Path, *, queries: str | None = None, split: str | None = None
) -> dict[str, Any]:
    """Rebuild a generation folder at ``out`` from an :func:`export_lists` file, taking query
    texts from ``queries`` (default: the job's own source and split, as recorded). Every query
    id must be found there. Returns the folder's counts."""
    if out.exists() and any(out.iterdir()):
        raise SynthrankError(f"{out} is not empty; choose a new output folder")
    meta, lines = read_lists_file(archive)
    job = meta.get("job", {})
    source = queries or job.get("queries")
    if source is None:
        raise SynthrankError(f"{archive}: the job names no query source; pass queries")
    texts = {q.id: q.text for q in load_queries(source, split or job.get("split"))}
    records = []
    changed: list[str] = []
    for number, line in enumerate(lines, start=2):
        query_id = line["query_id"]
        if query_id not in texts:
            raise SynthrankError(
                f'{archive}, line {number}: query "{query_id}" is not in {source}; give the '
                "query source the lists were generated from"
            )
        if not same_text(line, texts[query_id]):
            changed.append(query_id)
        records.append(QueryRecord.from_dict({**line, "query": texts[query_id]}))
    if changed:
        raise SynthrankError(
            f"{archive}: in {source}, {len(changed)} queries' text differs from the text their "
            f"lists were generated for ({listed(changed)}); give the query source the lists were "
            "generated from, or generate lists for the new text"
        )
    out.mkdir(parents=True)
    with (out / JOURNAL).open("w", encoding="utf-8") as journal:
        journal.writelines(record.to_json() + "\n" for record in records)
    store = GenerationStore(out)
    store.open()
    store.close()
    counts = summarize(out)
    write_json_atomic(out / META, {**meta, "imported_from": str(archive), "counts": counts})
    return counts
