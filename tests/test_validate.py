"""The junk kinds small generators write, each rejected with its reason (pure functions)."""

from __future__ import annotations

import pytest

from synthrank.generate.validate import accept_response

CHECKS = {"min_words": 5, "max_words": 120, "echo_threshold": 0.8, "duplicate_threshold": 0.6}
QUERY = "0-dimensional biomaterials lack inductive properties"


def _reason(text: str) -> str | None:
    return accept_response(text, QUERY, [], stopped_by_limit=False, **CHECKS)[1]


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        # Seen from SmolLM2 in the demo's run: instructions echoed back as the "abstract".
        (
            "The document must contain a summary of the scientific abstract, including the "
            "following key points: the material, its structure and its uses in medicine.",
            "meta-text",
        ),
        # A numbered outline instead of prose.
        (
            "1.1.1. Science: The article is a science article. 1.1.2. Language: The article is "
            "in English. 1.1.3. Length: The article is short and clear for every reader.",
            "outline",
        ),
        (
            "Biomaterials have several features: 1. Strength: they bear loads. 2. Safety: they "
            "are inert in tissue. 3. Cost: they are cheap to make in large amounts.",
            "outline",
        ),
        # Text about the question or the task instead of a passage.
        (
            "The answer to the question about biomaterials is complex and depends on many "
            "factors that researchers still debate today in the field.",
            "meta-text",
        ),
        (
            "The sentence is about the topic of biomaterials but does not provide direct "
            "answers to the user's query about their inductive properties.",
            "meta-text",
        ),
    ],
)
def test_junk_kinds_are_rejected_with_their_reason(text, reason):
    assert _reason(text) == reason


def test_an_abstract_with_numbers_and_a_label_is_kept():
    text = (
        "Abstract: We implanted 0-dimensional hydroxyapatite particles in 12 rabbits. After 8 "
        "weeks, 3 of 12 implants showed new bone (25%), against 9 of 12 for porous scaffolds "
        "(p = 0.04). Particle size, not chemistry, limited osteoinduction in this model."
    )
    passage, reason = accept_response(text, QUERY, [], stopped_by_limit=False, **CHECKS)
    assert reason is None and passage.startswith("We implanted")
