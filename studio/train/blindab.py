"""Blind A/B between the base model and a tuned checkpoint: the same prompts continued by both, played
in random order without labels; the musician picks, and each choice goes to the preference store
(`studio.train.preferences`) next to the project."""

from __future__ import annotations

import base64
import random
from pathlib import Path

from PySide6.QtCore import Signal
from PySide6.QtWidgets import QGroupBox, QHBoxLayout, QLabel, QPushButton, QVBoxLayout

from studio.generate.audition import SOLO
from studio.host.taste import SOURCE_BLIND_AB, Judgement
from studio.theme import STYLE_DIM
from studio.train.preferences import PreferenceSet, preference_dir


class _Played:
    """What Audition plays: a list of notes (prompt + continuation)."""

    def __init__(self, notes):
        self.notes = notes


class BlindAB(QGroupBox):
    """The listening test. `set_pairs` starts one; `choose` records a pick and moves to the next pair."""

    chosen = Signal(str)  # a log line for each pick

    def __init__(self, audition, taste_store, project_path, parent=None) -> None:
        """`taste_store`: where picks teach the taste (the window's); `project_path()`: the open project's file."""
        super().__init__("Blind A/B", parent)
        self.audition, self.taste_store, self.project_path = audition, taste_store, project_path
        self.trials: list[dict] = []
        self.trial_index = 0
        self.job_id: str | None = None
        av = QVBoxLayout(self)
        self.label = QLabel("")
        self.label.setWordWrap(True)
        av.addWidget(self.label)
        self.btn_play_a = QPushButton("▶ A")
        self.btn_play_a.clicked.connect(lambda: self.play("A"))
        self.btn_play_b = QPushButton("▶ B")
        self.btn_play_b.clicked.connect(lambda: self.play("B"))
        self.btn_stop = QPushButton("■")
        self.btn_stop.clicked.connect(self.audition.stop)
        row = QHBoxLayout()
        for b in (self.btn_play_a, self.btn_play_b, self.btn_stop):
            row.addWidget(b)
        av.addLayout(row)
        self.btn_pick_a = QPushButton("A is better")
        self.btn_pick_a.clicked.connect(lambda: self.choose("A"))
        self.btn_pick_b = QPushButton("B is better")
        self.btn_pick_b.clicked.connect(lambda: self.choose("B"))
        self.btn_pick_tie = QPushButton("No preference")
        self.btn_pick_tie.clicked.connect(lambda: self.choose("tie"))
        row = QHBoxLayout()
        for b in (self.btn_pick_a, self.btn_pick_b, self.btn_pick_tie):
            row.addWidget(b)
        av.addLayout(row)
        self.tally_label = QLabel("")
        self.tally_label.setWordWrap(True)
        self.tally_label.setStyleSheet(STYLE_DIM)
        av.addWidget(self.tally_label)
        self.hide()
        self._sync()

    @property
    def judging(self) -> bool:
        return self.trial_index < len(self.trials)

    def say(self, text: str) -> None:
        self.show()
        self.label.setText(text)

    def set_pairs(self, pairs: list[dict], base: str, tuned: str, job_id: str | None) -> None:
        """Pairs from `workers.CompareJob` ({"prompt", "base", "tuned"}): each shown in a random order."""
        rng = random.Random()
        self.job_id = job_id
        self.trials = []
        for pair in pairs:
            a, b = ("tuned", "base") if rng.random() < 0.5 else ("base", "tuned")
            self.trials.append({"prompt": pair["prompt"], "A": pair[a], "B": pair[b], "roles": {"A": a, "B": b},
                                "paths": {"base": base, "tuned": tuned}})
        self.trial_index = 0
        self._show_trial()

    def play(self, which: str) -> None:
        if not self.judging:
            return
        notes = self.trials[self.trial_index][which]["notes"]
        if notes:
            self.audition.play(_Played(notes), SOLO)

    def preference_set(self) -> PreferenceSet:
        from PySide6.QtCore import QStandardPaths

        fallback = Path(QStandardPaths.writableLocation(QStandardPaths.AppDataLocation) or Path.home()) / "preferences"
        return PreferenceSet(preference_dir(self.project_path(), fallback))

    def choose(self, choice: str) -> dict | None:
        """Record "A", "B" or "tie" for the current pair."""
        if not self.judging:
            return None
        t = self.trials[self.trial_index]
        self.audition.stop()
        rec = self.preference_set().record(
            a_midi=base64.b64decode(t["A"]["midi"]), b_midi=base64.b64decode(t["B"]["midi"]),
            prompt_midi=t["prompt"],
            a_model={"role": t["roles"]["A"], "path": t["paths"][t["roles"]["A"]]},
            b_model={"role": t["roles"]["B"], "path": t["paths"][t["roles"]["B"]]},
            choice=choice, source=SOURCE_BLIND_AB, extra={"job": self.job_id, "procedural_prompt": t["prompt"] is None})
        self._keep_in_profile(t, choice, rec)
        self.chosen.emit(f"A/B pair {self.trial_index + 1}: you picked {choice}"
                         + (f" — the {rec['preferred']} model" if rec["preferred"] else ""))
        self.trial_index += 1
        self._show_trial()
        return rec

    def _keep_in_profile(self, trial: dict, choice: str, rec: dict) -> None:
        """The same pick in the musician's profile (and per project when asked), where the taste learns."""
        store = self.taste_store
        extra = {k: v for k, v in rec.items() if k in ("job", "procedural_prompt")}
        store.record([Judgement(base64.b64decode(trial["A"]["midi"]), base64.b64decode(trial["B"]["midi"]),
                                trial["prompt"], choice, SOURCE_BLIND_AB,
                                a_model={k: v for k, v in rec["a"].items() if k != "midi"},
                                b_model={k: v for k, v in rec["b"].items() if k != "midi"}, extra=extra)],
                     skip={self.preference_set().dir})

    def _show_trial(self) -> None:
        n = len(self.trials)
        if not self.judging:
            self.say(f"Done: {n} pair{'s' if n != 1 else ''} judged. Thank you!")
        else:
            self.say(f"Pair {self.trial_index + 1} of {n}: listen to A and B (which model made which is hidden), "
                     f"then pick.")
        self._show_tally()
        self._sync()

    def _show_tally(self) -> None:
        if not self.trials:
            return
        prefs = self.preference_set()
        paths = self.trials[0]["paths"]
        counts = prefs.tally().get(f"{paths['base']} → {paths['tuned']}", {"tuned": 0, "base": 0, "tie": 0})
        self.tally_label.setText(f"So far for this checkpoint: tuned preferred {counts['tuned']}, base "
                                 f"{counts['base']}, no preference {counts['tie']}. Saved in {prefs.dir}")

    def _sync(self) -> None:
        for b in (self.btn_play_a, self.btn_play_b, self.btn_pick_a, self.btn_pick_b, self.btn_pick_tie):
            b.setEnabled(self.judging)
