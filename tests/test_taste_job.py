"""Taste tuning as a host job (POST /v1/taste/tune, engine/host/jobs/ + training/host_job.py): a real
`smart serve` with a tiny random-weight policy tunes toward synthetic pairs, and bad submissions are
refused before any job exists.

The pairs are judged by a simulated listener (`training.taste.LISTENERS`), never a person."""

from __future__ import annotations

import json
import math
import random
from pathlib import Path

import pytest
from test_host_jobs import fake_python, jobs_host, model_dir, policy, wait_state  # noqa: F401 - fixtures
from test_taste import continuation, prompt_clip

from engine.host_client import HostError, LocalHost
from engine.job_api import JobProgress
from engine.taste import MIN_PAIRS
from training.taste import LISTENERS

QUICK = {"method": "dpo", "steps": 2, "synthetic_prompts": 2, "cpu_threads": 1}


def judged_pairs(n: int, seed: int = 0, ties: int = 0) -> list[dict]:
    """n pairs of random 2-bar continuations judged by the high-register listener (+ `ties` ties)."""
    rng = random.Random(seed)
    listener = LISTENERS["high-register"]
    out = []
    for i in range(n + ties):
        p = prompt_clip(rng, bars=2)
        a, b = continuation(rng, p), continuation(rng, p)
        choice = "tie" if i >= n else listener.choose(a, b, p, rng)
        out.append({"choice": choice, "a": a.to_midi_bytes(), "b": b.to_midi_bytes(), "prompt": p.to_midi_bytes(),
                    "source": "ab"})
    return out


@pytest.mark.slow  # a host, then a job process that fits, samples and runs 2 DPO steps (~30-60 s on 2 cores)
def test_taste_job_streams_steps_and_its_model_loads(model_dir, tmp_path):  # noqa: F811 - fixture
    jobs = tmp_path / "jobs"
    with LocalHost(model_dir, extra_args=["--jobs-dir", str(jobs), "--threads", "1"]) as host:
        c = host.client()
        job = c.start_taste_tune(judged_pairs(12), QUICK, name="my taste")
        with c.job_events(job) as stream:
            events = list(stream)
        done = events[-1]
        assert done["done"] and done["state"] == "completed", (done, (jobs / job / "job.log").read_text()[-3000:])
        steps = [e for e in events if "step" in e and "event" not in e and not e.get("done")]
        assert [e["step"] for e in steps] == [1, 2]
        for e in steps:
            assert math.isfinite(e["loss"]) and 0.0 <= e["rewards_accuracies"] <= 1.0
            assert "rewards_margins" in e and e["steps_total"] == 2 and e["elapsed_s"] >= 0
        result = done["result"]
        assert result["kind"] == "taste-tune" and result["steps_done"] == 2 and result["stopped_by"] == "completed"
        assert result["taste"]["pairs"] == 12 and result["restarted"] is False
        info = c.job(job)
        assert info["kind"] == "taste-tune" and info["name"] == "my taste" and info["reward"] == "taste (dpo)"
        assert info.progress == JobProgress(step=2, steps=2, fraction=1.0)
        assert info["prompts"] == {"kind": "taste-pairs", "pairs": 12, "decisive": 12, "ties": 0}
        assert "starts over" in info["note"]
        # The pairs as sent, in the preference-set layout, and the taste fit on them.
        lines = (jobs / job / "pairs" / "preferences.jsonl").read_text().splitlines()
        assert len(lines) == 12 and json.loads(lines[0])["source"] == "ab"
        assert (jobs / job / "taste" / "taste.json").is_file() and not (jobs / job / "tune").exists()
        # The final model: listed, activated, generating.
        final = info["final_model"]
        assert final == str((jobs / job / "final").resolve())
        assert final in {m["path"] for m in c.models()["models"]}
        assert c.activate(final)["active"]["path"] == final
        gen = c.generate(None, candidates=2, bars=1, max_new_tokens=24, seed=1, score=False, first_note=True).wait()
        assert gen["model"]["path"] == final and len(gen["candidates"]) == 2
        with pytest.raises(HostError) as err:
            c.resume_job(job)  # completed: nothing to resume
        assert err.value.status == 409


def test_bad_taste_submissions_are_refused_and_nothing_is_created(policy, tmp_path):  # noqa: F811 - fixture
    import base64
    import os

    good = judged_pairs(MIN_PAIRS)
    cores = os.cpu_count() or 1

    def b64(data: bytes) -> str:
        return base64.b64encode(data).decode()

    def wire(pairs: list[dict]) -> list[dict]:
        return [{**p, "a": b64(p["a"]), "b": b64(p["b"]), "prompt": b64(p["prompt"])} for p in pairs]

    ok = wire(good)
    cases = [
        ({}, "pairs must be a non-empty list"),
        ({"pairs": []}, "pairs must be a non-empty list"),
        ({"pairs": "all of them"}, "pairs must be a non-empty list"),
        ({"pairs": wire(good[:MIN_PAIRS - 1]) + wire(judged_pairs(0, ties=3))}, "decisive pair"),
        ({"pairs": ok[:-1] + [{**ok[-1], "a": "%%%"}]}, f"pairs[{MIN_PAIRS - 1}].a is not valid base64"),
        ({"pairs": ok[:-1] + [{**ok[-1], "b": b64(b"not a midi file")}]}, f"pairs[{MIN_PAIRS - 1}].b"),
        ({"pairs": [{**ok[0], "choice": "C"}] + ok[1:]}, "pairs[0]: choice must be A, B or tie"),
        ({"pairs": [{**ok[0], "score": 3}] + ok[1:]}, "pairs[0]: unknown field score"),
        ({"pairs": [{**ok[0], "prompt": 7}] + ok[1:]}, "pairs[0].prompt must be a base64 MIDI file"),
        ({"pairs": [{**ok[0], "a": "A" * (400 * 1024)}] + ok[1:]}, "larger than"),
        ({"pairs": ok, "method": "ppo"}, "method must be one of"),
        ({"pairs": ok, "steps": 0}, "steps must be ≥ 1"),
        ({"pairs": ok, "steps": "2"}, "steps must be int"),
        ({"pairs": ok, "beta": -1.0}, "beta must be ≥ 0"),
        ({"pairs": ok, "reward": "notes"}, "unknown option: reward"),
        ({"pairs": ok, "out_dir": "/tmp/x"}, "cannot be set"),
        ({"pairs": ok, "cpu_threads": cores + 1}, "CPU cores"),
        ({"pairs": ok, "model": "/etc"}, "not a model directory"),
    ]
    jobs = tmp_path / "jobs"
    sleeper = fake_python(tmp_path, "exec sleep 120")
    with jobs_host(policy, jobs, python=sleeper) as (client, _manager):
        for body, message in cases:
            with pytest.raises(HostError) as err:
                client._request("POST", "/v1/taste/tune", json=body)
            assert err.value.status == 400 and message in str(err.value), (list(body), str(err.value))
        assert client.list_jobs() == []
        assert list(jobs.iterdir()) == []
        # A body over the host's limit never reaches the route.
        with pytest.raises(HostError) as err:
            client.start_taste_tune(good * 400, QUICK)
        assert err.value.status == 413
        assert list(jobs.iterdir()) == []

        # A good one becomes one queued/running job with its pairs on disk; pause/cancel work as for GRPO.
        job = client.start_taste_tune(good + judged_pairs(0, ties=2), QUICK, name="mine")
        info = client.job(job)
        assert info["kind"] == "taste-tune" and info["config"]["kind"] == "taste-tune"
        assert info["config"]["model"] == str(policy.path) and info["config"]["method"] == "dpo"
        assert info["prompts"] == {"kind": "taste-pairs", "pairs": MIN_PAIRS + 2, "decisive": MIN_PAIRS, "ties": 2}
        recs = [json.loads(x) for x in (jobs / job / "pairs" / "preferences.jsonl").read_text().splitlines()]
        assert [r["choice"] for r in recs[-2:]] == ["tie", "tie"]
        assert (jobs / job / "pairs" / recs[0]["prompt"]).read_bytes() == good[0]["prompt"]
        wait_state(client, job, ("running",), timeout=30)
        assert client.cancel_job(job)["state"] == "cancelled"
        assert [j["id"] for j in client.list_jobs()] == [job]


@pytest.mark.slow  # a job process paused after its first DPO step, then restarted from the base model
def test_pause_keeps_the_model_so_far_and_resume_starts_over(model_dir, tmp_path):  # noqa: F811 - fixture
    jobs = tmp_path / "jobs"
    with LocalHost(model_dir, extra_args=["--jobs-dir", str(jobs), "--threads", "1"]) as host:
        c = host.client()
        job = c.start_taste_tune(judged_pairs(12), {**QUICK, "steps": 200, "synthetic_prompts": 0})
        with c.job_events(job) as stream:
            for event in stream:
                if event.get("step", 0) >= 1 and "event" not in event:
                    break
        c.pause_job(job)
        info = wait_state(c, job, ("paused",), timeout=120)
        done_at = info["result"]["steps_done"]
        assert 1 <= done_at < 200 and info["result"]["stopped_by"] == "stopped"
        ckpts = c.job_checkpoints(job)
        assert [k["step"] for k in ckpts] == [done_at] and info["final_model"] is None
        assert c.activate(ckpts[0]["path"])["active"]["path"] == ckpts[0]["path"]  # the model so far is usable
        c.resume_job(job)
        with c.job_events(job) as stream:  # the paused run's step lines are gone: these are the new run's
            first = next(e for e in stream if "step" in e and "event" not in e and not e.get("done"))
        assert first["step"] == 1
        c.cancel_job(job)
        log = (jobs / job / "job.log").read_text()
        assert "restarting from the base model" in log
        assert [k["step"] for k in c.job_checkpoints(job)] == [done_at]  # the paused model stays listed


@pytest.mark.slow  # a host and a job process running 2 GRPO steps on the taste reward
def test_grpo_taste_job_reports_reward_kl_and_diversity(model_dir, tmp_path):  # noqa: F811 - fixture
    jobs = tmp_path / "jobs"
    with LocalHost(model_dir, extra_args=["--jobs-dir", str(jobs), "--threads", "1"]) as host:
        c = host.client()
        job = c.start_taste_tune(judged_pairs(12, seed=1), {"method": "grpo", "steps": 2, "cpu_threads": 1})
        with c.job_events(job) as stream:
            events = list(stream)
        assert events[-1]["state"] == "completed", (jobs / job / "job.log").read_text()[-3000:]
        steps = [e for e in events if "step" in e and "event" not in e and not e.get("done")]
        assert [e["step"] for e in steps] == [1, 2]
        for e in steps:  # GRPO's step records, the taste score as the reward
            assert math.isfinite(e["reward_mean"]) and "kl" in e and "diversity" in e and e["steps_total"] == 2
        info = c.job(job)
        assert info["reward"] == "taste (grpo)" and info["progress"]["fraction"] == 1.0
        assert c.activate(info["final_model"])["active"]["path"] == info["final_model"]
