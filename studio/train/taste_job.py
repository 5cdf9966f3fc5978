"""Tune toward my taste: the Train panel's section that sends the musician's picks to the host as a
taste-tuning job (POST /v1/taste/tune, `engine.host.jobs`), which fine-tunes the policy on them (DPO, or
GRPO with the taste as its reward). The job then shows in the same job list, progress, curves and
checkpoints as a GRPO job, and the blind A/B (Compare) measures it with new picks, which become pairs.

The pairs are the profile's (`studio.host.taste.TasteStore`: one set across projects, where every
pick lands and the taste model is fit). Reading them and building the request run on a worker thread
(`collect_pairs`); this module never imports torch.
"""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import QComboBox, QFormLayout, QGroupBox, QLabel, QPushButton, QSpinBox, QVBoxLayout

from engine import api
from engine.preferences import PreferenceSet
from engine.taste import MIN_PAIRS
from studio.theme import STYLE_DIM, STYLE_OK

METHODS = (("dpo", "DPO on your picks"), ("grpo", "GRPO, your taste as the reward"))
METHOD_TIPS = {
    "dpo": "Learns directly from each pair you decided (the one you preferred over the other), plus fresh "
           "samples ranked by your taste model. Fast; β keeps it close to the original.",
    "grpo": "Generates continuations at your prompts and reinforces those your taste model scores higher, "
            "with the KL term and the diversity guard of GRPO. Slower.",
}
# Room left in the host's body limit for the JSON around the pairs (options, keys, quotes).
BODY_MARGIN = 0.9


def collect_pairs(profile_dir: str | Path, max_body_bytes: int | None = None) -> tuple[list[dict], int]:
    """(pairs for `HostClient.start_taste_tune`, how many of the oldest were left out to fit
    `max_body_bytes`). Reads MIDI files: call it on a worker thread."""
    pairs = []
    for p in PreferenceSet(profile_dir).pairs():
        try:
            item = {"choice": p.choice, "a": p.a.read_bytes(), "b": p.b.read_bytes(),
                    "prompt": p.prompt.read_bytes() if p.prompt is not None else None}
        except OSError:
            continue  # a file removed since the set was read
        source = p.record.get("source")
        if isinstance(source, str) and source:
            item["source"] = source[:64]
        pairs.append(item)
    if not max_body_bytes:
        return pairs, 0
    budget = int(max_body_bytes * BODY_MARGIN)
    kept: list[dict] = []
    used = 0
    for item in reversed(pairs):  # the newest picks say the most about the taste now
        size = 4 * sum(len(item[k] or b"") for k in ("a", "b", "prompt")) // 3 + 120
        if used + size > budget:
            break
        kept.append(item)
        used += size
    kept.reverse()
    return kept, len(pairs) - len(kept)


def pair_prompts(profile_dir: str | Path, count: int) -> list[bytes | None]:
    """The prompts of the newest pairs (distinct), for a blind A/B at the musician's own material; a
    procedural prompt (None) when there are fewer. Reads files: a worker thread."""
    out: list[bytes | None] = []
    seen: set[bytes] = set()
    for p in reversed(PreferenceSet(profile_dir).pairs()):
        if p.prompt is None or len(out) >= count:
            continue
        try:
            data = p.prompt.read_bytes()
        except OSError:
            continue
        if data not in seen:
            seen.add(data)
            out.append(data)
    return out + [None] * (count - len(out))


class TasteTuneSection(QGroupBox):
    """How many picks there are, the method and steps, and the "Tune toward my taste" button (disabled,
    with the reason as its tooltip, under the taste model's minimum). `requested` carries the options."""

    requested = Signal(dict)

    def __init__(self, store, parent=None) -> None:
        super().__init__("Tune toward my taste", parent)
        self.store = store
        self.decisive = 0
        self.pairs = 0
        self._blocked_reason: str | None = None
        col = QVBoxLayout(self)
        self.label = QLabel("")
        self.label.setWordWrap(True)
        col.addWidget(self.label)
        form = QFormLayout()
        form.setFieldGrowthPolicy(QFormLayout.AllNonFixedFieldsGrow)
        self.method_combo = QComboBox()
        for key, text in METHODS:
            self.method_combo.addItem(text, key)
            self.method_combo.setItemData(self.method_combo.count() - 1, METHOD_TIPS[key], Qt.ToolTipRole)
        self.method_combo.currentIndexChanged.connect(
            lambda _i: self.method_combo.setToolTip(METHOD_TIPS[self.method_combo.currentData()]))
        self.method_combo.setToolTip(METHOD_TIPS["dpo"])
        form.addRow("Method", self.method_combo)
        self.spin_steps = QSpinBox()
        self.spin_steps.setRange(0, api.MAX_STEPS)
        self.spin_steps.setSpecialValueText("auto")
        self.spin_steps.setValue(0)
        self.spin_steps.setToolTip("Optimizer steps; auto: the tuner's default (DPO: two passes over the pairs, "
                                   "GRPO: 20)")
        form.addRow("Steps", self.spin_steps)
        col.addLayout(form)
        self.btn_tune = QPushButton("Tune toward my taste")
        self.btn_tune.clicked.connect(lambda: self.requested.emit(self.options()))
        col.addWidget(self.btn_tune)
        self.note = QLabel("A tune runs on the host like a training job: follow it above, then Compare blind — "
                           "your picks there become new pairs. Pause keeps the model so far; resume starts over.")
        self.note.setWordWrap(True)
        self.note.setStyleSheet(STYLE_DIM)
        col.addWidget(self.note)
        if store is not None:
            store.changed.connect(self.refresh)
        self.refresh()

    def options(self) -> dict:
        """The /v1/taste/tune options chosen here (engine.api.TasteTuneOptions names)."""
        opts = {"method": self.method_combo.currentData()}
        if self.spin_steps.value():
            opts["steps"] = self.spin_steps.value()
        return opts

    @property
    def profile_dir(self) -> Path | None:
        return self.store.profile_dir if self.store is not None else None

    def refresh(self) -> None:
        """Count the profile's picks (a small JSONL read, as the Generate panel's taste box does)."""
        summary = self.store.summary() if self.store is not None else {"pairs": 0, "decisive": 0, "ties": 0}
        self.pairs, self.decisive = int(summary["pairs"]), int(summary["decisive"])
        if self.store is None:
            text, style = "No taste profile in this window.", STYLE_DIM
        elif self.decisive < MIN_PAIRS:
            need = MIN_PAIRS - self.decisive
            text = (f"{self.pairs} pick{'s' if self.pairs != 1 else ''} collected ({self.decisive} decisive). "
                    f"Tuning needs {need} more decisive pick{'s' if need != 1 else ''}: Accept one of several "
                    f"candidates or Compare A/B in the Generate panel.")
            style = STYLE_DIM
        else:
            text = (f"{self.pairs} pick{'s' if self.pairs != 1 else ''} collected ({self.decisive} decisive, "
                    f"{self.pairs - self.decisive} tie{'s' if self.pairs - self.decisive != 1 else ''}): the "
                    f"model can be tuned toward them.")
            style = STYLE_OK
        self.label.setText(text)
        self.label.setStyleSheet(style)
        self.sync()

    def set_blocked(self, reason: str | None) -> None:
        """Why the panel cannot start a job now (one is running, the host is connecting), or None."""
        self._blocked_reason = reason
        self.sync()

    def sync(self) -> None:
        if self.decisive < MIN_PAIRS:
            tip = (f"Needs at least {MIN_PAIRS} decisive picks (you have {self.decisive}); ties do not count.")
            enabled = False
        elif self._blocked_reason:
            tip, enabled = self._blocked_reason, False
        else:
            tip = (f"Send your {self.pairs} picks to the host and fine-tune the model toward them "
                   f"({self.method_combo.currentText()})")
            enabled = True
        self.btn_tune.setEnabled(enabled)
        self.btn_tune.setToolTip(tip)

