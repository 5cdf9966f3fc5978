"""The jobs' HTTP routes (`jobs_router(manager)`, included by `smart serve`): submissions, status,
control (cancel, pause, resume), checkpoints and the event stream."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Callable

from fastapi import APIRouter, HTTPException, Request
from fastapi.concurrency import run_in_threadpool

from engine.api import MaaStatus, train_options
from engine.errors import UserError
from engine.host.jobs.events import tail_events
from engine.host.jobs.manager import JobManager
from engine.host.jobs.store import Job
from engine.host.jobs.submission import SubmissionRules, check_submission, check_taste_submission

MAX_NAME_CHARS = 200


def _cuda_available() -> bool:
    import torch  # already loaded by the host's policy

    return bool(torch.cuda.is_available())



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
            if maa["status"] == MaaStatus.AVAILABLE and source and Path(str(source)).exists():
                manager.defaults["maa"] = str(source)
            if state.soundfont:
                manager.defaults["soundfont"] = str(state.soundfont)
            manager.rules = SubmissionRules(
                default_model=lambda: str(state.policy.path) if state.policy.path is not None else None,
                model_dir=state.client_model_dir, data_dir=state.client_data_dir,
                maa_weights=maa["status"] == MaaStatus.AVAILABLE, maa_reason=maa["reason"], cores=os.cpu_count() or 1,
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
