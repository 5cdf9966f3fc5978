"""Batched decoding for the host: one scheduler thread runs the rows of all concurrent requests as one batch.

New requests join a running batch (their prompts are prefilled and their KV cache is spliced in), finished
ones are compacted out, and each request keeps its own sampling settings and random generator, so a
request decoded alone samples exactly what `Policy.continue_clip` would.
"""


from __future__ import annotations

import itertools
import logging
import math
import queue
import random
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Callable, Iterator, Sequence

import numpy as np
import torch

from engine.fastdecode import WEIGHT_MODES, PackedWeights, Phi3Decoder
from engine.policy import (
    GeneratedRow,
    GenerationSettings,
    Policy,
    left_padded,
    new_rows,
)

log = logging.getLogger("smart.host")


# ============================================================================ batched decoding
END_OF_STREAM = object()

# A join costs about two decode steps (prefill + cache copy); gathering arrivals for a few steps
# makes one join out of several under load, for at most that many steps of extra latency.
JOIN_EVERY_STEPS = 4
# Tokens reach a request's worker thread every few steps (and when it ends): each hand-off wakes a
# thread, which costs the decode loop more than the tokens themselves.
FLUSH_EVERY_STEPS = 4


class DecodeJob:
    """One `stream_ids` call: its prompts become rows of the scheduler's shared batch."""

    _ids = itertools.count(1)

    def __init__(self, policy: Policy, prompts: Sequence[Sequence[int]], settings: GenerationSettings,
                 bar_offset: int = 0, should_stop: Callable[[], bool] | None = None, position_floor: int = 0):
        settings.validate()
        self.id = next(self._ids)
        self.policy = policy
        self.prompts = [list(p) for p in prompts]
        self.settings = settings
        self.bar_offset = bar_offset
        self.should_stop = should_stop
        self.position_floor = position_floor  # grammar: no Position before this in the open bar
        # Drawn here, as stream_ids does, so a job without a seed still has one fixed generator.
        self.seed = settings.seed if settings.seed is not None else random.randrange(2**31)
        self.finish = ["tokens"] * len(self.prompts)
        self.rows_done = [False] * len(self.prompts)
        self.events: queue.SimpleQueue = queue.SimpleQueue()
        self.cancelled = threading.Event()
        self.error: BaseException | None = None
        self.finished = False
        self.generator: torch.Generator | None = None
        self.submitted_at = time.monotonic()
        self.outbox: list[tuple[int, int]] = []  # tokens decoded since the last hand-off
        self.flushed_step = 0

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


class _Row(GeneratedRow):
    """A GeneratedRow that knows its request and its index in it."""

    __slots__ = ("job", "index")

    def __init__(self, job: DecodeJob, index: int, grammar):
        super().__init__(job.prompts[index], grammar)
        self.job = job
        self.index = index


def _round_capacity(needed: int, context: int) -> int:
    """KV-cache positions to allocate: room for `needed` plus headroom, in steps of 128, ≤ context."""
    return min(context, 128 * math.ceil((needed + 256) / 128))


@dataclass
class SchedulerStats:
    batches: int = 0  # batches started from idle
    joins: int = 0  # jobs spliced into a running batch
    compactions: int = 0
    grows: int = 0
    reprefills: int = 0  # slides past the context window
    steps: int = 0
    row_steps: int = 0  # sum over steps of live rows (mean batch = row_steps / steps)
    tokens: int = 0
    # Where the scheduler thread's time goes (seconds): model steps, sampling + routing, joins/compaction.
    step_s: float = 0.0
    sample_s: float = 0.0
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
        for k in ("step_s", "sample_s", "admit_s"):
            d[k] = round(d[k], 3)
        return d


class DecodeScheduler:
    """One thread that decodes the rows of all concurrent requests together.

    Jobs wait in a FIFO. When idle, the scheduler waits `gather_s` for companions, prefills what
    fits in `max_rows` and starts stepping; at each step, pending jobs for the same model that fit
    are prefilled on their own and spliced into the running batch, rows of finished jobs are
    compacted out once they are half the batch, the KV cache grows by copying as sequences lengthen,
    and at the context limit all rows slide (re-prefill of recent bars) as `Policy.stream_ids` does.
    """

    def __init__(self, max_rows: int = 32, gather_s: float = 0.003, decode_weights: str = "model"):
        """`decode_weights`: "model" (exact) or an approximate CPU mode of `engine.fastdecode` ("int8")."""
        if max_rows < 1:
            raise ValueError("max_rows must be at least 1")
        if decode_weights not in WEIGHT_MODES:
            raise ValueError(f"decode_weights must be one of {WEIGHT_MODES}")
        self.max_rows = max_rows
        self.gather_s = gather_s
        self.decode_weights = decode_weights
        self._packed = None  # PackedWeights of the last model decoded (packing once per model, not per request)
        self.stats = SchedulerStats()
        self._pending: deque[DecodeJob] = deque()
        self._cv = threading.Condition()
        self._closed = False
        self._thread = threading.Thread(target=self._loop, name="smart-decode-scheduler", daemon=True)
        self._thread.start()

    def packed_for(self, model):
        """The packed weights for `model` in this scheduler's mode (None in exact mode); cached per model."""
        if self.decode_weights == "model" or next(model.parameters()).device.type != "cpu":
            return None
        if self._packed is None or self._packed.model_ref() is not model:
            self._packed = PackedWeights(model, self.decode_weights)
        return self._packed

    # ------------------------------------------------------------------ public
    def submit(self, job: DecodeJob) -> DecodeJob:
        if len(job.prompts) > self.max_rows:
            raise ValueError(f"{len(job.prompts)} rows exceed the host's batch limit of {self.max_rows}")
        with self._cv:
            if self._closed:
                raise RuntimeError("the decode scheduler is shut down")
            self._pending.append(job)
            self.stats.jobs_submitted += 1
            self.stats.pending_now = len(self._pending)
            self._cv.notify()
        return job

    def stream(self, policy: Policy, prompts, settings, bar_offset=0, should_stop=None, position_floor=0,
               finish_out: list | None = None) -> Iterator[tuple[int, int]]:
        """Like `policy.stream_ids`, through the shared batch; `finish_out` receives the finish reasons."""
        job = DecodeJob(policy, prompts, settings, bar_offset, should_stop, position_floor)
        if not job.prompts:
            return
        self.submit(job)
        try:
            yield from job.tokens()
        finally:
            job.cancel()  # no effect once finished; stops the rows when the consumer gave up early
            if finish_out is not None:
                finish_out[:] = job.finish

    def close(self, timeout: float = 5.0) -> None:
        with self._cv:
            self._closed = True
            self._cv.notify_all()
        self._thread.join(timeout)

    # ------------------------------------------------------------------ queue
    def _take(self, policy: Policy | None, room: int) -> list[DecodeJob]:
        """FIFO jobs for `policy` (any, if None) that fit in `room` rows; stops at the first that does not fit."""
        taken: list[DecodeJob] = []
        with self._cv:
            kept: deque[DecodeJob] = deque()
            blocked = False
            while self._pending:
                job = self._pending.popleft()
                if job.cancelled.is_set():
                    self._end_job(job, cancelled=True)
                    continue
                if blocked or (policy is not None and job.policy is not policy):
                    kept.append(job)
                    continue
                if len(job.prompts) > room:
                    blocked = True  # no overtaking: a big job is not starved by later small ones
                    kept.append(job)
                    continue
                policy = job.policy
                room -= len(job.prompts)
                taken.append(job)
            self._pending = kept
            self.stats.pending_now = len(kept)
        return taken

    def _end_job(self, job: DecodeJob, *, cancelled: bool = False, error: BaseException | None = None) -> None:
        if job.finished:
            return
        job.finished = True
        if cancelled:
            job.finish = [f if done else "cancelled" for f, done in zip(job.finish, job.rows_done)]
            self.stats.jobs_cancelled += 1
        elif error is not None:
            job.error = error
            self.stats.jobs_failed += 1
        else:
            self.stats.jobs_finished += 1
        if job.outbox:  # tokens decoded before the end are delivered, as stream_ids would have yielded them
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
    """The rows being decoded together, and the decoder that holds their KV cache."""

    def __init__(self, scheduler: DecodeScheduler, jobs: list[DecodeJob], owned: list[DecodeJob]):
        self.sched = scheduler
        self.owned = owned
        self.stats = scheduler.stats
        self.policy = jobs[0].policy
        self.tok = self.policy.tokenizer
        self.context = self.policy.context_length
        self.device = self.policy.device
        self.jobs: list[DecodeJob] = []
        self.rows: list[_Row] = []
        self.decoder = None
        self.logits: torch.Tensor | None = None
        self.last_join_step = scheduler.stats.steps
        self._admit(jobs)

    # ------------------------------------------------------------------ rows and prefill
    def _new_rows(self, jobs: list[DecodeJob]) -> list[_Row]:
        rows = []
        for job in jobs:
            rows += new_rows(self.tok, job.prompts, job.settings, job.position_floor,
                             make=lambda i, _prompt, grammar, job=job: _Row(job, i, grammar))
            job.generator = torch.Generator(device=self.device)
            job.generator.manual_seed(job.seed)
        return rows

    def _prefill(self, rows: list[_Row], capacity: int | str | None = None):
        ids, mask = left_padded([r.window(self.context, self.tok.bar_id) for r in rows], self.tok.pad_id)
        width = ids.shape[1]
        capacity = width if capacity == "exact" else capacity or _round_capacity(width, self.context)
        decoder = Phi3Decoder(self.policy.model, batch_size=len(rows), max_len=capacity, device=self.device,
                              packed=self.sched.packed_for(self.policy.model))
        logits = decoder.prefill(ids.to(self.device), mask.to(self.device))
        return decoder, logits

    def _admit(self, jobs: list[DecodeJob]) -> None:
        rows = self._new_rows(jobs)
        if self.decoder is None:
            self.decoder, self.logits = self._prefill(rows)
            self.rows, self.jobs = rows, list(jobs)
            self.stats.batches += 1
        else:
            new_decoder, new_logits = self._prefill(rows, capacity="exact")  # only spliced, never stepped
            keep = [i for i, r in enumerate(self.rows) if not r.job.finished]
            length = max(self.decoder.length, new_decoder.length)
            capacity = max(self.decoder.max_len, _round_capacity(length, self.context))
            self.decoder = Phi3Decoder.splice(self.policy.model, [(self.decoder, keep), (new_decoder, range(len(rows)))],
                                              capacity)
            self.logits = torch.cat([self.logits[keep], new_logits])
            self.rows = [self.rows[i] for i in keep] + rows
            self.jobs = [j for j in self.jobs if not j.finished] + list(jobs)
            self.stats.joins += len(jobs)
        self._note_size()

    def _compact(self) -> None:
        keep = [i for i, r in enumerate(self.rows) if not r.job.finished]
        self.decoder = Phi3Decoder.splice(self.policy.model, [(self.decoder, keep)], self.decoder.max_len)
        self.logits = self.logits[keep]
        self.rows = [self.rows[i] for i in keep]
        self.jobs = [j for j in self.jobs if not j.finished]
        self.stats.compactions += 1
        self._note_size()

    def _note_size(self) -> None:
        self.stats.rows_now = len(self.rows)
        self.stats.jobs_now = len(self.jobs)
        self.stats.max_rows = max(self.stats.max_rows, len(self.rows))
        self.stats.max_jobs = max(self.stats.max_jobs, len(self.jobs))

    # ------------------------------------------------------------------ the loop
    def run(self) -> None:
        tok = self.tok
        with torch.inference_mode():
            while True:
                if self.sched._closed:
                    for job in self.jobs:
                        self.sched._end_job(job, error=RuntimeError("the host is shutting down"))
                    return
                for job in self.jobs:
                    if not job.finished and job.stop_requested():
                        self.sched._end_job(job, cancelled=True)
                live_jobs = [j for j in self.jobs if not j.finished]
                live_rows = sum(len(j.prompts) for j in live_jobs)
                joinable = self.stats.steps - self.last_join_step >= JOIN_EVERY_STEPS or not live_jobs
                if joinable and self.sched._pending and live_rows < self.sched.max_rows:
                    new = self.sched._take(self.policy, self.sched.max_rows - live_rows)
                    self.owned.extend(new)
                    if new:
                        t0 = time.perf_counter()
                        self._admit(new)
                        self.last_join_step = self.stats.steps
                        self.stats.admit_s += time.perf_counter() - t0
                        live_jobs = [j for j in self.jobs if not j.finished]
                if not live_jobs:
                    return
                if 2 * (len(self.rows) - live_rows) >= max(len(self.rows), 8):
                    self._compact()

                t0 = time.perf_counter()
                groups, start = [], 0
                for job in self.jobs:
                    n = len(job.prompts)
                    if not job.finished:
                        s = job.settings
                        masks = np.stack([r.grammar.allowed() for r in self.rows[start:start + n]]) \
                            if s.grammar else None
                        groups.append(SampleGroup(start, n, s.temperature, s.top_p, job.generator, masks))
                    start += n
                sampled = sample_rows(self.logits, groups).cpu()
                next_ids = torch.full((len(self.rows),), tok.pad_id, dtype=torch.long)
                start = 0
                for job in self.jobs:
                    n = len(job.prompts)
                    if not job.finished:
                        self._advance_job(job, start, sampled, next_ids)
                    start += n
                self.stats.steps += 1
                self.stats.row_steps += live_rows
                t1 = time.perf_counter()
                self.stats.sample_s += t1 - t0
                if all(j.finished for j in self.jobs):
                    return
                if self.decoder.length >= self.context:
                    self._reprefill()  # slide past the context window
                    continue
                if self.decoder.length >= self.decoder.max_len:
                    self._grow()
                self.logits = self.decoder.step(next_ids.to(self.device))
                self.stats.step_s += time.perf_counter() - t1

    def _advance_job(self, job: DecodeJob, start: int, sampled: torch.Tensor, next_ids: torch.Tensor) -> None:
        """Apply the job's stopping rules to its sampled tokens (as Policy.stream_ids) and route them to it."""
        rows = self.rows[start:start + len(job.prompts)]
        out = []
        for k, row in enumerate(rows):
            if row.done:
                continue
            t = int(sampled[start + k])
            if row.accept(t, self.tok, job.settings, job.bar_offset):
                next_ids[start + k] = t
                out.append((row.index, t))
            if row.done:
                job.finish[row.index] = row.finish
                job.rows_done[row.index] = True
        if out:
            self.stats.tokens += len(out)
            job.outbox.extend(out)
        ended = all(job.rows_done)
        if job.outbox and (ended or self.stats.steps - job.flushed_step >= FLUSH_EVERY_STEPS):
            job.events.put(job.outbox)
            job.outbox = []
            job.flushed_step = self.stats.steps
        if ended:
            self.sched._end_job(job)

    def _grow(self) -> None:
        capacity = min(self.context, max(2 * self.decoder.max_len, self.decoder.length + 256))
        self.decoder = Phi3Decoder.splice(self.policy.model, [(self.decoder, range(len(self.rows)))], capacity)
        self.stats.grows += 1

    def _reprefill(self) -> None:
        # The sampled tokens are already in each row's history: re-prefilling the windows feeds them.
        keep = [i for i, r in enumerate(self.rows) if not r.job.finished]
        self.rows = [self.rows[i] for i in keep]
        self.jobs = [j for j in self.jobs if not j.finished]
        self.decoder, self.logits = self._prefill(self.rows, self.context)
        self.stats.reprefills += 1
        self._note_size()


@dataclass
class SampleGroup:
    """Rows [start, start+n) of a batch sampled with one job's settings and random generator."""

    start: int
    n: int
    temperature: float
    top_p: float
    generator: torch.Generator | None
    masks: np.ndarray | None  # [n, V] bool, True = allowed (grammar), or None


def sample_rows(logits: torch.Tensor, groups: Sequence[SampleGroup]) -> torch.Tensor:
    """`engine.fastdecode.sample_next` for many jobs at once → LongTensor [B] (rows in no group: 0).

    The masking, softmax and top-p work runs once over all rows (once per distinct temperature) instead of
    once per job; only the draw is per job, from its own generator, on its own rows (all of them, done rows
    too, as stream_ids does), so each job samples exactly what sample_next would give it alone.
    """
    out = torch.zeros(logits.shape[0], dtype=torch.long, device=logits.device)
    if not groups:
        return out
    logits = logits.float()
    if any(g.masks is not None for g in groups):
        allowed = np.ones(tuple(logits.shape), dtype=bool)
        for g in groups:
            if g.masks is not None:
                allowed[g.start:g.start + g.n] = g.masks
        mask = torch.from_numpy(allowed).to(logits.device)
        usable = mask.any(dim=-1, keepdim=True)  # a row that allows nothing keeps its unmasked distribution
        logits = logits.masked_fill(~mask & usable, float("-inf"))
    probs = torch.zeros_like(logits)  # rows of finished jobs stay 0: never drawn from
    for temperature in {g.temperature for g in groups if g.temperature > 0}:
        rows = torch.tensor([g.start + k for g in groups if g.temperature == temperature for k in range(g.n)],
                            device=logits.device)
        # A Python scalar divisor, as in sample_next, so the arithmetic is bit-identical.
        probs[rows] = torch.softmax(logits[rows] / temperature, dim=-1)
    if any(g.top_p < 1.0 and g.temperature > 0 for g in groups):
        threshold = torch.full((logits.shape[0], 1), math.inf, device=logits.device)
        for g in groups:
            if g.top_p < 1.0:
                threshold[g.start:g.start + g.n] = g.top_p
        sorted_probs, order = probs.sort(dim=-1, descending=True)
        mass_before = sorted_probs.cumsum(dim=-1) - sorted_probs
        sorted_probs = sorted_probs.masked_fill(mass_before >= threshold, 0.0)
        probs = torch.zeros_like(probs).scatter_(-1, order, sorted_probs)
    for g in groups:
        rows = slice(g.start, g.start + g.n)
        if g.temperature == 0:
            out[rows] = logits[rows].argmax(dim=-1)
        else:
            out[rows] = torch.multinomial(probs[rows], 1, generator=g.generator).squeeze(-1)
    return out


class ScheduledPolicy(Policy):
    """A view of a Policy whose token decoding runs in the shared batch of a DecodeScheduler.

    Everything above `stream_ids` (prompts, note decoding, infill clipping) is the Policy's own code.
    One view per request also keeps `last_finish` per request instead of shared.
    """

    def __init__(self, base: Policy, scheduler: DecodeScheduler):
        super().__init__(base.model, base.tokenizer, base.path)
        self.base = base
        self.scheduler = scheduler

    # Keep in step with Policy.stream_ids: a new keyword there fails loudly here (TypeError), not silently.
    def stream_ids(self, prompts, settings, *, bar_offset=0, should_stop=None, position_floor=0):
        finish: list[str] = []
        try:
            yield from self.scheduler.stream(self.base, prompts, settings, bar_offset, should_stop, position_floor,
                                             finish)
        finally:
            self.last_finish = finish or ["cancelled"] * len(prompts)


