"""The musician's taste in the studio: their judgements saved as preference pairs, the taste model fit on
them, and its scores for candidates.

`TasteStore` (no widgets) owns where the pairs go — the musician's profile (`engine.preferences.
user_preference_dir`, one set across projects) and, when they tick "also keep with this project", the
project's own set — and the fitted model (`taste/` inside the profile). Files are written and the model
is fit on one worker thread, in the order asked, so a burst of pairs (Accept over 15 candidates) never
blocks the UI; `changed` says when something landed. The Generate panel's `TasteSection`
(`studio.generate.taste`) shows it; the main window owns the store and hands it to the panels.

Which judgements become pairs (see the Generate panel):
- Accept: the accepted candidate over each other candidate of the same request still shown, and over
  those of that request discarded before (they were heard for the same prompt and turned down);
- Discard alone records nothing: "not this one" says nothing about what would have been better;
- Compare A/B: the two candidates, A / B / tie (ties are kept);
- the Train panel's blind A/B (base vs tuned checkpoint).
"""

from __future__ import annotations

import shutil
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from PySide6.QtCore import QObject, Signal

from engine.music import Clip
from engine.preferences import PreferenceSet, project_preference_dir, user_preference_dir
from engine.taste import MIN_PAIRS, TASTE_JSON, TasteModel, fit_taste
from studio.theme import STYLE_DIM, STYLE_OK, STYLE_WARN

SOURCE_ACCEPT, SOURCE_AB, SOURCE_BLIND_AB = "accept", "ab", "blind-ab"
MODEL_DIR = "taste"  # inside the profile set: the model fit on it
KEEP_WITH_PROJECT_KEY = "taste/keepWithProject"


@dataclass
class Judgement:
    """One pair to save: two continuations (the new notes at their ticks in the sketch) and their prompt
    (the music before them; None for a procedural prompt). MIDI is written on the worker."""

    a: Clip | bytes
    b: Clip | bytes
    prompt: Clip | bytes | None
    choice: str  # "A", "B" or "tie"
    source: str
    a_model: dict | None = None
    b_model: dict | None = None
    extra: dict | None = None

    def write(self, prefs: PreferenceSet) -> dict:
        def midi(x):
            return x.to_midi_bytes() if isinstance(x, Clip) else x

        return prefs.record(a_midi=midi(self.a), b_midi=midi(self.b), prompt_midi=midi(self.prompt),
                            choice=self.choice, a_model=self.a_model, b_model=self.b_model, source=self.source,
                            extra=self.extra)


def prompt_clip(clip: Clip, at: int) -> Clip | None:
    """The prompt a continuation from `at` answers: the notes before it (None when there are none)."""
    notes = [n for n in clip.notes if n.start < at]
    return clip.with_notes(notes) if notes else None


class TasteStore(QObject):
    changed = Signal()  # pairs written, a model fitted or forgotten
    message = Signal(str, bool)  # text, is an error

    def __init__(self, settings, project_path=lambda: None, parent=None, profile_dir: Path | None = None) -> None:
        super().__init__(parent)
        self.settings = settings
        self.project_path = project_path  # () -> Path | None: the saved project, if any
        self.profile_dir = Path(profile_dir) if profile_dir is not None else user_preference_dir()
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="taste")
        self._pending: list[Future] = []
        self._lock = threading.Lock()
        self.model: TasteModel | None = None
        self.fitting = False
        self._load_model()

    # ------------------------------------------------------------------ where
    @property
    def profile(self) -> PreferenceSet:
        return PreferenceSet(self.profile_dir)

    @property
    def model_dir(self) -> Path:
        return self.profile_dir / MODEL_DIR

    @property
    def keep_with_project(self) -> bool:
        return str(self.settings.value(KEEP_WITH_PROJECT_KEY, "false")).lower() in ("true", "1")

    def set_keep_with_project(self, keep: bool) -> None:
        self.settings.setValue(KEEP_WITH_PROJECT_KEY, bool(keep))

    def sets(self) -> list[PreferenceSet]:
        """Where a new judgement goes: the profile, and the project's set when asked and saved."""
        out = [self.profile]
        path = self.project_path()
        if self.keep_with_project and path:
            out.append(PreferenceSet(project_preference_dir(path)))
        return out

    # ------------------------------------------------------------------ work on the worker thread
    def _submit(self, fn, done=None) -> Future:
        fut = self._pool.submit(fn)
        with self._lock:
            self._pending = [f for f in self._pending if not f.done()] + [fut]

        def report(f: Future) -> None:  # on the worker: signals reach the UI queued
            exc = f.exception()
            if exc is not None:
                self.message.emit(f"Taste: {exc}", True)
            elif done is not None:
                done(f.result())
            self.changed.emit()

        fut.add_done_callback(report)
        return fut

    def record(self, judgements: list[Judgement], skip: set[Path] = frozenset()) -> Future:
        """Save the judgements into every set of `sets()` (as they are now), off the UI thread.
        `skip`: folders that already hold them (the blind A/B writes its own)."""
        targets = [s for s in self.sets() if s.dir.resolve() not in {Path(p).resolve() for p in skip}]

        def write() -> int:
            for prefs in targets:
                for j in judgements:
                    j.write(prefs)
            return len(judgements)

        return self._submit(write)

    def fit(self) -> Future:
        """Fit the taste on the profile's pairs (seconds, on the worker) and keep it."""
        self.fitting = True
        pairs_dir, model_dir = self.profile_dir, self.model_dir

        def work() -> TasteModel:
            model, _problems = fit_taste(PreferenceSet(pairs_dir).pairs())
            model.save(model_dir)
            return model

        def done(model: TasteModel) -> None:
            self.model = model
            self.fitting = False

        fut = self._submit(work, done)
        fut.add_done_callback(lambda _f: setattr(self, "fitting", False))
        return fut

    def export(self, dest: str | Path) -> Future:
        prefs = self.profile
        return self._submit(lambda: prefs.export(dest))

    def reset(self) -> int:
        """Forget the profile's pairs and the model fit on them (a project's own set stays)."""
        self.wait()
        n = self.profile.reset()
        shutil.rmtree(self.model_dir, ignore_errors=True)
        self.model = None
        self.changed.emit()
        return n

    def wait(self, timeout: float | None = 60) -> bool:
        """Let everything asked so far land (tests, closing)."""
        with self._lock:
            pending = list(self._pending)
        for f in pending:
            try:
                f.result(timeout)
            except Exception:  # reported through `message`
                pass
        return all(f.done() for f in pending)

    def shutdown(self) -> None:
        self.wait()
        self._pool.shutdown(wait=True)

    # ------------------------------------------------------------------ the model
    def _load_model(self) -> None:
        if (self.model_dir / TASTE_JSON).is_file():
            try:
                self.model = TasteModel.load(self.model_dir)
            except Exception as exc:  # a broken taste folder: say so, score nothing
                self.model = None
                self.message.emit(f"Taste model not loaded: {exc}", True)

    @property
    def ready(self) -> bool:
        return self.model is not None and self.model.ready

    def score(self, continuation: Clip, prompt: Clip | None) -> tuple[float, float] | None:
        """(taste, std) of a continuation given its prompt; None while no ready model exists."""
        if not self.ready:
            return None
        return self.model.score(continuation, prompt)

    def summary(self) -> dict:
        return self.profile.summary()

    def describe(self) -> tuple[str, str]:
        """What the section says: (text, style)."""
        s = self.summary()
        head = (f"{s['pairs']} pick{'s' if s['pairs'] != 1 else ''} collected ({s['decisive']} decisive, "
                f"{s['ties']} tie{'s' if s['ties'] != 1 else ''})")
        if not self.ready:
            need = max(0, MIN_PAIRS - s["decisive"])
            if need:
                return (f"{head}. Your taste model needs {need} more decisive pick{'s' if need != 1 else ''} "
                        f"(Accept with several candidates shown, or Compare A/B) before it scores anything.",
                        STYLE_DIM)
            return f"{head}. Enough picks: press Fit to learn your taste.", STYLE_DIM
        r = self.model.report
        cv = r.get("cv") or {}
        lo, hi = cv.get("accuracy_interval", [0.0, 1.0])
        text = (f"{head}. Model fit on {r.get('pairs')} pairs: it agrees with {100 * cv.get('accuracy', 0):.0f} % "
                f"of your held-out picks (95 %: {100 * lo:.0f}–{100 * hi:.0f} %, {cv.get('folds', '?')}-fold).")
        fresh = s["pairs"] - int(r.get("pairs") or 0)
        if fresh > 0:
            text += f" {fresh} new pick{'s' if fresh != 1 else ''} since: Fit again to use them."
        if not r.get("confident"):
            text += " Not yet better than chance with confidence: treat its scores as a hint."
        return text, STYLE_OK if r.get("confident") else STYLE_WARN
