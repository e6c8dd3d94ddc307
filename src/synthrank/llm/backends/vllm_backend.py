"""vLLM in-process (GPU machines): every ready request goes to ``LLM.chat`` as one batch, which
vLLM schedules with continuous batching. Written against vLLM's documented API
(``LLM(model=...)``, ``LLM.chat(conversations, sampling_params)``, ``SamplingParams``); not run
here, since this machine has no GPU."""

from __future__ import annotations

import time
from typing import Any

from jinja2 import TemplateError

from synthrank.errors import SynthrankError
from synthrank.llm.backends.base import BackendSpec, ChatRequest, Completion
from synthrank.llm.models import GGUF_MODELS, resolve_gguf


class VLLMBackend:
    name = "vllm"

    def __init__(self, spec: BackendSpec) -> None:
        try:
            from vllm import LLM, SamplingParams
        except ImportError as exc:
            raise SynthrankError(
                "backend vllm needs vllm (GPU machines): pip install vllm"
            ) from exc
        self.spec = spec
        self._sampling_params = SamplingParams
        self.sha256 = None
        model = spec.model
        if model in GGUF_MODELS:
            resolved = resolve_gguf(model)
            model, self.sha256 = str(resolved.path), resolved.sha256
        self.llm = LLM(model=model, max_model_len=spec.context_length)

    def complete(self, requests: list[ChatRequest]) -> list[Completion]:
        if not requests:
            return []
        params = [
            self._sampling_params(
                max_tokens=r.max_tokens,
                temperature=r.temperature,
                top_p=r.top_p,
                seed=r.seed,
                stop=list(r.stop) or None,
            )
            for r in requests
        ]
        start = time.perf_counter()
        try:
            outputs = self.llm.chat(
                [r.message_dicts() for r in requests], sampling_params=params, use_tqdm=False
            )
        except TemplateError as exc:
            error = f"chat template error: {exc}"
            return [Completion("", "error", error=error, refused=True) for _ in requests]
        latency = (time.perf_counter() - start) / len(requests)
        completions = []
        for output in outputs:
            best = output.outputs[0]
            completions.append(
                Completion(
                    text=best.text,
                    finish_reason=best.finish_reason or "stop",
                    prompt_tokens=len(output.prompt_token_ids or []),
                    completion_tokens=len(best.token_ids),
                    latency_s=latency,
                )
            )
        return completions

    def describe(self) -> dict[str, Any]:
        return {"backend": self.name, "model": self.spec.model, "model_sha256": self.sha256}

    def close(self) -> None:
        del self.llm
