"""llama.cpp in-process (``llama-cpp-python``): the embedded default, no server, no GPU needed."""

from __future__ import annotations

import os
import time
from typing import Any

from synthrank.errors import SynthrankError
from synthrank.generate.backends.base import BackendSpec, ChatRequest, Completion
from synthrank.generate.models import resolve_gguf


class LlamaCppBackend:
    """Runs requests one after another on a GGUF model; each call stops at ``max_tokens`` or
    ``timeout_s`` seconds, whichever comes first (``finish_reason`` ``length`` or ``time``;
    a timed-out response keeps its complete sentences)."""

    name = "llama-cpp"

    def __init__(self, spec: BackendSpec) -> None:
        try:
            from llama_cpp import Llama
        except ImportError as exc:
            raise SynthrankError(
                "backend llama-cpp needs llama-cpp-python: pip install 'synthrank[llama]'"
            ) from exc
        self.model = resolve_gguf(spec.model)
        self.timeout_s = spec.timeout_s
        self.threads = spec.threads or max(1, min(os.cpu_count() or 1, 8))
        self.llm = Llama(
            model_path=str(self.model.path),
            n_ctx=spec.context_length,
            n_threads=self.threads,
            verbose=False,
        )
        self.eos_token = self.llm.token_eos()

    def complete(self, requests: list[ChatRequest]) -> list[Completion]:
        return [self._complete_one(request) for request in requests]

    def _complete_one(self, request: ChatRequest) -> Completion:
        start = time.perf_counter()
        deadline = start + self.timeout_s
        timed_out = False

        def end_at_deadline(_tokens: Any, scores: Any) -> Any:
            # The chat API has no stopping criteria: past the deadline, force end-of-sequence.
            nonlocal timed_out
            if time.perf_counter() > deadline:
                timed_out = True
                scores[:] = -float("inf")
                scores[self.eos_token] = 0.0
            return scores

        try:
            response = self.llm.create_chat_completion(
                messages=request.message_dicts(),
                logits_processor=[end_at_deadline],
                **request.sampling(),
            )
        except (RuntimeError, ValueError) as exc:
            return Completion("", "error", latency_s=time.perf_counter() - start, error=str(exc))
        choice = response["choices"][0]
        usage = response.get("usage") or {}
        return Completion(
            text=choice["message"].get("content") or "",
            finish_reason="time" if timed_out else (choice.get("finish_reason") or "stop"),
            prompt_tokens=int(usage.get("prompt_tokens", 0)),
            completion_tokens=int(usage.get("completion_tokens", 0)),
            latency_s=time.perf_counter() - start,
        )

    def describe(self) -> dict[str, Any]:
        return {
            "backend": self.name,
            "model": self.model.name,
            "model_file": str(self.model.path),
            "model_sha256": self.model.sha256,
            "model_source": self.model.source,
            "threads": self.threads,
        }

    def close(self) -> None:
        self.llm.close()
