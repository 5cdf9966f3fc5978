"""Training jobs on the policy host (engine/host/jobs.py): a real `smart serve` on 127.0.0.1 with a tiny
random-weight policy, jobs with the offline `notes` reward, each in its own process."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from engine.host_client import HostError, LocalHost
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


def start_host(model_dir: Path, jobs_dir: Path) -> LocalHost:
    return LocalHost(model_dir, extra_args=["--jobs-dir", str(jobs_dir), "--threads", "1"]).start()


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
    assert info["progress"] == {"step": 3, "steps": 3, "fraction": 1.0}
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
    jobs = tmp_path / "jobs"
    h = start_host(model_dir, jobs)
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
    h = start_host(model_dir, jobs)
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
