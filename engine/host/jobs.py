"""Training jobs on the policy host: SMART GRPO runs and taste tunes, each in its own process.

Endpoints (router `jobs_router(manager)`, included by `smart serve`):

    POST   /v1/train                 {"job": ID, "state": …}; body: GRPO options by name (`engine.api.GRPOOptions`),
                                     plus "prompts_midi": [base64 MIDI…] | "procedural" and
                                     "procedural_prompts": N (mix N procedural prompts with the MIDI ones)
    POST   /v1/taste/tune            {"job": ID, "state": …}; fine-tune toward a musician's taste. Body: options
                                     by name (`engine.api.TasteTuneOptions`: method dpo|grpo, steps, beta, lr,
                                     synthetic_prompts, seed, cpu_threads, model), "name", and "pairs":
                                     [{"choice": "A"|"B"|"tie", "a": b64 MIDI, "b": b64 MIDI, "prompt": b64 MIDI
                                     | null, "source": str?}] — at least engine.taste.MIN_PAIRS decisive ones,
                                     at most MAX_TASTE_PAIRS, each file ≤ MAX_TASTE_MIDI_BYTES and the whole
                                     body within the host's body limit (413 above it)
    GET    /v1/train/options         the options (types, bounds, defaults), presets and rewards this host
                                     offers, whether it has MAA weights, and the taste-tuning options/limits
    GET    /v1/jobs                  every job with its state (queued/running/paused/cancelled/completed/
                                     failed, or damaged: a folder whose job.json could not be rebuilt)
    GET    /v1/jobs/ID               state, progress, ETA, last step, checkpoints (reward, diversity)
    GET    /v1/jobs/ID/events        NDJSON: every events.jsonl step line so far, new ones as they are
                                     written, {"event": "state"} lines on state changes, then
                                     {"done": true, "state": …, "result": …}
    DELETE /v1/jobs/ID               cancel (a running process is stopped first; the answer has the final
                                     state; resume continues from its last checkpoint)
    POST   /v1/jobs/ID/pause         stop at the next step boundary (a checkpoint is written first)
    POST   /v1/jobs/ID/resume        queue it again; it continues from its last complete checkpoint
    GET    /v1/jobs/ID/checkpoints   complete checkpoints (each a model directory for /v1/models/activate)

A taste job (`config.kind` = "taste-tune") fits the taste model on its pairs, then runs
`training.taste.tune`; its step lines (DPO: loss, rewards_accuracies, rewards_margins, rewards_chosen/
_rejected; GRPO with the taste reward: reward_mean, kl, diversity) carry `steps_total`, and the job's
status, events, pause, cancel and checkpoints work as for GRPO, with one honest difference: a tune
cannot continue mid-run. Pause stops it after the current step and keeps the model trained so far as
checkpoints/checkpoint-N; resume (also after a cancel, a crash or a host restart) starts over from the
base model (its result says `restarted: true`; GET /v1/jobs/ID has a `note` saying so).

Every option is checked when the job is submitted (types and bounds from the contract, the model and
data folders, rewards against the host's MAA weights, worker counts against its cores): a refused job
is never created. Each job is a subprocess (`python -m engine.cli host-job JOBDIR`, a command the
`training` package registers), so a crash in training never takes the host down and the host never
imports `training`; one job runs at a time (one device per host) and the others wait in a FIFO queue.

Jobs directory (`smart serve --jobs-dir`, default `$SMART_JOBS_DIR` or the user's data dir):

    JOBS/ID/job.json       id, config, state, timestamps, error, result (written atomically)
    JOBS/ID/prompts/*.mid  the prompts the client sent
    JOBS/ID/...            the GRPO run directory (events.jsonl, checkpoints/, final/, run card)
    JOBS/ID/pairs/         a taste job's pairs (preferences.jsonl + pairs/*.mid, `engine.preferences`);
                           taste/ the taste fit on them, tune/ the tune running, events.jsonl, final/
    JOBS/ID/job.log        the job process's output
    JOBS/ID/phase.json     what the job process is doing between steps (taste tunes: fitting, sampling);
                           GET /v1/jobs/ID shows it as "phase" while the job runs
    JOBS/.ID.partial/      a submission being written (renamed to JOBS/ID when complete; a host killed
                           meanwhile leaves only this hidden folder, removed by the next host)

Jobs outlive client connections and host restarts: a host starting on a jobs directory resumes the
jobs that were running from their last checkpoint (first in the queue) — or, started with
`--interrupted-jobs pause` as the studio starts its own host, pauses them for the musician to resume —
and queued ones stay queued.
A job folder whose job.json is damaged is rebuilt from its run configuration, or listed as damaged
with its files; no job disappears. Job files are read, never trusted: a value of the wrong type is read
as absent, and every answer and stream line is strict JSON (NaN/inf as null). This module must never
import Qt.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import logging
import math
import os
import random
import secrets
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from fastapi import APIRouter, HTTPException, Request
from fastapi.concurrency import run_in_threadpool

from engine.api import (
    CHECKPOINT_MARKER,
    ERROR_FILE,
    EVENTS_FILE,
    FINAL_DIR,
    HOST_OWNED_OPTIONS,
    JOB_FILE,
    JOB_PROCESS_COMMAND,
    MAX_TASTE_MIDI_BYTES,
    MAX_TASTE_PAIRS,
    PHASE_FILE,
    PRESETS,
    PROCEDURAL_PROMPTS,
    RESULT_FILE,
    REWARDS,
    RUN_CONFIG_FILE,
    STOP_FILE,
    TASTE_JOB_KIND,
    TASTE_OPTION_NAMES,
    complete_checkpoints,
    option_values,
    parse_reward_spec,
    reward_needs_maa,
    train_options,
    validate_grpo_options,
    validate_taste_tune_options,
)
from engine.errors import UserError
from engine.music import atomic_write_bytes, atomic_write_text

log = logging.getLogger("smart.host.jobs")

JOBS_DIR_ENV_VAR = "SMART_JOBS_DIR"
LOG_FILE = "job.log"
PROMPTS_DIR = "prompts"
TASTE_PAIRS_DIR = "pairs"  # a taste job's pairs (engine.preferences layout)

QUEUED, RUNNING, PAUSED, CANCELLED, COMPLETED, FAILED = "queued", "running", "paused", "cancelled", "completed", "failed"
DAMAGED = "damaged"  # a folder whose job.json is unreadable and cannot be rebuilt: listed with its files
STATES = (QUEUED, RUNNING, PAUSED, CANCELLED, COMPLETED, FAILED)
ACTIVE_STATES = (QUEUED, RUNNING)
FINAL_STATES = (PAUSED, CANCELLED, COMPLETED, FAILED, DAMAGED)
RESUMABLE_STATES = (PAUSED, CANCELLED, FAILED)

PARTIAL_SUFFIX = ".partial"  # a submission's folder while it is written (renamed to ID when complete)
MAX_PROMPTS_MIDI = 256
MAX_PROCEDURAL_PROMPTS = 256
MAX_NAME_CHARS = 200
MAX_LISTED_FILES = 200
MAX_REPORTED_DEPTH = 64  # job-file values nested deeper are reported as null (the encoder recurses too)
# Options a client may not set: the host decides where a run lives, when it resumes, and which of its
# files (MAA weights, SoundFont) a run uses.
HOST_OWNED = frozenset({"out_dir", "resume"}) | HOST_OWNED_OPTIONS
POLL_S = 0.2
CANCEL_GRACE_S = 10.0  # SIGTERM, then SIGKILL after this long


def default_jobs_dir() -> Path:
    env = os.environ.get(JOBS_DIR_ENV_VAR)
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_DATA_HOME") or (Path.home() / ".local" / "share")
    return Path(base) / "smart-studio" / "jobs"


def _now() -> float:
    return round(time.time(), 3)


# ============================================================================ checking a submission
def _no_nul(path: str, what: str) -> str:
    if "\0" in path:
        raise UserError(f"{what} path contains a NUL byte")
    return path


def _any_model_dir(path: str) -> Path:
    p = Path(_no_nul(path, "model")).expanduser().resolve()
    if not p.is_dir():
        raise UserError(f"model directory not found on the host: {p}")
    return p


def _any_data_dir(path: str) -> Path:
    return Path(_no_nul(path, "data folder")).expanduser().resolve()


@dataclass
class SubmissionRules:
    """What a /v1/train body is checked against: the host's model, which folders clients may name,
    its MAA weights, cores and devices. The host fills it in when the jobs router starts."""

    default_model: Callable[[], str | None] = lambda: None  # the host's active model, when none is given
    model_dir: Callable[[str], Path] = _any_model_dir  # a model directory clients may use, or UserError
    data_dir: Callable[[str], Path] = _any_data_dir  # a prepared-data folder clients may use, or UserError
    maa_weights: bool | None = None  # None: unknown (not refused here; the job says so if they are missing)
    maa_reason: str | None = None
    cores: int = os.cpu_count() or 1
    cuda: bool | None = None


def _model_context(model_dir: Path) -> int | None:
    try:
        config = json.loads((model_dir / "config.json").read_text())
        return int(config["max_position_embeddings"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def check_submission(body: Any, rules: SubmissionRules) -> tuple[dict, list[bytes], int]:
    """(GRPO option values, prompt MIDI files, procedural prompts to mix in) from a /v1/train body.

    Raises UserError with a message for the client on anything the job would fail on."""
    if not isinstance(body, dict):
        raise UserError("the request body must be a JSON object")
    body = dict(body)
    prompts_midi = body.pop("prompts_midi", None)
    procedural = body.pop("procedural_prompts", 0)
    owned = sorted(k for k in body if k in HOST_OWNED)
    if owned:
        raise UserError(f"{', '.join(owned)} cannot be set: the host decides where a job runs, when it resumes "
                        "and which of its files (MAA weights, SoundFont) it uses")
    if body.get("preset") is None:
        body.pop("preset", None)
    validate_grpo_options(body)  # types and bounds of what the client sent
    preset = body.get("preset", "paper")
    values = {**PRESETS[preset].options, **body, "preset": preset}
    options = validate_grpo_options(values)

    if not options.model:
        options.model = rules.default_model()
        if not options.model:
            raise UserError("no model given and the host has no model directory to fine-tune")
    model = rules.model_dir(options.model)
    options.model = str(model)
    context = _model_context(model)
    if context is not None and options.max_completion_tokens >= context - 8:
        raise UserError(f"max_completion_tokens must be below the model's context ({context} - 8)")

    specs = parse_reward_spec(options.reward)
    custom = [name for name, _ in specs if ":" in name]
    if custom:
        raise UserError(f"custom reward functions ({', '.join(custom)}) cannot be started over HTTP; "
                        "use a named reward or `smart grpo` on the host")
    known = {r.name for r in REWARDS}
    for name, _ in specs:
        if name not in known:
            raise UserError(f"unknown reward {name!r} (choose from {', '.join(sorted(known))})")
    maa_rewards = [name for name, _ in specs if reward_needs_maa(name)]
    if maa_rewards and not options.maa_random and rules.maa_weights is False:
        offline = ", ".join(r.name for r in REWARDS if not r.needs_maa)
        raise UserError(f"reward {', '.join(maa_rewards)} needs MAA weights, and this host has none"
                        f"{' (' + rules.maa_reason + ')' if rules.maa_reason else ''}: choose an offline reward "
                        f"({offline}), or maa_random for a plumbing test")
    for name in ("render_processes", "cpu_threads"):
        value = getattr(options, name)
        if value is not None and value > rules.cores:
            raise UserError(f"{name} {value} is more than this host's {rules.cores} CPU cores")
    if rules.cuda is False and (options.device == "cuda" or options.use_vllm):
        raise UserError(f"{'device cuda' if options.device == 'cuda' else 'use_vllm'} needs a CUDA device, and "
                        "this host has none")

    if not isinstance(procedural, int) or isinstance(procedural, bool) or not 0 <= procedural <= MAX_PROCEDURAL_PROMPTS:
        raise UserError(f"procedural_prompts must be an integer 0..{MAX_PROCEDURAL_PROMPTS}")
    midi_files = _prompt_files(prompts_midi)
    if procedural and not midi_files:
        raise UserError("procedural_prompts mixes procedural prompts into prompts_midi; without MIDI prompts "
                        "use prompts=\"procedural\"")
    if midi_files and "prompts" in body:
        raise UserError("give either prompts_midi or prompts, not both")
    if not midi_files:
        spec = options.prompts
        if spec.startswith("data:"):
            rest = spec[len("data:"):]
            directory, split = rest, None
            if ":" in rest and rest.rsplit(":", 1)[1] in ("train", "val", "test") and not Path(rest).exists():
                directory, split = rest.rsplit(":", 1)
            if not directory:
                raise UserError("prompts data:DIR needs a folder")
            data = rules.data_dir(directory)
            options.prompts = f"data:{data}" + (f":{split}" if split else "")
        elif spec not in PROCEDURAL_PROMPTS:
            raise UserError("prompts must be procedural, procedural+note or data:DIR on the host "
                            "(send your own MIDI prompts as prompts_midi)")
    return option_values(options), midi_files, int(procedural)


def _prompt_files(prompts_midi: Any) -> list[bytes]:
    """The client's MIDI prompts, each decoded and checked (runs in a worker thread, never the event loop)."""
    if prompts_midi is None or prompts_midi == "procedural":
        return []
    if not isinstance(prompts_midi, list):
        raise UserError("prompts_midi must be a list of base64 MIDI files or \"procedural\"")
    if not prompts_midi:
        raise UserError("prompts_midi is empty (omit it or pass \"procedural\" for procedural prompts)")
    if len(prompts_midi) > MAX_PROMPTS_MIDI:
        raise UserError(f"at most {MAX_PROMPTS_MIDI} prompt MIDI files")
    out = []
    for i, item in enumerate(prompts_midi):
        data, clip = _decode_midi(item, f"prompts_midi[{i}]")
        if not clip.notes:
            raise UserError(f"prompts_midi[{i}] has no notes")
        out.append(data)
    return out


@dataclass(frozen=True)
class TastePair:
    """One judged pair of a /v1/taste/tune body, decoded and checked."""

    choice: str  # "A", "B" or "tie"
    a: bytes
    b: bytes
    prompt: bytes | None
    source: str | None


TASTE_PAIR_KEYS = frozenset({"choice", "a", "b", "prompt", "source"})
MAX_SOURCE_CHARS = 64


def check_taste_submission(body: Any, rules: SubmissionRules) -> tuple[dict, list[TastePair]]:
    """(taste-tuning option values, the pairs) from a /v1/taste/tune body: options by name
    (`engine.api.TasteTuneOptions`) and "pairs": [{"choice": "A"|"B"|"tie", "a": b64 MIDI, "b": b64 MIDI,
    "prompt": b64 MIDI | null, "source": str?}]. Raises UserError with a message for the client on
    anything the job would fail on (runs in a worker thread: it decodes every MIDI file)."""
    from engine.preferences import normalize_choice
    from engine.taste import MIN_PAIRS

    if not isinstance(body, dict):
        raise UserError("the request body must be a JSON object")
    body = dict(body)
    raw_pairs = body.pop("pairs", None)
    owned = sorted(k for k in body if k in HOST_OWNED)
    if owned:
        raise UserError(f"{', '.join(owned)} cannot be set: the host decides where a job runs and when it resumes")
    options = validate_taste_tune_options(body)
    if not options.model:
        options.model = rules.default_model()
        if not options.model:
            raise UserError("no model given and the host has no model directory to tune")
    options.model = str(rules.model_dir(options.model))
    if options.cpu_threads is not None and options.cpu_threads > rules.cores:
        raise UserError(f"cpu_threads {options.cpu_threads} is more than this host's {rules.cores} CPU cores")

    if not isinstance(raw_pairs, list) or not raw_pairs:
        raise UserError("pairs must be a non-empty list of judged pairs "
                        "({\"choice\": \"A\"|\"B\"|\"tie\", \"a\": base64 MIDI, \"b\": …, \"prompt\": … | null})")
    if len(raw_pairs) > MAX_TASTE_PAIRS:
        raise UserError(f"at most {MAX_TASTE_PAIRS} pairs per job (got {len(raw_pairs)})")
    pairs = []
    for i, item in enumerate(raw_pairs):
        if not isinstance(item, dict):
            raise UserError(f"pairs[{i}] must be an object")
        unknown = sorted(set(item) - TASTE_PAIR_KEYS)
        if unknown:
            raise UserError(f"pairs[{i}]: unknown field {', '.join(unknown)}")
        try:
            choice = normalize_choice(item.get("choice", ""))
        except ValueError as exc:
            raise UserError(f"pairs[{i}]: {exc}") from None
        source = item.get("source")
        if source is not None and (not isinstance(source, str) or len(source) > MAX_SOURCE_CHARS):
            raise UserError(f"pairs[{i}].source must be a string of at most {MAX_SOURCE_CHARS} characters")
        a = _pair_midi(item.get("a"), f"pairs[{i}].a")
        b = _pair_midi(item.get("b"), f"pairs[{i}].b")
        prompt = _pair_midi(item["prompt"], f"pairs[{i}].prompt") if item.get("prompt") is not None else None
        pairs.append(TastePair(choice, a, b, prompt, source))
    decisive = sum(p.choice != "tie" for p in pairs)
    if decisive < MIN_PAIRS:
        raise UserError(f"{decisive} decisive pair{'s' if decisive != 1 else ''} (ties do not count): a taste needs "
                        f"at least {MIN_PAIRS} before it can be tuned toward")
    return {name: getattr(options, name) for name in TASTE_OPTION_NAMES}, pairs


def _decode_midi(value: Any, where: str, max_bytes: int | None = None):
    """(bytes, Clip) of one base64 MIDI file from a job body; UserError naming `where` otherwise."""
    from engine.music import Clip, MidiFileError

    if not isinstance(value, str):
        raise UserError(f"{where} must be a base64 MIDI file")
    if max_bytes is not None and len(value) > max_bytes * 4 // 3 + 4:
        raise UserError(f"{where} is larger than {max_bytes // 1024} KiB")
    try:
        data = base64.b64decode(value.encode("ascii"), validate=True)
    except (binascii.Error, ValueError, UnicodeEncodeError):
        raise UserError(f"{where} is not valid base64") from None
    try:
        clip, _ = Clip.from_midi(data, mode="user")
    except MidiFileError as exc:
        raise UserError(f"{where}: {exc}") from None
    return data, clip


def _pair_midi(value: Any, where: str) -> bytes:
    return _decode_midi(value, where, MAX_TASTE_MIDI_BYTES)[0]


def write_procedural_prompts(directory: Path, model_dir: str, count: int, seed: int) -> list[Path]:
    """`count` procedural prompts (random meter and tempo with a first note, paper §3.5) as MIDI files,
    so they mix with a user's MIDI prompts in one prompt set."""
    from engine.tokenizer import RemiTokenizer

    tokenizer = RemiTokenizer.load(model_dir)
    rng = random.Random(seed)
    out = []
    for i in range(count):
        clip = tokenizer.decode(tokenizer.procedural_prompt(rng, first_note=True))
        path = directory / f"procedural-{i:03d}.mid"
        atomic_write_bytes(path, clip.to_midi_bytes())
        out.append(path)
    return out


# ============================================================================ one job on disk
class Job:
    """A job directory and its job.json (the manager holds the lock when changing it)."""

    def __init__(self, directory: Path, data: dict):
        self.dir = directory
        self.data = data
        self.process: subprocess.Popen | None = None
        self.log_file = None
        self.stop_requested: str | None = None  # "pause" | "cancel" while the process winds down
        self.stop_sent_at: float | None = None

    @property
    def id(self) -> str:
        return self.data["id"]

    @property
    def state(self) -> str:
        return self.data["state"]

    @property
    def events_path(self) -> Path:
        return self.dir / EVENTS_FILE

    def save(self) -> None:
        self.data["updated"] = _now()
        atomic_write_text(self.dir / JOB_FILE, json.dumps(self.data, indent=2))

    def set_state(self, state: str, **extra) -> None:
        self.data["state"] = state
        self.data.update(extra)
        self.save()

    @classmethod
    def load(cls, directory: Path) -> "Job":
        """The job in `directory`; a damaged job.json is rebuilt from the folder (or the job is listed as
        damaged with its files): a job never disappears from the list with its checkpoints."""
        try:
            data = json.loads((directory / JOB_FILE).read_text())
            problem = _job_data_problem(data)
        except FileNotFoundError:
            problem = f"{JOB_FILE} is missing"
        except (OSError, ValueError, RecursionError) as exc:  # unreadable, not UTF-8, not JSON, nested too deeply
            problem = f"{JOB_FILE} is unreadable ({type(exc).__name__})"
        if problem is None:
            data["id"] = directory.name  # the folder names the job
            return cls(directory, data)
        return cls.rebuild(directory, problem)

    @classmethod
    def rebuild(cls, directory: Path, problem: str) -> "Job":
        log.warning("job folder %s: %s", directory, problem)
        run_config = _read_json(directory / RUN_CONFIG_FILE)
        try:
            created = round(directory.stat().st_mtime, 3)
        except OSError:
            created = None
        if run_config is None:
            files = sorted(str(p.relative_to(directory)) for p in directory.rglob("*") if p.is_file())
            why = (f"its {RUN_CONFIG_FILE} is damaged too" if (directory / RUN_CONFIG_FILE).exists()
                   else f"the folder has no {RUN_CONFIG_FILE} to rebuild the job from")
            # A taste job's folder holds its pairs (pairs/): say which kind of job it was.
            config = {"kind": TASTE_JOB_KIND} if (directory / TASTE_PAIRS_DIR).is_dir() else {}
            return cls(directory, {
                "id": directory.name, "state": DAMAGED, "created": created, "config": config, "prompts": None,
                "error": f"{problem}, and {why}",
                "files": files[:MAX_LISTED_FILES], "files_total": len(files)})
        result = _read_json(directory / RESULT_FILE)
        config = {k: v for k, v in run_config.items() if k != "resume"}
        data = {"id": directory.name, "name": None, "created": created, "config": config, "prompts": None,
                "resume": True, "attempts": 0, "rebuilt": problem}
        if result is not None and (directory / FINAL_DIR / "config.json").is_file():
            data.update(state=COMPLETED, result=result)
        else:
            data.update(state=FAILED, error=f"{problem}; rebuilt from the job folder — resume continues from "
                                            "the last checkpoint")
        job = cls(directory, data)
        try:
            damaged = directory / JOB_FILE
            if damaged.exists():
                damaged.replace(directory / (JOB_FILE + ".damaged"))  # kept for a person to look at
            job.save()
        except OSError:
            log.exception("could not write the rebuilt %s of %s", JOB_FILE, directory)
        return job

    def last_event(self) -> dict | None:
        """The last complete step line of events.jsonl (cheap: reads the file's tail)."""
        try:
            with open(self.events_path, "rb") as f:
                f.seek(0, os.SEEK_END)
                size = f.tell()
                f.seek(max(0, size - 16384))
                tail = f.read().decode("utf-8", errors="replace")
        except OSError:
            return None
        for line in reversed(tail.splitlines()):
            try:
                rec = json.loads(line)
            except (ValueError, RecursionError):  # a torn or damaged line
                continue
            if isinstance(rec, dict) and _count(rec.get("step")) is not None:
                return _json_safe(rec)
        return None

    def checkpoints(self) -> list[dict]:
        out = []
        for step, path in complete_checkpoints(self.dir):
            try:
                info = json.loads((path / CHECKPOINT_MARKER).read_text())
            except (OSError, ValueError, RecursionError):
                info = {}
            info = _json_safe(info) if isinstance(info, dict) else {}
            out.append({"step": step, "path": str(path.resolve()), "reward_mean": info.get("reward_mean"),
                        "diversity": info.get("diversity"), "elapsed_s": info.get("elapsed_s")})
        return out

    def final_model(self) -> str | None:
        final = self.dir / FINAL_DIR
        return str(final.resolve()) if (final / "config.json").is_file() and self.state != RUNNING else None

    @property
    def kind(self) -> str:
        """"grpo" or "taste-tune" (`engine.api.TASTE_JOB_KIND`)."""
        return TASTE_JOB_KIND if self.data["config"].get("kind") == TASTE_JOB_KIND else "grpo"

    def phase(self) -> dict | None:
        """{"phase": text, "since": time} the job process reported (taste tunes: fitting, sampling, …), or
        None; read, never trusted: a damaged file is no phase."""
        try:
            data = json.loads((self.dir / PHASE_FILE).read_text(encoding="utf-8")[:4096])
        except (OSError, ValueError, RecursionError):
            return None
        if not isinstance(data, dict) or not isinstance(data.get("phase"), str):
            return None
        return {"phase": data["phase"][:200], "since": _time(data.get("since"))}

    def steps_total(self, last: dict | None = None) -> int:
        """The steps this job runs: its configuration's, else (a taste tune left to the tuner's default)
        what its step records or its result say."""
        cfg = self.data["config"]
        if _count(cfg.get("steps")):
            return _count(cfg["steps"])
        last = last if last is not None else self.last_event()
        result = self.data.get("result") if isinstance(self.data.get("result"), dict) else {}
        return _count((last or {}).get("steps_total")) or _count(result.get("steps_total")) or 0

    def describe(self, *, queue_position: int | None = None, details: bool = True) -> dict:
        cfg = self.data["config"]
        last = self.last_event()
        steps = self.steps_total(last)
        step = (_count(last.get("step")) or 0) if last else 0
        elapsed = _seconds(last.get("elapsed_s")) if last else 0.0
        eta = None
        if self.state == RUNNING and last and step > 0 and steps > step:
            eta = round(elapsed / step * (steps - step), 1)
        out = {"id": self.id, "state": self.state, "created": _time(self.data.get("created")),
               "started": _time(self.data.get("started")), "finished": _time(self.data.get("finished")),
               "kind": self.kind, "model": cfg.get("model"),
               "reward": cfg.get("reward") or (f"taste ({cfg.get('method')})" if self.kind == TASTE_JOB_KIND else None),
               "steps": steps,
               "progress": {"step": step, "steps": steps, "fraction": round(step / steps, 4) if steps else None},
               "elapsed_s": round(elapsed, 2), "eta_s": eta, "queue_position": queue_position,
               "error": self.data.get("error"), "attempts": _count(self.data.get("attempts")) or 0,
               "name": self.data.get("name")}
        if self.state == DAMAGED:
            out["files"] = self.data.get("files", [])
        if self.data.get("note"):
            out["note"] = self.data["note"]
        if self.state == RUNNING:
            phase = self.phase()
            if phase is not None:
                out["phase"] = phase
        if self.stop_requested:
            out["stop_requested"] = self.stop_requested
        if details:
            out["config"] = cfg
            out["prompts"] = self.data.get("prompts")
            out["last"] = last
            out["checkpoints"] = self.checkpoints()
            out["final_model"] = self.final_model()
            out["result"] = self.data.get("result")
        return _json_safe(out)  # a NaN or inf in a job's files is null here, never a 500


# ============================================================================ the manager
class JobManager:
    """Jobs on disk + one worker process at a time + a FIFO queue; a thread watches the process."""

    def __init__(self, jobs_dir: str | os.PathLike | None = None, *, python: str = sys.executable,
                 env: dict | None = None, poll_s: float = POLL_S, resume_interrupted: bool = True):
        self.jobs_dir = Path(jobs_dir) if jobs_dir is not None else default_jobs_dir()
        # A job that was running when the host stopped: resumed first thing (a served host that crashed
        # or was restarted), or paused for the musician to resume (the studio's own host, which stops
        # with the studio: a job the musician chose to stop by closing must not start by itself).
        self.resume_interrupted = resume_interrupted
        self.python = python
        self.env = env
        self.poll_s = poll_s
        self.jobs: dict[str, Job] = {}
        self.lock = threading.RLock()
        self.wake = threading.Event()
        self.running: Job | None = None
        self._thread: threading.Thread | None = None
        self._closing = threading.Event()
        self.on_new_job_dir = None  # callback(Path): the host lists the job's models
        self.defaults: dict = {}  # host-owned options for every job, e.g. {"maa": path, "soundfont": path}
        self.rules = SubmissionRules()  # what submissions are checked against (the host fills it in)

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> "JobManager":
        self.jobs_dir.mkdir(parents=True, exist_ok=True)
        with self.lock:
            _remove_partial_submissions(self.jobs_dir)
            for d in sorted(p for p in self.jobs_dir.iterdir() if p.is_dir() and not p.name.startswith(".")):
                job = Job.load(d)
                if job.state == RUNNING:
                    # The host stopped while this job ran: make sure its old process is gone, then
                    # resume it from its last complete checkpoint, ahead of the queued jobs — or pause it.
                    _kill_stale(job)
                    if self.resume_interrupted:
                        job.set_state(QUEUED, resume=True, restarts=(_count(job.data.get("restarts")) or 0) + 1,
                                      queued_at=_time(job.data.get("queued_at")) or 0.0)
                        log.info("job %s was running when the host stopped: resuming it", job.id)
                    else:
                        job.set_state(PAUSED, finished=_now(),
                                      note="paused: it was running when the host stopped; resume continues it")
                        log.info("job %s was running when the host stopped: paused", job.id)
                self.jobs[job.id] = job
                if self.on_new_job_dir is not None:
                    self.on_new_job_dir(d)
        self._thread = threading.Thread(target=self._loop, name="smart-jobs", daemon=True)
        self._thread.start()
        return self

    def close(self, timeout: float = 10.0) -> None:
        """Host shutdown: stop the running process (its job stays "running" on disk, so the next host
        resumes it) and the watcher thread."""
        self._closing.set()
        self.wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
        with self.lock:
            job = self.running
            if job is not None and job.process is not None:
                _terminate(job.process, timeout)
                job.process = None
                self._close_log(job)
                self.running = None

    # ------------------------------------------------------------------ API
    def submit(self, options: dict, midi_files: list[bytes], procedural: int = 0, name: str | None = None) -> Job:
        """Create and queue a job from checked options (`check_submission`). The folder is made under a
        hidden name and renamed when complete: a host killed meanwhile leaves no half-made job."""
        job_id, directory, staging = self._new_job_dir()
        try:
            config = {**options, "out_dir": str(directory), "resume": False}
            prompts_info: dict = {"kind": config["prompts"] if not midi_files else "midi", "midi": len(midi_files),
                                  "procedural": procedural}
            if midi_files:
                pdir = staging / PROMPTS_DIR
                pdir.mkdir()
                for i, data in enumerate(midi_files):
                    atomic_write_bytes(pdir / f"prompt-{i:03d}.mid", data)
                if procedural:
                    write_procedural_prompts(pdir, config["model"], procedural, config["seed"])
                config["prompts"] = str(directory / PROMPTS_DIR)
            for key, value in self.defaults.items():
                if config.get(key) is None and not (key == "maa" and config.get("maa_random")):
                    config[key] = value
            data = {"id": job_id, "name": name, "state": QUEUED, "created": _now(), "queued_at": _now(),
                    "config": config, "prompts": prompts_info, "resume": False, "attempts": 0}
            Job(staging, data).save()
            os.rename(staging, directory)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)  # never a half-made job
            raise
        job = Job(directory, data)
        with self.lock:
            self.jobs[job_id] = job
        if self.on_new_job_dir is not None:
            self.on_new_job_dir(directory)
        self.wake.set()
        return job

    def submit_taste(self, options: dict, pairs: list[TastePair], name: str | None = None) -> Job:
        """Create and queue a taste-tuning job from checked options and pairs (`check_taste_submission`).
        The pairs are written in the preference-set layout (JOBDIR/pairs); if that fails, nothing is left."""
        from engine.preferences import PreferenceSet

        job_id, directory, staging = self._new_job_dir()
        try:
            prefs = PreferenceSet(staging / TASTE_PAIRS_DIR)
            prefs.record_many(dict(a_midi=pair.a, b_midi=pair.b, prompt_midi=pair.prompt, choice=pair.choice,
                                   source=pair.source) for pair in pairs)  # one write, one sync
            config = {"kind": TASTE_JOB_KIND, **options, "pairs": str(directory / TASTE_PAIRS_DIR),
                      "out_dir": str(directory)}
            decisive = sum(p.choice != "tie" for p in pairs)
            data = {"id": job_id, "name": name, "state": QUEUED, "created": _now(), "queued_at": _now(),
                    "config": config, "prompts": {"kind": "taste-pairs", "pairs": len(pairs), "decisive": decisive,
                                                  "ties": len(pairs) - decisive},
                    "resume": False, "attempts": 0,
                    "note": "a taste tune cannot continue mid-run: pause keeps the model trained so far as a "
                            "checkpoint, and resume starts over from the base model"}
            Job(staging, data).save()
            os.rename(staging, directory)  # complete: job.json and every pair appear at once
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)  # never a half-made job
            raise
        job = Job(directory, data)
        with self.lock:
            self.jobs[job_id] = job
        if self.on_new_job_dir is not None:
            self.on_new_job_dir(directory)
        self.wake.set()
        return job

    def _new_job_dir(self) -> tuple[str, Path, Path]:
        """(id, the job's folder, the hidden folder it is made in: `.ID.partial`)."""
        root = self.jobs_dir.resolve()
        root.mkdir(parents=True, exist_ok=True)
        while True:
            job_id = time.strftime("%Y%m%d-%H%M%S") + "-" + secrets.token_hex(3)
            directory, staging = root / job_id, root / f".{job_id}{PARTIAL_SUFFIX}"
            if not directory.exists():
                try:
                    staging.mkdir()
                except FileExistsError:
                    continue
                return job_id, directory, staging

    def get(self, job_id: str) -> Job:
        with self.lock:
            job = self.jobs.get(job_id)
        if job is None:
            raise KeyError(job_id)
        return job

    def queue(self) -> list[Job]:
        with self.lock:
            return sorted((j for j in self.jobs.values() if j.state == QUEUED),
                          key=lambda j: (_time(j.data.get("queued_at")) or 0.0, _time(j.data.get("created")) or 0.0))

    def describe(self, job: Job, details: bool = True) -> dict:
        with self.lock:
            q = self.queue()
            pos = q.index(job) + 1 if job in q else None
            return job.describe(queue_position=pos, details=details)

    def list(self) -> list[dict]:
        with self.lock:
            jobs = sorted(self.jobs.values(), key=lambda j: (_time(j.data.get("created")) or 0.0, j.id))
            return [self.describe(j, details=False) for j in jobs]

    def cancel(self, job_id: str) -> Job:
        """Cancel a job; a running one's process is stopped before this returns, so the job is in its
        final state (cancelled) when the caller describes it."""
        job = self.get(job_id)
        with self.lock:
            if job.state == QUEUED:
                job.set_state(CANCELLED, finished=_now())
            elif job.state == RUNNING:
                job.stop_requested = "cancel"
                if job.process is not None:
                    _terminate(job.process, CANCEL_GRACE_S)
                    code = job.process.wait()
                else:
                    code = -signal.SIGKILL
                self._finish(job, code)
                if self.running is job:
                    self.running = None
            elif job.state == PAUSED:
                job.set_state(CANCELLED)
            else:
                raise UserError(f"job {job_id} is {job.state}: nothing to cancel")
        self.wake.set()
        return job

    def pause(self, job_id: str) -> Job:
        job = self.get(job_id)
        with self.lock:
            if job.state == QUEUED:
                job.set_state(PAUSED)
            elif job.state == RUNNING:
                job.stop_requested = "pause"
                job.stop_sent_at = time.monotonic()
                atomic_write_text(job.dir / STOP_FILE, "pause requested by the host\n")
            else:
                raise UserError(f"job {job_id} is {job.state}: only queued or running jobs can be paused")
        self.wake.set()
        return job

    def resume(self, job_id: str) -> Job:
        job = self.get(job_id)
        with self.lock:
            if job.state not in RESUMABLE_STATES:
                raise UserError(f"job {job_id} is {job.state}: only paused, cancelled or failed jobs can be resumed")
            if job.kind == TASTE_JOB_KIND:
                job.events_path.unlink(missing_ok=True)  # it starts over: a stream shows only the new run's steps
            job.set_state(QUEUED, resume=True, queued_at=_now(), error=None, finished=None)
        self.wake.set()
        return job

    # ------------------------------------------------------------------ the watcher
    def _loop(self) -> None:
        while not self._closing.is_set():
            try:
                self._tick()
            except Exception:  # the watcher must survive anything (a full disk, a vanished dir)
                log.exception("job watcher")
            self.wake.wait(self.poll_s)
            self.wake.clear()

    def _tick(self) -> None:
        with self.lock:
            if self._closing.is_set():
                return
            job = self.running
            if job is not None:
                code = job.process.poll() if job.process is not None else -1
                if code is None:
                    if job.stop_requested == "pause" and not (job.dir / STOP_FILE).exists():
                        # run_grpo clears a stale STOP file when it starts: a pause asked for while the
                        # process was still starting up is asserted again until the run sees it.
                        atomic_write_text(job.dir / STOP_FILE, "pause requested by the host\n")
                    return
                self._finish(job, code)
                self.running = None
            queue = self.queue()
            if queue:
                self._launch(queue[0])

    def _launch(self, job: Job) -> None:
        cfg_exists = (job.dir / RUN_CONFIG_FILE).exists() or job.events_path.exists()
        try:
            (job.dir / STOP_FILE).unlink()
        except FileNotFoundError:
            pass
        # A taste tune starts over (it cannot continue mid-run): its old step lines must not be streamed
        # as the new run's.
        for stale in (RESULT_FILE, ERROR_FILE) + ((EVENTS_FILE,) if job.kind == TASTE_JOB_KIND else ()):
            try:
                (job.dir / stale).unlink()
            except FileNotFoundError:
                pass
        env = dict(os.environ if self.env is None else self.env)
        root = str(Path(__file__).resolve().parents[2])
        env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        env.setdefault("TOKENIZERS_PARALLELISM", "false")
        # The `training` package registers this command; the host only knows its name (engine.api).
        cmd = [self.python, "-m", "engine.cli", JOB_PROCESS_COMMAND, str(job.dir.resolve()),
               "--parent-pid", str(os.getpid())]
        if cfg_exists or job.data.get("resume"):
            cmd.append("--resume")
        job.log_file = open(job.dir / LOG_FILE, "ab")
        job.log_file.write(f"\n=== {time.strftime('%Y-%m-%d %H:%M:%S')} {' '.join(cmd[1:])}\n".encode())
        job.log_file.flush()
        try:
            job.process = subprocess.Popen(cmd, cwd=root, env=env, stdin=subprocess.DEVNULL, stdout=job.log_file,
                                           stderr=subprocess.STDOUT, start_new_session=True)
        except OSError as exc:
            self._close_log(job)
            job.set_state(FAILED, error=f"cannot start the training process: {exc}", finished=_now())
            return
        job.stop_requested = None
        job.set_state(RUNNING, started=_time(job.data.get("started")) or _now(), pid=job.process.pid,
                      attempts=(_count(job.data.get("attempts")) or 0) + 1, finished=None, error=None)
        self.running = job
        log.info("job %s started (pid %d)", job.id, job.process.pid)

    def _finish(self, job: Job, code: int) -> None:
        self._close_log(job)
        job.process = None
        result = _read_json(job.dir / RESULT_FILE)
        error = _read_json(job.dir / ERROR_FILE)
        requested = job.stop_requested
        job.stop_requested = None
        extra = {"finished": _now(), "pid": None, "exit_code": code}
        if requested == "cancel":
            job.set_state(CANCELLED, **extra)
        elif code == 0 and result is not None:
            extra["result"] = result
            stopped = result.get("stopped_by")
            steps = _count(job.data["config"].get("steps")) or _count(result.get("steps_total")) or 0
            if stopped == "stopped" and (_count(result.get("steps_done")) or 0) < steps:
                job.set_state(PAUSED, **extra)
            else:
                job.set_state(COMPLETED, **extra)
        else:
            message = (error or {}).get("error") if isinstance((error or {}).get("error"), str) else None
            job.set_state(FAILED, error=message or _exit_reason(code), **extra)
        log.info("job %s ended: %s", job.id, job.state)

    @staticmethod
    def _close_log(job: Job) -> None:
        if job.log_file is not None:
            try:
                job.log_file.close()
            except OSError:
                pass
            job.log_file = None


def _read_json(path: Path) -> dict | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError, RecursionError):  # unreadable, not UTF-8, not JSON, nested too deeply
        return None
    return data if isinstance(data, dict) else None


def _count(value: Any) -> int | None:
    """A step count or number from a job's files, if it is one (a whole, finite, non-negative number;
    not a bool or a string); None otherwise. Job files are read, never trusted."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    if isinstance(value, float) and not (math.isfinite(value) and value.is_integer()):
        return None
    return int(value) if 0 <= value <= 2**62 else None


def _seconds(value: Any) -> float:
    """A duration from a job's files; 0.0 when it is not a finite, non-negative number."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < 1e12:
        return 0.0
    return float(value)


def _time(value: Any) -> float | None:
    """A timestamp from a job's files; None when it is not a finite, non-negative number."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < 1e12:
        return None
    return float(value)


def _json_safe(value: Any, depth: int = 0) -> Any:
    """`value` with every NaN/inf as null (they are not JSON: strict encoders refuse them, and a
    stream must stay parseable). Values nested deeper than MAX_REPORTED_DEPTH are reported as null."""
    if depth > MAX_REPORTED_DEPTH:
        return None
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _json_safe(v, depth + 1) for k, v in value.items()}
    if isinstance(value, list):
        return [_json_safe(v, depth + 1) for v in value]
    return value


def _remove_partial_submissions(jobs_dir: Path, older_than_s: float = 600.0) -> None:
    """Folders of submissions a killed host never finished (`.ID.partial`): never jobs, removed."""
    now = time.time()
    for d in jobs_dir.glob(f".*{PARTIAL_SUFFIX}"):
        try:
            if d.is_dir() and now - d.stat().st_mtime > older_than_s:
                shutil.rmtree(d, ignore_errors=True)
        except OSError:
            pass


def _job_data_problem(data: Any) -> str | None:
    """Why a parsed job.json cannot be used as it is (None: it can)."""
    if not isinstance(data, dict):
        return f"{JOB_FILE} is not a JSON object"
    if not isinstance(data.get("config"), dict):
        return f"{JOB_FILE} has no configuration"
    if data.get("state") not in STATES:
        return f"{JOB_FILE} has no valid state"
    return None


def _cuda_available() -> bool:
    import torch  # already loaded by the host's policy

    return bool(torch.cuda.is_available())


def _exit_reason(code: int) -> str:
    """What ended a job process that left no error report: the signal that killed it, or its status."""
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        hint = " (out of memory, or killed by hand?)" if -code == signal.SIGKILL else ""
        return f"the training process was killed by {name}{hint}; see {LOG_FILE}"
    return f"the training process exited with status {code} without reporting an error; see {LOG_FILE}"


def _terminate(process: subprocess.Popen, timeout: float) -> None:
    """SIGTERM the job's process group (render workers included); SIGKILL after `timeout`."""
    if process.poll() is not None:
        return
    try:
        os.killpg(process.pid, signal.SIGTERM)
    except (ProcessLookupError, PermissionError):
        return
    if timeout <= 0:
        return
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        process.wait()


def _kill_stale(job: Job) -> None:
    """A job process left over from a host that died (it normally exits with its host): stop it."""
    pid = job.data.get("pid")
    if not isinstance(pid, int) or pid <= 0:
        return
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return
    if f"engine.cli {JOB_PROCESS_COMMAND}" not in cmdline or str(job.dir.resolve()) not in cmdline:
        return  # the pid was reused by something else
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        return
    for _ in range(100):
        if not Path(f"/proc/{pid}").exists():
            break
        time.sleep(0.05)


# ============================================================================ HTTP
def _job_or_404(manager: JobManager, job_id: str) -> Job:
    try:
        return manager.get(job_id)
    except KeyError:
        raise HTTPException(status_code=404, detail=f"no job {job_id}") from None


async def submit_job(request: Request, make: Callable[[Any, str | None], Job]) -> dict:
    """One submission path for every job kind: parse the JSON body, take its optional "name", then
    `make(body, name)` checks and creates the job in a worker thread (it decodes MIDI and reads folders,
    not work for the event loop). A refused submission (UserError) is a 400 and creates nothing."""
    raw = await request.body()
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError):  # includes ints longer than Python parses
        raise HTTPException(status_code=400, detail="the body must be JSON") from None
    except RecursionError:
        raise HTTPException(status_code=400, detail="the body is nested too deeply") from None
    name = body.pop("name", None) if isinstance(body, dict) else None
    if name is not None and (not isinstance(name, str) or len(name) > MAX_NAME_CHARS):
        raise HTTPException(status_code=400, detail=f"name must be a string of at most {MAX_NAME_CHARS} characters")
    try:
        job = await run_in_threadpool(make, body, name)
    except UserError as exc:
        raise HTTPException(status_code=400, detail=str(exc)) from None
    return {"job": job.id, "state": job.state}


def jobs_router(manager: JobManager):
    """The training-jobs APIRouter; its lifespan starts/stops `manager` with the app."""
    from contextlib import asynccontextmanager

    @asynccontextmanager
    async def lifespan(app):
        state = getattr(app.state, "host", None)
        if state is not None:
            def register(directory: Path) -> None:
                # A job's checkpoints and final model appear in /v1/models (activate them for generation).
                with state.lock:
                    if all(Path(r).resolve() != directory.resolve() for r in state.model_roots):
                        state.model_roots.append(directory)

            manager.on_new_job_dir = register
            maa = state.maa_status()
            source = maa["source"]
            if maa["status"] == "available" and source and Path(str(source)).exists():
                manager.defaults["maa"] = str(source)
            if state.soundfont:
                manager.defaults["soundfont"] = str(state.soundfont)
            manager.rules = SubmissionRules(
                default_model=lambda: str(state.policy.path) if state.policy.path is not None else None,
                model_dir=state.client_model_dir, data_dir=state.client_data_dir,
                maa_weights=maa["status"] == "available", maa_reason=maa["reason"], cores=os.cpu_count() or 1,
                cuda=_cuda_available())
        await run_in_threadpool(manager.start)
        try:
            yield
        finally:
            await run_in_threadpool(manager.close)

    router = APIRouter(tags=["training"], lifespan=lifespan)

    @router.post("/v1/train")
    async def train(request: Request) -> dict:
        """Start a SMART GRPO job (queued if one is running). Body: GRPO options by name (see
        GET /v1/train/options), checked before any job is created."""
        def make(body: dict | list | None, name: str | None) -> Job:  # decodes MIDI prompts, reads folders
            options, midi, procedural = check_submission(body, manager.rules)
            return manager.submit(options, midi, procedural, name=name)

        return await submit_job(request, make)

    @router.post("/v1/taste/tune")
    async def taste_tune(request: Request) -> dict:
        """Start a taste-tuning job (queued if one is running): fine-tune the policy toward a musician's
        preference pairs. Body: options by name (`engine.api.TasteTuneOptions`), "pairs" and "name";
        checked before any job is created."""
        def make(body: dict | list | None, name: str | None) -> Job:  # decodes every pair's MIDI
            options, pairs = check_taste_submission(body, manager.rules)
            return manager.submit_taste(options, pairs, name=name)

        return await submit_job(request, make)

    @router.get("/v1/train/options")
    def options() -> dict:
        """The GRPO options (types, bounds, defaults), presets and rewards this host trains with, the taste-tuning
        options and limits, and whether it has MAA weights (without them, MAA rewards are refused)."""
        rules = manager.rules
        return {**train_options(maa_weights=bool(rules.maa_weights)), "maa_reason": rules.maa_reason,
                "cores": rules.cores, "cuda": rules.cuda, "default_model": rules.default_model()}

    @router.get("/v1/jobs")
    def list_jobs() -> dict:
        """Every job on this host (oldest first) with its state and progress."""
        return {"jobs": manager.list(), "running": manager.running.id if manager.running else None,
                "jobs_dir": str(manager.jobs_dir)}

    @router.get("/v1/jobs/{job_id}")
    def job_status(job_id: str) -> dict:
        """State, progress, ETA, the last step record and the checkpoints (reward, diversity)."""
        return manager.describe(_job_or_404(manager, job_id))

    @router.get("/v1/jobs/{job_id}/checkpoints")
    def job_checkpoints(job_id: str) -> dict:
        job = _job_or_404(manager, job_id)
        return {"job": job.id, "checkpoints": job.checkpoints(), "final_model": job.final_model()}

    def _control(action: str, job_id: str) -> dict:
        job = _job_or_404(manager, job_id)
        try:
            getattr(manager, action)(job_id)
        except UserError as exc:
            raise HTTPException(status_code=409, detail=str(exc)) from None
        return manager.describe(job, details=False)

    @router.delete("/v1/jobs/{job_id}")
    def cancel_job(job_id: str) -> dict:
        """Cancel: a queued job never starts, a running one is stopped first; answers with the final state
        (resume continues from its last checkpoint)."""
        return _control("cancel", job_id)

    @router.post("/v1/jobs/{job_id}/pause")
    def pause_job(job_id: str) -> dict:
        """Stop at the next step boundary, after a checkpoint."""
        return _control("pause", job_id)

    @router.post("/v1/jobs/{job_id}/resume")
    def resume_job(job_id: str) -> dict:
        """Queue a paused, cancelled or failed job again; it continues from its last complete checkpoint."""
        return _control("resume", job_id)

    @router.get("/v1/jobs/{job_id}/events", responses={200: {"content": {"application/x-ndjson": {}}}})
    async def job_events(job_id: str):
        """NDJSON: the step records so far, new ones as they come, state changes, then a done line."""
        from engine.host.middleware import event_stream_response

        job = _job_or_404(manager, job_id)
        return event_stream_response(tail_events(manager, job), on_disconnect=lambda: None)

    return router


async def tail_events(manager: JobManager, job: Job, poll_s: float = 0.25):
    """Yield the job's step lines (each step once, even across a resume that rewrites the file),
    state lines on changes, and the final done line once the job is no longer queued or running."""
    sent_step = -1
    offset = 0
    inode = None
    buffer = b""
    last_state = None
    while True:
        state = job.state  # read before the file: a final state seen here means the file is complete
        try:
            st = os.stat(job.events_path)
        except FileNotFoundError:
            st = None
        if st is not None:
            if st.st_ino != inode or st.st_size < offset:  # rewritten (resume truncates): read again
                inode, offset, buffer = st.st_ino, 0, b""
            if st.st_size > offset:
                with open(job.events_path, "rb") as f:
                    f.seek(offset)
                    chunk = f.read(st.st_size - offset)
                offset += len(chunk)
                buffer += chunk
                *lines, buffer = buffer.split(b"\n")
                for raw in lines:
                    try:
                        rec = json.loads(raw)
                    except (ValueError, RecursionError):  # torn, not UTF-8, nested too deeply
                        continue
                    step = _count(rec.get("step")) if isinstance(rec, dict) else None
                    if step is None or step <= sent_step:
                        continue
                    sent_step = step
                    yield (json.dumps(_json_safe(rec), allow_nan=False) + "\n").encode()
        if state != last_state:
            last_state = state
            yield (json.dumps({"event": "state", "state": state, "job": job.id}) + "\n").encode()
        if state not in ACTIVE_STATES:
            info = manager.describe(job, details=True)
            yield (json.dumps({"done": True, "state": state, "job": job.id, "result": info.get("result"),
                               "error": info.get("error"), "final_model": info.get("final_model"),
                               "checkpoints": info.get("checkpoints")}, allow_nan=False) + "\n").encode()
            return
        await asyncio.sleep(poll_s)
