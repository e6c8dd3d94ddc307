"""The scheduler every LLM job stands on: items in, calls kept in flight, settled items out in
input order.

An item (a query's passages, a document's queries, a query's graded list) is an
:class:`ItemWork`: a small state machine that says which calls it can make now (planning calls,
the passages that need no plan, then those whose plan is in, retries of rejected passages) and
judges their answers. The scheduler keeps up to ``capacity`` calls in flight over a
:class:`CallStream` while work remains: the moment an answer comes back its slot takes the next
ready call, of the earliest item that has one, and a new item is started when no admitted item
has a call ready. The number of items in progress is bounded (``max_items``), so a job of any
size holds only a window of them.

Timing does not change what is kept. An item absorbs its answers in the order its calls were
made (an answer that comes back early waits for those made before it), and after each one it
says which calls it can make now; so the calls it makes, and the passages each duplicate check
sees before it, depend only on the answers, not on the order the server gave them. Settled
items leave :meth:`Scheduler.run` in input order, so the journal, and every view written from
it, is the same for the same seeds.

A backend with a ``stream()`` method (the OpenAI-compatible HTTP client, the batched llama.cpp
decoder, vLLM's engine) answers calls as they finish; any other backend answers a list at a time
(:class:`BatchStream`).
"""

from __future__ import annotations

import heapq
from collections import Counter, deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from synthrank.llm.backends.base import Backend, ChatRequest, Completion, RefusalWatch

if TYPE_CHECKING:
    from synthrank.llm.backends import BackendSpec


class CallStream(Protocol):
    """Calls in, completions out as they finish. ``capacity``: how many calls the engine
    answers at once."""

    capacity: int

    def submit(self, request: ChatRequest) -> int:
        """Send ``request``; return its token (what :meth:`wait` names its completion by)."""
        ...

    def wait(self) -> list[tuple[int, Completion]]:
        """Block until at least one submitted call is answered; return every answered one."""
        ...

    def cancel(self) -> None:
        """Drop every call still in flight (their completions never come)."""
        ...


class BatchStream:
    """A :class:`CallStream` over a backend that answers a list at a time (in-process engines,
    test fakes): :meth:`wait` hands it every call submitted since the last one."""

    def __init__(self, backend: Backend, capacity: int) -> None:
        self.backend = backend
        self.capacity = capacity
        self._pending: list[tuple[int, ChatRequest]] = []
        self._next = 0

    def submit(self, request: ChatRequest) -> int:
        token = self._next
        self._next += 1
        self._pending.append((token, request))
        return token

    def wait(self) -> list[tuple[int, Completion]]:
        pending, self._pending = self._pending, []
        completions = self.backend.complete([request for _, request in pending])
        return [(token, c) for (token, _), c in zip(pending, completions, strict=True)]

    def cancel(self) -> None:
        self._pending = []


def open_stream(backend: Backend, capacity: int) -> CallStream:
    """The backend's own stream when it has one (its ``capacity`` its own; a ``stream()`` that
    returns None has none in its configuration), else a :class:`BatchStream` offering it
    ``capacity`` calls at a time."""
    stream = getattr(backend, "stream", None)
    own = stream() if callable(stream) else None
    return own if own is not None else BatchStream(backend, capacity)


def complete_all(stream: CallStream, requests: list[ChatRequest]) -> list[Completion]:
    """The completion of every request, in order, with ``stream.capacity`` in flight while
    requests remain."""
    results: dict[int, Completion] = {}
    waiting: dict[int, int] = {}
    queue = iter(enumerate(requests))
    try:
        while True:
            while len(waiting) < stream.capacity:
                item = next(queue, None)
                if item is None:
                    break
                waiting[stream.submit(item[1])] = item[0]
            if not waiting:
                break
            for token, completion in stream.wait():
                index = waiting.pop(token, None)
                if index is not None:
                    results[index] = completion
    finally:
        if waiting:
            stream.cancel()
    return [results[i] for i in range(len(requests))]


class ItemWork:
    """The state of one item's calls while they are in flight (a query's passages, a
    document's queries): its ``slots``, what is ``kept`` and ``failed`` per slot, the
    ``attempts`` per call key, the call records (``calls``), and the backend error that
    stopped it; ``in_flight`` holds the keys of its calls made and not yet absorbed (kept by
    the scheduler). Subclasses ask (``next_calls``: each returned object has the ``request`` to
    send and its ``key``, none of them a key in flight), judge (``absorb``) and make the
    journal record (``record``)."""

    def __init__(self, item_id: str, config: Any, slots: list[Any]) -> None:
        self.item_id = item_id
        self.config = config
        self.slots = slots
        self.kept: dict[Any, Any] = {}
        self.failed: dict[Any, str] = {}
        self.attempts: Counter = Counter()
        self.calls: list[dict[str, Any]] = []
        self.backend_error: str | None = None
        self.in_flight: set[Any] = set()

    @property
    def settled(self) -> bool:
        return self.backend_error is not None or all(
            s in self.kept or s in self.failed for s in self.slots
        )

    def next_calls(self) -> list[Any]:
        """The calls this item can make now, for keys not in flight (none once settled)."""
        raise NotImplementedError

    def absorb(self, call: Any, completion: Completion, model: str) -> None:
        """Judge ``completion``, the answer to ``call``, and keep its record."""
        raise NotImplementedError

    def record(self) -> Any:
        """The journal record of the settled item."""
        raise NotImplementedError

    def _failed_in_backend(self, key: Any, record: dict[str, Any], completion: Completion) -> bool:
        """Count an attempt at ``key``; when the call failed in the backend, keep its record
        (rejected, with the error) and return True: a refused call settles ``key`` as failed
        (:meth:`refuse`), any other failure stops the item (asked again by the next run)."""
        self.attempts[key] += 1
        if completion.error is None:
            return False
        if completion.refused:
            reason = f"refused: {completion.error}"
            record.update(accepted=False, reason=reason)
            self.calls.append(record)
            self.refuse(key, reason)
            return True
        record.update(accepted=False, reason=f"backend error: {completion.error}")
        self.calls.append(record)
        self.backend_error = completion.error
        return True

    def refuse(self, key: Any, reason: str) -> None:
        """Settle call key ``key`` as failed for good: the engine refused it."""
        self.failed[key] = reason

    def _judged(self, key: Any, record: dict[str, Any], reason: str | None) -> bool:
        """Keep the record of a call judged with ``reason`` (None: accepted); True when it was
        rejected and ``key`` has used all ``max_attempts``."""
        record.update(accepted=reason is None, reason=reason)
        self.calls.append(record)
        return reason is not None and self.attempts[key] >= self.config.max_attempts


@dataclass
class _Item:
    """An admitted item: its place in the input, the calls it has made (in the order made),
    their answers so far, and how many of them it has absorbed."""

    seq: int
    work: ItemWork
    calls: list[Any] = field(default_factory=list)
    answers: dict[int, Completion] = field(default_factory=dict)
    absorbed: int = 0
    settled: bool = False


class Scheduler:
    """Runs items over ``stream`` (see the module docstring). ``watch`` sees every completion;
    ``max_items`` bounds the items admitted and not yet handed back (default: four per call
    the stream answers at once, at least 16). Counts ``calls``, ``rejected`` calls and
    completion ``tokens`` as it goes."""

    def __init__(
        self,
        stream: CallStream,
        model: str,
        *,
        watch: RefusalWatch | None = None,
        max_items: int | None = None,
    ) -> None:
        self.stream = stream
        self.model = model
        self.watch = watch if watch is not None else RefusalWatch()
        self.max_items = max_items or max(16, 4 * stream.capacity)
        self.calls = self.rejected = self.tokens = 0

    def run(self, works: Iterable[ItemWork]) -> Iterator[list[ItemWork]]:
        """Work through ``works``; yield, after each batch of answers, the items settled by
        then whose predecessors are all settled too, in input order."""
        source = iter(works)
        exhausted = False
        order: deque[_Item] = deque()
        ready: list[tuple[int, int, _Item]] = []
        flying: dict[int, tuple[_Item, int]] = {}
        capacity = self.stream.capacity
        seq = 0
        try:
            while True:
                while len(flying) < capacity:
                    if ready:
                        _, index, item = heapq.heappop(ready)
                        token = self.stream.submit(item.calls[index].request)
                        flying[token] = (item, index)
                        continue
                    if exhausted or len(order) >= self.max_items:
                        break
                    work = next(source, None)
                    if work is None:
                        exhausted = True
                        break
                    item = _Item(seq, work)
                    seq += 1
                    order.append(item)
                    self._ask(item, ready)
                done: list[ItemWork] = []
                while order and order[0].settled:
                    done.append(order.popleft().work)
                if done:
                    yield done
                if not flying:
                    if exhausted and not order and not ready:
                        return
                    if not ready and (exhausted or len(order) >= self.max_items):
                        raise AssertionError("scheduler: items in progress with no call")
                    continue
                for token, completion in self.stream.wait():
                    entry = flying.pop(token, None)
                    if entry is None:
                        continue
                    item, index = entry
                    item.answers[index] = completion
                    while item.absorbed in item.answers:
                        self._absorb(item, item.answers.pop(item.absorbed))
                        item.absorbed += 1
                        self._ask(item, ready)
        finally:
            if flying:
                self.stream.cancel()

    def _ask(self, item: _Item, ready: list[tuple[int, int, _Item]]) -> None:
        """Make the calls the item can make now; settle it when it has none left to make or
        absorb."""
        work = item.work
        for call in work.next_calls():
            work.in_flight.add(call.key)
            heapq.heappush(ready, (item.seq, len(item.calls), item))
            item.calls.append(call)
        if item.absorbed == len(item.calls):
            item.settled = True
            item.calls = []

    def _absorb(self, item: _Item, completion: Completion) -> None:
        work = item.work
        call = item.calls[item.absorbed]
        work.absorb(call, completion, self.model)
        work.in_flight.discard(call.key)
        self.watch.observe(completion)
        self.calls += 1
        self.rejected += work.calls[-1].get("accepted") is False if work.calls else 0
        self.tokens += completion.completion_tokens


def job_scheduler(backend: Backend, spec: BackendSpec) -> Scheduler:
    """The :class:`~synthrank.llm.scheduler.Scheduler` of one job on ``backend``: its own stream
    (the HTTP client, llama.cpp's batched decoder, vLLM's engine), else one call at a time."""
    return Scheduler(open_stream(backend, 1), spec.model)


@dataclass
class Settled:
    """An item handed back by :func:`settle`: its work, and its journal record when it was
    committed (None: it failed in the backend and was abandoned, to be asked again)."""

    work: ItemWork
    record: Any | None


def settle(works: Iterable[ItemWork], scheduler: Scheduler, store: Any) -> Iterator[Settled]:
    """Run ``works`` on ``scheduler`` and store each settled item, in input order: commit its
    record with its call records, or abandon the calls of one that failed in the backend;
    each group of items settled together is fsynced once (``store`` is a
    :class:`~synthrank.llm.store.JournalStore`). While the engine has answered no call
    yet, settled items are held back: a job whose every call is refused stops with the
    engine's message (:class:`RefusalWatch`), its calls on record as abandoned, before
    anything of it is committed."""
    watch = scheduler.watch
    held: list[ItemWork] = []
    groups = scheduler.run(works)
    try:
        for group in groups:
            held += group
            if watch.hopeless():
                break
            if watch.waiting:
                continue
            settled = []
            for work in held:
                if work.backend_error is not None:
                    store.abandon(work.calls)
                    settled.append(Settled(work, None))
                    continue
                record = work.record()
                store.commit(record, work.calls, sync=False)
                settled.append(Settled(work, record))
            held = []
            store.sync()
            yield from settled
    finally:
        groups.close()
    if held:
        for work in held:
            store.abandon(work.calls)
        raise watch.error()
