"""The floor every LLM job stands on: the backends (llama.cpp in process, OpenAI-compatible
servers, vLLM, transformers), the GGUF models synthrank knows, the scheduler that keeps a
backend's slots busy, the crash-safe journal store, and what the jobs share (:mod:`.jobs`).
The jobs above it live in :mod:`synthrank.generate`."""
