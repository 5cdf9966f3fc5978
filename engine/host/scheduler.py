"""Batched decoding for the host: one scheduler thread runs the rows of all concurrent requests as one batch.

The batch is one `engine.sampling.SamplingLoop`: new requests' row groups are added to it (their prompts
prefilled together, each distinct prompt once, repeated prompts from a `PromptCache`, and spliced into the
running KV cache), finished ones are compacted out, and each request keeps its own rules and random
generator, so a request decoded alone samples exactly what `Policy.continue_clip` would.
"""


from __future__ import annotations

import itertools
import logging
import queue
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Callable, Iterator

from engine.fastdecode import WEIGHT_MODES, PackedWeights
from engine.sampling import PromptCache, RowGroup, SamplingLoop

log = logging.getLogger("smart.host")


# ============================================================================ batched decoding
END_OF_STREAM = object()

# Gathering arrivals for a few steps makes one join (one prefill, one splice) out of several under load,
# for at most that many steps of extra latency.
JOIN_EVERY_STEPS = 4
# Tokens reach a request's worker thread every few steps (and when it ends): each hand-off wakes a
# thread, which costs the decode loop more than the tokens themselves.
FLUSH_EVERY_STEPS = 4


class DecodeJob:
    """One request's row group on its way through the scheduler's shared batch."""

    _ids = itertools.count(1)

    def __init__(self, model, group: RowGroup, *, pad_id: int, bar_id: int | None, context: int,
                 should_stop: Callable[[], bool] | None = None):
        self.id = next(self._ids)
        self.model = model
        self.group = group
        self.pad_id, self.bar_id, self.context = pad_id, bar_id, context
        self.should_stop = should_stop
        self.events: queue.SimpleQueue = queue.SimpleQueue()
        self.cancelled = threading.Event()
        self.error: BaseException | None = None
        self.finished = False
        self.submitted_at = time.monotonic()
        self.outbox: list[tuple[int, int]] = []  # tokens decoded since the last hand-off
        self.flushed_step = 0

    @property
    def rows(self) -> int:
        return len(self.group.rows)

    def cancel(self) -> None:
        self.cancelled.set()

    def stop_requested(self) -> bool:
        if self.cancelled.is_set():
            return True
        if self.should_stop is None:
            return False
        try:
            return bool(self.should_stop())
        except Exception:  # a broken callback must not take the shared batch down; treat it as "stop"
            log.exception("should_stop of decode job %s raised", self.id)
            return True

    def tokens(self) -> Iterator[tuple[int, int]]:
        """(row, token) pairs in order, until the job ends; re-raises a scheduler failure."""
        while True:
            item = self.events.get()
            if item is END_OF_STREAM:
                if self.error is not None:
                    raise RuntimeError(f"decoding failed: {self.error}") from self.error
                return
            yield from item


@dataclass
class SchedulerStats:
    batches: int = 0  # batches started from idle
    joins: int = 0  # jobs added to a running batch
    compactions: int = 0
    grows: int = 0
    reprefills: int = 0  # slides past the context window
    prefill_rows: int = 0  # prompt windows computed by prefill
    reused_rows: int = 0  # rows whose prompt came from the prompt cache or a twin row of the same join
    steps: int = 0
    row_steps: int = 0  # sum over steps of live rows (mean batch = row_steps / steps)
    tokens: int = 0
    # Where the scheduler thread's time goes (seconds): model steps + sampling + routing, joins/compaction.
    step_s: float = 0.0
    admit_s: float = 0.0
    jobs_submitted: int = 0
    jobs_finished: int = 0
    jobs_cancelled: int = 0
    jobs_failed: int = 0
    max_rows: int = 0
    max_jobs: int = 0  # most requests decoded together in one step: >1 means cross-request batching
    rows_now: int = 0
    jobs_now: int = 0
    pending_now: int = 0

    def as_dict(self) -> dict:
        d = dict(self.__dict__)
        d["mean_rows_per_step"] = round(self.row_steps / self.steps, 2) if self.steps else 0.0
        for k in ("step_s", "admit_s"):
            d[k] = round(d[k], 3)
        return d


class DecodeScheduler:
    """One thread that decodes the rows of all concurrent requests together.

    Jobs wait in a FIFO. When idle, the scheduler waits `gather_s` for companions, adds what fits in
    `max_rows` to a new `SamplingLoop` and steps it; every few steps, pending jobs for the same model that
    fit are added to the running loop together, rows of finished jobs are compacted out once they are half
    the batch. Prompt windows prefilled once are kept in a `PromptCache` for the requests that repeat them.
    As a sampler (`Policy.using(scheduler)`) it runs a policy's row groups in this shared batch.
    """

    def __init__(self, max_rows: int = 32, gather_s: float = 0.003, decode_weights: str = "model",
                 prompt_cache_entries: int = 64):
        """`decode_weights`: "model" (exact) or an approximate CPU mode of `engine.fastdecode` ("int8")."""
        if max_rows < 1:
            raise ValueError("max_rows must be at least 1")
        if decode_weights not in WEIGHT_MODES:
            raise ValueError(f"decode_weights must be one of {WEIGHT_MODES}")
        self.max_rows = max_rows
        self.gather_s = gather_s
        self.decode_weights = decode_weights
        self._packed = None  # PackedWeights of the last model decoded (packing once per model, not per request)
        self.prompt_cache = PromptCache(prompt_cache_entries)
        self.stats = SchedulerStats()
        self._pending: deque[DecodeJob] = deque()
        self._cv = threading.Condition()
        self._closed = False
        self._thread = threading.Thread(target=self._loop, name="smart-decode-scheduler", daemon=True)
        self._thread.start()

    @property
    def packed(self):
        """The packed weights of the last model decoded (None in exact mode, or before any was packed)."""
        return self._packed

    def packed_for(self, model):
        """The packed weights for `model` in this scheduler's mode (None in exact mode); cached per model."""
        if self.decode_weights == "model" or next(model.parameters()).device.type != "cpu":
            return None
        if self._packed is None or self._packed.model_ref() is not model:
            self._packed = PackedWeights(model, self.decode_weights)
        return self._packed

    # ------------------------------------------------------------------ public
    def submit(self, job: DecodeJob) -> DecodeJob:
        if job.rows > self.max_rows:
            raise ValueError(f"{job.rows} rows exceed the host's batch limit of {self.max_rows}")
        with self._cv:
            if self._closed:
                raise RuntimeError("the decode scheduler is shut down")
            self._pending.append(job)
            self.stats.jobs_submitted += 1
            self.stats.pending_now = len(self._pending)
            self._cv.notify()
        return job

    def sample(self, model, group: RowGroup, *, pad_id: int, bar_id: int | None, context: int,
               should_stop: Callable[[], bool] | None = None) -> Iterator[tuple[int, int]]:
        """The sampler interface of `Policy`: run `group` in the shared batch; yields (row, token)."""
        if not group.rows:
            return
        job = self.submit(DecodeJob(model, group, pad_id=pad_id, bar_id=bar_id, context=context,
                                    should_stop=should_stop))
        try:
            yield from job.tokens()
        finally:
            job.cancel()  # no effect once finished; stops the rows when the consumer gave up early

    def close(self, timeout: float = 5.0) -> None:
        with self._cv:
            self._closed = True
            self._cv.notify_all()
        self._thread.join(timeout)

    # ------------------------------------------------------------------ queue
    def _take(self, model, room: int) -> list[DecodeJob]:
        """FIFO jobs for `model` (any, if None) that fit in `room` rows; stops at the first that does not fit."""
        taken: list[DecodeJob] = []
        with self._cv:
            kept: deque[DecodeJob] = deque()
            blocked = False
            while self._pending:
                job = self._pending.popleft()
                if job.cancelled.is_set():
                    self._end_job(job, cancelled=True)
                    continue
                if blocked or (model is not None and job.model is not model):
                    kept.append(job)
                    continue
                if job.rows > room:
                    blocked = True  # no overtaking: a big job is not starved by later small ones
                    kept.append(job)
                    continue
                model = job.model
                room -= job.rows
                taken.append(job)
            self._pending = kept
            self.stats.pending_now = len(kept)
        return taken

    def _end_job(self, job: DecodeJob, *, cancelled: bool = False, error: BaseException | None = None) -> None:
        if job.finished:
            return
        job.finished = True
        job.group.cancelled = job.group.cancelled or cancelled or error is not None
        if cancelled:
            self.stats.jobs_cancelled += 1
        elif error is not None:
            job.error = error
            self.stats.jobs_failed += 1
        else:
            self.stats.jobs_finished += 1
        if job.outbox:  # tokens decoded before the end are delivered, as a loop of its own would have yielded them
            job.events.put(job.outbox)
            job.outbox = []
        job.events.put(END_OF_STREAM)

    def _loop(self) -> None:
        while True:
            with self._cv:
                while not self._pending and not self._closed:
                    self._cv.wait()
                if self._closed:
                    break
            if self.gather_s:
                time.sleep(self.gather_s)  # let requests that arrive together start together
            jobs = self._take(None, self.max_rows)
            if not jobs:
                continue
            owned = list(jobs)  # every job this batch took, joins included, to fail them together
            try:
                _Batch(self, jobs, owned).run()
            except Exception as exc:  # fail this batch's jobs, keep serving
                log.exception("decode batch failed")
                for job in owned:
                    self._end_job(job, error=exc)
            finally:
                self.stats.rows_now = 0
                self.stats.jobs_now = 0
        with self._cv:
            pending, self._pending = list(self._pending), deque()
        for job in pending:
            self._end_job(job, error=RuntimeError("the host is shutting down"))


class _Batch:
    """The scheduler's side of one busy period: which job owns which group of the sampling loop."""

    def __init__(self, scheduler: DecodeScheduler, jobs: list[DecodeJob], owned: list[DecodeJob]):
        self.sched = scheduler
        self.owned = owned
        self.stats = scheduler.stats
        first = jobs[0]
        self.model = first.model
        self.loop = SamplingLoop(first.model, pad_id=first.pad_id, bar_id=first.bar_id, context=first.context,
                                 packed=scheduler.packed_for(first.model), prompt_cache=scheduler.prompt_cache,
                                 max_rows=scheduler.max_rows)
        self.jobs: dict[int, DecodeJob] = {}  # id(group) -> job
        self.last_join_step = scheduler.stats.steps
        self._admit(jobs)
        self.stats.batches += 1

    def _admit(self, jobs: list[DecodeJob]) -> None:
        t0 = time.perf_counter()
        loop_stats = self.loop.stats
        before = (loop_stats.prefill_rows, loop_stats.reused_rows)
        joining = bool(self.jobs)
        self.loop.add([j.group for j in jobs])
        if joining:
            self.stats.joins += len(jobs)
        for j in jobs:
            self.jobs[id(j.group)] = j
        self.stats.prefill_rows += loop_stats.prefill_rows - before[0]
        self.stats.reused_rows += loop_stats.reused_rows - before[1]
        self.stats.admit_s += time.perf_counter() - t0
        self._note_size()

    def _note_size(self) -> None:
        live = self.loop.live_groups
        self.stats.rows_now = sum(len(g.rows) for g in live)
        self.stats.jobs_now = len(live)
        self.stats.max_rows = max(self.stats.max_rows, self.stats.rows_now)
        self.stats.max_jobs = max(self.stats.max_jobs, len(live))

    def _live_jobs(self) -> list[DecodeJob]:
        return [self.jobs[id(g)] for g in self.loop.groups if not self.jobs[id(g)].finished]

    # ------------------------------------------------------------------ the loop
    def run(self) -> None:
        loop, sched = self.loop, self.sched
        while True:
            if sched._closed:
                for job in self._live_jobs():
                    sched._end_job(job, error=RuntimeError("the host is shutting down"))
                return
            for job in self._live_jobs():
                if job.stop_requested():
                    sched._end_job(job, cancelled=True)
            live_rows = loop.live_rows()
            joinable = self.stats.steps - self.last_join_step >= JOIN_EVERY_STEPS or not live_rows
            if joinable and sched._pending and live_rows < sched.max_rows:
                new = sched._take(self.model, sched.max_rows - live_rows)
                if new:
                    self.owned.extend(new)
                    self._admit(new)
                    self.last_join_step = self.stats.steps
                    live_rows = loop.live_rows()
            if not live_rows:
                return
            total = sum(len(g.rows) for g in loop.groups)
            if 2 * (total - live_rows) >= max(total, 8):
                t0 = time.perf_counter()
                loop.compact()
                self.jobs = {id(g): self.jobs[id(g)] for g in loop.groups}
                self.stats.compactions += 1
                self.stats.admit_s += time.perf_counter() - t0

            t0 = time.perf_counter()
            grows, reprefills = loop.stats.grows, loop.stats.reprefills
            accepted = loop.step()
            self.stats.grows += loop.stats.grows - grows
            self.stats.reprefills += loop.stats.reprefills - reprefills
            self.stats.steps += 1
            self.stats.row_steps += live_rows
            self.stats.tokens += len(accepted)
            for group, k, t in accepted:
                self.jobs[id(group)].outbox.append((k, t))
            for job in self._live_jobs():
                ended = job.group.ended
                if job.outbox and (ended or self.stats.steps - job.flushed_step >= FLUSH_EVERY_STEPS):
                    job.events.put(job.outbox)
                    job.outbox = []
                    job.flushed_step = self.stats.steps
                if ended:
                    sched._end_job(job)
            self.stats.step_s += time.perf_counter() - t0
            self._note_size()
