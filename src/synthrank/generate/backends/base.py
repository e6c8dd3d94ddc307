"""The one small interface every LLM engine implements: a list of chat requests in, one
completion per request out, in order.

A backend may run the list sequentially (llama.cpp in-process), concurrently (HTTP servers) or
as one batch (vLLM); callers hand it all the requests that are ready at once. A request that
fails for good (after the backend's own retries) comes back as a :class:`Completion` with
``error`` set, never as an exception, so one bad call does not lose the others.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol


@dataclass(frozen=True)
class ChatRequest:
    messages: tuple[tuple[str, str], ...]
    """(role, content) pairs."""
    max_tokens: int
    temperature: float
    top_p: float
    seed: int
    stop: tuple[str, ...] = ()

    def message_dicts(self) -> list[dict[str, str]]:
        return [{"role": role, "content": content} for role, content in self.messages]

    def sampling(self) -> dict[str, Any]:
        return {
            "max_tokens": self.max_tokens,
            "temperature": self.temperature,
            "top_p": self.top_p,
            "seed": self.seed,
            "stop": list(self.stop),
        }


@dataclass(frozen=True)
class Completion:
    text: str
    finish_reason: str
    """``stop`` (the model ended), ``length`` (token limit), ``time`` (time limit) or ``error``."""
    prompt_tokens: int = 0
    completion_tokens: int = 0
    latency_s: float = 0.0
    error: str | None = None
    tries: int = 1
    """Transport attempts the backend made (HTTP retries); 1 for in-process engines."""
    endpoint: str | None = None

    @property
    def stopped_by_limit(self) -> bool:
        """Whether the token or time limit stopped the reply (it may be cut short)."""
        return self.finish_reason in ("length", "time")


@dataclass(frozen=True)
class BackendSpec:
    """Which engine and model, and how to drive it. Engine-specific keys are ignored by the
    others (``endpoints`` only matters for ``openai``; ``threads``, ``parallel`` for
    ``llama-cpp``)."""

    backend: str = "llama-cpp"
    model: str = "smollm2-135m"
    endpoints: tuple[str, ...] = ("http://127.0.0.1:8000/v1",)
    concurrency: int = 4
    timeout_s: float = 120.0
    max_retries: int = 5
    retry_backoff_s: float = 0.5
    api_key_env: str = "OPENAI_API_KEY"
    threads: int | None = None
    parallel: int = 8
    """llama-cpp: requests decoded together in one batch (1: one at a time through
    llama-cpp-python's chat API)."""
    context_length: int = 2048
    device: str | None = None


class Backend(Protocol):
    name: str

    def complete(self, requests: list[ChatRequest]) -> list[Completion]: ...

    def describe(self) -> dict[str, Any]:
        """What ``meta.json`` records about the engine and model (file hash included)."""
        ...

    def close(self) -> None: ...
