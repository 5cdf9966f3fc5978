"""The job store: one job's folder and job.json (`Job`: its record, description, checkpoints, and the
rebuilding of a damaged job.json from the run folder), and how job files are read (never trusted: a value of
the wrong type is read as absent). The states are the contract's (`engine.job_api.JobState`)."""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

from engine.api import (
    CHECKPOINT_MARKER,
    EVENTS_FILE,
    FINAL_DIR,
    JOB_FILE,
    PHASE_FILE,
    RESULT_FILE,
    RUN_CONFIG_FILE,
    TASTE_JOB_KIND,
    complete_checkpoints,
)
from engine.host.wire import json_safe
from engine.job_api import RECORDED_JOB_STATES, JobState
from engine.music import atomic_write_text

log = logging.getLogger("smart.host.jobs")

JOBS_DIR_ENV_VAR = "SMART_JOBS_DIR"
LOG_FILE = "job.log"
PROMPTS_DIR = "prompts"
TASTE_PAIRS_DIR = "pairs"  # a taste job's pairs (engine.preferences layout)

PARTIAL_SUFFIX = ".partial"  # a submission's folder while it is written (renamed to ID when complete)
MAX_LISTED_FILES = 200


def default_jobs_dir() -> Path:
    env = os.environ.get(JOBS_DIR_ENV_VAR)
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_DATA_HOME") or (Path.home() / ".local" / "share")
    return Path(base) / "smart-studio" / "jobs"


def now() -> float:
    return round(time.time(), 3)


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
    def state(self) -> JobState:
        return JobState(self.data["state"])

    @property
    def events_path(self) -> Path:
        return self.dir / EVENTS_FILE

    def save(self) -> None:
        self.data["updated"] = now()
        atomic_write_text(self.dir / JOB_FILE, json.dumps(self.data, indent=2))

    def set_state(self, state: JobState, **extra) -> None:
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
        run_config = read_json_object(directory / RUN_CONFIG_FILE)
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
                "id": directory.name, "state": JobState.DAMAGED, "created": created, "config": config,
                "prompts": None, "error": f"{problem}, and {why}",
                "files": files[:MAX_LISTED_FILES], "files_total": len(files)})
        result = read_json_object(directory / RESULT_FILE)
        config = {k: v for k, v in run_config.items() if k != "resume"}
        data = {"id": directory.name, "name": None, "created": created, "config": config, "prompts": None,
                "resume": True, "attempts": 0, "rebuilt": problem}
        if result is not None and (directory / FINAL_DIR / "config.json").is_file():
            data.update(state=JobState.COMPLETED, result=result)
        else:
            data.update(state=JobState.FAILED, error=f"{problem}; rebuilt from the job folder — resume continues "
                                                     "from the last checkpoint")
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
            if isinstance(rec, dict) and as_count(rec.get("step")) is not None:
                return json_safe(rec)
        return None

    def checkpoints(self) -> list[dict]:
        out = []
        for step, path in complete_checkpoints(self.dir):
            try:
                info = json.loads((path / CHECKPOINT_MARKER).read_text())
            except (OSError, ValueError, RecursionError):
                info = {}
            info = json_safe(info) if isinstance(info, dict) else {}
            out.append({"step": step, "path": str(path.resolve()), "reward_mean": info.get("reward_mean"),
                        "diversity": info.get("diversity"), "elapsed_s": info.get("elapsed_s")})
        return out

    def final_model(self) -> str | None:
        final = self.dir / FINAL_DIR
        running = self.state is JobState.RUNNING
        return str(final.resolve()) if (final / "config.json").is_file() and not running else None

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
        return {"phase": data["phase"][:200], "since": as_time(data.get("since"))}

    def steps_total(self, last: dict | None = None) -> int:
        """The steps this job runs: its configuration's, else (a taste tune left to the tuner's default)
        what its step records or its result say."""
        cfg = self.data["config"]
        if as_count(cfg.get("steps")):
            return as_count(cfg["steps"])
        last = last if last is not None else self.last_event()
        result = self.data.get("result") if isinstance(self.data.get("result"), dict) else {}
        return as_count((last or {}).get("steps_total")) or as_count(result.get("steps_total")) or 0

    def describe(self, *, queue_position: int | None = None, details: bool = True) -> dict:
        cfg = self.data["config"]
        last = self.last_event()
        steps = self.steps_total(last)
        step = (as_count(last.get("step")) or 0) if last else 0
        elapsed = as_seconds(last.get("elapsed_s")) if last else 0.0
        eta = None
        if self.state is JobState.RUNNING and last and step > 0 and steps > step:
            eta = round(elapsed / step * (steps - step), 1)
        out = {"id": self.id, "state": self.state, "created": as_time(self.data.get("created")),
               "started": as_time(self.data.get("started")), "finished": as_time(self.data.get("finished")),
               "kind": self.kind, "model": cfg.get("model"),
               "reward": cfg.get("reward") or (f"taste ({cfg.get('method')})" if self.kind == TASTE_JOB_KIND else None),
               "steps": steps,
               "progress": {"step": step, "steps": steps, "fraction": round(step / steps, 4) if steps else None},
               "elapsed_s": round(elapsed, 2), "eta_s": eta, "queue_position": queue_position,
               "error": self.data.get("error"), "attempts": as_count(self.data.get("attempts")) or 0,
               "name": self.data.get("name")}
        if self.state is JobState.DAMAGED:
            out["files"] = self.data.get("files", [])
        if self.data.get("note"):
            out["note"] = self.data["note"]
        if self.state is JobState.RUNNING:
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
        return json_safe(out)  # a NaN or inf in a job's files is null here, never a 500



def read_json_object(path: Path) -> dict | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError, RecursionError):  # unreadable, not UTF-8, not JSON, nested too deeply
        return None
    return data if isinstance(data, dict) else None


def as_count(value: Any) -> int | None:
    """A step count or number from a job's files, if it is one (a whole, finite, non-negative number;
    not a bool or a string); None otherwise. Job files are read, never trusted."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    if isinstance(value, float) and not (math.isfinite(value) and value.is_integer()):
        return None
    return int(value) if 0 <= value <= 2**62 else None


def as_seconds(value: Any) -> float:
    """A duration from a job's files; 0.0 when it is not a finite, non-negative number."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < 1e12:
        return 0.0
    return float(value)


def as_time(value: Any) -> float | None:
    """A timestamp from a job's files; None when it is not a finite, non-negative number."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < 1e12:
        return None
    return float(value)



def remove_partial_submissions(jobs_dir: Path, older_than_s: float = 600.0) -> None:
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
    if data.get("state") not in RECORDED_JOB_STATES:
        return f"{JOB_FILE} has no valid state"
    return None
