"""The GRPO run's guards: a diversity collapse (paper §5.2) and drift of the samples' music from the base
model's (`training.rewards.DriftMonitor` measures it). Each sees one number per step and says when it fires;
`training.grpo` decides what firing does (rollback, stop, or a warning in the events)."""

from __future__ import annotations

import math

import numpy as np


class DiversityGuard:
    """Paper §5.2's failure mode: rewards keep rising while the outputs collapse to few patterns.

    The baseline is the mean diversity of the first `window` steps; afterwards the guard fires when
    the mean of the last `window` steps falls below `fraction × baseline`. It also tracks the best
    state above the floor (highest step reward) so a run can roll back to it.
    """

    def __init__(self, fraction: float, window: int = 3, baseline: float | None = None):
        self.fraction = fraction
        self.window = window
        self.baseline = baseline
        self.history: list[float] = []
        self.fired_at: int | None = None

    @property
    def floor(self) -> float | None:
        return None if self.baseline is None else self.fraction * self.baseline

    def observe(self, step: int, value: float | None) -> dict | None:
        """Feed one step's diversity; returns the guard event when it fires (once)."""
        if value is None or not math.isfinite(value) or self.fired_at is not None:
            return None
        self.history.append(float(value))
        if self.baseline is None:
            if len(self.history) >= self.window:
                self.baseline = float(np.mean(self.history[: self.window]))
            return None
        recent = float(np.mean(self.history[-self.window:]))
        if recent < self.floor:
            self.fired_at = step
            return {"step": step, "diversity_recent": recent, "baseline": self.baseline, "floor": self.floor,
                    "fraction": self.fraction}
        return None

    def above_floor(self, value: float | None) -> bool:
        return value is not None and (self.floor is None or value >= self.floor)


class DriftGuard:
    """Warns (or stops) when the samples have moved from the base model's by more than `threshold`
    (`training.rewards.DriftMonitor`'s distance, mean of the last `window` steps) — a reward rising
    because its measure is being gamed shows here even when KL and diversity look calm (issue 23's
    `notes` run: KL 0.24, diversity 0.98 → 0.95, while bars per token and note lengths collapsed)."""

    def __init__(self, threshold: float, window: int = 3):
        self.threshold = threshold
        self.window = window
        self.history: list[float] = []
        self.fired_at: int | None = None

    def observe(self, step: int, distance: float | None) -> dict | None:
        if distance is None or not math.isfinite(distance) or self.fired_at is not None:
            return None
        self.history.append(float(distance))
        recent = float(np.mean(self.history[-self.window:]))
        if len(self.history) > self.window and recent > self.threshold:
            self.fired_at = step
            return {"step": step, "drift_recent": recent, "threshold": self.threshold}
        return None
