"""Prompts for each level strategy, and the parsing of the planning call's answer.

Templates are ``str.format`` strings; the placeholders each strategy fills are listed in
:data:`synthrank.generate.config.STRATEGY_FIELDS`. Prompts ask for plain text (no JSON): small
models stop mid-JSON or invent keys, and constrained decoding can take minutes per call.
"""

from __future__ import annotations

import re
import zlib

from synthrank.generate.config import GenerationConfig, Level

TEMPLATES: dict[str, str] = {
    "direct": ("Search query: {query}\n\nWrite {style} of about {words} words that {definition}."),
    "related-question": (
        "Search query: {related_question}\n\n"
        "Write {style} of about {words} words that answers this query completely and directly."
    ),
    "other-topic": "Write {style} of about {words} words about {topic}.",
    "other-query": (
        "Search query: {other_query}\n\n"
        "Write {style} of about {words} words that answers this query completely and directly."
    ),
}
"""The default prompt of each strategy; a level's ``template`` replaces it."""

RELATED_QUESTION_PROMPT = (
    "Search query: {query}\n\n"
    "Write one different search query about the same broad topic, whose answer is different "
    "from the answer to this query. Write only the new query, on one line."
)
"""The planning call of the ``related-question`` strategy."""

_LABEL = re.compile(r"^\s*(?:new\s+)?(?:search\s+)?(?:query|question)\s*[:\-]\s*", re.IGNORECASE)


def stable_hash(*parts: object) -> int:
    """A deterministic non-negative 31-bit hash of ``parts`` (Python's ``hash`` is salted)."""
    return zlib.crc32("\x1f".join(str(p) for p in parts).encode()) & 0x7FFFFFFF


def pick(options: tuple[str, ...] | list[str], *key: object) -> str:
    """A deterministic choice from ``options`` keyed by ``key``."""
    return options[stable_hash(*key) % len(options)]


def passage_prompt(config: GenerationConfig, level: Level, **fields: str) -> str:
    """The user message asking for one passage at ``level``; ``fields`` are the strategy's
    inputs (``query`` always; ``topic``, ``other_query`` or ``related_question``)."""
    template = level.template or TEMPLATES[level.strategy]
    return template.format(
        definition=level.definition,
        style=config.style,
        words=config.target_words,
        **fields,
    )


def related_question_prompt(query: str) -> str:
    return RELATED_QUESTION_PROMPT.format(query=query)


def parse_question(response: str) -> str:
    """The query in a planning answer: its first non-empty line, without a "Query:" label,
    list marker or quotes."""
    for line in response.splitlines():
        line = _LABEL.sub("", line.strip()).strip()
        line = line.lstrip("-*0123456789. ").strip().strip("\"'`").strip()
        if line:
            return line
    return ""
