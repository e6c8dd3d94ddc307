"""A small OpenAI-compatible server on loopback that injects faults on request.

``faults`` is a list of actions, consumed one per incoming request before normal service:
``"500"``, ``"429"`` (with a ``Retry-After`` header of ``retry_after``, ``"0"`` unless told),
``"stall"`` (answers after ``stall_s``), ``"garbage"`` (HTTP 200, body not JSON),
``"no-choices"`` (HTTP 200, JSON without choices), ``"drop"`` (closes the connection without
an answer), ``"400"`` (not retryable), ``"err200"`` (HTTP 200 whose body is llama.cpp's server's
context-size error object), ``"empty-choices"`` (HTTP 200, ``"choices": []`` with Azure's
content-filter results). Normal answers are passages made of random words seeded
by the request, so each call gets a distinct passage that passes validation, after ``delay_s``
seconds; prompts that ask for a short answer ("Answer with ...") get ``phrase_words`` words,
requests for a grade get ``grade`` (a digit, or ``"overlap"``: a judge that tells passages
apart, see :func:`overlap_grade`), and requests for a query for a document ("Write one search
query", the doc2query prompt) get ``query_words`` distinct words of the document (those of 4
letters or more, drawn by the request's seed), so a BM25 check of the query has something real to
find. ``replies`` (seed -> text) scripts the answer to the requests with those seeds.
``fail_first`` answers HTTP 500 to the first that many arrivals of each distinct request (same
messages and seed), so every request of a batch is retried the same number of times.

Each request's body, headers and arrival time (``time.monotonic()``) are recorded in
``bodies``, ``headers`` and ``arrivals``, in arrival order.

``jitter_s`` adds to each answer's delay a time drawn uniformly from [0, ``jitter_s``) by a
generator seeded with ``jitter_seed``, so answers come back in a shuffled order.
``vocabulary_size`` draws passages from the first that many words of :data:`VOCABULARY`
(few words: passages that overlap, so some are rejected as near-duplicates and retried).
``gate`` holds every request until that many are waiting, then answers them together, as a
server that only proves its slots full can; a group that has waited ``gate_timeout_s`` seconds
is answered short. ``groups`` records each group's request bodies and whether it filled the
gate.

``mode`` makes every answer behave as one kind of real server does: ``"think"`` (a reasoning
model: a ``<think>...</think>`` block before the answer), ``"think-only"`` (a reasoning block cut
by the token limit, nothing after it), ``"null"`` (``content: null`` with ``finish_reason:
length`` and the thinking in ``reasoning_content``, as vLLM returns a reasoning model that used up
max_tokens), ``"no-system"`` (a chat template without a system role: HTTP 400 with vLLM's error
body whenever the request has a system turn). ``max_prompt_chars`` makes the server answer HTTP
400 with vLLM's "maximum context length" body to requests whose messages hold more characters,
as a server started with a small ``--max-model-len`` does.
"""

from __future__ import annotations

import json
import random
import re
import sys
import threading
import time
import zlib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class _Server(ThreadingHTTPServer):
    """A client that hangs up mid-answer (a job stopped by an error or a kill while calls are in
    flight) is no server error: served engines log it and go on, so this one does too, instead
    of printing a traceback into the test's stderr."""

    daemon_threads = True

    def handle_error(self, request, client_address) -> None:
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


VOCABULARY = [
    "river",
    "stone",
    "valley",
    "market",
    "engine",
    "harvest",
    "lantern",
    "copper",
    "signal",
    "orchard",
    "glacier",
    "violin",
    "timber",
    "compass",
    "meadow",
    "harbor",
    "canyon",
    "ledger",
    "pigment",
    "turbine",
    "falcon",
    "quarry",
    "saddle",
    "furnace",
    "beacon",
    "prairie",
    "thimble",
    "kettle",
    "garnet",
    "anchor",
    "bramble",
    "cobalt",
    "summit",
]


def fake_passage(
    prompt: str, seed: int, words: int = 40, vocabulary: list[str] = VOCABULARY
) -> str:
    rng = random.Random(zlib.crc32(f"{prompt}|{seed}".encode()))
    sentences = []
    remaining = words
    while remaining > 0:
        length = min(remaining, rng.randint(8, 12))
        sentence = " ".join(rng.choice(vocabulary) for _ in range(length))
        sentences.append(sentence.capitalize() + ".")
        remaining -= length
    return " ".join(sentences)


def fake_query(prompt: str, seed: int, words: int = 4) -> str:
    """``words`` distinct words of 4 letters or more of the document in a doc2query prompt (the
    text between "Document:" and "Write one search query"), drawn by the request."""
    document = prompt.split("Document:", 1)[-1].split("Write one search query", 1)[0]
    vocabulary = sorted({w for w in re.findall(r"[a-z]+", document.lower()) if len(w) >= 4})
    rng = random.Random(zlib.crc32(f"{prompt}|{seed}".encode()))
    return " ".join(rng.sample(vocabulary, min(words, len(vocabulary))))


def fake_answer(
    prompt: str,
    seed: int,
    *,
    phrase_words: int = 3,
    grade: int | str = 2,
    query_words: int = 4,
    vocabulary: list[str] = VOCABULARY,
) -> str:
    """The answer to a user turn ``prompt`` sampled with ``seed`` (see the module docstring):
    a query for a doc2query prompt, a grade for a judge prompt, a short phrase for a planning
    prompt, a rewritten query, else a passage."""
    if "Write one search query" in prompt:
        return fake_query(prompt, seed, query_words)
    if "Answer with one digit" in prompt:
        return str(overlap_grade(prompt) if grade == "overlap" else grade)
    if "Answer with" in prompt:
        return fake_passage(prompt, seed, phrase_words)[:-1]
    if "different search query" in prompt:
        return "How does " + fake_passage(prompt, seed, 6)[:-1] + "?"
    return fake_passage(prompt, seed, vocabulary=vocabulary)


def overlap_grade(prompt: str) -> int:
    """The grade of the passage in an LLM-judge prompt by the words of 4 letters or more it
    shares with the query (3 or more -> 3): a fake judge whose lists hold different grades."""
    query = prompt.split("Search query: ", 1)[-1].split("\n", 1)[0]
    passage = prompt.split("Passage: ", 1)[-1].split("\n\nHow relevant", 1)[0]
    words = [{w for w in re.findall(r"[a-z]+", t.lower()) if len(w) >= 4} for t in (query, passage)]
    return min(3, len(words[0] & words[1]))


CONTEXT_SIZE_ERROR_BODY = {
    "error": {
        "code": 400,
        "message": "the request exceeds the available context size. try increasing the "
        "context size or enable context shift",
        "type": "exceed_context_size_error",
        "n_prompt_tokens": 14429,
        "n_ctx": 8192,
    }
}
"""What llama.cpp's server answers, with HTTP 200, to a prompt beyond its context."""

CONTENT_FILTER_BODY = {
    "object": "chat.completion",
    "choices": [],
    "prompt_filter_results": [{"content_filter_results": {"violence": {"filtered": True}}}],
}
"""What Azure answers, with HTTP 200, to a prompt its content filter blocks."""


def context_length_body(chars: int, body: dict) -> dict:
    """vLLM's HTTP 400 body for a request beyond ``--max-model-len`` (3 characters a token)."""
    tokens, completion = chars // 3, body.get("max_tokens", 0)
    return {
        "object": "error",
        "message": f"This model's maximum context length is 512 tokens. However, you requested "
        f"{tokens + completion} tokens ({tokens} in the messages, {completion} in the "
        "completion). Please reduce the length of the messages or completion.",
        "type": "BadRequestError",
        "param": None,
        "code": 400,
    }


class FakeLLMServer:
    def __init__(
        self,
        faults: list[str] | None = None,
        *,
        delay_s: float = 0.0,
        stall_s: float = 5.0,
        phrase_words: int = 3,
        grade: int | str = 2,
        mode: str | None = None,
        retry_after: str = "0",
        fail_first: int = 0,
        query_words: int = 4,
        replies: dict[int, str] | None = None,
        max_prompt_chars: int | None = None,
        jitter_s: float = 0.0,
        jitter_seed: int = 0,
        vocabulary_size: int | None = None,
        gate: int | None = None,
        gate_timeout_s: float = 5.0,
    ) -> None:
        self.max_prompt_chars = max_prompt_chars
        self.jitter_s = jitter_s
        self._jitter = random.Random(jitter_seed)
        self.vocabulary = VOCABULARY[:vocabulary_size] if vocabulary_size else VOCABULARY
        self.gate = gate
        self.gate_timeout_s = gate_timeout_s
        self.groups: list[tuple[list[dict], bool]] = []
        self._gate = threading.Condition()
        self._gate_waiting: list[dict] = []
        self._gate_group = 0
        self.faults = list(faults or [])
        self.query_words = query_words
        self.replies = dict(replies or {})
        self.mode = mode
        self.bodies: list[dict] = []
        self.headers: list[dict[str, str]] = []
        self.paths: list[str] = []
        self.arrivals: list[float] = []
        self.retry_after = retry_after
        self.fail_first = fail_first
        self._seen: dict[str, int] = {}
        self.delay_s = delay_s
        self.stall_s = stall_s
        self.phrase_words = phrase_words
        self.grade = grade
        self.requests = 0
        self.served = 0
        self.max_in_flight = 0
        self._in_flight = 0
        self._lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                return None

            def do_POST(self):
                length = int(self.headers.get("Content-Length", 0))
                raw = self.rfile.read(length)
                if len(raw) < length:  # the client hung up mid-request: nothing to answer
                    self.close_connection = True
                    return
                body = json.loads(raw)
                arrival = time.monotonic()
                with server._lock:
                    server.requests += 1
                    server.bodies.append(body)
                    server.headers.append({k.lower(): v for k, v in self.headers.items()})
                    server.paths.append(self.path)
                    server.arrivals.append(arrival)
                    fault = server.faults.pop(0) if server.faults else None
                    key = json.dumps([body.get("messages"), body.get("seed")])
                    server._seen[key] = server._seen.get(key, 0) + 1
                    if fault is None and server._seen[key] <= server.fail_first:
                        fault = "500"
                    server._in_flight += 1
                    server.max_in_flight = max(server.max_in_flight, server._in_flight)
                    jitter = server._jitter.uniform(0, server.jitter_s) if server.jitter_s else 0
                try:
                    if server.gate:
                        server._pass_gate(body)
                    time.sleep(jitter)
                    self._answer(fault, body)
                finally:
                    with server._lock:
                        server._in_flight -= 1

            def _answer(self, fault, body):
                if fault == "drop":
                    self.close_connection = True
                    self.connection.shutdown(2)
                    return
                if fault in ("500", "429", "400", "404"):
                    self.send_response(int(fault))
                    if fault == "429":
                        self.send_header("Retry-After", server.retry_after)
                    self.send_header("Content-Length", "2")
                    self.end_headers()
                    self.wfile.write(b"{}")
                    return
                if fault == "stall":
                    time.sleep(server.stall_s)
                if fault == "garbage":
                    self._send(b"<html>upstream error</html>")
                    return
                if fault == "no-choices":
                    self._send(json.dumps({"object": "chat.completion"}).encode())
                    return
                if fault == "err200":
                    self._send(json.dumps(CONTEXT_SIZE_ERROR_BODY).encode())
                    return
                if fault == "empty-choices":
                    self._send(json.dumps(CONTENT_FILTER_BODY).encode())
                    return
                chars = sum(len(m["content"]) for m in body["messages"])
                if server.max_prompt_chars is not None and chars > server.max_prompt_chars:
                    self._send(json.dumps(context_length_body(chars, body)).encode(), status=400)
                    return
                time.sleep(server.delay_s)
                roles = [m["role"] for m in body["messages"]]
                if server.mode == "no-system" and "system" in roles:
                    self._send(
                        json.dumps(
                            {
                                "object": "error",
                                "message": "System role not supported",
                                "type": "BadRequestError",
                                "code": 400,
                            }
                        ).encode(),
                        status=400,
                    )
                    return
                prompt = body["messages"][-1]["content"]
                if body.get("seed") in server.replies:
                    text = server.replies[body["seed"]]
                else:
                    text = fake_answer(
                        prompt,
                        body.get("seed", 0),
                        phrase_words=server.phrase_words,
                        grade=server.grade,
                        query_words=server.query_words,
                        vocabulary=server.vocabulary,
                    )
                message: dict = {"role": "assistant", "content": text}
                finish = "stop"
                thinking = "<think>\nThe user wants a passage. Let me plan it first.\n</think>\n\n"
                if server.mode == "think":
                    message["content"] = thinking + text
                elif server.mode == "think-only":
                    message["content"], finish = thinking[: -len("</think>\n\n")], "length"
                elif server.mode == "null":
                    message.update(content=None, reasoning_content="Let me think. " * 20)
                    finish = "length"
                answer = {
                    "object": "chat.completion",
                    "model": body.get("model"),
                    "choices": [{"index": 0, "message": message, "finish_reason": finish}],
                    "usage": {"prompt_tokens": len(prompt.split()), "completion_tokens": 50},
                }
                with server._lock:
                    server.served += 1
                self._send(json.dumps(answer).encode())

            def _send(self, payload: bytes, status: int = 200):
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

        self.httpd = _Server(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self._thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def _pass_gate(self, body: dict) -> None:
        """Wait until ``gate`` requests wait (or the group times out), then go."""
        with self._gate:
            self._gate_waiting.append(body)
            group = self._gate_group
            if len(self._gate_waiting) >= self.gate:
                self._open_gate(full=True)
                return
            if not self._gate.wait_for(lambda: self._gate_group != group, self.gate_timeout_s):
                self._open_gate(full=False)

    def _open_gate(self, *, full: bool) -> None:
        self.groups.append((self._gate_waiting, full))
        self._gate_waiting = []
        self._gate_group += 1
        self._gate.notify_all()

    def __enter__(self) -> FakeLLMServer:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


if __name__ == "__main__":
    import sys

    with FakeLLMServer(delay_s=float(sys.argv[1]) if len(sys.argv) > 1 else 0.0) as fake:
        print(fake.url, flush=True)
        threading.Event().wait()
