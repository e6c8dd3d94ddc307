"""The vLLM backend fed as a stream, against a stand-in for vLLM's offline API (``LLM``,
``LLM.llm_engine`` with ``add_request`` / ``step`` / ``abort_request``, ``get_tokenizer``,
``SamplingParams``) installed as the ``vllm`` module: vLLM itself needs a GPU. The stand-in's
engine decodes one word per step for up to ``max_num_seqs`` requests and answers as the fake
server does, so a job on it must give the lists a job on the fake server gives."""

from __future__ import annotations

import json
import sys
import types
from collections import deque
from dataclasses import dataclass, field

import pytest
from fake_llm_server import FakeLLMServer, fake_answer
from test_generate import _queries_file

from synthrank.generate import BackendSpec, GenerateJob, GenerationConfig, generate
from synthrank.llm.backends import ChatRequest, make_backend
from synthrank.llm.scheduler import open_stream


@dataclass
class _Sampling:
    max_tokens: int
    temperature: float
    top_p: float
    seed: int
    stop: list[str] | None = None


@dataclass
class _Output:
    text: str
    token_ids: list[int]
    finish_reason: str | None


@dataclass
class _RequestOutput:
    request_id: str
    prompt_token_ids: list[int]
    outputs: list[_Output]
    finished: bool


@dataclass
class _Running:
    request_id: str
    words: list[str]
    prompt_tokens: int
    max_tokens: int
    made: int = 0


@dataclass
class _Engine:
    max_num_seqs: int = 4
    max_model_len: int = 4000
    waiting: deque = field(default_factory=deque)
    running: list = field(default_factory=list)
    most_running: int = 0
    steps: int = 0
    aborted: list = field(default_factory=list)

    def add_request(self, request_id: str, prompt: str, params: _Sampling) -> None:
        if len(prompt) > self.max_model_len:
            raise ValueError(
                f"The decoder prompt (length {len(prompt)}) is longer than the maximum model "
                f"length of {self.max_model_len}."
            )
        messages = json.loads(prompt)
        words = fake_answer(messages[-1]["content"], params.seed).split(" ")
        self.waiting.append(_Running(request_id, words, len(prompt.split()), params.max_tokens))

    def step(self) -> list[_RequestOutput]:
        while self.waiting and len(self.running) < self.max_num_seqs:
            self.running.append(self.waiting.popleft())
        self.most_running = max(self.most_running, len(self.running))
        self.steps += 1
        outputs = []
        for request in list(self.running):
            request.made += 1
            done = request.made >= min(len(request.words), request.max_tokens)
            reason = ("stop" if request.made >= len(request.words) else "length") if done else None
            text = " ".join(request.words[: request.made])
            outputs.append(
                _RequestOutput(
                    request.request_id,
                    list(range(request.prompt_tokens)),
                    [_Output(text, list(range(request.made)), reason)],
                    done,
                )
            )
            if done:
                self.running.remove(request)
        return outputs

    def abort_request(self, request_ids: list[str]) -> None:
        self.aborted += request_ids
        self.waiting = deque(r for r in self.waiting if r.request_id not in request_ids)
        self.running = [r for r in self.running if r.request_id not in request_ids]


class _Tokenizer:
    def apply_chat_template(self, messages, tokenize: bool, add_generation_prompt: bool) -> str:
        assert tokenize is False and add_generation_prompt is True
        return json.dumps(messages)


@pytest.fixture
def fake_vllm(monkeypatch: pytest.MonkeyPatch) -> list[_Engine]:
    """The ``vllm`` module replaced by the stand-in; the engines it made, in order."""
    engines: list[_Engine] = []

    class LLM:
        def __init__(self, model: str, max_model_len: int) -> None:
            self.llm_engine = _Engine()
            self.llm_engine.vllm_config = types.SimpleNamespace(
                scheduler_config=types.SimpleNamespace(max_num_seqs=4)
            )
            engines.append(self.llm_engine)

        def get_tokenizer(self) -> _Tokenizer:
            return _Tokenizer()

    module = types.ModuleType("vllm")
    module.LLM, module.SamplingParams = LLM, _Sampling
    monkeypatch.setitem(sys.modules, "vllm", module)
    return engines


def _request(prompt: str, max_tokens: int = 200, seed: int = 0) -> ChatRequest:
    return ChatRequest((("user", prompt),), max_tokens=max_tokens, temperature=0.7, top_p=1.0,
                       seed=seed)  # fmt: skip


def test_each_call_comes_back_as_it_finishes_and_the_engine_stays_full(fake_vllm) -> None:
    backend = make_backend(BackendSpec(backend="vllm", model="stand-in"))
    stream = open_stream(backend, 1)
    engine = fake_vllm[0]
    assert stream.capacity == 8  # twice the engine's max_num_seqs: calls always waiting
    short = stream.submit(_request("Answer with a short phrase: the topic"))  # 3 words
    long = stream.submit(_request("Write a passage about tides"))  # 40 words
    first = stream.wait()
    assert [token for token, _ in first] == [short] and engine.steps == 3
    queued = [stream.submit(_request(f"Write a passage about topic {i}", seed=i)) for i in range(8)]
    got = dict(first)
    while len(got) < 10:
        got.update(stream.wait())
    assert engine.most_running == 4  # the engine's own limit, reached, never passed
    assert got[short].text == fake_answer("Answer with a short phrase: the topic", 0)
    assert got[long].completion_tokens == 40 and got[long].finish_reason == "stop"
    assert all(got[t].error is None for t in queued)
    capped = stream.complete([_request("Write a passage about glaciers", max_tokens=5)])[0]
    assert (capped.completion_tokens, capped.finish_reason) == (5, "length")
    backend.close()


def test_a_prompt_the_engine_refuses_is_settled_with_its_message(fake_vllm) -> None:
    backend = make_backend(BackendSpec(backend="vllm", model="stand-in"))
    fine, too_long = backend.complete([_request("Write a passage"), _request("x" * 5000)])
    assert fine.error is None and fine.text
    assert too_long.refused and "longer than the maximum model length of 4000" in too_long.error


def test_cancel_aborts_what_the_engine_still_holds(fake_vllm) -> None:
    backend = make_backend(BackendSpec(backend="vllm", model="stand-in"))
    stream = open_stream(backend, 1)
    tokens = [stream.submit(_request(f"Write a passage about {i}", seed=i)) for i in range(6)]
    stream.cancel()
    assert sorted(fake_vllm[0].aborted) == sorted(str(t) for t in tokens)
    assert stream.wait() == []
    assert backend.complete([_request("Write a passage")])[0].text


def test_a_job_on_vllm_gives_the_lists_of_the_same_job_on_a_server(fake_vllm, tmp_path) -> None:
    queries = _queries_file(tmp_path, 6)
    config = GenerationConfig()
    vllm_job = GenerateJob(
        str(queries), tmp_path / "vllm", config=config,
        backend=BackendSpec(backend="vllm", model="stand-in"),
    )  # fmt: skip
    result = generate(vllm_job, progress=False)
    assert result.done_now == 6 and fake_vllm[0].most_running == 4
    with FakeLLMServer() as server:
        http_job = GenerateJob(
            str(queries), tmp_path / "http", config=config,
            backend=BackendSpec(backend="openai", model="stand-in", endpoints=(server.url,),
                                concurrency=4),
        )  # fmt: skip
        generate(http_job, progress=False)
    for name in ("lists.jsonl", "corpus.jsonl", "qrels/train.tsv"):
        assert (tmp_path / "vllm" / name).read_bytes() == (tmp_path / "http" / name).read_bytes()
