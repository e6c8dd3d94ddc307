"""One-off probe (issue 17): can a small LLM judge order real SciFact passages better than minilm?

For claims of the SciFact train split outside SciFact dev (drawn with seed 1) whose BM25 top 5
(bm25s, as `synthrank grade`) holds a labelled positive and an unlabelled passage, every
(claim, passage) is scored by the LLM's next-token probabilities, not its greedy answer:

- ``digit``: the expected grade over the tokens 0-3 after `synthrank grade`'s judge prompt
  (Zhuang et al. 2023, "Beyond Yes and No: Improving Zero-Shot LLM Rankers via Scoring
  Fine-Grained Relevance Labels");
- ``yesno``: the probability of "yes" or "Yes" among yes / no / Yes / No after "is this abstract
  about the claim, so that it supports or refutes it?".

Prints the share of (labelled positive, other) pairs of one claim in the right order (ties half),
for the LLM and for minilm's cosine on the same pairs; writes the scores keyed by ids (no text).

    synthrank holdout beir:scifact --split train -n 200 --seed 0 --out runs/data/scifact-dev
    python results/alternatives/llm_judge_probe.py qwen2.5-coder-1.5b 12 yesno

Measured on a 2-core EPYC: 0.5B digit 25 of 50 (2.3 s a pair), 1.5B yesno 36 of 50 (4.3 s a
pair); minilm 47 of 50 on the same pairs.
"""

import json
import random
import sys
import time

import llama_cpp
import numpy as np
from llama_cpp import Llama
from llama_cpp.llama_chat_format import Jinja2ChatFormatter
from sentence_transformers import SentenceTransformer

from synthrank.data.resolve import resolve_dataset
from synthrank.evaluate.models import resolve_model_path
from synthrank.generate.graded import _bm25_top, _cut
from synthrank.generate.judge import LLM_JUDGE_PROMPT
from synthrank.llm.models import resolve_gguf

YESNO = (
    "Claim: {query}\n\nAbstract: {passage}\n\nIs this abstract about the claim, so that it "
    "supports or refutes it? Answer yes or no."
)


def pair_accuracy(items, scores):
    right = total = 0.0
    for (_, _, labels), s in zip(items, scores, strict=True):
        for i, a in enumerate(labels):
            for j, b in enumerate(labels):
                if a > b:
                    total += 1
                    right += 1.0 if s[i] > s[j] else 0.5 if s[i] == s[j] else 0.0
    return right, total


def main(model_name: str, n_claims: int, variant: str, words: int = 120) -> None:
    split = resolve_dataset("runs/data/scifact-dev").load_split("train")
    corpus, queries = split.corpus, split.queries
    qids = sorted(queries)
    random.Random(1).shuffle(qids)
    ids = list(corpus)
    ranked = _bm25_top(
        ids,
        [corpus[d].full_text() for d in ids],
        [(q, queries[q].text) for q in qids[:400]],
        5,
        False,
    )
    items = []
    for q, hits in zip(qids[:400], ranked, strict=True):
        labels = [1 if split.qrels[q].get(d, 0) > 0 else 0 for d, _ in hits]
        if 0 < sum(labels) < len(labels):
            items.append((q, [d for d, _ in hits], labels))
    items = items[:n_claims]

    llm = Llama(
        model_path=str(resolve_gguf(model_name).path), n_ctx=1024, n_threads=2, verbose=False
    )
    chat = Jinja2ChatFormatter(
        template=llm.metadata["tokenizer.chat_template"], eos_token="", bos_token=""
    )
    template, answers = (
        (LLM_JUDGE_PROMPT, ["0", "1", "2", "3"])
        if variant == "digit"
        else (YESNO, ["yes", "no", "Yes", "No"])
    )
    token = [llm.tokenize(a.encode(), add_bos=False, special=False)[0] for a in answers]
    llm_scores, started = [], time.time()
    for q, docs, _ in items:
        row = []
        for d in docs:
            text = template.format(
                query=queries[q].text, passage=_cut(corpus[d].full_text(), words)
            )
            prompt = chat(messages=[{"role": "user", "content": text}]).prompt
            llm.reset()
            llm.eval(llm.tokenize(prompt.encode(), add_bos=False, special=True))
            logits = np.ctypeslib.as_array(
                llama_cpp.llama_get_logits_ith(llm._ctx.ctx, -1), shape=(llm.n_vocab(),)
            )[token]
            p = np.exp(logits - logits.max())
            p /= p.sum()
            row.append(float(p @ np.arange(4)) if variant == "digit" else float(p[0] + p[2]))
        llm_scores.append(row)
    seconds = (time.time() - started) / sum(len(d) for _, d, _ in items)

    minilm = SentenceTransformer(resolve_model_path("minilm"))
    cosines = []
    for q, docs, _ in items:
        qe = minilm.encode([queries[q].text], normalize_embeddings=True)
        de = minilm.encode([corpus[d].full_text() for d in docs], normalize_embeddings=True)
        cosines.append((de @ qe.T).ravel().tolist())
    right, total = pair_accuracy(items, llm_scores)
    print(
        f"{model_name} {variant}: {len(items)} claims, {seconds:.2f} s a pair, "
        f"{right:g} of {total:g} pairs in order ({right / total:.1%})"
    )
    right, total = pair_accuracy(items, cosines)
    print(f"minilm on the same pairs: {right:g} of {total:g} ({right / total:.1%})")
    out = f"runs/probe-{model_name}-{variant}.json"
    with open(out, "w") as f:
        json.dump(
            [
                {"query_id": q, "doc_ids": d, "labels": y, "llm": s, "minilm": c}
                for (q, d, y), s, c in zip(items, llm_scores, cosines, strict=True)
            ],
            f,
        )
    print(f"wrote {out}")


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), sys.argv[3], *map(int, sys.argv[4:]))
