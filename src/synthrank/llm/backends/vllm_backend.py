"""vLLM in-process (GPU machines), fed as a stream: each call goes into vLLM's engine the moment
the scheduler has it (``LLMEngine.add_request``) and ``LLMEngine.step`` runs until one finishes,
so the engine's own continuous batching sees every call in flight, and a finished call's place
is taken at the next step instead of when the slowest call of a list is done. The scheduler keeps
twice the engine's ``max_num_seqs`` in flight: the engine always has calls waiting.

Written against vLLM's documented API (``LLM(model=...)``, ``LLM.llm_engine`` with
``add_request(request_id, prompt, params)``, ``step()`` returning ``RequestOutput`` objects with
``finished``, ``abort_request``; ``LLM.get_tokenizer().apply_chat_template``; ``SamplingParams``);
tested here against a stand-in engine with that interface, not run, since this machine has no
GPU."""

from __future__ import annotations

import time
from typing import Any

from jinja2 import TemplateError

from synthrank.errors import SynthrankError
from synthrank.llm.backends.base import BackendSpec, ChatRequest, Completion
from synthrank.llm.models import GGUF_MODELS, resolve_gguf

DEFAULT_MAX_NUM_SEQS = 256
"""vLLM's ``max_num_seqs`` where the engine does not say its own."""


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
        self.sha256 = None
        model = spec.model
        if model in GGUF_MODELS:
            resolved = resolve_gguf(model)
            model, self.sha256 = str(resolved.path), resolved.sha256
        self.llm = LLM(model=model, max_model_len=spec.context_length)
        self._stream = EngineStream(self.llm, SamplingParams)

    def stream(self) -> EngineStream:
        return self._stream

    def complete(self, requests: list[ChatRequest]) -> list[Completion]:
        return self._stream.complete(requests)

    def describe(self) -> dict[str, Any]:
        return {"backend": self.name, "model": self.spec.model, "model_sha256": self.sha256}

    def close(self) -> None:
        self._stream.cancel()
        del self.llm


class EngineStream:
    """A vLLM ``LLM``'s engine as a :class:`~synthrank.llm.scheduler.CallStream` (see the module
    docstring). ``sampling_params`` is vLLM's ``SamplingParams`` class. A call the engine refuses
    (a prompt beyond ``max_model_len``: ``ValueError`` from ``add_request``; a chat template
    error) is answered at once, refused, with the engine's message."""

    def __init__(self, llm: Any, sampling_params: Any) -> None:
        self.engine = llm.llm_engine
        self.tokenizer = llm.get_tokenizer()
        self._params = sampling_params
        scheduler = getattr(getattr(self.engine, "vllm_config", None), "scheduler_config", None)
        self.capacity = 2 * (getattr(scheduler, "max_num_seqs", None) or DEFAULT_MAX_NUM_SEQS)
        self._next = 0
        self._live: dict[int, float] = {}
        """Token -> the time it was added, for each call in the engine."""
        self._done: list[tuple[int, Completion]] = []

    def submit(self, request: ChatRequest) -> int:
        token = self._next
        self._next += 1
        params = self._params(
            max_tokens=request.max_tokens,
            temperature=request.temperature,
            top_p=request.top_p,
            seed=request.seed,
            stop=list(request.stop) or None,
        )
        try:
            prompt = self.tokenizer.apply_chat_template(
                request.message_dicts(), tokenize=False, add_generation_prompt=True
            )
            self.engine.add_request(str(token), prompt, params)
        except TemplateError as exc:
            self._refuse(token, f"chat template error: {exc}")
        except ValueError as exc:  # vLLM's refusal of a prompt it cannot take
            self._refuse(token, str(exc).strip().splitlines()[0] if str(exc).strip() else "refused")
        else:
            self._live[token] = time.perf_counter()
        return token

    def _refuse(self, token: int, error: str) -> None:
        self._done.append((token, Completion("", "error", error=error, refused=True)))

    def wait(self) -> list[tuple[int, Completion]]:
        while not self._done and self._live:
            for output in self.engine.step():
                if not output.finished:
                    continue
                token = int(output.request_id)
                started = self._live.pop(token, None)
                if started is None:  # aborted meanwhile
                    continue
                best = output.outputs[0]
                self._done.append(
                    (
                        token,
                        Completion(
                            text=best.text,
                            finish_reason=best.finish_reason or "stop",
                            prompt_tokens=len(output.prompt_token_ids or []),
                            completion_tokens=len(best.token_ids),
                            latency_s=time.perf_counter() - started,
                        ),
                    )
                )
        done, self._done = self._done, []
        return done

    def cancel(self) -> None:
        if self._live:
            self.engine.abort_request([str(token) for token in self._live])
        self._live.clear()
        self._done.clear()

    def complete(self, requests: list[ChatRequest]) -> list[Completion]:
        """Every request's completion, in order, ``capacity`` in flight."""
        from synthrank.llm.scheduler import complete_all

        return complete_all(self, requests)
