"""Training jobs on the policy host: SMART GRPO runs (training.grpo) in their own processes.

Endpoints (router `jobs_router(manager)`, included by `smart serve`):

    POST   /v1/train                 {"job": ID}; body: `smart grpo` options by GRPORunConfig field name,
                                     plus "prompts_midi": [base64 MIDI…] | "procedural" and
                                     "procedural_prompts": N (mix N procedural prompts with the MIDI ones)
    GET    /v1/jobs                  every job with its state (queued/running/paused/cancelled/completed/failed)
    GET    /v1/jobs/ID               state, progress, ETA, last step, checkpoints (reward, diversity)
    GET    /v1/jobs/ID/events        NDJSON: every events.jsonl step line so far, new ones as they are
                                     written, {"event": "state"} lines on state changes, then
                                     {"done": true, "state": …, "result": …}
    DELETE /v1/jobs/ID               cancel (the process is killed; resume continues from its last checkpoint)
    POST   /v1/jobs/ID/pause         stop at the next step boundary (a checkpoint is written first)
    POST   /v1/jobs/ID/resume        queue it again; it continues from its last complete checkpoint
    GET    /v1/jobs/ID/checkpoints   complete checkpoints (each a model directory for /v1/models/activate)

Each job is a subprocess (`python -m engine.host.jobs run JOBDIR`), so a crash in training never takes
the host down; one job runs at a time (one device per host) and the others wait in a FIFO queue.

Jobs directory (`smart serve --jobs-dir`, default `$SMART_JOBS_DIR` or the user's data dir):

    JOBS/ID/job.json       id, config, state, timestamps, error, result (written atomically)
    JOBS/ID/prompts/*.mid  the prompts the client sent
    JOBS/ID/...            the GRPO run directory (events.jsonl, checkpoints/, final/, run card)
    JOBS/ID/job.log        the job process's output

Jobs outlive client connections and host restarts: a host starting on a jobs directory resumes the
jobs that were running from their last checkpoint (first in the queue), and queued ones stay queued.
This module must never import Qt.
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
import signal
import subprocess
import sys
import threading
import time
from dataclasses import fields
from pathlib import Path
from typing import Any

from fastapi import APIRouter, HTTPException, Request
from fastapi.concurrency import run_in_threadpool

from engine.errors import UserError
from engine.music import atomic_write_bytes, atomic_write_text

log = logging.getLogger("smart.host.jobs")

JOBS_DIR_ENV_VAR = "SMART_JOBS_DIR"
JOB_FILE = "job.json"
RESULT_FILE = "job_result.json"
ERROR_FILE = "job_error.json"
LOG_FILE = "job.log"
PROMPTS_DIR = "prompts"
STOP_FILE = "STOP"  # training.grpo.STOP_FILE: the run stops after the current step

QUEUED, RUNNING, PAUSED, CANCELLED, COMPLETED, FAILED = "queued", "running", "paused", "cancelled", "completed", "failed"
ACTIVE_STATES = (QUEUED, RUNNING)
FINAL_STATES = (PAUSED, CANCELLED, COMPLETED, FAILED)
RESUMABLE_STATES = (PAUSED, CANCELLED, FAILED)

MAX_PROMPTS_MIDI = 256
MAX_PROCEDURAL_PROMPTS = 256
# Options a client may not set: the host decides where a run lives and when it resumes.
HOST_OWNED = {"out_dir", "resume"}
POLL_S = 0.2


def default_jobs_dir() -> Path:
    env = os.environ.get(JOBS_DIR_ENV_VAR)
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_DATA_HOME") or (Path.home() / ".local" / "share")
    return Path(base) / "smart-studio" / "jobs"


def _now() -> float:
    return round(time.time(), 3)


# ============================================================================ config from a request body
def _coerce(name: str, annotation: str, value: Any) -> Any:
    """Check/convert one option to its GRPORunConfig type ("int", "float | None", "str", "bool", ...)."""
    kinds = [k.strip() for k in str(annotation).split("|")]
    if value is None:
        if "None" in kinds:
            return None
        raise UserError(f"{name} cannot be null")
    for kind in kinds:
        if kind == "bool" and isinstance(value, bool):
            return value
        if kind == "int" and isinstance(value, int) and not isinstance(value, bool):
            return value
        if kind == "int" and isinstance(value, float) and value.is_integer():
            return int(value)
        if kind == "float" and isinstance(value, (int, float)) and not isinstance(value, bool):
            if not math.isfinite(float(value)):
                raise UserError(f"{name} must be finite")
            return float(value)
        if kind == "str" and isinstance(value, str):
            if len(value) > 4096:
                raise UserError(f"{name} is too long")
            return value
    raise UserError(f"{name} must be {' or '.join(k for k in kinds if k != 'None')}, not {type(value).__name__}")


def config_from_request(body: dict, *, default_model: str | None) -> tuple["Any", list[bytes], int]:
    """(GRPORunConfig without out_dir, prompt MIDI files, procedural prompts to mix in) from a /v1/train body.

    Raises UserError with a message for the client on anything unusable.
    """
    from training.grpo import PRESETS, GRPORunConfig
    from training.rewards import parse_reward_spec

    if not isinstance(body, dict):
        raise UserError("the request body must be a JSON object")
    body = dict(body)
    prompts_midi = body.pop("prompts_midi", None)
    procedural = body.pop("procedural_prompts", 0)
    preset = body.pop("preset", "paper") or "paper"
    if preset not in PRESETS:
        raise UserError(f"unknown preset {preset!r} (choose from {', '.join(PRESETS)})")
    types_ = {f.name: f.type for f in fields(GRPORunConfig)}
    unknown = sorted(k for k in body if k not in types_)
    if unknown:
        raise UserError(f"unknown option(s): {', '.join(unknown)}")
    owned = sorted(k for k in body if k in HOST_OWNED)
    if owned:
        raise UserError(f"{', '.join(owned)} cannot be set: the host decides where a job runs and when it resumes")
    options = {k: _coerce(k, types_[k], v) for k, v in body.items()}
    if not options.get("model"):
        if not default_model:
            raise UserError("no model given and the host has no model directory to fine-tune")
        options["model"] = default_model
    options["model"] = str(Path(options["model"]).expanduser().resolve())
    if not isinstance(procedural, int) or isinstance(procedural, bool) or not 0 <= procedural <= MAX_PROCEDURAL_PROMPTS:
        raise UserError(f"procedural_prompts must be an integer 0..{MAX_PROCEDURAL_PROMPTS}")

    midi_files: list[bytes] = []
    if prompts_midi is None or prompts_midi == "procedural":
        pass
    elif isinstance(prompts_midi, list):
        if not prompts_midi:
            raise UserError("prompts_midi is empty (omit it or pass \"procedural\" for procedural prompts)")
        if len(prompts_midi) > MAX_PROMPTS_MIDI:
            raise UserError(f"at most {MAX_PROMPTS_MIDI} prompt MIDI files")
        from engine.music import Clip, MidiFileError

        for i, item in enumerate(prompts_midi):
            if not isinstance(item, str):
                raise UserError(f"prompts_midi[{i}] must be a base64 string")
            try:
                data = base64.b64decode(item.encode("ascii"), validate=True)
            except (binascii.Error, ValueError, UnicodeEncodeError):
                raise UserError(f"prompts_midi[{i}] is not valid base64") from None
            try:
                clip, _ = Clip.from_midi(data, mode="user")
            except MidiFileError as exc:
                raise UserError(f"prompts_midi[{i}]: {exc}") from None
            if not clip.notes:
                raise UserError(f"prompts_midi[{i}] has no notes")
            midi_files.append(data)
    else:
        raise UserError("prompts_midi must be a list of base64 MIDI files or \"procedural\"")
    if procedural and not midi_files:
        raise UserError("procedural_prompts mixes procedural prompts into prompts_midi; without MIDI prompts "
                        "use prompts=\"procedural\"")
    if midi_files and "prompts" in options:
        raise UserError("give either prompts_midi or prompts, not both")
    spec = options.get("prompts", "procedural")
    if not midi_files and not (spec in ("procedural", "proc", "procedural+note") or spec.startswith("data:")):
        raise UserError("prompts must be procedural, procedural+note or data:DIR on the host "
                        "(send your own MIDI prompts as prompts_midi)")

    try:
        config = GRPORunConfig.from_preset(preset, **options)
    except TypeError as exc:
        raise UserError(f"invalid options: {exc}") from None
    specs = parse_reward_spec(config.reward)
    custom = [s.name for s in specs if ":" in s.name]
    if custom:
        raise UserError(f"custom reward functions ({', '.join(custom)}) cannot be started over HTTP; "
                        "use a named reward or `smart grpo` on the host")
    config.out_dir = "(job dir)"
    config.validate()
    config.out_dir = ""
    if not Path(config.model).is_dir():
        raise UserError(f"model directory not found on the host: {config.model}")
    return config, midi_files, int(procedural)


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
        return self.dir / "events.jsonl"

    def save(self) -> None:
        self.data["updated"] = _now()
        atomic_write_text(self.dir / JOB_FILE, json.dumps(self.data, indent=2))

    def set_state(self, state: str, **extra) -> None:
        self.data["state"] = state
        self.data.update(extra)
        self.save()

    @classmethod
    def load(cls, directory: Path) -> "Job | None":
        try:
            data = json.loads((directory / JOB_FILE).read_text())
        except (OSError, json.JSONDecodeError):
            return None
        if not isinstance(data, dict) or "id" not in data or "config" not in data:
            return None
        return cls(directory, data)

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
            except json.JSONDecodeError:
                continue
            if isinstance(rec, dict) and "step" in rec:
                return rec
        return None

    def checkpoints(self) -> list[dict]:
        from training.grpo import CHECKPOINT_MARKER, complete_checkpoints

        out = []
        for step, path in complete_checkpoints(self.dir):
            try:
                info = json.loads((path / CHECKPOINT_MARKER).read_text())
            except (OSError, json.JSONDecodeError):
                info = {}
            out.append({"step": step, "path": str(path.resolve()), "reward_mean": info.get("reward_mean"),
                        "diversity": info.get("diversity"), "elapsed_s": info.get("elapsed_s")})
        return out

    def final_model(self) -> str | None:
        final = self.dir / "final"
        return str(final.resolve()) if (final / "config.json").is_file() and self.state != RUNNING else None

    def describe(self, *, queue_position: int | None = None, details: bool = True) -> dict:
        cfg = self.data["config"]
        steps = int(cfg.get("steps") or 0)
        last = self.last_event()
        step = int(last["step"]) if last else 0
        elapsed = float(last.get("elapsed_s") or 0.0) if last else 0.0
        eta = None
        if self.state == RUNNING and last and step > 0 and steps > step:
            eta = round(elapsed / step * (steps - step), 1)
        out = {"id": self.id, "state": self.state, "created": self.data.get("created"),
               "started": self.data.get("started"), "finished": self.data.get("finished"),
               "model": cfg.get("model"), "reward": cfg.get("reward"), "steps": steps,
               "progress": {"step": step, "steps": steps, "fraction": round(step / steps, 4) if steps else None},
               "elapsed_s": round(elapsed, 2), "eta_s": eta, "queue_position": queue_position,
               "error": self.data.get("error"), "attempts": self.data.get("attempts", 0),
               "name": self.data.get("name")}
        if details:
            out["config"] = cfg
            out["prompts"] = self.data.get("prompts")
            out["last"] = last
            out["checkpoints"] = self.checkpoints()
            out["final_model"] = self.final_model()
            out["result"] = self.data.get("result")
        return out


# ============================================================================ the manager
class JobManager:
    """Jobs on disk + one worker process at a time + a FIFO queue; a thread watches the process."""

    def __init__(self, jobs_dir: str | os.PathLike | None = None, *, python: str = sys.executable,
                 env: dict | None = None, poll_s: float = POLL_S):
        self.jobs_dir = Path(jobs_dir) if jobs_dir is not None else default_jobs_dir()
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
        self.defaults: dict = {}  # e.g. {"maa": path} filled by the host

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> "JobManager":
        self.jobs_dir.mkdir(parents=True, exist_ok=True)
        with self.lock:
            for d in sorted(p for p in self.jobs_dir.iterdir() if p.is_dir()):
                job = Job.load(d)
                if job is None:
                    continue
                if job.state == RUNNING:
                    # The host stopped while this job ran: make sure its old process is gone, then
                    # resume it from its last complete checkpoint, ahead of the queued jobs.
                    _kill_stale(job)
                    job.set_state(QUEUED, resume=True, restarts=job.data.get("restarts", 0) + 1,
                                  queued_at=job.data.get("queued_at") or 0.0)
                    log.info("job %s was running when the host stopped: resuming it", job.id)
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
    def submit(self, config, midi_files: list[bytes], procedural: int = 0, name: str | None = None) -> Job:
        job_id = time.strftime("%Y%m%d-%H%M%S") + "-" + secrets.token_hex(3)
        directory = self.jobs_dir / job_id
        directory.mkdir(parents=True)
        config.out_dir = str(directory.resolve())
        prompts_info: dict = {"kind": config.prompts if not midi_files else "midi", "midi": len(midi_files),
                              "procedural": procedural}
        if midi_files:
            pdir = directory / PROMPTS_DIR
            pdir.mkdir()
            for i, data in enumerate(midi_files):
                atomic_write_bytes(pdir / f"prompt-{i:03d}.mid", data)
            if procedural:
                write_procedural_prompts(pdir, config.model, procedural, config.seed)
            config.prompts = str(pdir.resolve())
        if config.maa is None and not config.maa_random and self.defaults.get("maa"):
            config.maa = self.defaults["maa"]
        data = {"id": job_id, "name": name, "state": QUEUED, "created": _now(), "queued_at": _now(),
                "config": config.to_dict(), "prompts": prompts_info, "resume": False, "attempts": 0}
        job = Job(directory, data)
        with self.lock:
            job.save()
            self.jobs[job_id] = job
        if self.on_new_job_dir is not None:
            self.on_new_job_dir(directory)
        self.wake.set()
        return job

    def get(self, job_id: str) -> Job:
        with self.lock:
            job = self.jobs.get(job_id)
        if job is None:
            raise KeyError(job_id)
        return job

    def queue(self) -> list[Job]:
        with self.lock:
            return sorted((j for j in self.jobs.values() if j.state == QUEUED),
                          key=lambda j: (j.data.get("queued_at") or 0.0, j.data.get("created") or 0.0))

    def describe(self, job: Job, details: bool = True) -> dict:
        with self.lock:
            q = self.queue()
            pos = q.index(job) + 1 if job in q else None
            return job.describe(queue_position=pos, details=details)

    def list(self) -> list[dict]:
        with self.lock:
            jobs = sorted(self.jobs.values(), key=lambda j: j.data.get("created") or 0.0)
            return [self.describe(j, details=False) for j in jobs]

    def cancel(self, job_id: str) -> Job:
        job = self.get(job_id)
        with self.lock:
            if job.state == QUEUED:
                job.set_state(CANCELLED, finished=_now())
            elif job.state == RUNNING:
                job.stop_requested = "cancel"
                if job.process is not None:
                    _terminate(job.process, 0.0)  # kill now; the watcher finishes the bookkeeping
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
        cfg_exists = (job.dir / "run_config.json").exists() or job.events_path.exists()
        try:
            (job.dir / STOP_FILE).unlink()
        except FileNotFoundError:
            pass
        for stale in (RESULT_FILE, ERROR_FILE):
            try:
                (job.dir / stale).unlink()
            except FileNotFoundError:
                pass
        env = dict(os.environ if self.env is None else self.env)
        root = str(Path(__file__).resolve().parents[1])
        env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        env.setdefault("TOKENIZERS_PARALLELISM", "false")
        cmd = [self.python, "-m", "engine.host.jobs", "run", str(job.dir.resolve()),
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
        job.set_state(RUNNING, started=job.data.get("started") or _now(), pid=job.process.pid,
                      attempts=job.data.get("attempts", 0) + 1, finished=None, error=None)
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
            steps = int(job.data["config"].get("steps") or 0)
            if stopped == "stopped" and int(result.get("steps_done") or 0) < steps:
                job.set_state(PAUSED, **extra)
            else:
                job.set_state(COMPLETED, **extra)
        else:
            message = (error or {}).get("error") or _log_tail_error(job.dir / LOG_FILE) or f"exit status {code}"
            job.set_state(FAILED, error=message, **extra)
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
    except (OSError, json.JSONDecodeError):
        return None
    return data if isinstance(data, dict) else None


def _log_tail_error(path: Path) -> str | None:
    try:
        lines = [ln for ln in path.read_text(errors="replace").splitlines() if ln.strip()]
    except OSError:
        return None
    for line in reversed(lines[-40:]):
        if "Error" in line or "error" in line:
            return line.strip()[:400]
    return lines[-1].strip()[:400] if lines else None


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
    if "engine.host.jobs" not in cmdline or str(job.dir.resolve()) not in cmdline:
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
            source = getattr(state.scorer, "source", None) if state.scorer is not None else None
            if source and Path(str(source)).exists() and not getattr(state.scorer, "is_random", False):
                manager.defaults["maa"] = str(source)
        await run_in_threadpool(manager.start)
        try:
            yield
        finally:
            await run_in_threadpool(manager.close)

    router = APIRouter(tags=["training"], lifespan=lifespan)

    @router.post("/v1/train")
    async def train(request: Request) -> dict:
        """Start a SMART GRPO job (queued if one is running). Body: GRPORunConfig options by name."""
        try:
            body = await request.json()
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise HTTPException(status_code=400, detail="the body must be JSON") from None
        state = getattr(request.app.state, "host", None)
        default_model = str(state.policy.path) if state is not None and state.policy.path is not None else None
        name = body.pop("name", None) if isinstance(body, dict) else None
        if name is not None and (not isinstance(name, str) or len(name) > 200):
            raise HTTPException(status_code=400, detail="name must be a string of at most 200 characters")

        def make():
            config, midi, procedural = config_from_request(body, default_model=default_model)
            return manager.submit(config, midi, procedural, name=name)

        try:
            job = await run_in_threadpool(make)
        except UserError as exc:
            raise HTTPException(status_code=400, detail=str(exc)) from None
        return {"job": job.id, "state": job.state}

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
        """Cancel: a queued job never starts, a running one is stopped now (resume continues from its last checkpoint)."""
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
                    except json.JSONDecodeError:
                        continue
                    step = rec.get("step") if isinstance(rec, dict) else None
                    if not isinstance(step, int) or step <= sent_step:
                        continue
                    sent_step = step
                    yield (json.dumps(rec) + "\n").encode()
        if state != last_state:
            last_state = state
            yield (json.dumps({"event": "state", "state": state, "job": job.id}) + "\n").encode()
        if state not in ACTIVE_STATES:
            info = manager.describe(job, details=True)
            yield (json.dumps({"done": True, "state": state, "job": job.id, "result": info.get("result"),
                               "error": info.get("error"), "final_model": info.get("final_model"),
                               "checkpoints": info.get("checkpoints")}) + "\n").encode()
            return
        await asyncio.sleep(poll_s)


# ============================================================================ the job process
def _watch_parent(parent_pid: int) -> None:
    """Exit when the host that started us is gone: the next host resumes the job from its checkpoint."""
    def loop():
        while True:
            time.sleep(1.0)
            if os.getppid() != parent_pid:
                os._exit(75)

    threading.Thread(target=loop, name="parent-watch", daemon=True).start()


def run_job(job_dir: str, *, resume: bool, parent_pid: int | None = None) -> int:
    from training.grpo import GRPORunConfig, run_grpo

    directory = Path(job_dir)
    if parent_pid:
        _watch_parent(parent_pid)
    try:
        data = json.loads((directory / JOB_FILE).read_text())
        config = GRPORunConfig.from_dict(data["config"])
        config.out_dir = str(directory)
        config.resume = bool(resume)
        print(f"job {data['id']}: {'resuming' if resume else 'starting'} — {config.steps} steps, reward "
              f"{config.reward}, {config.prompts_per_step}×{config.group} completions per step", flush=True)

        def on_event(event: dict) -> None:
            if event.get("event"):
                print(json.dumps(event), flush=True)

        result = run_grpo(config, on_event=on_event)
    except UserError as exc:
        atomic_write_text(directory / ERROR_FILE, json.dumps({"error": str(exc)}))
        print(f"job failed: {exc}", flush=True)
        return 2
    except Exception as exc:
        import traceback

        traceback.print_exc()
        text = str(exc).strip().splitlines()
        atomic_write_text(directory / ERROR_FILE,
                          json.dumps({"error": f"{type(exc).__name__}: {text[0][:300] if text else ''}"}))
        return 1
    atomic_write_text(directory / RESULT_FILE, json.dumps({
        "stopped_by": result.stopped_by, "steps_done": result.steps_done, "final_model": result.final_model,
        "rolled_back_to": result.rolled_back_to, "reward_first": result.reward_first,
        "reward_last": result.reward_last, "run_card": result.run_card}))
    return 0


def main(argv: list[str] | None = None) -> int:
    import argparse

    p = argparse.ArgumentParser(prog="python -m engine.host.jobs")
    sub = p.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run", help="run one job directory (the host starts this)")
    r.add_argument("job_dir")
    r.add_argument("--resume", action="store_true")
    r.add_argument("--parent-pid", type=int, default=None)
    args = p.parse_args(argv)
    return run_job(args.job_dir, resume=args.resume, parent_pid=args.parent_pid)


if __name__ == "__main__":
    sys.exit(main())
