"""The one small interface every LLM engine implements: a list of chat requests in, one
completion per request out, in order.

A backend may run the list sequentially (llama.cpp in-process), concurrently (HTTP servers) or
as one batch (vLLM); callers hand it all the requests that are ready at once. A request that
fails comes back as a :class:`Completion` with ``error`` set, never as an exception, so one bad
call does not lose the others. Two kinds of failure: the engine could not answer (a server down
past all retries: the call is asked again by the next run), or it refused this request
(``refused``: a prompt beyond the context, a 4xx answer, an error body, a chat template error:
asking again will not help, so the call is settled as failed, with the engine's message).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from synthrank.errors import SettingError, SynthrankError


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
    refused: bool = False
    """With ``error``: the engine refused this request (asking again gives the same answer)."""

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
    """The engine: ``llama-cpp`` (in-process, CPU, ``synthrank[llama]``), ``openai`` (any
    OpenAI-compatible server: vLLM, SGLang, llama.cpp's server, a hosted API), ``transformers``
    (in-process, a GPU when there is one) or ``vllm`` (in-process, GPU machines)."""
    model: str = "qwen2.5-coder-0.5b"
    """The LLM: a packaged GGUF by name (``qwen2.5-coder-0.5b``, ``qwen2.5-coder-1.5b``,
    ``smollm2-135m``), a ``.gguf`` file, ``hf:OWNER/REPO/FILE.gguf``; for ``transformers`` and
    ``vllm`` also a model folder or Hugging Face name; for ``openai`` the name the server
    serves."""
    endpoints: tuple[str, ...] = ("http://127.0.0.1:8000/v1",)
    """openai: the servers' base URLs (``POST {endpoint}/chat/completions``); requests are spread
    over them round-robin and a failed try moves to the next."""
    concurrency: int = 4
    """openai: requests in flight per endpoint (>= 1)."""
    timeout_s: float = 120.0
    """Seconds one call may take (> 0): openai, the deadline of each try; llama-cpp and
    transformers stop decoding at it (the reply keeps its complete sentences)."""
    max_retries: int = 5
    """openai: tries after the first for a call that failed in a way that may heal (connection
    error, timeout, HTTP 408/409/425/429/5xx, a body that is not JSON); >= 0."""
    retry_backoff_s: float = 0.5
    """openai: seconds before the first retry, doubled at each further one (at most 60 s, with
    jitter; a ``Retry-After`` header wins); >= 0."""
    api_key_env: str = "OPENAI_API_KEY"
    """openai: the environment variable holding the API key, sent as ``Authorization: Bearer``
    (none when the variable is unset)."""
    threads: int | None = None
    """llama-cpp: CPU threads (>= 1); unset: the machine's cores, at most 8."""
    parallel: int = 8
    """llama-cpp: requests decoded together in one batch (1: one at a time through
    llama-cpp-python's chat API)."""
    context_length: int = 2048
    """llama-cpp and vllm: the model's context window in tokens (prompt and reply); a prompt
    beyond it is refused by the engine."""
    device: str | None = None
    """transformers: the torch device (``cpu``, ``cuda``, ``cuda:1``); unset: ``cuda`` when a
    GPU is there, else ``cpu``."""

    def validate(self) -> None:
        """Raise :class:`~synthrank.errors.SettingError` naming the first setting to fix."""
        for name in ("concurrency", "parallel", "context_length"):
            if getattr(self, name) < 1:
                raise SettingError(name, f"must be >= 1 (got {getattr(self, name)})")
        if self.max_retries < 0:
            raise SettingError("max_retries", f"must be >= 0 (got {self.max_retries})")
        if not self.timeout_s > 0:
            raise SettingError("timeout_s", f"must be positive (got {self.timeout_s})")
        if self.retry_backoff_s < 0:
            raise SettingError("retry_backoff_s", f"must be >= 0 (got {self.retry_backoff_s})")
        if self.threads is not None and self.threads < 1:
            raise SettingError("threads", f"must be >= 1 (got {self.threads})")
        if self.backend == "openai":
            for endpoint in self.endpoints:
                _check_endpoint(endpoint)


def _check_endpoint(endpoint: str) -> None:
    """:class:`SettingError` unless ``endpoint`` is a server's base URL (``http://`` or
    ``https://``, a host, no ``/chat/completions``, which is appended)."""
    from urllib.parse import urlsplit

    parts = urlsplit(endpoint)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise SettingError(
            "endpoints",
            f"{endpoint!r} is not an http:// or https:// URL: give the server's base URL, e.g. "
            "http://127.0.0.1:8000/v1",
        )
    if parts.path.rstrip("/").endswith("/chat/completions"):
        raise SettingError(
            "endpoints",
            f"{endpoint!r} ends in /chat/completions: give the server's base URL (e.g. "
            f"{endpoint[: endpoint.index('/chat/completions')]}); the path is appended",
        )


class Backend(Protocol):
    name: str

    def complete(self, requests: list[ChatRequest]) -> list[Completion]: ...

    def describe(self) -> dict[str, Any]:
        """What ``meta.json`` records about the engine and model (file hash included)."""
        ...

    def close(self) -> None: ...


class RefusalWatch:
    """Tells when a job's every call is refused by the engine: a template, a model name or a
    sampling parameter the server rejects hits every request, and its message is what the user
    needs, not a folder of empty lists. Counts the calls answered and refused; until one is
    answered, the caller holds its settled items back instead of committing them."""

    def __init__(self, patience: int = 8) -> None:
        self.patience = patience
        """Refused calls, with none answered, after which the job stops."""
        self.answered = 0
        self.refused = 0
        self.example: str | None = None

    def observe(self, completion: Completion) -> None:
        if completion.error is None:
            self.answered += 1
        elif completion.refused:
            self.refused += 1
            self.example = self.example or completion.error

    @property
    def waiting(self) -> bool:
        """Whether calls were refused and none answered yet: hold settled items back."""
        return self.answered == 0 and self.refused > 0

    def hopeless(self, *, finished: bool = False) -> bool:
        """Whether to stop: no call answered, and ``patience`` refused (or the job is
        ``finished`` with every call refused)."""
        return self.waiting and (finished or self.refused >= self.patience)

    def error(self) -> SynthrankError:
        """The error that stops the job, with the engine's message."""
        return SynthrankError(
            f"the engine refused all {self.refused} calls made so far, e.g. {self.example}; "
            "nothing was kept from them. Fix what it names (the model name, its chat template, "
            "a sampling parameter, the server's context length) and run the same command again"
        )
