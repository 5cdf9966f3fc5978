"""The training jobs' part of the host's API contract (`engine.api`), light like it (pydantic, no torch): a job's
states (`JobState`, the host's job store keeps them), and the replies and event-stream lines a client reads
back from /v1/jobs… (`JobInfo`, `JobStep`, `JobStateEvent`, `JobDone`; `job_event` reads one line).

Job replies carry what the host read from a job's files, which it reads without trusting them (a value of
the wrong type is absent, `engine.host.jobs.store`); the fields that come from those files unchecked are
read the same way here (`UNREADABLE_IS_NONE`), so a damaged job file never breaks a client's list or stream.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import Field, ValidationError, WrapValidator

from engine.api import TASTE_JOB_KIND, Reply


class JobState(StrEnum):
    """A host job's state. A job.json records one of the first six; `DAMAGED` is a folder whose job.json is
    unreadable and could not be rebuilt, listed with its files so that no job disappears."""

    QUEUED = "queued"
    RUNNING = "running"
    PAUSED = "paused"
    CANCELLED = "cancelled"
    COMPLETED = "completed"
    FAILED = "failed"
    DAMAGED = "damaged"

    @property
    def active(self) -> bool:
        """The job goes on by itself (it runs, or will when the jobs ahead of it are done)."""
        return self in (JobState.QUEUED, JobState.RUNNING)

    @property
    def resumable(self) -> bool:
        """It stopped before its end: resume queues it again (from its last checkpoint)."""
        return self in (JobState.PAUSED, JobState.CANCELLED, JobState.FAILED)

    @property
    def cancellable(self) -> bool:
        return self.active or self is JobState.PAUSED


RECORDED_JOB_STATES = tuple(s for s in JobState if s is not JobState.DAMAGED)


def _none_if_invalid(value: Any, handler):
    try:
        return handler(value)
    except ValidationError:
        return None


# A field the host copies from a job's files without checking: a value of the wrong type reads as absent.
UNREADABLE_IS_NONE = WrapValidator(_none_if_invalid)


class JobStep(Reply):
    """One step record of a job's events.jsonl (the events stream's step lines, GET /v1/jobs/ID's `last`).
    Its metrics depend on the job — GRPO: reward_mean, kl, diversity, completion_tokens, the MAA axes, the
    guards' values…; a DPO taste tune: loss, rewards_accuracies, rewards_margins, rewards_chosen/_rejected —
    and stay as the run logged them (`metric(name)`; a newer trainer's metrics need no client change)."""

    step: int
    steps_total: Annotated[int | None, UNREADABLE_IS_NONE] = None  # taste tunes: the steps the tuner runs
    elapsed_s: Annotated[float | None, UNREADABLE_IS_NONE] = None
    maa_random: Annotated[bool | None, UNREADABLE_IS_NONE] = None  # GRPO: scored by random-weight MAA (not real)
    guard: Annotated[dict | None, UNREADABLE_IS_NONE] = None  # GRPO: the diversity guard fired at this step

    def metric(self, name: str) -> float | None:
        """The metric `name` of this step as a number; None when the record has none (or not a number)."""
        value = getattr(self, name) if name in type(self).model_fields else (self.model_extra or {}).get(name)
        return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None

    @property
    def is_dpo(self) -> bool:
        """A DPO taste tune's step (its metrics are pair rankings, not rewards of sampled music)."""
        return "rewards_accuracies" in self or "rewards_margins" in self


class JobProgress(Reply):
    step: int = 0
    steps: int = 0
    fraction: float | None = None


class JobPhase(Reply):
    """What a running job does before or between its steps (taste tunes: fitting, sampling, …)."""

    phase: str
    since: float | None = None


class JobCheckpoint(Reply):
    """A complete checkpoint: a model directory for /v1/models/activate."""

    step: int
    path: str
    reward_mean: Annotated[float | None, UNREADABLE_IS_NONE] = None
    diversity: Annotated[float | None, UNREADABLE_IS_NONE] = None
    elapsed_s: Annotated[float | None, UNREADABLE_IS_NONE] = None


class JobInfo(Reply):
    """A job as GET /v1/jobs lists it and the control routes (cancel, pause, resume) answer; GET /v1/jobs/ID
    adds the details (config, prompts, last, checkpoints, final_model, result)."""

    id: str
    state: JobState
    kind: str = "grpo"  # or engine.api.TASTE_JOB_KIND
    name: Annotated[str | None, UNREADABLE_IS_NONE] = None
    model: Annotated[str | None, UNREADABLE_IS_NONE] = None
    reward: Annotated[str | None, UNREADABLE_IS_NONE] = None  # a taste tune: "taste (METHOD)"
    steps: int = 0
    progress: JobProgress = Field(default_factory=JobProgress)
    created: float | None = None
    started: float | None = None
    finished: float | None = None
    elapsed_s: float = 0.0
    eta_s: float | None = None
    queue_position: int | None = None  # 1 = next
    attempts: int = 0
    error: Annotated[str | None, UNREADABLE_IS_NONE] = None
    note: Annotated[str | None, UNREADABLE_IS_NONE] = None  # e.g. a taste tune's resume starts over
    phase: JobPhase | None = None  # while it runs
    stop_requested: str | None = None  # "pause" | "cancel" while its process winds down
    files: list[str] | None = None  # a damaged job's folder
    # details (GET /v1/jobs/ID)
    config: dict = Field(default_factory=dict)
    prompts: Any = None
    last: Annotated[JobStep | None, UNREADABLE_IS_NONE] = None
    checkpoints: list[JobCheckpoint] = Field(default_factory=list)
    final_model: str | None = None
    result: Annotated[dict | None, UNREADABLE_IS_NONE] = None

    @property
    def is_taste_tune(self) -> bool:
        return self.kind == TASTE_JOB_KIND

    @property
    def taste_method(self) -> str | None:
        """A taste tune's method ("dpo" | "grpo"); None for a GRPO job."""
        method = self.config.get("method") if self.is_taste_tune else None
        return method if isinstance(method, str) else None


class JobList(Reply):
    """GET /v1/jobs: every job, oldest first."""

    jobs: list[JobInfo] = Field(default_factory=list)
    running: str | None = None
    jobs_dir: str | None = None


class JobCheckpoints(Reply):
    """GET /v1/jobs/ID/checkpoints."""

    job: str
    checkpoints: list[JobCheckpoint] = Field(default_factory=list)
    final_model: str | None = None


class JobStateEvent(Reply):
    """The events stream's line when the job's state changes."""

    event: Literal["state"] = "state"
    state: JobState
    job: str


class JobDone(Reply):
    """The events stream's last line: the job is no longer queued or running."""

    done: Literal[True] = True
    state: JobState
    job: str
    result: Annotated[dict | None, UNREADABLE_IS_NONE] = None
    error: Annotated[str | None, UNREADABLE_IS_NONE] = None
    final_model: str | None = None
    checkpoints: list[JobCheckpoint] = Field(default_factory=list)


def job_event(data: dict) -> Reply:
    """One GET /v1/jobs/ID/events line as its model (a line of another kind stays a plain `Reply`)."""
    if data.get("done"):
        return JobDone.model_validate(data)
    if data.get("event") == "state":
        return JobStateEvent.model_validate(data)
    if "step" in data and "event" not in data:
        return JobStep.model_validate(data)
    return Reply.model_validate(data)
