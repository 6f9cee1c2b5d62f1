"""Dynamic batching across concurrent requests, with inference on one worker thread per model.

    batcher = DynamicBatcher(predictor.predict_items, max_batch=32, max_delay_s=0.01, max_queue=64)
    async with batcher.admit():            # 429 (QueueFull) when max_queue requests are already admitted
        items = ...preprocess...           # off the event loop
        probs = await batcher.submit(items)   # [len(items), K]

The collector takes the oldest waiting request, waits up to ``max_delay_s`` from its arrival for others, and
runs as many whole requests as fit in ``max_batch`` windows in one call (a request bigger than ``max_batch``
runs alone; with ``max_batch=1`` every request runs alone). While a forward pass runs, new requests queue up and
form the next batch. ``close()`` lets everything admitted finish, then stops the thread.
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


@dataclass
class _Job:
    items: list[dict]
    future: asyncio.Future
    arrived: float = field(default_factory=time.monotonic)


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
        self._wakeup.set()
        return await job.future

    async def run(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Run ``fn(*args)`` on this model's inference thread (e.g. tokenization), outside any batch."""
        return await asyncio.get_running_loop().run_in_executor(self.executor, fn, *args)

    def _take_batch(self) -> list[_Job]:
        batch = [self._pending.popleft()]
        total = len(batch[0].items)
        while self._pending and total + len(self._pending[0].items) <= self.max_batch:
            job = self._pending.popleft()
            batch.append(job)
            total += len(job.items)
        return batch

    def _waiting_items(self) -> int:
        return sum(len(j.items) for j in self._pending)

    async def _collect(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            while not self._pending:
                self._wakeup.clear()
                await self._wakeup.wait()
            deadline = self._pending[0].arrived + self.max_delay_s
            while self._waiting_items() < self.max_batch and (left := deadline - time.monotonic()) > 0:
                self._wakeup.clear()
                try:
                    await asyncio.wait_for(self._wakeup.wait(), left)
                except TimeoutError:
                    break
            batch = [j for j in self._take_batch() if not j.future.done()]  # drop requests whose client left
            if not batch:
                continue
            items = [it for j in batch for it in j.items]
            t0 = time.perf_counter()
            try:
                probs = await loop.run_in_executor(self.executor, self.fn, items)
            except Exception as e:  # a bug or a bad batch: every request in it gets the error
                log.exception("forward pass failed", extra={"fields": {"model": self.labels[0], "version": self.labels[1]}})
                for j in batch:
                    if not j.future.done():
                        j.future.set_exception(e)
                continue
            elapsed = time.perf_counter() - t0
            self._batch_s = 0.8 * self._batch_s + 0.2 * elapsed
            if self.metrics:
                self.metrics.batch_size.labels(*self.labels).observe(len(items))
                self.metrics.batch_requests.labels(*self.labels).observe(len(batch))
                self.metrics.inference.labels(*self.labels).observe(elapsed)
            start = 0
            for j in batch:
                part = probs[start : start + len(j.items)]
                start += len(j.items)
                if not j.future.done():
                    j.future.set_result(part)

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
