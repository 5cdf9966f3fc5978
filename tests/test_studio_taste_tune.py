"""The Train panel's "Tune toward my taste" (studio/train/taste_job.py): disabled under the taste model's
minimum of decisive picks, and with enough it sends the profile's picks to the host and follows the job
like a GRPO one (progress, DPO curves, the final model in the checkpoints table).

The host here is a `HostClient` whose requests are answered in-process: the taste submission goes
through the host's own check (`engine.host.jobs.check_taste_submission`), so what the studio sends is
what a host accepts; the job's events are canned DPO step records. The real job runs in
tests/test_taste_job.py. The picks are made up (no listener, no person)."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pytest
from PySide6.QtCore import Qt
from test_studio_support import boxes, make_window, window  # noqa: F401 - fixtures

from engine import api
from engine.host_client import HostClient, HostError
from engine.job_api import JobInfo, JobState, JobStep, job_event
from engine.music import Clip, Note
from engine.preferences import PreferenceSet
from engine.taste import MIN_PAIRS

PPQ = 480
SHOTS_ENV = "SMART_TEST_SHOTS"  # where to keep the screenshot for a person to look at (else the test's tmp_path)


def clip(pitch: int, start: int = 0, n: int = 4) -> bytes:
    return Clip([Note(start + i * PPQ, pitch + i % 3, PPQ, 80) for i in range(n)], PPQ).to_midi_bytes()


def add_picks(profile: Path, decisive: int, ties: int = 0) -> None:
    prefs = PreferenceSet(profile)
    for i in range(decisive + ties):
        prefs.record(a_midi=clip(60 + i % 12, 4 * PPQ), b_midi=clip(48 + i % 12, 4 * PPQ), prompt_midi=clip(55 + i % 5),
                     choice="tie" if i >= decisive else "A", source="ab")


class InProcessHost(HostClient):
    """A HostClient whose requests never leave the process: a host that accepts a taste job when its own
    submission check does, and replays a two-step DPO job."""

    JOB = "20260101-000000-abcdef"

    def __init__(self, model: str):
        super().__init__("http://in-process.invalid")
        self.model = model
        self.submitted: list[dict] = []
        self.state = "running"

    def job_info(self) -> dict:
        done = self.state == "completed"
        return {"id": self.JOB, "state": self.state, "kind": api.TASTE_JOB_KIND, "reward": "taste (dpo)",
                "steps": 2, "progress": {"step": 2 if done else 0, "steps": 2}, "name": "my taste",
                "config": {"kind": api.TASTE_JOB_KIND, "method": "dpo", "model": self.model, "steps": 2},
                "checkpoints": [], "final_model": f"/jobs/{self.JOB}/final" if done else None, "error": None}

    def _request(self, method: str, path: str, **kwargs) -> dict:
        from engine.host.jobs import SubmissionRules, check_taste_submission
        from engine.errors import UserError

        if (method, path) == ("GET", "/v1/train/options"):
            return {**api.train_options(maa_weights=False), "maa_reason": "none here", "cores": 2, "cuda": False,
                    "default_model": self.model}
        if (method, path) == ("GET", "/v1/jobs"):
            return {"jobs": [self.job_info()] if self.submitted else [], "running": None, "jobs_dir": "/jobs"}
        if (method, path) == ("POST", "/v1/taste/tune"):
            body = dict(kwargs["json"])
            name = body.pop("name", None)
            rules = SubmissionRules(default_model=lambda: self.model, model_dir=Path, cores=2)
            try:
                options, pairs = check_taste_submission(body, rules)
            except UserError as exc:
                raise HostError(f"POST {path}: 400 {exc}", 400) from None
            self.submitted.append({"options": options, "pairs": pairs, "name": name})
            return {"job": self.JOB, "state": "queued"}
        if (method, path) == ("GET", f"/v1/jobs/{self.JOB}"):
            return self.job_info()
        raise HostError(f"{method} {path}: 404 not in this test", 404)

    def job_events(self, job_id: str):
        self.state = "completed"
        records = [{"step": s, "loss": 0.69 - 0.05 * s, "rewards_accuracies": 0.5 + 0.25 * s,
                    "rewards_margins": 0.01 * s, "rewards_chosen": 0.02 * s, "rewards_rejected": -0.01 * s,
                    "steps_total": 2, "elapsed_s": 3.0 * s} for s in (1, 2)]
        return CannedStream([{"event": "state", "state": "running", "job": job_id}, *records,
                             {"done": True, "state": "completed", "job": job_id, "result": {"steps_done": 2},
                              "error": None, "final_model": self.job_info()["final_model"], "checkpoints": []}])


class CannedStream:
    """The lines of a job's event stream, read as `HostClient.job_events` reads them (`engine.job_api`)."""

    def __init__(self, lines: list[dict]):
        self.events = [job_event(line) for line in lines]

    def __iter__(self):
        return iter(self.events)

    def close(self) -> None:
        pass


def test_tune_toward_my_taste_needs_enough_picks_then_sends_them(window, qtbot, tmp_path):
    panel = window.train_panel
    section = panel.taste_section
    profile = window.taste_store.profile_dir
    assert profile == tmp_path / "profile-preferences"  # the test's profile, never the user's

    add_picks(profile, MIN_PAIRS - 1, ties=3)
    section.refresh()
    assert not section.btn_tune.isEnabled()
    tip = section.btn_tune.toolTip()
    assert f"at least {MIN_PAIRS} decisive" in tip and "ties do not count" in tip
    assert "needs 1 more decisive pick" in section.label.text()

    add_picks(profile, 1)
    window.taste_store.changed.emit()  # what the store says after a pick lands
    assert section.btn_tune.isEnabled() and "Send your" in section.btn_tune.toolTip()
    section.method_combo.setCurrentIndex(section.method_combo.findData("dpo"))
    section.spin_steps.setValue(2)
    assert section.options() == {"method": "dpo", "steps": 2}

    # Connected to a host (in-process), the action sends the profile's picks and follows the job.
    host = InProcessHost(str(tmp_path / "model"))
    panel.host.client, panel.host.state = host, "connected"
    panel.host.health = api.HealthReply(device="cpu", model={"path": host.model},
                                        maa={"status": "missing", "reason": "none here"})  # what such a host says
    panel.host.changed.emit()
    qtbot.mouseClick(section.btn_tune, Qt.LeftButton)
    qtbot.waitUntil(lambda: panel.job_id == InProcessHost.JOB, timeout=20000)
    sent = host.submitted[0]
    assert sent["options"]["method"] == "dpo" and sent["options"]["steps"] == 2
    assert sent["options"]["cpu_threads"] == 1 and sent["options"]["model"] == host.model
    assert len(sent["pairs"]) == MIN_PAIRS + 3 and sum(p.choice != "tie" for p in sent["pairs"]) == MIN_PAIRS
    assert {p.source for p in sent["pairs"]} == {"ab"} and "my taste (dpo)" in sent["name"]

    # The job's DPO curves, its progress and its final model, as for a GRPO job.
    qtbot.waitUntil(lambda: panel.plots.points("loss") == 2 and panel.ckpt_table.rowCount() == 1, timeout=20000)
    assert panel.plots.layout_name == "dpo" and panel.plots.points("rewards_accuracies") == 2
    assert panel.plots.points("rewards_chosen") == 2 and "reward_mean" not in panel.plots.data
    assert "pairs ranked right 1.00" in panel.log_view.toPlainText()
    assert panel.progress.format() == "step 2 / 2"
    assert panel.ckpt_table.item(0, 0).text() == "final"
    assert section.btn_tune.isEnabled()  # the job is over: another tune may start

    # Another job running on the host blocks a new tune, and says why.
    panel.job_state = JobState.RUNNING
    panel._sync_buttons()
    assert not section.btn_tune.isEnabled() and "A job is running" in section.btn_tune.toolTip()
    panel.job_state = JobState.COMPLETED
    panel._sync_buttons()

    shot = (Path(os.environ[SHOTS_ENV]) if SHOTS_ENV in os.environ else tmp_path) / "taste_panel.png"
    shot.parent.mkdir(parents=True, exist_ok=True)
    panel.resize(520, 1400)
    content = panel.widget().widget()
    content.grab()  # the plots' axes size themselves to their labels on a first paint
    qtbot.wait(300)
    assert content.grab().save(str(shot))
    panel.host.client, panel.host.health, panel.host.state = None, None, "disconnected"
    host.close()


def test_picks_are_trimmed_to_the_host_body_limit_newest_first(tmp_path):
    from studio.train.taste_job import collect_pairs, pair_prompts

    add_picks(tmp_path, 30)
    pairs, dropped = collect_pairs(tmp_path)
    assert len(pairs) == 30 and dropped == 0
    one = 4 * sum(len(pairs[0][k]) for k in ("a", "b", "prompt")) // 3 + 120
    kept, dropped = collect_pairs(tmp_path, max_body_bytes=int(10.5 * one / 0.9))
    assert len(kept) == 10 and dropped == 20
    assert kept[-1]["a"] == pairs[-1]["a"] and kept[0]["a"] == pairs[20]["a"]  # the newest ten
    prompts = pair_prompts(tmp_path, 3)
    assert len(prompts) == 3 and len(set(prompts)) == 3 and prompts[0] == pairs[-1]["prompt"]
    assert pair_prompts(tmp_path / "none", 2) == [None, None]


@pytest.mark.parametrize("decisive, enabled", [(0, False), (MIN_PAIRS, True)])
def test_the_section_without_a_window(qtbot, tmp_path, decisive, enabled):
    from studio.host.taste import TasteStore
    from PySide6.QtCore import QSettings

    from studio.train.taste_job import TasteTuneSection

    add_picks(tmp_path / "p", decisive)
    store = TasteStore(QSettings(str(tmp_path / "s.ini"), QSettings.IniFormat), profile_dir=tmp_path / "p")
    section = TasteTuneSection(store)
    qtbot.addWidget(section)
    assert section.btn_tune.isEnabled() is enabled
    store.shutdown()


def test_a_taste_tune_says_what_it_does_before_its_first_step_and_times_its_steps(window):
    """"Tune toward my taste" showed "running · ETA —" with an empty bar for 331 s before its first step
    (issue 24): it says its phase while preparing, then step k of N with an ETA timed from the steps."""
    import time

    from studio.train.presets import step_eta

    panel = window.train_panel
    panel.job_id, panel.job_state = "j1", JobState.RUNNING
    panel.job_info = JobInfo(id="j1", state="running", kind=api.TASTE_JOB_KIND, steps=40, started=time.time() - 150,
                             config={"kind": api.TASTE_JOB_KIND, "method": "dpo"})
    panel.records.clear()
    panel._show_progress()
    text = panel.job_label.text()
    assert "fitting your taste model" in text and "sampling" in text and "2 min" in text
    assert panel.progress.maximum() == 0  # busy, not an empty bar
    # The setup (331 s before step 1) is not a step's time: the ETA comes from the steps after it.
    records = [JobStep(step=1, elapsed_s=331.0), JobStep(step=2, elapsed_s=343.0), JobStep(step=3, elapsed_s=355.0)]
    assert step_eta(records, 40) == 12.0 * 37
    assert step_eta(records[:1], 40) == 331.0 * 39  # one step: an upper bound
    assert step_eta([], 40) is None
    panel.records.extend(records)
    panel._steps_total = 40
    panel._show_progress()
    assert "step 3 of 40" in panel.job_label.text() and "ETA 7 min 24 s" in panel.job_label.text()
    assert panel.progress.maximum() == 1000 and panel.progress.format() == "step 3 / 40"
    panel.job_state = JobState.COMPLETED


def test_fit_waits_for_enough_decisive_picks(window):
    """Fit was clickable with one pick (issue 24): it is enabled from MIN_PAIRS decisive picks on."""
    section = window.generate_panel.taste_section
    profile = window.taste_store.profile_dir
    add_picks(profile, 1)
    section.refresh()
    assert not section.btn_fit.isEnabled() and f"Needs {MIN_PAIRS - 1} more decisive" in section.btn_fit.toolTip()
    add_picks(profile, MIN_PAIRS - 1)
    section.refresh()
    assert section.btn_fit.isEnabled()


class LateStatusHost(InProcessHost):
    """A host whose job-status answer is read while the job runs but arrives after the studio has seen the
    event stream say the job is over: the order a busy network or a slow host gives now and then."""

    def __init__(self, model: str, studio_saw_the_end):
        super().__init__(model)
        self.studio_saw_the_end = studio_saw_the_end
        self.late_answers = 0

    def _request(self, method: str, path: str, **kwargs) -> dict:
        if (method, path) == ("GET", f"/v1/jobs/{self.JOB}") and self.late_answers == 0:
            # read while the job still runs (after its first step)...
            info = {**self.job_info(), "state": "running", "final_model": None, "progress": {"step": 1, "steps": 2}}
            deadline = time.monotonic() + 10
            while not self.studio_saw_the_end() and time.monotonic() < deadline:
                time.sleep(0.02)  # ...and delivered once the studio has handled the stream's end
            self.late_answers += 1
            return info
        return super()._request(method, path, **kwargs)


def test_a_status_answer_older_than_the_stream_does_not_undo_a_finished_job(window, qtbot, tmp_path):
    panel = window.train_panel
    add_picks(window.taste_store.profile_dir, MIN_PAIRS)
    panel.taste_section.refresh()
    host = LateStatusHost(str(tmp_path / "model"), lambda: panel._watcher is None and panel.job_state == "completed")
    panel.host.client, panel.host.state = host, "connected"
    panel.host.health = api.HealthReply(device="cpu", model={"path": host.model},
                                        maa={"status": "missing", "reason": "none here"})
    panel.host.changed.emit()
    try:
        panel.attach(InProcessHost.JOB)  # a record asks for the job's status; the answer comes back late
        qtbot.waitUntil(lambda: host.late_answers >= 1, timeout=20000)
        qtbot.wait(500)  # the late answer is handled on the UI thread
        assert panel.job_state == "completed" and panel.progress.format() == "step 2 / 2"
        assert panel.taste_section.btn_tune.isEnabled()
    finally:  # a window that believes a job runs would ask before closing
        panel.job_state = None
        panel.host.client, panel.host.health, panel.host.state = None, None, "disconnected"


class EarlyStatusHost(InProcessHost):
    """A host whose job is already over when the studio attaches: the job-status answer (completed) lands
    before the event stream, which then replays the job from its start ("running", its steps, its end).
    Status and job-list requests after the first status answer are held back until the test ends, so
    only the stream's end can put the controls right."""

    def __init__(self, model: str, studio_saw_the_status):
        super().__init__(model)
        self.state = "completed"
        self.studio_saw_the_status = studio_saw_the_status
        self.status_answers = 0
        self.release = threading.Event()

    def _request(self, method: str, path: str, **kwargs) -> dict:
        status = (method, path) == ("GET", f"/v1/jobs/{self.JOB}")
        if self.status_answers and (status or (method, path) == ("GET", "/v1/jobs")):
            self.release.wait(20)
        self.status_answers += status
        return super()._request(method, path, **kwargs)

    def job_events(self, job_id: str):
        deadline = time.monotonic() + 10
        while not self.studio_saw_the_status() and time.monotonic() < deadline:
            time.sleep(0.02)
        return super().job_events(job_id)


def test_the_streams_end_reenables_the_controls_after_its_replay(window, qtbot, tmp_path):
    panel = window.train_panel
    add_picks(window.taste_store.profile_dir, MIN_PAIRS)
    panel.taste_section.refresh()
    host = EarlyStatusHost(str(tmp_path / "model"), lambda: panel.ckpt_table.rowCount() == 1)
    panel.host.client, panel.host.state = host, "connected"
    panel.host.health = api.HealthReply(device="cpu", model={"path": host.model},
                                        maa={"status": "missing", "reason": "none here"})
    panel.host.changed.emit()
    try:
        panel.attach(InProcessHost.JOB)
        qtbot.waitUntil(lambda: panel._watcher is None, timeout=20000)  # the stream's end is handled
        assert host.status_answers == 1  # no later status answer put the controls right
        assert panel.job_state == "completed" and panel.ckpt_table.item(0, 0).text() == "final"
        assert panel.taste_section.btn_tune.isEnabled() and panel.btn_start.isEnabled()
    finally:
        host.release.set()
        panel.job_state = None
        panel.host.client, panel.host.health, panel.host.state = None, None, "disconnected"
