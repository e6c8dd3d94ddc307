"""synthrank: train dense retrievers on LLM-generated graded ranking data.

Stages live in sub-packages named after them: ``data`` (the BEIR on-disk format), ``evaluate``
(retrieval metrics on real benchmarks). The CLI in ``synthrank.cli`` is a thin layer over them.
"""

from __future__ import annotations

__version__ = "0.1.0"
