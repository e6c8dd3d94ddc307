"""Turn an LLM response into a passage, or say why it cannot be kept. Pure functions, no I/O.

Rejection reasons are short fixed strings (``empty``, ``too short``, ``too long``, ``truncated``,
``echo of the query``, ``refusal``, ``meta-text``, ``repetitive``, ``near-duplicate``,
``only reasoning``, ``empty at the limit``, ``outline``), so ``synthrank inspect`` can count them.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

_WORD = re.compile(r"[a-z0-9]+")
_SENTENCE_END = re.compile(r"[.!?][\"')\]]?(?=\s|$)")

_PREAMBLE = re.compile(
    r"^\s*(?:(?:sure|certainly|of course|okay|ok)[,!.]?\s*)?"
    r"(?:here(?:'s| is) (?:a|an|the|your|one)\b[^\n:]*:|passage\s*\d*\s*:|text\s*:|answer\s*:|"
    r"abstract\s*:|summary\s*:)"
    r"\s*",
    re.IGNORECASE,
)
REFUSAL = re.compile(
    r"\b(?:as an ai\b|as a language model|i(?:'m| am) (?:sorry|unable|not able)|"
    r"i can(?:no|')t (?:help|provide|write|assist|fulfil)|i cannot (?:help|provide|write|assist))",
    re.IGNORECASE,
)
"""A refusal ("I'm sorry", "as an AI language model", "I cannot write"), in any generated text."""
_META = re.compile(
    r"\b(?:here(?:'s| is) (?:a|an|the) (?:\w+ ){0,2}(?:passage|paragraph|text|document|response|"
    r"summary|abstract|article)|nothing to do with|"
    r"(?:this|the above|the following) passage (?:is|was|does|has|will)|"
    r"relevance level|(?:perfectly|highly) relevant|word count|\(\d+ words\)|"
    r"(?:the|your|this|original|search|given|user'?s?) query\b|"
    r"this (?:web )?page (?:provides|offers|has|contains|gives)|"
    # instructions echoed back, and text about the question or the task instead of an answer
    r"(?:document|passage|abstract|text|article|response|summary) (?:must|should) (?:contain|"
    r"include|be|cover|provide|describe)|following key points|the user'?s? (?:question|request)|"
    r"the answer to (?:the|this|your) (?:question|query)|"
    r"(?:does not|doesn't|do not) (?:provide|give) (?:a |any )?direct answers?|"
    r"the sentence (?:is|was) about)",
    re.IGNORECASE,
)
# A numbered item: "1. ", "2) ", "1.1.1. " followed by a capitalised word.
_OUTLINE_ITEM = re.compile(r"(?:^|\s)\(?(?:\d{1,2}[.)]){1,3}\d{0,2}\s+[A-Z]")
OUTLINE_ITEMS = 3
"""Numbered items from which a response is an outline or a list, not a passage."""


_REASONING = re.compile(
    r"<(think|thinking|reasoning|reflection)>.*?</\1>\s*", re.IGNORECASE | re.DOTALL
)
_OPEN_REASONING = re.compile(r"<(?:think|thinking|reasoning|reflection)>", re.IGNORECASE)


def strip_reasoning(text: str) -> tuple[str, bool]:
    """``text`` without the reasoning blocks that reasoning models write before their answer
    (``<think>...</think>``, as Qwen3 and the DeepSeek-R1 distills do, and the ``thinking``,
    ``reasoning``, ``reflection`` variants), and whether it held any. A block left open (the
    token limit cut the reasoning) removes everything from its tag on; a closing tag with no
    opening one (some chat templates put ``<think>`` in the prompt) removes everything up to it.
    """
    stripped = _REASONING.sub("", text)
    found = stripped != text
    close = re.search(r"</(?:think|thinking|reasoning|reflection)>", stripped, re.IGNORECASE)
    if close:
        stripped, found = stripped[close.end() :], True
    opened = _OPEN_REASONING.search(stripped)
    if opened:
        stripped, found = stripped[: opened.start()], True
    return stripped.strip(), found


def empty_reason(response: str, *, stopped_by_limit: bool) -> str | None:
    """Why a reply has no answer in it, or None when it has one: ``only reasoning`` (a reasoning
    block and nothing after it), ``empty at the limit`` (nothing, and the token or time limit
    stopped it: a reasoning model spent max_tokens thinking, or the server returned null content)
    or ``empty``."""
    answer, had_reasoning = strip_reasoning(response)
    if words(answer):
        return None
    if had_reasoning:
        return "only reasoning"
    return "empty at the limit" if stopped_by_limit else "empty"


def words(text: str) -> list[str]:
    """Lower-cased alphanumeric word tokens."""
    return _WORD.findall(text.lower())


def clean_response(text: str) -> str:
    """Strip what small models wrap around a passage: a "Here is a passage:" preamble line,
    markdown emphasis and headings, surrounding quotes, extra whitespace."""
    text = text.replace("\r\n", "\n").replace("**", "").replace("__", "").strip()
    text = _PREAMBLE.sub("", text, count=1)
    lines = [line.strip() for line in text.split("\n")]
    lines = [line.lstrip("#").strip() if line.startswith("#") else line for line in lines]
    text = " ".join(line for line in lines if line)
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "\"'`":
        text = text[1:-1].strip()
    return re.sub(r"\s+", " ", text).strip()


def trim_to_sentence(text: str) -> str:
    """``text`` cut after its last complete sentence (for responses stopped by the token limit);
    ``""`` when it has no complete sentence."""
    ends = list(_SENTENCE_END.finditer(text))
    return text[: ends[-1].end()].strip() if ends else ""


def shingles(tokens: list[str], n: int = 3) -> set[tuple[str, ...]]:
    if len(tokens) < n:
        return {tuple(tokens)} if tokens else set()
    return {tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1)}


def jaccard(a: set, b: set) -> float:
    """|A ∩ B| / |A ∪ B| (0 for two empty sets)."""
    union = len(a | b)
    return len(a & b) / union if union else 0.0


def query_coverage(passage_words: list[str], query_words: list[str]) -> float:
    """Share of the passage's word tokens that are query words: near 1 for an echo."""
    if not passage_words:
        return 1.0
    vocabulary = set(query_words)
    return sum(w in vocabulary for w in passage_words) / len(passage_words)


def rejection_reason(
    passage: str,
    query: str,
    kept: Iterable[str],
    *,
    min_words: int,
    max_words: int,
    echo_threshold: float,
    duplicate_threshold: float,
) -> str | None:
    """Why ``passage`` (already cleaned) cannot be kept for ``query``, or None if it can.
    ``kept`` are the passages already kept for the same query."""
    tokens = words(passage)
    if not tokens:
        return "empty"
    if REFUSAL.search(passage):
        return "refusal"
    if _META.search(passage):
        return "meta-text"
    if len(_OUTLINE_ITEM.findall(passage)) >= OUTLINE_ITEMS:
        return "outline"
    if query_coverage(tokens, words(query)) >= echo_threshold:
        return "echo of the query"
    if len(tokens) < min_words:
        return "too short"
    if len(tokens) >= 12 and len(shingles(tokens)) < 0.5 * (len(tokens) - 2):
        return "repetitive"
    if len(tokens) > max_words:
        return "too long"
    own = shingles(tokens)
    if any(jaccard(own, shingles(words(other))) >= duplicate_threshold for other in kept):
        return "near-duplicate"
    return None


def accept_response(
    response: str,
    query: str,
    kept: Iterable[str],
    *,
    stopped_by_limit: bool,
    min_words: int,
    max_words: int,
    echo_threshold: float,
    duplicate_threshold: float,
) -> tuple[str, str | None]:
    """The passage made of ``response`` and the reason it is rejected (None: keep it).

    Reasoning blocks are removed first (:func:`strip_reasoning`); a response with nothing else
    is rejected with :func:`empty_reason`'s reason. A response cut by the token limit keeps its
    complete sentences; with none, it is rejected as ``truncated``."""
    empty = empty_reason(response, stopped_by_limit=stopped_by_limit)
    if empty is not None:
        return "", empty
    passage = clean_response(strip_reasoning(response)[0])
    if stopped_by_limit:
        passage = trim_to_sentence(passage)
        if not passage:
            return "", "truncated"
    reason = rejection_reason(
        passage,
        query,
        kept,
        min_words=min_words,
        max_words=max_words,
        echo_threshold=echo_threshold,
        duplicate_threshold=duplicate_threshold,
    )
    return passage, reason
