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
    GET    /v1/jobs                  every job with its state (`engine.job_api.JobState`: queued/running/paused/
                                     cancelled/completed/failed, or damaged: a job.json that could not be rebuilt)
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

from engine.host.jobs.events import tail_events
from engine.host.jobs.manager import CANCEL_GRACE_S, POLL_S, JobManager
from engine.host.jobs.routes import MAX_NAME_CHARS, jobs_router, submit_job
from engine.host.jobs.store import JOBS_DIR_ENV_VAR, LOG_FILE, Job, default_jobs_dir
from engine.host.jobs.submission import (
    HOST_OWNED,
    SubmissionRules,
    TastePair,
    check_submission,
    check_taste_submission,
    write_procedural_prompts,
)

__all__ = [
    "CANCEL_GRACE_S", "HOST_OWNED", "JOBS_DIR_ENV_VAR", "LOG_FILE", "MAX_NAME_CHARS", "POLL_S", "Job", "JobManager",
    "SubmissionRules", "TastePair", "check_submission", "check_taste_submission", "default_jobs_dir", "jobs_router",
    "submit_job", "tail_events", "write_procedural_prompts",
]
