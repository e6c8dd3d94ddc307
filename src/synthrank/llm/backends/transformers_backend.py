"""Hugging Face transformers in-process: a local model folder, a hub name (online), or a GGUF
file (dequantised through ``gguf_file=``). Uses a GPU when there is one. Slower than llama.cpp on
CPUs (about 5x here); the choice when llama-cpp-python cannot be built."""

from __future__ import annotations

import time
from typing import Any

from jinja2 import TemplateError

from synthrank.errors import SynthrankError
from synthrank.llm.backends.base import BackendSpec, ChatRequest, Completion
from synthrank.llm.models import GGUF_MODELS, resolve_gguf


def _location(spec: str) -> tuple[str, str | None, str | None]:
    """(folder or hub name, GGUF file name or None, sha256 of the GGUF file or None)."""
    if spec in GGUF_MODELS or spec.endswith(".gguf"):
        resolved = resolve_gguf(spec)
        return str(resolved.path.parent), resolved.path.name, resolved.sha256
    return spec, None, None


class TransformersBackend:
    name = "transformers"

    def __init__(self, spec: BackendSpec) -> None:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.spec = spec
        self.location, self.gguf_file, self.sha256 = _location(spec.model)
        kwargs = {"gguf_file": self.gguf_file} if self.gguf_file else {}
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(self.location, **kwargs)
            self.model = AutoModelForCausalLM.from_pretrained(self.location, **kwargs)
        except (OSError, ValueError, ImportError) as exc:
            first_line = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise SynthrankError(
                f"backend transformers: cannot load {spec.model} ({first_line})"
            ) from exc
        self.device = spec.device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.model.to(self.device).eval()
        self._torch = torch

    def complete(self, requests: list[ChatRequest]) -> list[Completion]:
        return [self._complete_one(request) for request in requests]

    def _complete_one(self, request: ChatRequest) -> Completion:
        start = time.perf_counter()
        try:
            inputs = self.tokenizer.apply_chat_template(
                request.message_dicts(),
                add_generation_prompt=True,
                return_tensors="pt",
                return_dict=True,
            ).to(self.device)
        except TemplateError as exc:
            return Completion("", "error", error=f"chat template error: {exc}", refused=True)
        prompt_length = inputs["input_ids"].shape[1]
        self._torch.manual_seed(request.seed)
        sampling: dict[str, Any] = (
            {"do_sample": True, "temperature": request.temperature, "top_p": request.top_p}
            if request.temperature > 0
            else {"do_sample": False}
        )
        if request.stop:
            sampling.update(stop_strings=list(request.stop), tokenizer=self.tokenizer)
        with self._torch.inference_mode():
            output = self.model.generate(
                **inputs,
                max_new_tokens=request.max_tokens,
                max_time=self.spec.timeout_s,
                pad_token_id=self.tokenizer.pad_token_id or self.tokenizer.eos_token_id,
                **sampling,
            )
        new_tokens = output[0, prompt_length:]
        latency = time.perf_counter() - start
        if len(new_tokens) >= request.max_tokens:
            finish = "length"
        elif latency >= self.spec.timeout_s:
            finish = "time"
        else:
            finish = "stop"
        return Completion(
            text=self.tokenizer.decode(new_tokens, skip_special_tokens=True),
            finish_reason=finish,
            prompt_tokens=int(prompt_length),
            completion_tokens=len(new_tokens),
            latency_s=latency,
        )

    def describe(self) -> dict[str, Any]:
        return {
            "backend": self.name,
            "model": self.spec.model,
            "model_location": self.location,
            "gguf_file": self.gguf_file,
            "model_sha256": self.sha256,
            "device": self.device,
        }

    def close(self) -> None:
        del self.model
