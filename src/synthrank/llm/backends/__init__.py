"""LLM engines behind one interface; :func:`make_backend` picks one by name."""

from __future__ import annotations

from synthrank.errors import SynthrankError
from synthrank.llm.backends.base import (
    Backend,
    BackendSpec,
    ChatRequest,
    Completion,
    RefusalWatch,
)

BACKENDS = ("llama-cpp", "openai", "transformers", "vllm")


def make_backend(spec: BackendSpec) -> Backend:
    """The engine named by ``spec.backend``, loaded and ready."""
    spec.validate()
    if spec.backend == "llama-cpp":
        from synthrank.llm.backends.llama_cpp import LlamaCppBackend

        return LlamaCppBackend(spec)
    if spec.backend == "openai":
        from synthrank.llm.backends.openai_http import OpenAIBackend

        return OpenAIBackend(spec)
    if spec.backend == "transformers":
        from synthrank.llm.backends.transformers_backend import TransformersBackend

        return TransformersBackend(spec)
    if spec.backend == "vllm":
        from synthrank.llm.backends.vllm_backend import VLLMBackend

        return VLLMBackend(spec)
    raise SynthrankError(f"unknown backend {spec.backend!r}; choose one of {', '.join(BACKENDS)}")


__all__ = [
    "BACKENDS",
    "Backend",
    "BackendSpec",
    "ChatRequest",
    "Completion",
    "RefusalWatch",
    "make_backend",
]
