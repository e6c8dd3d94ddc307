"""What to generate: relevance levels, how each is written (its strategy), sampling, validation.

A generation config is plain data, loadable from TOML::

    docs_per_level = 1
    style = "a passage from a web page"
    target_words = 80

    [[levels]]
    grade = 3
    name = "perfectly relevant"
    definition = "answers the query completely and directly, with specific facts"
    strategy = "direct"

Strategies name a level's default prompt (:data:`synthrank.generate.prompts.TEMPLATES`):
``direct`` asks for a passage at the level's definition; ``related-question`` first asks the LLM
for a different query on the same broad topic, then for a passage that answers it;
``subject-background`` asks for an introduction to the query's subject (a planning call names
it) that does not address the query itself; ``broad-field`` for a passage on another topic of the
query's broad field; ``other-topic`` for a passage on a named topic drawn from ``topics``;
``other-query`` for a passage that answers another query of the same set. Small models cannot
write "related" or "irrelevant" on request: they echo the query. The other strategies turn those
levels into tasks a small model can do.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Collection
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from synthrank.config import from_mapping, read_toml
from synthrank.errors import SettingError, SynthrankError
from synthrank.generate.prompts import (
    PLAN_FIELDS,
    TEMPLATE_FIELDS,
    TEMPLATES,
    level_template,
    template_fields,
)

STRATEGIES = tuple(TEMPLATES)


class Fingerprinted:
    """For a config dataclass: its settings as a dict, and their digest."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def fingerprint(self) -> str:
        """A digest of every setting, so a resumed run can check it continues the same job."""
        text = json.dumps(self.to_dict(), sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:16]


def check_template(template: str, available: Collection[str], where: str) -> set[str]:
    """The fields ``template`` (a ``str.format`` string) uses; :class:`SynthrankError` naming
    ``where`` when it is malformed or uses a field not in ``available``."""
    try:
        used = template_fields(template)
    except ValueError as exc:
        raise SynthrankError(f"{where}: template is not a valid format string ({exc})") from exc
    unknown = sorted(used - set(available))
    if unknown:
        raise SynthrankError(
            f"{where}: template uses {{{unknown[0]}}}, which is not provided; available: "
            + ", ".join(f"{{{f}}}" for f in sorted(available))
        )
    return used


@dataclass(frozen=True)
class Level:
    """One relevance level: its grade in the qrels, how a passage at this level reads, and how
    the LLM is asked for it (``strategy``; ``template`` overrides the strategy's prompt)."""

    grade: int
    """The level's label in ``qrels`` (>= 0; distinct across levels): 3 perfectly relevant .. 0
    irrelevant on the TREC Deep Learning scale."""
    name: str
    """A short name for reports and ``inspect`` ("perfectly relevant")."""
    definition: str
    """How a passage at this level relates to the query, as ``{definition}`` in the prompt
    ("answers the query completely and directly, with specific facts")."""
    strategy: str = "direct"
    """How the passage is asked for: ``direct``, ``related-question``, ``subject-background``,
    ``broad-field``, ``other-topic``, ``same-subject-question`` or ``other-query`` (see the
    module docstring); each names a default prompt."""
    template: str | None = None
    """A ``str.format`` prompt replacing the strategy's, with any of ``{query}``,
    ``{definition}``, ``{style}``, ``{words}``, ``{topic}``, ``{other_query}`` and the planning
    answers ``{related_question}``, ``{subject_question}``, ``{subject}``, ``{field}`` (each
    planning answer a field needs is one more call); unset: the strategy's prompt."""

    def validate(self, where: str) -> None:
        if self.grade < 0:
            raise SettingError("grade", f"must be >= 0 (got {self.grade})", where)
        if self.strategy not in STRATEGIES:
            raise SettingError(
                "strategy",
                f"{self.strategy!r} is unknown; choose one of {', '.join(STRATEGIES)}",
                where,
            )
        check_template(level_template(self.strategy, self.template), TEMPLATE_FIELDS, where)

    def plan_fields(self) -> set[str]:
        """The planning answers this level's prompt needs."""
        return template_fields(level_template(self.strategy, self.template)) & PLAN_FIELDS.keys()


_ANSWERS = "answers the query completely and directly, with specific facts"

LEVEL_PRESETS: dict[str, tuple[Level, ...]] = {
    # Two short planning calls name the query's subject and its broad field; level 2 introduces
    # the subject without addressing the query, level 1 covers another topic of the same field,
    # level 0 a named unrelated topic. The best of the presets with Qwen2.5-Coder-0.5B on SciFact.
    "planned": (
        Level(3, "perfectly relevant", _ANSWERS),
        Level(
            2,
            "highly relevant",
            "introduces the query's subject without addressing the query itself",
            strategy="subject-background",
        ),
        Level(
            1, "related", "covers another topic of the query's broad field", strategy="broad-field"
        ),
        Level(0, "irrelevant", "is about an unrelated, named topic", strategy="other-topic"),
    ),
    # Level 1 answers a related question (a planning call writes it), level 0 a named other topic.
    "related": (
        Level(3, "perfectly relevant", _ANSWERS),
        Level(
            2,
            "highly relevant",
            "is about the query's subject and answers it only partly: it gives background and "
            "leaves out the direct answer",
        ),
        Level(
            1,
            "related",
            "is on the same broad topic as the query but answers a different question",
            strategy="related-question",
        ),
        Level(0, "irrelevant", "is about an unrelated topic", strategy="other-topic"),
    ),
    # Passages a student is likely to misorder, at grades that stay right: level 2 on the query's
    # own subject and terms in another population, outcome or condition; level 1 another question
    # about the same entities; level 0 another subject of the same field.
    "hard": (
        Level(3, "perfectly relevant", _ANSWERS),
        Level(
            2,
            "highly relevant",
            "reports a study on the query's exact subject, using its key terms, but in a "
            "different population, outcome or condition, so it supports only part of the query",
        ),
        Level(
            1,
            "related",
            "answers another question about the same entities",
            strategy="same-subject-question",
        ),
        Level(
            0,
            "irrelevant",
            "covers another topic of the query's broad field",
            strategy="broad-field",
        ),
    ),
    # One prompt per level, each level's definition straight into it: the naive baseline (small
    # models write near-paraphrases of the query at levels 3, 2 and 1).
    "baseline": (
        Level(3, "perfectly relevant", _ANSWERS),
        Level(2, "highly relevant", "is about the query's subject and answers it only partly"),
        Level(1, "related", "is on the same broad topic as the query but does not answer it"),
        Level(0, "irrelevant", "is about a topic unrelated to the query"),
    ),
}
"""Named level sets on the TREC Deep Learning scale (3 perfectly relevant .. 0 irrelevant):
``levels = "planned"`` in a config, ``--levels planned`` on the command line. A preset is
fingerprinted as the levels it expands to, so a config naming it and one spelling its
``[[levels]]`` out are the same job."""

DEFAULT_LEVELS = LEVEL_PRESETS["planned"]
"""The levels a config that names none generates."""


def level_preset(name: str, where: str) -> tuple[Level, ...]:
    """The levels of preset ``name``; :class:`SynthrankError` naming ``where`` and the presets
    when there is no such preset."""
    if name not in LEVEL_PRESETS:
        raise SynthrankError(
            f"{where}: levels: no preset named {name!r}; presets: "
            + ", ".join(LEVEL_PRESETS)
            + " (or give [[levels]] tables)"
        )
    return LEVEL_PRESETS[name]


DEFAULT_TOPICS = (
    "the history of the Byzantine Empire",
    "how to care for a sourdough starter",
    "the rules of cricket",
    "the life cycle of monarch butterflies",
    "maintaining a bicycle chain",
    "the architecture of Gothic cathedrals",
    "how volcanoes form",
    "the history of jazz in New Orleans",
    "growing tomatoes on a balcony",
    "the migration of Arctic terns",
    "how a sailboat tacks against the wind",
    "the invention of the printing press",
    "training for a first marathon",
    "the geology of the Grand Canyon",
    "brewing green tea",
    "the rules of chess openings",
    "the history of the Silk Road",
    "how honeybees communicate",
    "restoring antique furniture",
    "the orbit of Halley's comet",
    "knitting a wool scarf",
    "the economy of medieval Venice",
    "caring for a pet rabbit",
    "the construction of the Panama Canal",
    "how glaciers carve valleys",
    "the plot of Shakespeare's Macbeth",
    "photographing the night sky",
    "the history of the Olympic Games",
    "how coral reefs grow",
    "tuning a classical guitar",
)
"""Topics for the ``other-topic`` strategy: concrete, varied, and far from most search needs."""


def check_shared_settings(
    config: Any, where: str, *, counts: tuple[str, ...], thresholds: tuple[str, ...]
) -> None:
    """Check the settings every generation config has (``min_words``, ``max_words``,
    ``max_tokens``, ``temperature``, ``top_p``, ``max_attempts``) and the config's own
    ``counts`` (each >= 1, checked first) and ``thresholds`` (each in (0, 1], checked last);
    raise :class:`~synthrank.errors.SettingError` naming ``where`` and the first setting to
    fix."""
    for name in (*counts, "min_words", "max_tokens", "max_attempts"):
        if getattr(config, name) < 1:
            raise SettingError(name, f"must be >= 1 (got {getattr(config, name)})", where)
    if config.max_words < config.min_words:
        raise SettingError(
            "max_words", f"({config.max_words}) is below min_words ({config.min_words})", where
        )
    if config.temperature < 0:
        raise SettingError("temperature", f"must be >= 0 (got {config.temperature})", where)
    if not 0 < config.top_p <= 1:
        raise SettingError("top_p", f"must be in (0, 1] (got {config.top_p})", where)
    for name in thresholds:
        if not 0 < getattr(config, name) <= 1:
            raise SettingError(name, f"must be in (0, 1] (got {getattr(config, name)})", where)


@dataclass(frozen=True)
class GenerationConfig(Fingerprinted):
    """Everything that decides what the LLM is asked and what is kept.

    ``docs_per_level`` passages per level per query, about ``target_words`` words each, in the
    ``style`` named (e.g. "a passage from a web page", "a scientific abstract"). A response is
    kept when it has ``min_words``..``max_words`` words, is not an echo of the query, not a
    refusal or meta-text, and not a near-duplicate (word 3-gram Jaccard >= ``duplicate_threshold``)
    of a passage already kept for the query; otherwise it is retried with a new seed, up to
    ``max_attempts`` calls per passage.
    """

    levels: tuple[Level, ...] = DEFAULT_LEVELS
    """The relevance levels each query gets passages at: a preset name (``planned``,
    ``related``, ``hard``, ``baseline``; see :data:`LEVEL_PRESETS`), or one ``[[levels]]`` table
    per level. A preset and its levels spelled out are the same job."""
    docs_per_level: int = 1
    """Passages per level per query (>= 1), each its own call."""
    style: str = "a passage from a web page"
    """What kind of text to write, as ``{style}`` in the prompt ("a scientific abstract")."""
    target_words: int = 80
    """The length asked for, in words, as ``{words}`` in the prompt (>= 1)."""
    min_words: int = 20
    """A reply with fewer words is rejected as too short and asked again (>= 1)."""
    max_words: int = 220
    """A reply with more words is rejected as too long and asked again (>= ``min_words``)."""
    max_tokens: int = 220
    """Tokens the LLM may write per passage call (>= 1); a reply cut at this limit keeps its
    complete sentences."""
    temperature: float = 0.7
    """Sampling temperature (>= 0; 0: greedy)."""
    top_p: float = 0.9
    """Nucleus sampling: the smallest set of tokens whose probability reaches this share, in
    (0, 1]."""
    seed: int = 0
    """Base of every call's sampling seed (a hash of it, the query, the level, the passage and
    the attempt), and of the topics and other queries drawn: the same seed, the same
    passages."""
    max_attempts: int = 3
    """Calls per passage (>= 1): a rejected reply is asked again with a new seed until this
    many calls, then the passage is recorded as failed with its reason."""
    duplicate_threshold: float = 0.6
    """A reply whose word 3-gram Jaccard similarity to a passage already kept for the query
    reaches this, in (0, 1], is a near-duplicate and asked again."""
    echo_threshold: float = 0.8
    """A reply whose words are query words at this share or more, in (0, 1], is an echo of the
    query and asked again."""
    system_prompt: str = (
        "You write passages for a search engine test collection. You write only the passage "
        "itself: no title, no introduction, no comments."
    )
    """The system turn of every call ("" sends none)."""
    topics: tuple[str, ...] = field(default=DEFAULT_TOPICS)
    """Unrelated topics the ``other-topic`` strategy (``{topic}``) draws from, one per call;
    must not be empty when a level uses ``{topic}``."""

    def validate(self, where: str = "generation config") -> None:
        """Raise :class:`SynthrankError` naming ``where`` (the file and table) and the setting
        to fix."""
        if not self.levels:
            raise SynthrankError(f"{where}: give at least one level")
        grades = [level.grade for level in self.levels]
        if len(set(grades)) != len(grades):
            raise SynthrankError(f"{where}: levels repeat a grade ({grades})")
        for i, level in enumerate(self.levels):
            level.validate(f"{where}, levels[{i}] (grade {level.grade})")
        check_shared_settings(
            self,
            where,
            counts=("docs_per_level", "target_words"),
            thresholds=("duplicate_threshold", "echo_threshold"),
        )
        uses_topics = any(
            "topic" in template_fields(level_template(level.strategy, level.template))
            for level in self.levels
        )
        if uses_topics and not self.topics:
            raise SynthrankError(f"{where}: {{topic}} in a prompt needs a topics list")

    def level(self, grade: int) -> Level:
        return next(level for level in self.levels if level.grade == grade)


def config_from_dict(values: dict[str, Any], where: str) -> GenerationConfig:
    """A :class:`GenerationConfig` from a TOML table: ``[[levels]]`` entries become levels, and
    ``levels = "NAME"`` takes the preset of that name (:data:`LEVEL_PRESETS`)."""
    values = dict(values)
    nested: dict[str, Any] = {}
    if isinstance(values.get("levels"), str):
        nested["levels"] = level_preset(values.pop("levels"), where)
    elif "levels" in values:
        raw_levels = values.pop("levels")
        if not isinstance(raw_levels, list) or not all(isinstance(v, dict) for v in raw_levels):
            raise SynthrankError(
                f"{where}: levels must be a preset name ("
                + ", ".join(LEVEL_PRESETS)
                + ") or an array of tables ([[levels]])"
            )
        nested["levels"] = tuple(
            from_mapping(Level, raw, f"{where}, levels[{i}]") for i, raw in enumerate(raw_levels)
        )
    config = from_mapping(GenerationConfig, values, where, nested=nested)
    config.validate(where)
    return config


def load_config(path: str | Path | None, table: str | None = None) -> GenerationConfig:
    """The generation config in TOML file ``path`` (its ``[table]`` when given), or defaults."""
    if path is None:
        return GenerationConfig()
    values = read_toml(path)
    where = str(path)
    if table is not None:
        values = values.get(table, {})
        where = f"{path}, [{table}]"
    return config_from_dict(values, where)
