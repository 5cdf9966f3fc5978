"""Training jobs on the policy host (engine/host/jobs/): a real `smart serve` on 127.0.0.1 with a tiny
random-weight policy, jobs with the offline `notes` reward, each in its own process."""

from __future__ import annotations

import contextlib
import json
import sys
import time
from pathlib import Path

import httpx
import pytest

from engine.host_client import HostClient, HostError, LocalHost
from engine.job_api import JobProgress
from engine.music import Clip, Note
from engine.policy import Policy

# Small and quick: one prompt, 2 completions of ≤32 tokens, a checkpoint after every step, one thread.
QUICK = {"reward": "notes", "prompts_per_step": 1, "group": 2, "max_completion_tokens": 32, "save_every": 1,
         "cpu_threads": 1, "tensorboard": False, "render_processes": 1}


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("jobs-model") / "tiny"
    Policy.create("tiny", seed=0).save(d)
    return d


def start_host(model_dir: Path, jobs_dir: Path, *extra: str) -> LocalHost:
    return LocalHost(model_dir, extra_args=["--jobs-dir", str(jobs_dir), "--threads", "1", *extra]).start()


@pytest.fixture(scope="module")
def host(model_dir, tmp_path_factory):
    jobs = tmp_path_factory.mktemp("jobs")
    h = start_host(model_dir, jobs)
    yield h
    h.stop()


def wait_state(client, job_id, states, timeout=240.0) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        info = client.job(job_id)
        if info["state"] in states:
            return info
        assert time.monotonic() < deadline, f"job {job_id} still {info['state']} after {timeout} s"
        time.sleep(0.2)


def steps_of(events) -> list[int]:
    return [e["step"] for e in events if "step" in e and "event" not in e and not e.get("done")]


def prompt_midi(seed: int) -> bytes:
    notes = [Note(i * 480, 60 + (i * seed) % 12, 400, 80) for i in range(8)]
    return Clip(notes, 480).to_midi_bytes()


@pytest.mark.slow  # a real GRPO job behind a real host: ~20 s on a quiet 2-core machine
def test_job_streams_steps_then_done_and_lists_checkpoints(host):
    c = host.client()
    job = c.start_training(QUICK, steps=3, prompts_midi=[prompt_midi(1), prompt_midi(5)], procedural_prompts=2)
    with c.job_events(job) as stream:
        events = list(stream)
    assert steps_of(events) == [1, 2, 3]
    done = events[-1]
    assert done["done"] and done["state"] == "completed", done
    assert done["result"]["steps_done"] == 3
    step = next(e for e in events if e.get("step") == 1)
    for key in ("reward_mean", "kl", "diversity", "completion_tokens", "elapsed_s"):
        assert key in step
    info = c.job(job)
    assert info.progress == JobProgress(step=3, steps=3, fraction=1.0)
    assert info["prompts"]["midi"] == 2 and info["prompts"]["procedural"] == 2
    files = sorted(p.name for p in Path(info["config"]["prompts"]).glob("*.mid"))  # the prompts became files
    assert files == ["procedural-000.mid", "procedural-001.mid", "prompt-000.mid", "prompt-001.mid"]
    for f in files:
        assert Clip.from_midi(Path(info["config"]["prompts"]) / f, mode="user")[0].notes
    ckpts = c.job_checkpoints(job)
    assert [k["step"] for k in ckpts] == [1, 2, 3]
    assert all("reward_mean" in k and "diversity" in k for k in ckpts)
    assert any(j["id"] == job and j["state"] == "completed" for j in c.list_jobs())
    # A second stream of a finished job replays everything, then done.
    with c.job_events(job) as stream:
        again = list(stream)
    assert steps_of(again) == [1, 2, 3] and again[-1]["done"]

    # The checkpoints are listed by the host, and activating one makes it the generating model.
    listed = {m["path"] for m in c.models()["models"]}
    assert ckpts[1]["path"] in listed and info["final_model"] in listed
    active = c.activate(ckpts[1]["path"])["active"]
    assert active["path"] == ckpts[1]["path"]
    assert c.health()["model"]["path"] == ckpts[1]["path"]
    result = c.generate(prompt_midi(3), candidates=2, bars=1, max_new_tokens=24, seed=1, score=False).wait()
    assert result["model"]["path"] == ckpts[1]["path"] and len(result["candidates"]) == 2


def test_bad_options_are_refused_with_a_message(host):
    c = host.client()
    cases = [({"steps": 0}, "steps"), ({"group": 1}, "group"), ({"bogus": 1}, "unknown option"),
             ({"out_dir": "/tmp/x"}, "cannot be set"), ({"reward": "nope"}, "unknown reward"),
             ({"reward": "os:system"}, "custom reward"), ({"steps": "many"}, "steps must be int"),
             ({"model": "/no/such/model"}, "not found"), ({"prompts_midi": ["%%%"]}, "base64"),
             ({"prompts": "/etc"}, "prompts must be"), ({"preset": "huge"}, "unknown preset")]
    for body, message in cases:
        with pytest.raises(HostError) as err:
            c.start_training({**QUICK, **body})
        assert err.value.status == 400 and message in str(err.value), (body, str(err.value))
    with pytest.raises(HostError) as err:
        c.job("no-such-job")
    assert err.value.status == 404


@pytest.mark.slow  # three job processes and a 400-step run cancelled midway
def test_cancel_then_resume_continues_from_the_checkpoint(host):
    c = host.client()
    job = c.start_training(QUICK, steps=400, keep_checkpoints=2)
    with c.job_events(job) as stream:
        for event in stream:
            if event.get("step", 0) >= 2 and "event" not in event:
                break
    c.cancel_job(job)
    info = wait_state(c, job, ("cancelled",))
    done_at = info["progress"]["step"]
    assert 2 <= done_at < 400
    with pytest.raises(HostError) as err:
        c.cancel_job(job)
    assert err.value.status == 409
    ckpt = max(k["step"] for k in c.job_checkpoints(job))
    c.resume_job(job)
    with c.job_events(job) as stream:
        for event in stream:
            if event.get("step", 0) >= ckpt + 3 and "event" not in event:
                break
    # Pause stops at a step boundary after writing a checkpoint; the stream then ends.
    c.pause_job(job)
    with c.job_events(job) as stream:
        events = list(stream)
    assert events[-1]["state"] == "paused"
    steps = steps_of(events)
    assert steps == list(range(1, len(steps) + 1))  # each step once, no gaps, across cancel and resume
    info = c.job(job)
    assert max(k["step"] for k in info["checkpoints"]) == info["progress"]["step"] > ckpt
    assert info["attempts"] == 2
    c.cancel_job(job)  # a paused job can be cancelled too
    assert c.job(job)["state"] == "cancelled"


@pytest.mark.slow  # two training job processes (the crashing one, then the next in the queue)
def test_crashing_job_fails_and_the_host_stays_healthy(host, tmp_path):
    c = host.client()
    bad = tmp_path / "broken-model"
    Policy.create("tiny").save(bad)
    (bad / "model.safetensors").write_bytes(b"not a safetensors file")
    job = c.start_training(QUICK, steps=3, model=str(bad))
    info = wait_state(c, job, ("failed", "completed"))
    assert info["state"] == "failed" and info["error"], info
    assert c.health()["status"] == "ok"
    # The queue goes on: the next job runs.
    ok = c.start_training(QUICK, steps=1)
    assert wait_state(c, ok, ("completed", "failed"))["state"] == "completed"


@pytest.mark.slow  # two training job processes one after the other
def test_jobs_queue_in_order(host):
    c = host.client()
    first = c.start_training(QUICK, steps=2)
    second = c.start_training(QUICK, steps=1)
    assert c.job(second)["state"] == "queued"
    assert c.job(second)["queue_position"] >= 1
    wait_state(c, second, ("completed",))
    a, b = c.job(first), c.job(second)
    assert a["state"] == "completed" and a["finished"] <= b["started"]


@pytest.mark.slow
def test_host_restart_resumes_the_running_job(model_dir, tmp_path):
    """A served host (`smart serve`'s default) resumes what it was running; the studio's own host pauses it."""
    jobs = tmp_path / "jobs"
    h = start_host(model_dir, jobs, "--interrupted-jobs", "resume")
    try:
        c = h.client()
        job = c.start_training(QUICK, steps=60, keep_checkpoints=3, max_completion_tokens=64, group=4)
        with c.job_events(job) as stream:
            for event in stream:
                if event.get("step", 0) >= 3 and "event" not in event:
                    break
        assert c.job(job)["state"] == "running"
    finally:
        h.stop()  # the host goes away mid-job (its job process goes with it)
    on_disk = json.loads((jobs / job / "job.json").read_text())
    assert on_disk["state"] == "running"
    h = start_host(model_dir, jobs, "--interrupted-jobs", "resume")
    try:
        c = h.client()
        with c.job_events(job) as stream:
            events = list(stream)
        assert events[-1]["state"] == "completed", events[-1]
        assert steps_of(events) == list(range(1, 61))  # nothing lost, nothing twice
        info = c.job(job)
        assert info["attempts"] == 2
        lines = [json.loads(x) for x in (jobs / job / "events.jsonl").read_text().splitlines()]
        assert [r["step"] for r in lines] == list(range(1, 61))
    finally:
        h.stop()


# ------------------------------------------------------------------------------------------ in-process hosts
# The rules below need no training: an in-process host whose job "python" is a small script.
@pytest.fixture(scope="module")
def policy(model_dir):
    return Policy.load(model_dir)


def fake_python(tmp_path: Path, body: str) -> str:
    script = tmp_path / f"python-{abs(hash(body))}"
    script.write_text("#!/bin/sh\n" + body + "\n")
    script.chmod(0o755)
    return str(script)


@contextlib.contextmanager
def jobs_host(policy, jobs_dir: Path, python: str = sys.executable, **app_options):
    """A host without MAA weights, its job processes started with `python`; yields (client, manager)."""
    from engine.host.jobs import JobManager, jobs_router
    from engine.host.server import create_app
    from conftest import serve

    manager = JobManager(jobs_dir, python=python, poll_s=0.05)
    app = create_app(policy, maa_reason="no MAA weights (test)", routers=[jobs_router(manager)], **app_options)
    with serve(app) as url, HostClient(url) as client:
        yield client, manager


def refused(client, body: dict) -> str:
    with pytest.raises(HostError) as err:
        client.start_training(body)
    assert err.value.status == 400, (body, err.value)
    return str(err.value)


def test_submissions_are_checked_before_any_job_exists(policy, tmp_path):
    """Issue 12: each of these got 200 and a job (which then grew to 5 GB, ran 13 processes on 2 cores,
    failed after minutes…); now each gets 400 with the reason, and no job folder is created."""
    import os

    import torch

    cores = os.cpu_count() or 1
    not_prepared = tmp_path / "just-a-folder"
    not_prepared.mkdir()
    jobs = tmp_path / "jobs"
    cases = [({"steps": int("9" * 401)}, "steps must be ≤"), ({"render_processes": cores + 11}, "CPU cores"),
             ({"cpu_threads": cores + 1}, "CPU cores"), ({"model": "/etc"}, "not a model directory"),
             ({"prompts": "data:/nonexistent"}, "not found"), ({"prompts": f"data:{not_prepared}"}, "prepared data"),
             ({"seed": 1e308}, "seed must be int"), ({"seed": -1}, "seed must be ≥ 0"),
             ({"reward": "maa-ce"}, "needs MAA weights"), ({"reward": "notes=1,maa-pq=0.5"}, "needs MAA weights"),
             ({"max_completion_tokens": 2000}, "context"), ({"lr_schedule": "bogus"}, "lr_schedule must be one of"),
             ({"maa": "/etc/passwd"}, "cannot be set"), ({"soundfont": "/etc/passwd"}, "cannot be set"),
             ({"steps": True}, "steps must be int"), ({"micro_batch": 3}, "micro_batch"),
             ({"procedural_prompts": 3}, "procedural_prompts")]
    if not torch.cuda.is_available():
        cases += [({"device": "cuda"}, "CUDA"), ({"use_vllm": True}, "CUDA")]
    with jobs_host(policy, jobs) as (client, _manager):
        for body, message in cases:
            detail = refused(client, {**QUICK, **body})
            assert message in detail, (body, detail)
        # A cross-origin form or text/plain POST (what a web page may send without asking) never parses.
        for content_type in ("text/plain", "application/x-www-form-urlencoded"):
            r = httpx.post(client.url + "/v1/train", content=json.dumps(QUICK), trust_env=False,
                           headers={"Content-Type": content_type})
            assert r.status_code == 415
        r = httpx.post(client.url + "/v1/train", content=b'{"steps": ' + b"9" * 5000 + b"}", trust_env=False,
                       headers={"Content-Type": "application/json"})
        assert r.status_code == 400  # an integer too long to parse
        r = httpx.post(client.url + "/v1/train", content=json.dumps(QUICK)[:-1] + ', "beta": Infinity}',
                       trust_env=False, headers={"Content-Type": "application/json"})
        assert r.status_code == 400 and "beta must be finite" in r.json()["detail"]
        assert client.list_jobs() == []
    assert [p for p in jobs.iterdir()] == []


def test_train_options_say_what_the_host_offers(policy, tmp_path):
    from dataclasses import fields

    from engine.api import GRPOOptions

    with jobs_host(policy, tmp_path / "jobs") as (client, _manager):
        offered = client.train_options()
    assert offered["maa_weights"] is False and "no MAA weights (test)" in offered["maa_reason"]
    assert offered["default_model"] == str(policy.path)
    assert offered["presets"]["paper"]["options"] == {} and offered["presets"]["paper"]["description"]
    rewards = {r["name"]: r for r in offered["rewards"]}
    assert rewards["maa-ce"]["needs_maa"] and not rewards["notes"]["needs_maa"]
    assert not rewards["scale-consistency"]["needs_maa"] and offered["reward_aliases"] == {"scale": "scale-consistency"}
    options = {o["name"]: o for o in offered["options"]}
    assert {f.name: f.default for f in fields(GRPOOptions)} == {n: o["default"] for n, o in options.items()}
    assert options["steps"]["type"] == "int" and options["steps"]["minimum"] == 1
    assert options["lr"]["exclusiveMinimum"] == 0 and options["render_processes"]["nullable"]
    assert "cosine" in options["lr_schedule"]["enum"] and options["preset"]["enum"][0] == "paper"
    assert options["maa"]["settable"] is False and options["steps"]["settable"] is True
    # POST /v1/taste/tune's options and limits are offered too, from the same dataclass the host checks with
    from engine.api import MAX_TASTE_PAIRS, TasteTuneOptions
    from engine.taste import MIN_PAIRS

    taste = offered["taste"]
    taste_options = {o["name"]: o for o in taste["options"]}
    assert {f.name: f.default for f in fields(TasteTuneOptions)} == {n: o["default"] for n, o in taste_options.items()}
    assert taste_options["method"]["enum"] == taste["methods"] == ["dpo", "grpo"]
    assert taste_options["steps"]["nullable"] and taste_options["steps"]["minimum"] == 1
    assert taste["min_pairs"] == MIN_PAIRS and taste["max_pairs"] == MAX_TASTE_PAIRS


def test_delete_answers_with_the_state_the_job_ends_in(policy, tmp_path):
    sleeper = fake_python(tmp_path, "exec sleep 120")
    with jobs_host(policy, tmp_path / "jobs", python=sleeper) as (client, manager):
        job = client.start_training(QUICK, steps=3)
        wait_state(client, job, ("running",), timeout=30)
        process = manager.get(job).process
        answer = client.cancel_job(job)
        assert answer["state"] == "cancelled" and process.poll() is not None
        queued = client.start_training(QUICK, steps=3)
        second = client.start_training(QUICK, steps=3)
        assert client.cancel_job(second)["state"] == "cancelled"  # queued: never starts
        wait_state(client, queued, ("running",), timeout=30)
        client.pause_job(queued)  # the sleeper never sees the STOP file: cancel it while it "pauses"
        assert client.cancel_job(queued)["state"] == "cancelled"


def test_a_killed_job_reports_the_signal_not_a_log_line(policy, tmp_path):
    """Issue 12: the error of a killed training process was `warnings.warn(` scraped from its log."""
    killed = fake_python(tmp_path, "echo '  warnings.warn('\necho 'ValueError: a line in the log'\nkill -KILL $$")
    with jobs_host(policy, tmp_path / "jobs", python=killed) as (client, _manager):
        info = wait_state(client, client.start_training(QUICK, steps=1), ("failed",), timeout=30)
    assert "SIGKILL" in info["error"] and "warn" not in info["error"] and "log" in info["error"]
    exits = fake_python(tmp_path, "echo 'RuntimeError: scraped'\nexit 3")
    with jobs_host(policy, tmp_path / "jobs2", python=exits) as (client, _manager):
        info = wait_state(client, client.start_training(QUICK, steps=1), ("failed",), timeout=30)
    assert "status 3" in info["error"] and "scraped" not in info["error"]


def test_the_job_process_reports_its_exception(tmp_path):
    """training's job command writes the real exception for the host (here: a job.json without a config)."""
    from engine.api import ERROR_FILE, JOB_FILE, JOB_PROCESS_COMMAND
    from engine.cli import main

    (tmp_path / JOB_FILE).write_text(json.dumps({"id": "x"}))
    assert main([JOB_PROCESS_COMMAND, str(tmp_path)]) == 1
    assert json.loads((tmp_path / ERROR_FILE).read_text())["error"] == "KeyError: 'config'"


def test_damaged_job_files_never_make_a_job_vanish(policy, tmp_path):
    from engine.api import CHECKPOINT_MARKER, RUN_CONFIG_FILE

    jobs = tmp_path / "jobs"
    rebuildable = jobs / "20260101-000000-aaaaaa"
    ckpt = rebuildable / "checkpoints" / "checkpoint-2"
    ckpt.mkdir(parents=True)
    (ckpt / CHECKPOINT_MARKER).write_text(json.dumps({"step": 2, "reward_mean": 0.5}))
    (rebuildable / RUN_CONFIG_FILE).write_text(json.dumps({**QUICK, "model": str(policy.path), "steps": 5,
                                                           "out_dir": str(rebuildable)}))
    (rebuildable / "job.json").write_bytes(b'{"id": "20260101-000000-aaaaaa", "state": "runn\x00\xff')
    lost = jobs / "20260101-000000-bbbbbb"
    (lost / "prompts").mkdir(parents=True)
    (lost / "prompts" / "prompt-000.mid").write_bytes(prompt_midi(1))
    (lost / "job.json").write_text("[]")
    sleeper = fake_python(tmp_path, "exec sleep 120")
    with jobs_host(policy, jobs, python=sleeper) as (client, _manager):
        listed = {j["id"]: j for j in client.list_jobs()}
        assert set(listed) == {rebuildable.name, lost.name}
        assert listed[rebuildable.name]["state"] == "failed" and "rebuilt" in listed[rebuildable.name]["error"]
        assert [c["step"] for c in client.job_checkpoints(rebuildable.name)] == [2]
        assert listed[lost.name]["state"] == "damaged" and listed[lost.name]["files"] == ["job.json",
                                                                                         "prompts/prompt-000.mid"]
        assert client.resume_job(rebuildable.name)["state"] in ("queued", "running")
        wait_state(client, rebuildable.name, ("running",), timeout=30)
        assert client.cancel_job(rebuildable.name)["state"] == "cancelled"
        with pytest.raises(HostError) as err:
            client.resume_job(lost.name)
        assert err.value.status == 409
    assert (rebuildable / "job.json.damaged").exists()  # kept for a person to look at
    assert json.loads((rebuildable / "job.json").read_text())["state"] == "cancelled"


def test_the_client_reads_jobs_and_their_events_as_the_contracts_models(policy, tmp_path):
    """HostClient's job replies and event lines are engine.job_api's models: typed where the host vouches for
    a value, a step's metrics by name (GRPO's and DPO's differ), and a value a job file got wrong read as
    absent, as the host reads job files (a damaged file never breaks a client's list or stream)."""
    import shlex

    from engine.job_api import JobDone, JobInfo, JobState, JobStateEvent, JobStep

    grpo_step = {"step": 1, "reward_mean": 0.5, "kl": 0.01, "CE": 6.5, "reward_maa-ce": 0.5, "elapsed_s": 2.0}
    dpo_step = {"step": 2, "loss": 0.6, "rewards_accuracies": 0.75, "rewards_margins": 0.02, "steps_total": "many",
                "elapsed_s": "late"}

    def write(path: str, *records: dict) -> str:  # a shell line writing JSON lines into the job's folder
        return " ".join(["printf '%s\\n'", *(shlex.quote(json.dumps(r)) for r in records), f'> "$dir/{path}"'])

    job_process = fake_python(tmp_path, "\n".join([
        'dir="$4"',  # run as `python -m engine.cli host-job JOBDIR ...`
        write("events.jsonl", grpo_step, dpo_step), 'mkdir -p "$dir/checkpoints/checkpoint-2"',
        write("checkpoints/checkpoint-2/smart_checkpoint.json", {"step": 2, "reward_mean": "high"}),
        write("job_result.json", {"steps_done": 2, "stopped_by": "completed"})]))
    with jobs_host(policy, tmp_path / "jobs", python=job_process) as (client, _manager):
        job = client.start_training(QUICK, steps=2)
        with client.job_events(job) as stream:
            events = list(stream)
        steps = [e for e in events if isinstance(e, JobStep)]
        assert [s.step for s in steps] == [1, 2]
        assert all(isinstance(e, JobStateEvent) and e.job == job for e in events[:-1] if e not in steps)
        grpo, dpo = steps
        assert not grpo.is_dpo and grpo.metric("reward_mean") == 0.5 and grpo.metric("CE") == 6.5
        assert grpo.metric("reward_maa-ce") == 0.5 and grpo.metric("loss") is None and grpo.elapsed_s == 2.0
        assert dpo.is_dpo and dpo.metric("rewards_accuracies") == 0.75 and dpo.metric("reward_mean") is None
        assert dpo.steps_total is None and dpo.elapsed_s is None  # "many", "late": absent
        done = events[-1]
        assert isinstance(done, JobDone) and stream.result is done and done.state is JobState.COMPLETED
        assert done.result == {"steps_done": 2, "stopped_by": "completed"}
        assert [c.step for c in done.checkpoints] == [2] and done.checkpoints[0].reward_mean is None  # "high"

        info = client.job(job)
        assert isinstance(info, JobInfo) and info.state is JobState.COMPLETED and not info.state.active
        assert info.progress.step == info.steps == 2 and info.last.step == 2 and info.last.is_dpo
        assert info.config["steps"] == 2 and info.checkpoints[0].path.endswith("checkpoint-2")
        assert not info.is_taste_tune and info.taste_method is None
        [listed] = client.list_jobs()
        assert listed.id == job and listed.state is JobState.COMPLETED and listed.config == {}  # no details
        assert [c.step for c in client.job_checkpoints(job)] == [2]
        with pytest.raises(HostError) as err:
            client.resume_job(job)
        assert err.value.status == 409 and not JobState.COMPLETED.resumable


def test_the_studios_host_pauses_a_job_its_last_run_was_running(policy, tmp_path):
    """Closing the studio stops its host and the job; the next launch must not start it again by itself."""
    from engine.host.jobs import JobManager

    jobs = tmp_path / "jobs"
    job_dir = jobs / "20260101-000000-dddddd"
    job_dir.mkdir(parents=True)
    (job_dir / "job.json").write_text(json.dumps({"id": job_dir.name, "state": "running", "pid": None,
                                                  "config": {**QUICK, "model": str(policy.path), "steps": 2}}))
    manager = JobManager(jobs, python=fake_python(tmp_path, "exec sleep 120"), poll_s=0.05,
                         resume_interrupted=False).start()
    try:
        job = manager.jobs[job_dir.name]
        assert job.state == "paused" and "resume" in job.data["note"]
        assert manager.running is None
    finally:
        manager.close()


def test_a_stale_job_process_is_stopped_when_the_host_restarts(policy, tmp_path):
    import os
    import subprocess

    from engine.api import JOB_PROCESS_COMMAND

    jobs = tmp_path / "jobs"
    job_dir = jobs / "20260101-000000-cccccc"
    job_dir.mkdir(parents=True)
    stale = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)", "engine.cli",
                              JOB_PROCESS_COMMAND, str(job_dir.resolve())], start_new_session=True)
    (job_dir / "job.json").write_text(json.dumps({"id": job_dir.name, "state": "running", "pid": stale.pid,
                                                  "config": {**QUICK, "model": str(policy.path), "steps": 2}}))
    unrelated = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"], start_new_session=True)
    try:
        sleeper = fake_python(tmp_path, "exec sleep 120")
        with jobs_host(policy, jobs, python=sleeper) as (client, _manager):
            assert stale.wait(10) is not None  # the left-over process of the dead host is gone
            info = wait_state(client, job_dir.name, ("running",), timeout=30)  # and the job resumes
            assert info["attempts"] == 1
            client.cancel_job(job_dir.name)
        # A pid reused by another program is left alone.
        (job_dir / "job.json").write_text(json.dumps({"id": job_dir.name, "state": "running", "pid": unrelated.pid,
                                                      "config": {**QUICK, "model": str(policy.path), "steps": 2}}))
        with jobs_host(policy, jobs, python=sleeper) as (client, _manager):
            assert unrelated.poll() is None
            client.cancel_job(job_dir.name)
    finally:
        for p in (stale, unrelated):
            if p.poll() is None:
                os.killpg(p.pid, 9)
                p.wait()


def test_a_running_job_reports_the_phase_its_process_wrote(tmp_path):
    """A taste tune spends minutes fitting and sampling before its first step: the job says so."""
    from engine.host.jobs import Job
    from engine.job_api import JobInfo
    from studio.train.presets import job_phase

    job_dir = tmp_path / "20260101-000000-eeeeee"
    job_dir.mkdir()
    (job_dir / "job.json").write_text(json.dumps({"id": job_dir.name, "state": "running", "pid": None,
                                                  "config": {"kind": "taste-tune", "method": "dpo", "steps": 4}}))
    job = Job.load(job_dir)
    assert "phase" not in job.describe()
    (job_dir / "phase.json").write_text(json.dumps({"phase": "sampling 16 fresh continuations", "since": 5.0}))
    info = job.describe()
    assert info["phase"] == {"phase": "sampling 16 fresh continuations", "since": 5.0}
    assert job_phase(JobInfo.model_validate(info)) == "sampling 16 fresh continuations"  # as a client reads it
    for junk in (b"[1, 2]", b'{"phase": 7}', b"\xff", b"[" * 100_000):
        (job_dir / "phase.json").write_bytes(junk)
        assert "phase" not in job.describe(), junk[:10]
    assert job_phase(JobInfo(id=job_dir.name, state="running", kind="taste-tune",
                             config={"kind": "taste-tune", "method": "dpo"})).startswith("preparing")


def test_cancel_never_waits_holding_the_managers_lock(tmp_path, monkeypatch):
    """A job process that ignores SIGTERM keeps a cancel waiting up to its grace period; meanwhile every
    other request (status, the job list) and the watcher must still get the lock."""
    import subprocess
    import threading

    import engine.host.jobs.manager as manager_module
    from engine.host.jobs import JobManager

    monkeypatch.setattr(manager_module, "CANCEL_GRACE_S", 3.0)
    manager = JobManager(tmp_path / "jobs", python=fake_python(tmp_path, "exec sleep 120"), poll_s=0.05)
    job_dir = manager.jobs_dir / "20260101-000000-ffffff"
    job_dir.mkdir(parents=True)
    (job_dir / "job.json").write_text(json.dumps({"id": job_dir.name, "state": "paused", "config": {"steps": 2}}))
    manager.start()
    stubborn = subprocess.Popen([sys.executable, "-c", "import signal, time; signal.signal(signal.SIGTERM, "
                                 "signal.SIG_IGN); print(flush=True); time.sleep(60)"],
                                stdout=subprocess.PIPE, start_new_session=True)
    try:
        stubborn.stdout.readline()  # its SIGTERM handler is in place
        with manager.lock:
            job = manager.jobs[job_dir.name]
            job.process = stubborn
            job.set_state("running")
            manager.running = job
        cancelling = threading.Thread(target=manager.cancel, args=(job.id,))
        started = time.monotonic()
        cancelling.start()
        time.sleep(0.3)
        assert manager.lock.acquire(timeout=1.0), "cancel holds the lock while it waits for the process"
        manager.lock.release()
        assert manager.describe(job, details=False)["state"] == "running"
        cancelling.join(10)
        assert not cancelling.is_alive() and time.monotonic() - started >= 2.5  # SIGKILL after the grace
        assert job.state == "cancelled" and manager.running is None
    finally:
        manager.close()
        if stubborn.poll() is None:
            stubborn.kill()
        stubborn.wait()
