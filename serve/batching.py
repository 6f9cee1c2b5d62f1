"""Dynamic batching across concurrent requests, with inference on one worker thread per model.

    batcher = DynamicBatcher(predictor.predict_items, max_batch=32, max_delay_s=0.01, max_queue=64)
    async with batcher.admit():            # 429 (QueueFull) when max_queue requests are already admitted
        items = ...preprocess...           # off the event loop
        probs = await batcher.submit(items)   # [len(items), K]

Batches are made of windows, not requests: a forward pass takes up to ``max_batch`` windows from the waiting
requests in arrival order, splitting a request over two passes where it does not fit (its answer is put together
when its last window is done). With ``max_batch=1`` batching is off: every request runs whole, alone.

When to run (deadline-aware): as soon as ``max_batch`` windows wait, or when no other admitted request is still
being parsed and preprocessed (nothing more is coming, so waiting would only add latency), or when the oldest
waiting request has waited ``max_delay_s``, whichever comes first. While a forward pass runs, new requests
queue up and form the next batch. ``close()`` lets everything admitted finish, then stops the thread.

Per request, ``queue_wait`` (time from submit to answer not spent in its own forward passes) and ``forward``
(those passes) go to the ``brainforge_stage_seconds`` histogram.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from serve.errors import ModelNotReady, QueueFull
from serve.observability import Metrics

log = logging.getLogger("brainforge.serve.batching")


@dataclass(eq=False)
class _Job:
    items: list[dict]
    future: asyncio.Future
    arrived: float = field(default_factory=time.monotonic)
    taken: int = 0  # windows handed to forward passes so far
    done: int = 0  # windows whose probabilities are back
    parts: list = field(default_factory=list)  # (start, probs) per pass
    forward_s: float = 0.0


class DynamicBatcher:
    def __init__(
        self,
        fn: Callable[[list[dict]], np.ndarray],
        *,
        max_batch: int,
        max_delay_s: float,
        max_queue: int,
        labels: tuple[str, str] = ("", ""),
        metrics: Metrics | None = None,
    ) -> None:
        self.fn, self.max_batch, self.max_delay_s, self.max_queue = fn, max_batch, max_delay_s, max_queue
        self.labels, self.metrics = labels, metrics
        self.executor = ThreadPoolExecutor(1, thread_name_prefix=f"infer-{labels[0]}-{labels[1]}")
        self._pending: deque[_Job] = deque()
        self._wakeup: asyncio.Event | None = None
        self._task: asyncio.Task | None = None
        self._admitted = 0
        self._submitted = 0  # submitted and not yet answered; admitted - submitted are still in preprocessing
        self._idle: asyncio.Event | None = None
        self._closed = False
        self._batch_s = 0.05  # running mean of one forward pass, for Retry-After

    # --- admission -------------------------------------------------------------------------------
    @property
    def depth(self) -> int:
        return self._admitted

    def _set_depth(self, delta: int) -> None:
        self._admitted += delta
        if self.metrics:
            self.metrics.queue_depth.labels(*self.labels).set(self._admitted)
        if self._idle is not None:
            (self._idle.set if self._admitted == 0 else self._idle.clear)()
        if delta < 0 and self._wakeup is not None:  # one fewer request on its way: the collector may not need to wait
            self._wakeup.set()

    @asynccontextmanager
    async def admit(self):
        """Hold one of ``max_queue`` slots from preprocessing to the answer; `QueueFull` (429) when none is free."""
        if self._closed:
            raise ModelNotReady(f"model {self.labels[0]} version {self.labels[1]} is shutting down")
        if self._admitted >= self.max_queue:
            waves = math.ceil(self._admitted / max(1, self.max_batch))
            raise QueueFull(
                f"model {self.labels[0]} version {self.labels[1]}: {self._admitted} requests are queued "
                f"(limit {self.max_queue}); retry later", retry_after_s=math.ceil(waves * self._batch_s)
            )
        self._ensure_started()
        self._set_depth(+1)
        try:
            yield
        finally:
            self._set_depth(-1)

    # --- batching ----------------------------------------------------------------------------------
    def _ensure_started(self) -> None:
        if self._task is None:
            self._wakeup, self._idle = asyncio.Event(), asyncio.Event()
            self._task = asyncio.get_running_loop().create_task(self._collect(), name=f"batcher-{self.labels}")

    async def submit(self, items: list[dict]) -> np.ndarray:
        """Queue ``items`` (windows of one request) and wait for their probabilities [len(items), K]."""
        if not items:
            raise ValueError("submit: no items")
        self._ensure_started()
        job = _Job(items, asyncio.get_running_loop().create_future())
        self._pending.append(job)
        self._submitted += 1
        self._wakeup.set()
        try:
            return await job.future
        finally:
            self._submitted -= 1

    async def run(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Run ``fn(*args)`` on this model's inference thread (e.g. tokenization), outside any batch."""
        return await asyncio.get_running_loop().run_in_executor(self.executor, fn, *args)

    def _forward(self, items: list[dict]) -> tuple[np.ndarray, float]:
        """``fn(items)`` on the inference thread, with the CPU seconds that thread spent in it."""
        c0 = time.thread_time()
        out = self.fn(items)
        return out, time.thread_time() - c0

    def _take_batch(self) -> list[tuple[_Job, int, int]]:
        """(job, start, stop) slices of at most ``max_batch`` windows in all, oldest first."""
        out: list[tuple[_Job, int, int]] = []
        room = self.max_batch
        while self._pending and (room > 0 or self.max_batch == 1 and not out):
            job = self._pending[0]
            if job.future.done():  # the client left: drop what is left of it
                self._pending.popleft()
                continue
            if self.max_batch == 1:  # batching off: one whole request per pass
                self._pending.popleft()
                job.taken = len(job.items)
                return [(job, 0, len(job.items))]
            n = min(room, len(job.items) - job.taken)
            out.append((job, job.taken, job.taken + n))
            job.taken += n
            room -= n
            if job.taken == len(job.items):
                self._pending.popleft()
        return out

    def _waiting_items(self) -> int:
        return sum(len(j.items) - j.taken for j in self._pending)

    def _more_coming(self) -> bool:
        """Admitted requests still in parsing or preprocessing (they will submit soon)."""
        return self._admitted > self._submitted

    async def _collect(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            while not self._pending:
                self._wakeup.clear()
                await self._wakeup.wait()
            deadline = self._pending[0].arrived + self.max_delay_s
            while (self._waiting_items() < self.max_batch and self._more_coming()
                   and (left := deadline - time.monotonic()) > 0):
                self._wakeup.clear()
                try:
                    await asyncio.wait_for(self._wakeup.wait(), left)
                except TimeoutError:
                    break
            batch = self._take_batch()
            if not batch:
                continue
            items = [it for job, a, b in batch for it in job.items[a:b]]
            t0 = time.perf_counter()
            try:
                probs, cpu_s = await loop.run_in_executor(self.executor, self._forward, items)
            except Exception as e:  # a bug or a bad batch: every request in it gets the error
                log.exception("forward pass failed", extra={"fields": {"model": self.labels[0], "version": self.labels[1]}})
                for job, _, _ in batch:
                    if not job.future.done():
                        job.future.set_exception(e)
                    if job in self._pending:
                        self._pending.remove(job)
                continue
            elapsed = time.perf_counter() - t0
            self._batch_s = 0.8 * self._batch_s + 0.2 * elapsed
            if self.metrics:
                self.metrics.batch_size.labels(*self.labels).observe(len(items))
                self.metrics.batch_requests.labels(*self.labels).observe(len(batch))
                self.metrics.inference.labels(*self.labels).observe(elapsed)
                self.metrics.forward_cpu.labels(*self.labels).inc(cpu_s)
            start = 0
            now = time.monotonic()
            for job, a, b in batch:
                job.parts.append((a, probs[start : start + b - a]))
                start += b - a
                job.done += b - a
                job.forward_s += elapsed  # a job has one slice per pass
                if job.done == len(job.items) and not job.future.done():
                    parts = [p for _, p in sorted(job.parts, key=lambda ap: ap[0])]
                    job.future.set_result(parts[0] if len(parts) == 1 else np.concatenate(parts))
                    if self.metrics:
                        stage = self.metrics.stage
                        stage.labels(*self.labels, "forward").observe(job.forward_s)
                        stage.labels(*self.labels, "queue_wait").observe(max(0.0, now - job.arrived - job.forward_s))

    async def close(self, timeout_s: float = 30.0) -> None:
        """Refuse new requests, wait (up to ``timeout_s``) for the admitted ones, stop the thread."""
        self._closed = True
        if self._idle is not None and self._admitted:
            try:
                await asyncio.wait_for(self._idle.wait(), timeout_s)
            except TimeoutError:
                log.warning("shutdown: %d request(s) still admitted after %.0f s", self._admitted, timeout_s)
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
        self.executor.shutdown(wait=True)
