"""Any OpenAI-compatible server (``POST {endpoint}/chat/completions``): vLLM, SGLang, TGI, Ollama,
llama.cpp's server, hosted APIs.

Requests run concurrently (``concurrency`` in flight per endpoint) on one aiohttp
``ClientSession`` whose connections are kept until the backend is closed (:class:`HttpStream`),
spread over the endpoints round-robin; a failed try moves to the next endpoint. (aiohttp, as
vLLM's own serving benchmark client uses: httpx's ``AsyncClient`` spends about 4 ms of CPU a
request at 64 in flight, a ceiling of about 230 calls a second on 2 cores, encode/httpx#3215;
see docs/performance.md.) Connection errors, timeouts (a total
deadline per try, so a server that trickles bytes cannot stall the run), HTTP 408, 409, 425,
429 and 5xx, and bodies that are not JSON are retried with exponential backoff and jitter (a
``Retry-After`` header is honoured). A server that refuses the request itself is not asked
again, since the same request gets the same answer: another 4xx (400 "maximum context length",
413, 422, 401, 404), an HTTP 200 whose body is an error object (llama.cpp's server and SGLang
answer some failures so) or has no choices (a content filter): the completion comes back
``refused``, with the server's message. The API key is read from the environment variable
named by ``api_key_env``.
"""

from __future__ import annotations

import asyncio
import functools
import json
import os
import queue
import random
import threading
import time
from dataclasses import dataclass, replace
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from synthrank.errors import SynthrankError
from synthrank.llm.backends.base import BackendSpec, ChatRequest, Completion

_MAX_WAIT_S = 60.0


RETRIED_STATUSES = frozenset({408, 409, 425, 429})
"""4xx answers that may heal (timeouts, conflicts, rate limits); 5xx are retried too."""


@dataclass(frozen=True)
class BodyError:
    """Why an HTTP 200 body is not a chat completion; ``refused``: the server said it will not
    answer this request (an error object, no choices), so asking again will not help."""

    message: str
    refused: bool


def _body_start(body: Any, limit: int = 200) -> str:
    return " ".join(json.dumps(body, ensure_ascii=False).split())[:limit]


def parse_chat_completion(body: Any) -> Completion | BodyError:
    """A :class:`Completion` from a decoded response body, or why the body is not one."""
    if isinstance(body, dict) and body.get("error"):
        inner = body["error"]
        message = inner.get("message") if isinstance(inner, dict) else inner
        code = inner.get("code") if isinstance(inner, dict) else None
        transient = isinstance(code, int) and (code in RETRIED_STATUSES or code >= 500)
        shown = f" (code {code})" if isinstance(code, int) else ""
        message = f"error body{shown} in an HTTP 200: {message or _body_start(body)}"
        return BodyError(message, refused=not transient)
    if isinstance(body, dict) and body.get("choices") == []:
        return BodyError(f"no choices (content filter?): {_body_start(body)}", refused=True)
    try:
        choice = body["choices"][0]
        text = choice["message"]["content"]
    except (KeyError, IndexError, TypeError):
        return BodyError("malformed response (no choices[0].message.content)", refused=False)
    if text is None:
        # A reasoning model that spent max_tokens thinking (vLLM puts the thinking in
        # reasoning_content): an empty answer, rejected and retried with a new seed by the caller.
        text = ""
    if not isinstance(text, str):
        return BodyError("malformed response (content is not a string)", refused=False)
    usage = body.get("usage") or {}
    return Completion(
        text=text,
        finish_reason=choice.get("finish_reason") or "stop",
        prompt_tokens=int(usage.get("prompt_tokens") or 0),
        completion_tokens=int(usage.get("completion_tokens") or 0),
    )


def server_message(raw: bytes, limit: int = 300) -> str:
    """``": <message>"`` from an error response's body: the ``message`` of an OpenAI-style error
    body (``{"error": {"message": ...}}`` or vLLM's ``{"message": ...}``), else the start of the
    body; ``""`` for an empty body."""
    text = raw.decode("utf-8", errors="replace")
    try:
        body = json.loads(text)
    except ValueError:
        body = None
    message = None
    if isinstance(body, dict):
        inner = body.get("error")
        message = inner.get("message") if isinstance(inner, dict) else inner or body.get("message")
    text = " ".join((str(message) if message else text).split())[:limit]
    return f": {text}" if text else ""


def chat_url(endpoint: str) -> str:
    """``{endpoint}/chat/completions``, the path appended to the endpoint's path: a query string
    (``?api-version=...``) stays at the end."""
    parts = urlsplit(endpoint)
    return urlunsplit(parts._replace(path=parts.path.rstrip("/") + "/chat/completions"))


def _retry_after(headers: Any) -> float | None:
    value = headers.get("retry-after")
    try:
        return min(float(value), _MAX_WAIT_S) if value is not None else None
    except ValueError:
        return None


class OpenAIBackend:
    name = "openai"

    def __init__(self, spec: BackendSpec) -> None:
        try:
            import aiohttp
        except ImportError as exc:
            raise SynthrankError(
                "backend openai needs aiohttp: pip install 'synthrank[http]'"
            ) from exc
        if not spec.endpoints:
            raise SynthrankError("backend openai: give at least one endpoint URL")
        self._aiohttp = aiohttp
        self.spec = spec
        spec.validate()
        self.endpoints = [endpoint.rstrip("/") for endpoint in spec.endpoints]
        self._urls = {endpoint: chat_url(endpoint) for endpoint in self.endpoints}
        key = os.environ.get(spec.api_key_env)
        self.headers = {"Authorization": f"Bearer {key}"} if key else {}
        self._stream: HttpStream | None = None

    def stream(self) -> HttpStream:
        """The backend's :class:`HttpStream`: one client, its connections kept for every call
        until :meth:`close`."""
        if self._stream is None:
            self._stream = HttpStream(self)
        return self._stream

    def complete(self, requests: list[ChatRequest]) -> list[Completion]:
        from synthrank.llm.scheduler import complete_all

        return complete_all(self.stream(), requests)

    def _client(self) -> Any:
        """The session, made on the stream's event loop: ``concurrency`` x endpoints
        connections at most, kept alive; proxies from HTTP(S)_PROXY and NO_PROXY.
        The per-try deadline is :func:`_deadline`'s, over connecting, sending and reading."""
        in_flight = self.spec.concurrency * len(self.endpoints)
        connector = self._aiohttp.TCPConnector(limit=in_flight, limit_per_host=0)
        return self._aiohttp.ClientSession(
            headers=self.headers,
            connector=connector,
            timeout=self._aiohttp.ClientTimeout(total=None),
            trust_env=True,
        )

    async def _post(self, client: Any, url: str, body: bytes) -> tuple[int, Any, bytes]:
        """Status, headers and the whole body of one POST."""
        headers = {"Content-Type": "application/json"}
        async with client.post(url, data=body, headers=headers) as response:
            return response.status, response.headers, await response.read()

    async def _complete_one(self, client: Any, index: int, request: ChatRequest) -> Completion:
        body = {"model": self.spec.model, "messages": request.message_dicts(), **request.sampling()}
        data = json.dumps(body, ensure_ascii=False).encode("utf-8")
        errors: list[str] = []
        start = time.perf_counter()
        for attempt in range(self.spec.max_retries + 1):
            endpoint = self.endpoints[(index + attempt) % len(self.endpoints)]
            wait = None
            try:
                status, headers, raw = await _deadline(
                    self._post(client, self._urls[endpoint], data),
                    self.spec.timeout_s,
                )
            except asyncio.TimeoutError:
                error = f"timeout after {self.spec.timeout_s:g}s"
            except (self._aiohttp.ClientError, OSError) as exc:
                error = f"connection error ({type(exc).__name__}: {exc})"
            else:
                refusal = None
                if status == 200:
                    try:
                        parsed = parse_chat_completion(json.loads(raw))
                    except ValueError:
                        parsed = BodyError("malformed response (not JSON)", refused=False)
                    if isinstance(parsed, Completion):
                        return replace(
                            parsed,
                            latency_s=time.perf_counter() - start,
                            tries=attempt + 1,
                            endpoint=endpoint,
                        )
                    error = parsed.message
                    refusal = error if parsed.refused else None
                elif status in RETRIED_STATUSES or status >= 500:
                    error = f"HTTP {status}{server_message(raw)}"
                    wait = _retry_after(headers)
                else:
                    refusal = f"HTTP {status}{server_message(raw)}"
                    if status == 404:
                        refusal += f" (is {endpoint} the server's base URL, e.g. ending in /v1?)"
                if refusal is not None:
                    return Completion(
                        "",
                        "error",
                        latency_s=time.perf_counter() - start,
                        error=f"{refusal} from {endpoint}",
                        tries=attempt + 1,
                        endpoint=endpoint,
                        refused=True,
                    )
            errors.append(f"{endpoint}: {error}")
            if attempt < self.spec.max_retries:
                backoff = min(self.spec.retry_backoff_s * 2**attempt, _MAX_WAIT_S)
                await asyncio.sleep(wait if wait is not None else backoff * random.uniform(0.5, 1))
        return Completion(
            "",
            "error",
            latency_s=time.perf_counter() - start,
            error=f"gave up after {len(errors)} tries; last: {errors[-1]}",
            tries=len(errors),
        )

    def describe(self) -> dict[str, Any]:
        return {
            "backend": self.name,
            "model": self.spec.model,
            "endpoints": self.endpoints,
            "concurrency_per_endpoint": self.spec.concurrency,
            "timeout_s": self.spec.timeout_s,
            "max_retries": self.spec.max_retries,
        }

    def close(self) -> None:
        if self._stream is not None:
            self._stream.close()
            self._stream = None


async def _deadline(awaitable: Any, seconds: float) -> Any:
    """``awaitable``'s result, or :class:`asyncio.TimeoutError` after ``seconds`` in total."""
    timeout = getattr(asyncio, "timeout", None)
    if timeout is None:  # Python 3.10
        return await asyncio.wait_for(awaitable, seconds)
    async with timeout(seconds):
        return await awaitable


class HttpStream:
    """Calls to an :class:`OpenAIBackend`, answered as they finish (a
    :class:`~synthrank.llm.scheduler.CallStream`): an event loop in a thread of its own
    runs every call on one ``aiohttp.ClientSession``, whose connections live as long as the
    stream; ``capacity`` is ``concurrency`` per endpoint. A call's first try goes to the
    endpoints in turn, its retries to the next ones."""

    def __init__(self, backend: OpenAIBackend) -> None:
        self.backend = backend
        self.capacity = backend.spec.concurrency * len(backend.endpoints)
        self._done: queue.SimpleQueue = queue.SimpleQueue()
        self._next = 0
        self._tasks: dict[int, asyncio.Task] = {}
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="synthrank-http", daemon=True
        )
        self._thread.start()
        self._client = self._run(self._open())

    def _run(self, coroutine: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result()

    async def _open(self) -> Any:
        return self.backend._client()

    def submit(self, request: ChatRequest) -> int:
        token = self._next
        self._next += 1
        self._loop.call_soon_threadsafe(self._start, token, request)
        return token

    def _start(self, token: int, request: ChatRequest) -> None:
        task = self._loop.create_task(self.backend._complete_one(self._client, token, request))
        self._tasks[token] = task
        task.add_done_callback(functools.partial(self._finished, token))

    def _finished(self, token: int, task: asyncio.Task) -> None:
        self._tasks.pop(token, None)
        if task.cancelled():
            return
        failure = task.exception()
        if failure is None:
            self._done.put((token, task.result()))
        else:
            error = f"client error ({type(failure).__name__}: {failure})"
            self._done.put((token, Completion("", "error", error=error)))

    def wait(self) -> list[tuple[int, Completion]]:
        answered = [self._done.get()]
        while True:
            try:
                answered.append(self._done.get_nowait())
            except queue.Empty:
                return answered

    def cancel(self) -> None:
        async def cancel_all() -> None:
            tasks = list(self._tasks.values())
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        self._run(cancel_all())
        while True:
            try:
                self._done.get_nowait()
            except queue.Empty:
                break

    def close(self) -> None:
        """Cancel what is in flight, close the client's connections and stop the thread."""
        if self._loop.is_closed():
            return
        self.cancel()
        self._run(self._client.close())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join()
        self._loop.close()
