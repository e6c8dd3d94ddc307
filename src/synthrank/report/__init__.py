"""The report of an experiment: a markdown summary and a self-contained HTML page."""

from __future__ import annotations

from synthrank.report.build import build_report, collect

__all__ = ["build_report", "collect"]
