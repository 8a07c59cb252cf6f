"""Dynamic micro-batching: concurrent requests wait a few milliseconds to share one pass.

Requests put their validated records on a queue; one worker takes what is queued (up to
`max_batch` records, waiting at most `max_wait_s` after the first), preprocesses and predicts
them together on a dedicated thread (decoding, log-mel, tokenizing and the forward pass are all
cheaper per row in a batch), and hands each request its own results back. `max_batch=1` turns it off.

A request that is cancelled (its client went away, or it ran out of time) leaves: still queued, it
is never taken; in a batch that is running, `process` hears it through `alive()` (one flag per
item) and leaves its rows out of the stages still to come.
"""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Callable


@dataclass
class _Job:
    items: list
    explain: bool
    future: asyncio.Future


class MicroBatcher:
    def __init__(self, process: Callable[[list, bool, Callable[[], list]], list], max_batch: int = 32,
                 max_wait_s: float = 0.005):
        """`process(items, explain, alive)` -> one result per item, in order; `alive()` says, per
        item, whether its request still waits for it."""
        if max_batch < 1:
            raise ValueError(f"max_batch must be >= 1, got {max_batch}")
        self.process, self.max_batch, self.max_wait_s = process, max_batch, max_wait_s
        self.queue: asyncio.Queue[_Job] = asyncio.Queue()
        self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="mmfit-model")
        self.task: asyncio.Task | None = None
        self.batches = 0  # passes run
        self.rows = 0  # items processed
        self.cancelled = 0  # items whose request left before its batch was done

    def start(self) -> None:
        self.task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        if self.task:
            self.task.cancel()
            try:
                await self.task
            except asyncio.CancelledError:
                pass
        self.pool.shutdown(wait=False, cancel_futures=True)

    async def submit(self, items: list, explain: bool = False) -> list:
        """The items' results; cancelling the caller cancels the job (a task awaiting a future
        cancels it), which is what `alive()` reports."""
        fut = asyncio.get_running_loop().create_future()
        await self.queue.put(_Job(items, explain, fut))
        return await fut

    async def _collect(self) -> list[_Job]:
        jobs = [await self.queue.get()]
        n = len(jobs[0].items)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.max_wait_s
        while n < self.max_batch:
            try:
                job = self.queue.get_nowait()
            except asyncio.QueueEmpty:
                left = deadline - loop.time()
                if left <= 0:
                    break
                try:
                    job = await asyncio.wait_for(self.queue.get(), left)
                except asyncio.TimeoutError:
                    break
            jobs.append(job)
            n += len(job.items)
        return jobs

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            jobs = [j for j in await self._collect() if not j.future.done()]  # timed-out requests are dropped
            if not jobs:
                continue
            items = [x for j in jobs for x in j.items]

            def alive(jobs=jobs) -> list:  # read on the model's thread: a done future stays done
                return [not j.future.done() for j in jobs for _ in j.items]

            try:
                results = await loop.run_in_executor(self.pool, self.process, items, any(j.explain for j in jobs),
                                                     alive)
            except Exception as e:  # the model failed: every waiting request hears why
                for j in jobs:
                    if not j.future.done():
                        j.future.set_exception(e)
                continue
            self.batches += 1
            self.rows += len(items)
            self.cancelled += sum(len(j.items) for j in jobs if j.future.done())
            start = 0
            for j in jobs:
                part = results[start : start + len(j.items)]
                start += len(j.items)
                if not j.explain:
                    part = [{k: v for k, v in r.items() if k not in ("explanation", "attribution")} for r in part]
                if not j.future.done():
                    j.future.set_result(part)
