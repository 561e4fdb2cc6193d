"""Requests scored together while the model is busy (no timer by default), on one thread beside the event loop."""

from typing import Any

from .endpoint_metrics import EndpointMetrics
from .records import answers_for


class Batcher:
    """Scores requests together: those that arrive while the model is busy form the next batch.

    No timer by default, so a lone request is scored at once (Serve's `@serve.batch` holds it for
    its timeout) and under load batches grow by themselves up to `max_batch_size` records. The
    model runs on one thread beside the event loop, which goes on reading and queueing requests.
    """

    def __init__(self, metrics: EndpointMetrics, max_batch_size: float, wait_timeout_ms: float):
        from concurrent.futures import ThreadPoolExecutor

        self.metrics, self.max_records, self.wait_s = metrics, int(max_batch_size), wait_timeout_ms / 1000.0
        self.executor = ThreadPoolExecutor(1, thread_name_prefix="raymlp-model")
        self.queue: Any = None
        self.worker: Any = None

    async def score(self, version: Any, package: Any, records: list[dict[str, Any]]) -> list[dict[str, Any]]:
        import asyncio

        loop = asyncio.get_running_loop()
        if self.queue is None:
            self.queue = asyncio.Queue()
        if self.worker is None or self.worker.done():
            self.worker = loop.create_task(self._run())
        answer = loop.create_future()
        self.queue.put_nowait((version, package, records, answer))
        return await answer

    async def _run(self) -> None:
        import asyncio

        loop = asyncio.get_running_loop()
        while True:
            batch = [await self.queue.get()]
            count = len(batch[0][2])
            deadline = loop.time() + self.wait_s
            while count < self.max_records:
                if not self.queue.empty():
                    item = self.queue.get_nowait()
                elif self.wait_s > 0 and loop.time() < deadline:
                    try:
                        item = await asyncio.wait_for(self.queue.get(), deadline - loop.time())
                    except TimeoutError:
                        break
                else:
                    break
                batch.append(item)
                count += len(item[2])
            outcomes = await loop.run_in_executor(self.executor, self._score_batch, batch)
            for (_, _, _, answer), outcome in zip(batch, outcomes):
                if answer.done():
                    continue
                if isinstance(outcome, Exception):
                    answer.set_exception(outcome)
                else:
                    answer.set_result(outcome)

    def _score_batch(self, batch: list[tuple[Any, Any, list[dict[str, Any]], Any]]) -> list[Any]:
        outcomes: list[Any] = [None] * len(batch)
        by_version: dict[Any, list[int]] = {}
        for index, item in enumerate(batch):
            by_version.setdefault(item[0], []).append(index)
        for version, indexes in by_version.items():
            flat = [record for index in indexes for record in batch[index][2]]
            try:
                answers = answers_for(batch[indexes[0]][1], flat)
            except Exception as error:
                for index in indexes:
                    outcomes[index] = error
                continue
            self.metrics.scored(version, len(flat))
            start = 0
            for index in indexes:
                count = len(batch[index][2])
                outcomes[index] = answers[start : start + count]
                start += count
        return outcomes
