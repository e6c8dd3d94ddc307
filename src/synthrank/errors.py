"""The one exception type a user can cause; the CLI prints it as a single line."""

from __future__ import annotations


class SynthrankError(Exception):
    """An error caused by input or configuration, with a message that says what to fix."""


class SettingError(SynthrankError):
    """A setting's value is wrong: ``key`` names the setting and ``problem`` says what is wrong
    with it, so that a config file's reader can point at file, table and key
    (``exp.toml, [[train]] #1 (ws2), key 'batch_size': must be a positive integer (got 0)``);
    on its own it reads ``batch_size must be a positive integer (got 0)``, after ``where`` (the
    config it is in) when given."""

    def __init__(self, key: str, problem: str, where: str | None = None) -> None:
        super().__init__(f"{where + ': ' if where else ''}{key} {problem}")
        self.key = key
        self.problem = problem
        self.where = where
