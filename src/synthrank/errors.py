"""The one exception type a user can cause; the CLI prints it as a single line."""

from __future__ import annotations


class SynthrankError(Exception):
    """An error caused by input or configuration, with a message that says what to fix."""
