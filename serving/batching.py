"""Server-side batching: concurrent calls with the same key merged into one call.

``Batcher`` knows nothing about models or protocols: it merges row-major NumPy
inputs, calls a function once and splits its outputs. ``serving.dataplane``
decides what may be merged (same version, signature, dtypes and per-row
shapes). Imports nothing of ours; only ``serving.dataplane`` and
``serving.model_server`` import it.
"""

from __future__ import annotations

import threading
import time
from typing import Any, Callable

import numpy as np


class _Task:
    """One request waiting in a queue: its inputs, and its outputs or error once run."""

    __slots__ = ("inputs", "rows", "outputs", "error", "done")

    def __init__(self, inputs, rows):
        self.inputs, self.rows = inputs, rows
        self.outputs = self.error = None
        self.done = False


class _Queue:
    """The requests waiting under one key; the leader runs them when full or due."""

    __slots__ = ("tasks", "rows", "leader", "deadline")

    def __init__(self):
        self.tasks: list[_Task] = []
        self.rows = 0
        self.leader: _Task | None = None
        self.deadline = 0.0


class Batcher:
    """Merges concurrent calls with the same key into one call of at most ``max_batch_size`` rows.

    No extra threads: the first request of a batch (the leader) waits up to the
    timeout for peers, runs the merged batch on its own thread and hands each
    peer its rows. If a merged batch fails, its requests are rerun one by one so
    that an error (say, one corrupt image) is reported only to the request that
    caused it.
    """

    def __init__(self, max_batch_size: int, batch_timeout_ms: float):
        self.max_batch_size = int(max_batch_size)
        self.timeout_s = max(0.0, float(batch_timeout_ms)) / 1000.0
        self._cond = threading.Condition()
        self._queues: dict[Any, _Queue] = {}
        self.batches_run = 0
        self.requests_merged = 0  # requests that ran in a batch of two or more

    def stats(self) -> dict[str, int]:
        """Counters for the metrics page: batches run, and requests that shared a batch."""
        return {"batches_run": self.batches_run, "requests_merged": self.requests_merged}

    def run(self, key, fn: Callable[[dict], dict], inputs: dict, rows: int) -> dict:
        """``fn(inputs)`` for this request, possibly run as part of a merged batch."""
        if rows >= self.max_batch_size:
            return fn(inputs)  # too big to merge: run alone
        task = _Task(inputs, rows)
        with self._cond:
            queue = self._queues.get(key)
            if queue is None:
                queue = self._queues[key] = _Queue()
            queue.tasks.append(task)
            queue.rows += rows
            if queue.leader is None:
                queue.leader = task
                queue.deadline = time.monotonic() + self.timeout_s
            self._cond.notify_all()
            while True:
                if task.done:
                    break
                queue = self._queues.get(key)
                if queue is not None and queue.leader is task:
                    remaining = queue.deadline - time.monotonic()
                    if queue.rows >= self.max_batch_size or remaining <= 0:
                        batch = self._take(key, queue)
                        break
                    self._cond.wait(remaining)
                else:
                    self._cond.wait()
        if task.done:
            return self._result(task)
        self._execute(fn, batch)
        with self._cond:
            self._cond.notify_all()
        return self._result(task)

    def _take(self, key, queue: _Queue) -> list[_Task]:
        batch, rows = [], 0
        while queue.tasks and (not batch or rows + queue.tasks[0].rows <= self.max_batch_size):
            task = queue.tasks.pop(0)
            batch.append(task)
            rows += task.rows
        queue.rows -= rows
        if queue.tasks:  # the rest form the next batch, which is due now
            queue.leader = queue.tasks[0]
            queue.deadline = time.monotonic()
            self._cond.notify_all()
        else:
            del self._queues[key]
        return batch

    def _execute(self, fn, batch: list[_Task]) -> None:
        self.batches_run += 1
        if len(batch) == 1:
            self._run_one(fn, batch[0])
            return
        self.requests_merged += len(batch)
        total = sum(t.rows for t in batch)
        try:
            merged = {k: np.concatenate([t.inputs[k] for t in batch]) for k in batch[0].inputs}
            outputs = fn(merged)
            if any(np.ndim(v) == 0 or np.shape(v)[0] != total for v in outputs.values()):
                raise ValueError("an output has no batch dimension")
        except Exception:  # noqa: BLE001 - rerun alone so the error reaches its own request
            for task in batch:
                self._run_one(fn, task)
            return
        start = 0
        for task in batch:
            task.outputs = {k: v[start:start + task.rows] for k, v in outputs.items()}
            task.done = True
            start += task.rows

    @staticmethod
    def _run_one(fn, task: _Task) -> None:
        try:
            task.outputs = fn(task.inputs)
        except Exception as e:  # noqa: BLE001 - re-raised on the request's own thread
            task.error = e
        task.done = True

    @staticmethod
    def _result(task: _Task) -> dict:
        if task.error is not None:
            raise task.error
        return task.outputs

