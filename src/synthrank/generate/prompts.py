"""Prompts for each level strategy, the planning calls some strategies need, and their parsing.

A level's prompt is a ``str.format`` template. It may use ``{query}``, ``{definition}``,
``{style}``, ``{words}``, ``{topic}`` (a named topic drawn from the config's list),
``{other_query}`` (another query of the set), and plan fields: ``{related_question}`` (another
question on the same broad topic), ``{subject_question}`` (another question about the same
entities), ``{subject}``, ``{field}``. A plan field is one short planning call per query (a one-line
answer), made before the passages that need it; only fields some level uses are asked for.
Prompts ask for plain text: small models stop mid-JSON or invent keys, and constrained decoding
can take minutes per call.
"""

from __future__ import annotations

import re
import string
import zlib
from dataclasses import dataclass

from synthrank.generate.validate import query_coverage, strip_reasoning, words

TEMPLATES: dict[str, str] = {
    "direct": ("Search query: {query}\n\nWrite {style} of about {words} words that {definition}."),
    "related-question": (
        "Search query: {related_question}\n\n"
        "Write {style} of about {words} words that answers this query completely and directly."
    ),
    "subject-background": (
        "Write {style} of about {words} words that introduces {subject} in general terms: what "
        "it is, how it was discovered or developed, and its main features."
    ),
    "broad-field": ("Write {style} of about {words} words about a well-known topic in {field}."),
    "other-topic": "Write {style} of about {words} words about {topic}.",
    "same-subject-question": (
        "Search query: {subject_question}\n\n"
        "Write {style} of about {words} words that answers this query completely and directly."
    ),
    "other-query": (
        "Search query: {other_query}\n\n"
        "Write {style} of about {words} words that answers this query completely and directly."
    ),
}
"""The default prompt of each strategy; a level's ``template`` replaces it."""


@dataclass(frozen=True)
class PlanField:
    prompt: str
    max_words: int


PLAN_FIELDS: dict[str, PlanField] = {
    "related_question": PlanField(
        "Search query: {query}\n\n"
        "Write one different search query about the same broad topic, whose answer is "
        "different from the answer to this query. Write only the new query, on one line.",
        30,
    ),
    "subject_question": PlanField(
        "Search query: {query}\n\n"
        "Write one different search query about the same entities as this query (the same "
        "subject, named the same way) that asks a different question, so that its answer does "
        "not answer this query. Write only the new query, on one line.",
        30,
    ),
    "subject": PlanField(
        "Search query: {query}\n\n"
        "What is the main subject of this search query? Answer with a short noun phrase of 1 to "
        "6 words, nothing else.",
        8,
    ),
    "field": PlanField(
        "Search query: {query}\n\n"
        "Name the broad field of knowledge this search query belongs to, in 2 to 5 words. "
        "Answer with the name of the field only.",
        8,
    ),
}
"""Planning calls: the prompt and the longest answer (in words) that is accepted."""

BASE_FIELDS = frozenset({"query", "definition", "style", "words", "topic", "other_query"})
TEMPLATE_FIELDS = BASE_FIELDS | PLAN_FIELDS.keys()

_LABEL = re.compile(
    r"^\s*(?:new\s+|main\s+|broad\s+)?(?:search\s+)?(?:query|question|subject|field|answer)\s*"
    r"[:\-]\s*",
    re.IGNORECASE,
)


def template_fields(template: str) -> set[str]:
    """The placeholders ``template`` uses (ValueError for a malformed template)."""
    return {name for _, name, _, _ in string.Formatter().parse(template) if name}


def level_template(strategy: str, template: str | None) -> str:
    return template or TEMPLATES[strategy]


def stable_hash(*parts: object) -> int:
    """A deterministic non-negative 31-bit hash of ``parts`` (Python's ``hash`` is salted)."""
    return zlib.crc32("\x1f".join(str(p) for p in parts).encode()) & 0x7FFFFFFF


def pick(options: tuple[str, ...] | list[str], *key: object) -> str:
    """A deterministic choice from ``options`` keyed by ``key``."""
    return options[stable_hash(*key) % len(options)]


def parse_plan_answer(response: str) -> str:
    """The answer in a planning response: its first non-empty line, without a label such as
    "Query:", a list marker, quotes or a trailing full stop; a reasoning block is skipped."""
    for line in strip_reasoning(response)[0].splitlines():
        line = _LABEL.sub("", line.strip()).strip()
        line = line.lstrip("-*0123456789. ").strip().strip("\"'`*").strip()
        line = line.removesuffix(".").strip()
        if line:
            return line
    return ""


def plan_rejection(field: str, answer: str, query: str) -> str | None:
    """Why a planning answer cannot be used, or None."""
    tokens = words(answer)
    if not tokens:
        return "empty"
    if len(tokens) > PLAN_FIELDS[field].max_words:
        return "too long"
    text = " ".join(tokens)
    if "query" in tokens or "search engine" in text or "test collection" in text:
        return "meta-text"
    if (
        field in ("related_question", "subject_question")
        and query_coverage(tokens, words(query)) == 1.0
    ):
        return "echo of the query"
    return None
