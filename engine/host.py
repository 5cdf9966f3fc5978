"""The policy host: an HTTP service (FastAPI + uvicorn) that generates, renders and scores for the studio.

`smart serve` holds the policy, the renderer and the MAA scorer on the best device it has. The studio
talks to it with `engine.host_client` (by default to one it starts on 127.0.0.1 with a random token).

Endpoints (OpenAPI at /docs): GET /v1/health, GET /v1/models, POST /v1/models/activate,
POST /v1/generate (NDJSON stream of note / candidate / done events), POST /v1/score.
Each feature is an APIRouter; later features (training jobs) add theirs with `app.include_router`
and reach the shared state as `request.app.state.host`.

Concurrency: every generation request runs its music-level logic (prompt building, note decoding,
infill clipping, rendering, scoring) in a worker thread, but token decoding goes through one
`DecodeScheduler` thread that runs the rows of all concurrent requests as one batch: new requests
join a running batch (their prompts are prefilled alone and their KV cache is spliced in), finished
ones are compacted out, and each request keeps its own sampling settings and random generator, so a
request decoded alone samples exactly what `Policy.continue_clip` would.

Security: a token (constant-time compared bearer token) is required to listen beyond loopback;
request bodies are bounded; every number in a request is range-checked; malformed payloads get 4xx.
This module must never import Qt.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import binascii
import hmac
import ipaddress
import itertools
import json
import logging
import math
import os
import queue
import random
import socket
import sys
import tempfile
import threading
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np
import torch
from fastapi import APIRouter, Depends, FastAPI, HTTPException, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.security import HTTPBearer
from pydantic import BaseModel, ConfigDict, Field, model_validator

from engine.errors import UserError
from engine.fastdecode import WEIGHT_MODES, PackedWeights, Phi3Decoder
from engine.music import Clip, MidiFileError, Note
from engine.policy import (DEFAULT_MODEL_DIR, GeneratedRow, GenerationSettings, NoteEvent, Policy, PolicyLoadError,
                           left_padded, new_rows)

log = logging.getLogger("smart.host")

TOKEN_ENV_VAR = "SMART_HOST_TOKEN"
DEFAULT_PORT = 8765
DEFAULT_MAX_BODY_BYTES = 2 * 1024 * 1024
MAX_CANDIDATES = 16
MAX_BARS = 64
MAX_NEW_TOKENS = 4096
MAX_INFILL_START_BAR = 2048
# Audio scored per clip is cropped here: MAA averages 10-s windows, and a hostile MIDI file with a
# note at tick 10^9 must not make the host render hours of audio.
MAX_SCORE_SECONDS = 120.0
SCORE_SAMPLE_RATE = 16000
# /docs and the schema it loads stay reachable without the token (a browser cannot send a bearer
# header to fetch them); they describe the API, not any data. Everything else needs the token.
AUTH_EXEMPT_PATHS = frozenset({"/docs", "/docs/oauth2-redirect", "/openapi.json"})


# ============================================================================ batched decoding
_END = object()

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
            if item is _END:
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
        job.events.put(_END)

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


# ============================================================================ host state
@dataclass
class HostStats:
    requests: int = 0
    active: int = 0
    completed: int = 0
    cancelled: int = 0  # generation requests stopped because their client went away
    failed: int = 0
    rejected_busy: int = 0
    latencies: deque = field(default_factory=lambda: deque(maxlen=1000))

    def as_dict(self) -> dict:
        lat = sorted(self.latencies)
        pct = (lambda q: round(lat[min(len(lat) - 1, int(q * len(lat)))], 3)) if lat else (lambda q: None)
        return {"requests": self.requests, "active": self.active, "completed": self.completed,
                "cancelled": self.cancelled, "failed": self.failed, "rejected_busy": self.rejected_busy,
                "latency_p50_s": pct(0.5), "latency_p95_s": pct(0.95)}


def _is_model_dir(path: Path) -> bool:
    from engine.tokenizer import REMI_CONFIG_FILE

    return all((path / f).is_file() for f in ("config.json", "model.safetensors", REMI_CONFIG_FILE))


class HostState:
    """What the routers share: the active policy, scorer, scheduler, executor and counters."""

    def __init__(self, policy: Policy, *, scorer=None, maa_reason: str | None = None, token: str | None = None,
                 model_roots: Sequence[str | os.PathLike] = (), max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
                 max_batch_rows: int = 32, max_active: int = 64, soundfont: str | None = None,
                 decode_weights: str = "model"):
        self.policy = policy
        self.scorer = scorer
        self.maa_reason = maa_reason
        self.token = token or None
        self.max_body_bytes = max_body_bytes
        self.max_active = max_active
        self.soundfont = soundfont
        self.model_roots = [Path(r) for r in model_roots]
        self.registered: list[Path] = [p for p in [policy.path] if p is not None]
        self.scheduler = DecodeScheduler(max_rows=max(max_batch_rows, MAX_CANDIDATES), decode_weights=decode_weights)
        self.scheduler.packed_for(policy.model)  # pack now, not on the first request
        # Generation workers mostly wait on the scheduler; one per admitted request.
        self.executor = ThreadPoolExecutor(max_workers=max_active, thread_name_prefix="smart-generate")
        self.stats = HostStats()
        self.lock = threading.Lock()  # stats and the active-policy swap
        self.activation_lock = threading.Lock()
        self.scorer_lock = threading.Lock()  # one MAA forward at a time (memory, thread safety)
        self.started_at = time.time()
        self._request_ids = itertools.count(1)

    def close(self) -> None:
        self.scheduler.close()
        self.executor.shutdown(wait=False, cancel_futures=True)

    # ------------------------------------------------------------------ descriptions
    def maa_status(self) -> dict:
        if self.scorer is None:
            return {"status": "missing", "reason": self.maa_reason or "no MAA scorer loaded", "source": None}
        random_weights = bool(getattr(self.scorer, "is_random", False))
        return {"status": "random-weights" if random_weights else "available",
                "reason": "random weights: scores are for tests and timing only" if random_weights else None,
                "source": getattr(self.scorer, "source", None)}

    def known_models(self) -> list[dict]:
        active = self.policy.path.resolve() if self.policy.path else None
        found: dict[Path, str] = {}
        for p in [DEFAULT_MODEL_DIR]:
            found.setdefault(p.resolve(), "default")
        for p in self.registered:
            found.setdefault(p.resolve(), "registered")
        for root in self.model_roots:
            for candidate in _scan_model_dirs(root):
                found.setdefault(candidate.resolve(), "checkpoint")
        return [{"path": str(p), "source": src, "available": _is_model_dir(p), "active": p == active}
                for p, src in found.items()]

    def next_request_id(self) -> int:
        return next(self._request_ids)


def _scan_model_dirs(root: Path, depth: int = 2) -> list[Path]:
    """Model directories at most `depth` levels below `root` (e.g. runs/NAME/checkpoint-N)."""
    out: list[Path] = []
    if not root.is_dir():
        return out
    level = [root]
    for _ in range(depth + 1):
        nxt = []
        for d in level:
            if _is_model_dir(d):
                out.append(d)
                continue
            try:
                nxt.extend(sorted(c for c in d.iterdir() if c.is_dir() and not c.name.startswith(".")))
            except OSError:
                continue
        level = nxt[:1000]
    return out


# ============================================================================ helpers
class BadRequest(Exception):
    """A payload that parsed but cannot be used: 400 (or `status`) with the message."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


def _b64decode(value: str, what: str) -> bytes:
    try:
        return base64.b64decode(value.encode("ascii"), validate=True)
    except (binascii.Error, ValueError, UnicodeEncodeError):
        raise BadRequest(f"{what} is not valid base64") from None


def _b64encode(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _parse_midi(value: str, what: str) -> Clip:
    data = _b64decode(value, what)
    try:
        clip, _report = Clip.from_midi(data, mode="user")
    except MidiFileError as exc:
        raise BadRequest(f"{what}: {exc}") from None
    return clip


def _note_json(n: Note) -> dict:
    return {"start": n.start, "pitch": n.pitch, "duration": n.duration, "velocity": n.velocity}


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:300] if text else type(exc).__name__


def _json_safe(value):
    """NaN/inf (never expected from features or MAA) become null instead of breaking the NDJSON stream."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value


def _score_seconds(clip: Clip) -> float | None:
    """None (render it all) unless the clip is longer than MAX_SCORE_SECONDS."""
    return MAX_SCORE_SECONDS if clip.duration_seconds > MAX_SCORE_SECONDS else None


def score_clips(state: HostState, clips: Sequence[Clip]) -> list[dict]:
    """MAA scores of clips rendered through the SoundFont (raises if MAA or rendering fails)."""
    from engine.render import render

    audios = [render(c, sample_rate=SCORE_SAMPLE_RATE, seconds=_score_seconds(c), soundfont=state.soundfont)
              for c in clips]
    with state.scorer_lock:
        return [s.as_dict() for s in state.scorer.score(audios, SCORE_SAMPLE_RATE)]


# ============================================================================ request models
class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")

class InfillSpan(_Strict):
    start_bar: int = Field(ge=0, le=MAX_INFILL_START_BAR, description="first bar to rewrite (0-based)")
    end_bar: int = Field(ge=1, le=MAX_INFILL_START_BAR + MAX_BARS, description="bar after the last one")

    @model_validator(mode="after")
    def _span(self):
        if self.end_bar <= self.start_bar:
            raise ValueError("infill.end_bar must be greater than infill.start_bar")
        if self.end_bar - self.start_bar > MAX_BARS:
            raise ValueError(f"an infill spans at most {MAX_BARS} bars")
        return self

class GenerateRequest(_Strict):
    prompt_midi: str | None = Field(None, max_length=DEFAULT_MAX_BODY_BYTES,
                                    description="base64 Standard MIDI File; omitted → procedural prompt")
    candidates: int = Field(4, ge=1, le=MAX_CANDIDATES)
    bars: int = Field(4, ge=1, le=MAX_BARS, description="new bars per candidate (infill: the span)")
    temperature: float = Field(1.0, ge=0.0, le=5.0, allow_inf_nan=False)
    top_p: float = Field(0.95, gt=0.0, le=1.0, allow_inf_nan=False)
    seed: int | None = Field(None, ge=0, le=2**63 - 1)
    max_new_tokens: int = Field(1024, ge=1, le=MAX_NEW_TOKENS)
    at_tick: int | None = Field(None, ge=0, le=2**40, description="continue from here (default: the end)")
    infill: InfillSpan | None = None
    allowed_pitches: list[int] | None = Field(None, min_length=1, max_length=128,
                                              description="key lock / range: pitches the model may write")
    score: bool = True
    first_note: bool = Field(False, description="procedural prompts also get a first note")

    @model_validator(mode="after")
    def _check(self):
        if self.allowed_pitches is not None and not all(0 <= p <= 127 for p in self.allowed_pitches):
            raise ValueError("allowed_pitches must be MIDI pitches 0..127")
        if self.infill is not None and self.prompt_midi is None:
            raise ValueError("infill needs prompt_midi (the clip to rewrite bars of)")
        if self.infill is not None and self.at_tick is not None:
            raise ValueError("give either at_tick or infill, not both")
        return self

class ScoreRequest(_Strict):
    midi: str | None = Field(None, description="base64 Standard MIDI File (rendered through the SoundFont)")
    wav: str | None = Field(None, description="base64 audio file (WAV/FLAC/OGG)")

    @model_validator(mode="after")
    def _one(self):
        if (self.midi is None) == (self.wav is None):
            raise ValueError("give exactly one of midi or wav")
        return self

class ActivateRequest(_Strict):
    path: str = Field(min_length=1, max_length=4096, description="a SMART model directory (safetensors)")


# ============================================================================ generation worker
class GenerationRun:
    """One /v1/generate request: runs in a worker thread, emits events through `emit`."""

    def __init__(self, state: HostState, req, clip: Clip | None, emit: Callable[[dict], None]):
        self.state = state
        self.req = req
        self.clip = clip
        self.emit = emit
        self.cancelled = threading.Event()
        self.id = state.next_request_id()

    def settings(self) -> GenerationSettings:
        r = self.req
        return GenerationSettings(candidates=r.candidates, temperature=r.temperature, top_p=r.top_p, seed=r.seed,
                                  bars=r.bars, max_new_tokens=r.max_new_tokens, grammar=True,
                                  allowed_pitches=r.allowed_pitches)

    def run(self) -> None:
        t0 = time.monotonic()
        state, req, clip = self.state, self.req, self.clip
        policy = state.policy  # a model activated meanwhile serves the next request
        view = ScheduledPolicy(policy, state.scheduler)
        settings = self.settings()

        def on_note(ev: NoteEvent) -> None:
            self.emit({"event": "note", "candidate": ev.candidate, "note": _note_json(ev.note)})

        stop = self.cancelled.is_set
        if req.infill is not None:
            a, b = req.infill.start_bar, req.infill.end_bar
            cands = view.infill(clip, a, b, settings, on_note=on_note, should_stop=stop)
            span, ppq = (clip.bar_tick(a), clip.bar_tick(b)), clip.ppq
        elif clip is not None:
            at = clip.end_tick if req.at_tick is None else req.at_tick
            cands = view.continue_clip(clip, settings, at_tick=req.at_tick, on_note=on_note, should_stop=stop)
            span, ppq = (at, None), clip.ppq
        else:
            cands, _prompts = view.generate_procedural(settings, first_note=req.first_note, on_note=on_note,
                                                       should_stop=stop)
            span, ppq = (0, None), 480
        if self.cancelled.is_set():
            return

        from engine.features import midi_features

        random_weights = bool(getattr(state.scorer, "is_random", False)) if state.scorer is not None else None
        out = []
        for i, c in enumerate(cands):
            if self.cancelled.is_set():
                return
            start, end = span
            # The candidate's own music (from where it starts), for features and listening scores.
            generated = c.clip.slice_ticks(start, end if end is not None else max(c.clip.end_tick, start) + 1)
            scores, score_error = None, None
            if not req.score:
                score_error = "not requested"
            elif state.scorer is None:
                score_error = state.maa_status()["reason"]
            elif not generated.notes:
                score_error = "no notes to score"
            else:
                try:
                    scores = score_clips(state, [generated])[0]
                except Exception as exc:  # a render/score failure costs this candidate its score, not the request
                    log.exception("scoring candidate %d of request %d failed", i, self.id)
                    score_error = f"scoring failed: {_first_line(exc)}"
            cand = {"candidate": i, "midi": _b64encode(c.clip.to_midi_bytes()), "notes": len(c.notes),
                    "bars": c.bars, "tokens": len(c.token_ids), "finished_by": c.finished_by,
                    "features": _json_safe(midi_features(generated)), "scores": _json_safe(scores),
                    "random_weights": random_weights if scores is not None else None}
            if score_error is not None:
                cand["scores_error"] = score_error
            out.append(cand)
            self.emit({"event": "candidate", **cand})
        self.emit({"event": "done", "done": True, "request_id": self.id, "ppq": ppq, "candidates": out,
                   "model": policy.describe(), "elapsed_s": round(time.monotonic() - t0, 4)})


# ============================================================================ ASGI pieces
class BearerAuthMiddleware:
    """401 for every HTTP request without `Authorization: Bearer TOKEN` (constant-time compare)."""

    def __init__(self, app, token: str | None, exempt: frozenset[str] = AUTH_EXEMPT_PATHS):
        self.app = app
        self.token = token.encode("utf-8") if token else None
        self.exempt = exempt

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http" and self.token is not None and scope.get("path") not in self.exempt:
            header = b""
            for name, value in scope.get("headers", []):
                if name == b"authorization":
                    header = value
                    break
            scheme, _, given = header.partition(b" ")
            ok = scheme.lower() == b"bearer" and hmac.compare_digest(given.strip(), self.token)
            if not ok:
                reason = "missing bearer token" if not header else "wrong bearer token"
                response = JSONResponse({"detail": f"unauthorized: {reason}"}, status_code=401,
                                        headers={"WWW-Authenticate": "Bearer"})
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


class BodyLimitMiddleware:
    """413 for request bodies over `limit` bytes, declared (Content-Length) or streamed (chunked)."""

    def __init__(self, app, limit: int):
        self.app = app
        self.limit = limit

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        too_big = JSONResponse({"detail": f"request body too large (limit {self.limit} bytes)"}, status_code=413)
        for name, value in scope.get("headers", []):
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    declared = self.limit + 1
                if declared > self.limit:
                    await too_big(scope, receive, send)
                    return
        # Read the body here (bounded), then replay it; later receive() calls (disconnect) pass through.
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body = message.get("body", b"")
            size += len(body)
            if size > self.limit:
                await too_big(scope, receive, send)
                return
            chunks.append(body)
            if not message.get("more_body", False):
                break
        replay = [{"type": "http.request", "body": b"".join(chunks), "more_body": False}]

        async def replay_receive():
            if replay:
                return replay.pop()
            return await receive()

        await self.app(scope, replay_receive, send)


def _event_stream_response(content, on_disconnect: Callable[[], None]):
    """An NDJSON StreamingResponse that reports a client disconnect as soon as it happens.

    Starlette only notices a disconnect (ASGI ≥ 2.4) when a write fails; a request that is decoding
    an infill (no events for a while) must stop at once, so listen for http.disconnect throughout.
    """
    import anyio
    from starlette.responses import StreamingResponse

    class EventStream(StreamingResponse):
        async def __call__(self, scope, receive, send):
            async with anyio.create_task_group() as tg:
                async def stream():
                    try:
                        await self.stream_response(send)
                    except OSError:  # the client went away mid-write
                        on_disconnect()
                    tg.cancel_scope.cancel()

                tg.start_soon(stream)
                await self.listen_for_disconnect(receive)
                on_disconnect()
                tg.cancel_scope.cancel()

    return EventStream(content, media_type="application/x-ndjson",
                       headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})


# ============================================================================ routers
def health_router():
    router = APIRouter(tags=["host"])

    @router.get("/v1/health")
    def health(request: Request) -> dict:
        """Device, model, MAA status and load counters."""
        state: HostState = request.app.state.host
        with state.lock:
            stats = state.stats.as_dict()
        return {"status": "ok", "device": str(state.policy.device), "model": state.policy.describe(),
                "decode_weights": state.scheduler.decode_weights,
                "maa": state.maa_status(), "auth": state.token is not None,
                "uptime_s": round(time.time() - state.started_at, 1),
                "limits": {"candidates": MAX_CANDIDATES, "bars": MAX_BARS, "max_new_tokens": MAX_NEW_TOKENS,
                           "body_bytes": state.max_body_bytes, "active_requests": state.max_active},
                "stats": stats, "decode": state.scheduler.stats.as_dict()}

    return router


def models_router():
    router = APIRouter(tags=["models"])

    @router.get("/v1/models")
    def models(request: Request) -> dict:
        """The loaded model and the model directories the host knows of."""
        state: HostState = request.app.state.host
        return {"active": state.policy.describe(), "models": state.known_models()}

    @router.post("/v1/models/activate")
    async def activate(body: ActivateRequest, request: Request) -> dict:
        """Load a model directory (safetensors only); on failure the current model stays active."""
        state: HostState = request.app.state.host

        def load() -> Policy:
            with state.activation_lock:  # one load at a time (each may hold a model's worth of memory)
                policy = Policy.load(body.path, device=state.policy.device)
            try:  # refuse models the decoder cannot run before they replace a working one
                Phi3Decoder(policy.model, batch_size=1, max_len=8)
            except (NotImplementedError, ValueError) as exc:
                raise PolicyLoadError(f"model in {body.path} cannot be decoded: {exc}") from None
            return policy

        try:
            policy = await run_in_threadpool(load)
        except PolicyLoadError as exc:
            raise HTTPException(status_code=400, detail=str(exc)) from None
        with state.lock:
            state.policy = policy
            if policy.path is not None and all(p.resolve() != policy.path.resolve() for p in state.registered):
                state.registered.append(policy.path)
        log.info("activated model %s", policy.path)
        return {"active": policy.describe()}

    return router


def generate_router():
    router = APIRouter(tags=["generate"])

    @router.post("/v1/generate", responses={200: {
        "content": {"application/x-ndjson": {}},
        "description": "NDJSON events: started, note…, candidate…, done (or error)"}})
    async def generate(body: GenerateRequest, request: Request):
        """Continue / infill the prompt (or a procedural prompt); stream notes, then scored candidates."""
        state: HostState = request.app.state.host
        clip = None
        if body.prompt_midi is not None:
            try:
                clip = await run_in_threadpool(_parse_midi, body.prompt_midi, "prompt_midi")
            except BadRequest as exc:
                raise HTTPException(status_code=exc.status, detail=str(exc)) from None
            _check_positions(body, clip)
        with state.lock:
            if state.stats.active >= state.max_active:
                state.stats.rejected_busy += 1
                raise HTTPException(status_code=503, detail=f"host busy: {state.max_active} requests in progress",
                                    headers={"Retry-After": "1"})
            state.stats.active += 1
            state.stats.requests += 1

        loop = asyncio.get_running_loop()
        events: asyncio.Queue = asyncio.Queue()

        def emit(event) -> None:
            try:
                loop.call_soon_threadsafe(events.put_nowait, event)
            except RuntimeError:  # the server loop is gone (shutdown)
                run.cancelled.set()

        run = GenerationRun(state, body, clip, emit)
        t0 = time.monotonic()

        def work() -> None:
            status = "failed"
            try:
                run.run()
                status = "cancelled" if run.cancelled.is_set() else "completed"
            except Exception as exc:
                log.exception("generation request %d failed", run.id)
                emit({"event": "error", "request_id": run.id, "message": _first_line(exc)})
            finally:
                emit(_END)
                with state.lock:
                    state.stats.active -= 1
                    setattr(state.stats, status, getattr(state.stats, status) + 1)
                    if status == "completed":
                        state.stats.latencies.append(time.monotonic() - t0)

        # Started now, not when the response starts streaming: the accounting above then always runs.
        try:
            state.executor.submit(work)
        except RuntimeError:  # executor shut down: the host is stopping
            with state.lock:
                state.stats.active -= 1
            raise HTTPException(status_code=503, detail="the host is shutting down") from None

        async def lines():
            try:
                yield json.dumps({"event": "started", "request_id": run.id, "candidates": body.candidates,
                                  "ppq": clip.ppq if clip is not None else 480}) + "\n"
                ended = False
                while not ended:
                    batch = [await events.get()]
                    while not events.empty():
                        batch.append(events.get_nowait())
                    if batch[-1] is _END:
                        batch.pop()
                        ended = True
                    if batch:
                        yield "".join(json.dumps(e, allow_nan=False) + "\n" for e in batch)
            finally:
                run.cancelled.set()  # no effect once done; stops the work if the client left

        return _event_stream_response(lines(), on_disconnect=run.cancelled.set)

    return router


def _check_positions(body, clip: Clip) -> None:
    """at_tick / infill must lie within the clip plus room for the new bars (bounded prompt sizes)."""

    limit_bar = clip.num_bars + MAX_BARS
    if body.at_tick is not None and body.at_tick > clip.bar_tick(limit_bar):
        raise HTTPException(status_code=422, detail=f"at_tick {body.at_tick} is more than {MAX_BARS} bars past "
                                                    f"the end of the prompt")
    if body.infill is not None and body.infill.start_bar > limit_bar:
        raise HTTPException(status_code=422, detail=f"infill.start_bar {body.infill.start_bar} is more than "
                                                    f"{MAX_BARS} bars past the end of the prompt")


def score_router():
    router = APIRouter(tags=["score"])

    @router.post("/v1/score")
    async def score(body: ScoreRequest, request: Request) -> dict:
        """MAA CE/CU/PC/PQ of a MIDI file (rendered through the SoundFont) or of audio."""
        state: HostState = request.app.state.host
        if state.scorer is None:
            raise HTTPException(status_code=503, detail=f"MAA unavailable: {state.maa_status()['reason']}")

        def work() -> dict:
            from engine.render import RenderError, SoundFontError, AudioFileError, load_wav, render
            from engine.scorer import MAAInputError

            seconds = None
            try:
                if body.midi is not None:
                    clip = _parse_midi(body.midi, "midi")
                    if not clip.notes:
                        raise BadRequest("midi has no notes to score")
                    audio = render(clip, sample_rate=SCORE_SAMPLE_RATE, seconds=_score_seconds(clip),
                                   soundfont=state.soundfont)
                    sr = SCORE_SAMPLE_RATE
                else:
                    data = _b64decode(body.wav, "wav")
                    with tempfile.TemporaryDirectory(prefix="smart-score-") as d:
                        path = Path(d) / "upload.audio"
                        path.write_bytes(data)
                        audio, sr = load_wav(path)
                    if audio.size == 0:
                        raise BadRequest("wav has no samples")
                    audio = audio[: int(MAX_SCORE_SECONDS * sr)]
                seconds = round(len(audio) / sr, 3)
                with state.scorer_lock:
                    result = _json_safe(state.scorer.score([audio], sr)[0].as_dict())
            except (AudioFileError, RenderError, MAAInputError) as exc:
                raise BadRequest(_first_line(exc)) from None
            except SoundFontError as exc:
                raise BadRequest(f"renderer unavailable: {_first_line(exc)}", status=503) from None
            return {**result, "random_weights": bool(getattr(state.scorer, "is_random", False)),
                    "maa": getattr(state.scorer, "source", None), "seconds": seconds}

        try:
            return await run_in_threadpool(work)
        except BadRequest as exc:
            raise HTTPException(status_code=exc.status, detail=str(exc)) from None

    return router


# ============================================================================ app factory
def create_app(policy: Policy, *, scorer=None, maa_reason: str | None = None, token: str | None = None,
               model_roots: Sequence[str | os.PathLike] = (), max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
               max_batch_rows: int = 32, max_active: int = 64, soundfont: str | None = None,
               routers: Sequence = (), decode_weights: str = "model"):
    """The host's FastAPI app. `scorer`: an MAAScorer or None (then `maa_reason` says why).

    `routers`: extra APIRouters (e.g. training jobs); they reach the state as `request.app.state.host`.
    """
    from contextlib import asynccontextmanager

    state = HostState(policy, scorer=scorer, maa_reason=maa_reason, token=token, model_roots=model_roots,
                      max_body_bytes=max_body_bytes, max_batch_rows=max_batch_rows, max_active=max_active,
                      soundfont=soundfont, decode_weights=decode_weights)

    @asynccontextmanager
    async def lifespan(app):
        yield
        state.close()

    app = FastAPI(title="SMART Studio policy host", version="1", lifespan=lifespan,
                  description="Generation, rendering and MAA scoring for SMART Studio. "
                              "Send `Authorization: Bearer TOKEN` when the host has a token.",
                  # Declares the bearer scheme for /docs (Authorize button); the check is BearerAuthMiddleware.
                  dependencies=[Depends(HTTPBearer(auto_error=False))])
    app.state.host = state

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError):
        problems = []
        for err in exc.errors():
            where = ".".join(str(p) for p in err.get("loc", ()) if p != "body")
            msg = str(err.get("msg", "invalid value")).removeprefix("Value error, ")
            problems.append(f"{where}: {msg}" if where else msg)
        return JSONResponse({"detail": "; ".join(problems) or "invalid request",
                             "errors": [{"loc": list(map(str, e.get("loc", ()))), "msg": str(e.get("msg"))}
                                        for e in exc.errors()]}, status_code=422)

    @app.exception_handler(Exception)
    async def unexpected_error(request: Request, exc: Exception):
        log.exception("unhandled error on %s", request.url.path)
        return JSONResponse({"detail": f"internal error: {_first_line(exc)}"}, status_code=500)

    for router in (health_router(), models_router(), generate_router(), score_router(), *routers):
        app.include_router(router)
    # Outermost first: auth before the body is read, then the body bound.
    app.add_middleware(BodyLimitMiddleware, limit=max_body_bytes)
    app.add_middleware(BearerAuthMiddleware, token=state.token)
    return app


# ============================================================================ smart serve
def is_loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # any other name may resolve to a public address


def pick_device(requested: str | None) -> str:
    if requested in (None, "auto"):
        return "cuda" if torch.cuda.is_available() else "cpu"
    if requested == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda: no CUDA device is available to this process")
    return requested


DECODE_WEIGHTS_ENV_VAR = "SMART_DECODE_WEIGHTS"
DECODE_WEIGHT_CHOICES = ("auto", "model", "int8", "fp16")


def pick_decode_weights(requested: str, device: str) -> str:
    """--decode-weights: "auto" is int8 on CPU when torch has the kernels (faster decoding at about
    +0.001 nats/token, see BENCHMARKS.md), exact weights otherwise."""
    from engine.fastdecode import int8_weights_available

    if requested not in DECODE_WEIGHT_CHOICES:
        raise UserError(f"--decode-weights / ${DECODE_WEIGHTS_ENV_VAR}: {requested!r} is not one of "
                        f"{', '.join(DECODE_WEIGHT_CHOICES)}")
    if requested != "auto":
        if requested != "model" and device != "cpu":
            raise UserError(f"--decode-weights {requested} is a CPU mode; use model (exact) on {device}")
        return requested
    return "int8" if device == "cpu" and int8_weights_available() else "model"


def cpu_threads(requested: int | None, device: str) -> int | None:
    """Torch intra-op threads for the host (None: leave torch's default, as on CUDA).

    Decoding runs many small ops; spreading each over all cores mostly buys spin-waiting, and on a
    busy machine far worse: on 2 loaded cores 1 thread decoded 35-row steps in 5.5 ms against 97 ms
    with 2 (benchmarks/bench_host_load.py). So by default a quarter of the cores, 1 to 4.
    """
    if requested is not None:
        if requested < 1:
            raise UserError(f"invalid --threads {requested}")
        return requested
    if device != "cpu":
        return None
    return max(1, min(4, (os.cpu_count() or 1) // 4))


def bind_socket(host: str, port: int) -> socket.socket:
    try:
        infos = socket.getaddrinfo(host.strip("[]"), port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise UserError(f"cannot resolve --host {host}: {exc.strerror}") from None
    family, _, _, _, address = infos[0]
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(address)
    except OSError as exc:
        sock.close()
        raise UserError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    sock.listen(128)
    return sock


def run(args) -> int:
    token = args.token or os.environ.get(TOKEN_ENV_VAR) or None
    if not is_loopback(args.host) and not token:
        raise UserError(f"refusing to listen on {args.host} without a token: anyone who can reach it could use "
                        f"the GPU. Pass --token T or set {TOKEN_ENV_VAR} (or bind to 127.0.0.1)")
    if not 0 <= args.port <= 65535:
        raise UserError(f"invalid --port {args.port}")
    if token is not None and len(token) < 8:
        raise UserError("the token must be at least 8 characters")
    if args.soundfont is not None and not Path(args.soundfont).is_file():
        raise UserError(f"--soundfont {args.soundfont}: no such file")
    device = pick_device(args.device)
    threads = cpu_threads(args.threads, device)
    if threads is not None:
        torch.set_num_threads(threads)
    decode_weights = pick_decode_weights(args.decode_weights, device)

    import uvicorn

    try:
        policy = Policy.load(args.model, device=device)
    except PolicyLoadError as exc:
        hint = "" if args.model else " (train one with `smart pretrain` or pass --model DIR)"
        raise UserError(f"{exc}{hint}") from None
    scorer, maa_reason = None, None
    try:
        from engine.scorer import MAAScorer, MAAUnavailable

        try:
            scorer = MAAScorer.load(args.maa, device=device, allow_download=False)
        except MAAUnavailable as exc:
            maa_reason = str(exc)
    except ImportError as exc:
        maa_reason = f"the MAA scorer cannot be imported: {exc}"
    from engine.host_jobs import JobManager, jobs_router  # training jobs (POST /v1/train, /v1/jobs)

    jobs = JobManager(args.jobs_dir)
    app = create_app(policy, scorer=scorer, maa_reason=maa_reason, token=token,
                     model_roots=[DEFAULT_MODEL_DIR.parent, *args.checkpoints],
                     max_batch_rows=args.max_batch_rows, soundfont=args.soundfont, routers=[jobs_router(jobs)],
                     decode_weights=decode_weights)
    sock = bind_socket(args.host, args.port)
    port = sock.getsockname()[1]
    url_host = f"[{args.host}]" if ":" in args.host else args.host
    print(f"smart serve: http://{url_host}:{port} (docs at /docs) — model {policy.path}, device {device}, "
          f"MAA {'ok' if scorer is not None else 'missing: ' + (maa_reason or '')}, "
          f"auth {'on' if token else 'off'}, {torch.get_num_threads()} CPU threads, decode weights {decode_weights}", file=sys.stderr, flush=True)
    if args.ready_file:
        # Written once bound: a parent that asked for --port 0 learns the port from it.
        Path(args.ready_file).write_text(json.dumps({"port": port, "pid": os.getpid()}))
    config = uvicorn.Config(app, log_level=args.log_level, access_log=args.access_log, lifespan="on",
                            timeout_graceful_shutdown=5)
    uvicorn.Server(config).run(sockets=[sock])
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("serve", help="run the policy host (HTTP API for the studio; OpenAPI at /docs)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (non-loopback needs a token)")
    p.add_argument("--port", type=int, default=DEFAULT_PORT, help="0 picks a free port (see --ready-file)")
    p.add_argument("--token", default=None, help=f"bearer token clients must send (default: ${TOKEN_ENV_VAR})")
    p.add_argument("--model", default=None, help="model directory (default: the shipped model)")
    p.add_argument("--maa", default=None, help="MAA checkpoint.pt or HF directory (default: $SMART_MAA_CHECKPOINT "
                                               "or the HF cache); without one, scores are null")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--threads", type=int, default=None,
                   help="torch CPU threads (default on CPU: a quarter of the cores, 1 to 4)")
    p.add_argument("--decode-weights", default=os.environ.get(DECODE_WEIGHTS_ENV_VAR, "auto"),
                   choices=DECODE_WEIGHT_CHOICES,
                   help="weights for decoding: model = exact; int8/fp16 = packed CPU snapshots (faster, "
                        f"approximate); auto = int8 on CPU, exact on CUDA (default: ${DECODE_WEIGHTS_ENV_VAR} or auto)")
    p.add_argument("--checkpoints", action="append", default=[], metavar="DIR",
                   help="also list model directories found under DIR in /v1/models (repeatable)")
    p.add_argument("--soundfont", default=None, help="SoundFont for rendering (default: the shipped piano)")
    p.add_argument("--max-batch-rows", type=int, default=64, help="rows (candidates) decoded together at most (at least 16, the most one request asks for)")
    p.add_argument("--jobs-dir", default=None, help="training jobs directory (default: $SMART_JOBS_DIR or "
                                                    "~/.local/share/smart-studio/jobs)")
    p.add_argument("--ready-file", default=None, help="write {\"port\", \"pid\"} here once listening")
    p.add_argument("--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"])
    p.add_argument("--access-log", action="store_true", help="log every request")
    p.set_defaults(func=run)
