"""Generation options of the panel (no Qt): what a request asks the host for, key/scale locks, persistence."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields

from engine.api import HOST_LIMITS, GenerationSettings
from studio.generate.placement import DEFAULT_MODE, MODES
from studio.generate.search import reward_name

NOTE_NAMES = ("C", "C♯", "D", "E♭", "E", "F", "F♯", "G", "A♭", "A", "B♭", "B")
SCALES = {
    "major": (0, 2, 4, 5, 7, 9, 11),
    "minor": (0, 2, 3, 5, 7, 8, 10),  # natural minor
}
PANEL_MAX_BARS = 16  # the panel's limit (the host allows engine.api.MAX_BARS; longer ideas are better built bar by bar)


def pitch_name(pitch: int) -> str:
    """MIDI pitch as a name with octave (C4 = 60)."""
    return f"{NOTE_NAMES[pitch % 12]}{pitch // 12 - 1}"


def allowed_pitches(key_lock: bool, root: int, scale: str, low: int, high: int) -> list[int] | None:
    """Pitches the model may write: the range [low, high], in the key when locked; None = no restriction."""
    low, high = max(0, min(low, high)), min(127, max(low, high))
    steps = set(SCALES[scale]) if key_lock else set(range(12))
    pitches = [p for p in range(low, high + 1) if (p - root) % 12 in steps]
    if not key_lock and low == 0 and high == 127:
        return None
    return pitches


@dataclass
class GenerateOptions:
    candidates: int = 4
    temperature: float = 1.0
    top_p: float = 0.95
    bars: int = 2
    seed: int = 0  # 0 = a fresh random seed per request
    key_lock: bool = False
    key_root: int = 0
    key_scale: str = "major"
    low: int = 21  # piano range by default
    high: int = 108
    score: bool = True
    placement: str = DEFAULT_MODE  # what a continuation does to the music after it (placement.MODES)
    # reward-guided search
    search_beams: int = 3
    search_expansions: int = 2  # new bars tried per beam and step
    search_budget_s: float = 20.0
    search_reward: str = "CE"

    def validate(self) -> None:
        """ValueError for settings the host would refuse (engine.api's one validator) or the panel cannot use."""
        if self.key_scale not in SCALES:
            raise ValueError(f"unknown scale {self.key_scale!r}")
        if not self.pitches_or_all():
            raise ValueError("the key lock and pitch range leave no pitch to play")
        if self.placement not in MODES:
            raise ValueError(f"unknown placement {self.placement!r}")
        if not 1 <= self.bars <= PANEL_MAX_BARS:
            raise ValueError(f"length must be 1–{PANEL_MAX_BARS} bars")
        GenerationSettings(candidates=self.candidates, temperature=self.temperature, top_p=self.top_p,
                           seed=self.seed or None, bars=self.bars, allowed_pitches=self.allowed()).validate(HOST_LIMITS)

    def allowed(self) -> list[int] | None:
        return allowed_pitches(self.key_lock, self.key_root, self.key_scale, self.low, self.high)

    def pitches_or_all(self) -> list[int]:
        allowed = self.allowed()
        return list(range(128)) if allowed is None else allowed

    def describe(self) -> str:
        parts = [f"{self.candidates}×{self.bars} bar{'s' if self.bars != 1 else ''}",
                 f"T {self.temperature:g}", f"top-p {self.top_p:g}"]
        if self.key_lock:
            parts.append(f"{NOTE_NAMES[self.key_root]} {self.key_scale}")
        if (self.low, self.high) != (21, 108):
            parts.append(f"{pitch_name(self.low)}–{pitch_name(self.high)}")
        if self.seed:
            parts.append(f"seed {self.seed}")
        return ", ".join(parts)

    def to_dict(self) -> dict:
        return asdict(self)

    # ------------------------------------------------------------------ QSettings
    def save(self, settings, prefix: str = "generate/") -> None:
        for f in fields(self):
            settings.setValue(prefix + f.name, getattr(self, f.name))

    @classmethod
    def load(cls, settings, prefix: str = "generate/") -> "GenerateOptions":
        out = cls()
        for f in fields(cls):
            raw = settings.value(prefix + f.name)
            if raw is None:
                continue
            default = getattr(out, f.name)
            try:
                if isinstance(default, bool):
                    value = raw if isinstance(raw, bool) else str(raw).lower() in ("1", "true", "yes")
                else:
                    value = type(default)(raw)
            except (TypeError, ValueError):
                continue
            setattr(out, f.name, value)
        out.search_reward = reward_name(out.search_reward)
        try:
            out.validate()
        except ValueError:
            return cls()
        return out
