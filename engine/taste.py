"""A musician's taste: a Bradley–Terry reward model fit on their own preference pairs (numpy only).

    from engine.taste import fit_taste, TasteModel
    model, report = fit_taste(pairs)            # pairs from engine.preferences.read_pairs
    model.save("taste/"); TasteModel.load("taste/").score(continuation_clip, prompt_clip)

Score. s(x) = w · z(x), where x describes a continuation given its prompt and z standardizes it
with the training items' mean and spread (a value that cannot be computed, e.g. a prompt-relative
feature without a prompt, is imputed to the mean, i.e. it contributes nothing). Bradley–Terry:
P(a ≻ b) = σ(s(a) − s(b)); a tie is a half-and-half target. w is the MAP under a Laplace prior
λ·Σ|w_i| (strength λ chosen by inner cross-validation; majorize–minimize over Newton steps): with tens
of pairs most of the features must get no weight at all, and a Laplace prior says so exactly where a
Gaussian one spreads small weights over every feature (simulated listeners, 40 pairs: expected
agreement on 300 unseen pairs 0.74–0.75 → 0.77–0.81, see BENCHMARKS.md). A Laplace approximation
at the MAP gives the weights' covariance, hence a posterior std for every score.

Representation. `MIDI_FEATURES` are the SMART paper's eight features (`engine.features`), plus
what they leave out and a listener hears at once — register, note lengths, density, chord size,
dynamics, the top line's leaps and direction (does the melody rise or fall) — and how far the
continuation moves from its prompt. Pooled hidden states of the
policy are a second representation, computed on the host/training side (`training.taste`); a
`TasteModel` only sees vectors and records which representation made them.

Honesty. `fit_taste` reports the pairs it saw, cross-validated agreement with a Wilson 95 %
interval, and `ready` = enough decisive pairs (`MIN_PAIRS`) to claim anything; `TasteModel.score`
refuses to score with a model that is not ready.

Files (never pickle): `taste.json` (metadata, report) + `taste.safetensors` (mean, scale, w, cov).
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from engine.errors import UserError
from engine.features import midi_features
from engine.music import Clip, atomic_write_text

TASTE_JSON = "taste.json"
TASTE_ARRAYS = "taste.safetensors"
KIND = "smart-taste"
FORMAT_VERSION = 1
# Fewer decisive pairs than this and a taste is not claimed (scores are refused, accuracy not shown).
MIN_PAIRS = 10
# Strengths λ of the prior on the standardized weights, chosen among by inner cross-validation:
# Laplace (λ·Σ|w|, the default) and Gaussian (λ·Σw²/2, for hundreds of hidden-state features, where
# the Laplace fit's repeated Newton solves would take minutes).
PRIORS = ("laplace", "gaussian")
LAMBDAS = {"laplace": (0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0), "gaussian": (0.3, 1.0, 3.0, 10.0, 30.0, 100.0)}
CV_FOLDS = 10

# The paper's eight features (§4.2), flattened.
PAPER_FEATURES: tuple[str, ...] = (
    ("n_notes", "polyphony_rate", "empty_beat_rate", "pitch_range", "scale_consistency", "velocity_range")
    + tuple(f"pitch_class_{i}" for i in range(12)) + tuple(f"velocity_bin_{i}" for i in range(20))
)
# What a listener hears at once that the paper's features do not say.
NOTE_FEATURES: tuple[str, ...] = (
    "silent", "log_notes_per_beat", "log_onsets_per_beat", "notes_per_onset", "mean_pitch", "pitch_std",
    "lowest_pitch", "highest_pitch", "mean_log_duration", "log_duration_std", "mean_velocity", "velocity_std",
    "mean_leap", "on_beat_fraction", "top_line_slope", "top_line_rising_fraction",
)
# How the continuation relates to its prompt (NaN without a prompt: imputed, so it counts for nothing).
PROMPT_FEATURES: tuple[str, ...] = (
    "prompt_pitch_shift", "prompt_density_change", "prompt_duration_change", "prompt_velocity_change",
    "prompt_pitch_class_similarity",
)
# "midi" (the default) keeps the paper's six scalar features and leaves out its 32 histogram bins:
# with tens of pairs they cost more in variance than they add (measured, see BENCHMARKS.md).
REPRESENTATIONS = {
    "paper": PAPER_FEATURES,
    "midi": PAPER_FEATURES[:6] + NOTE_FEATURES + PROMPT_FEATURES,
}


# ---------------------------------------------------------------------------- continuation features
def continuation_span(continuation: Clip, prompt: Clip | None) -> tuple[Clip, float]:
    """The continuation moved to start at its first bar line and its length in quarter-note beats:
    the whole bars from the one its prompt ends in (or its first note's, without a prompt) to the
    one its last note starts in."""
    notes = continuation.notes
    if prompt is not None and prompt.notes:
        origin = continuation.bar_tick(continuation.bar_index_at(prompt.end_tick))
    elif notes:
        origin = continuation.bar_tick(continuation.bar_index_at(notes[0].start))
    else:
        origin = 0
    origin = min([origin] + [n.start for n in notes])
    last_bar = continuation.bar_index_at(max([origin] + [n.start for n in notes]))
    span_end = continuation.bar_tick(last_bar + 1)
    clip = continuation.slice_ticks(origin, max(continuation.end_tick, span_end) + 1) if origin > 0 else continuation
    return clip, max((span_end - origin) / continuation.ppq, 1.0)


def top_voice(clip: Clip) -> tuple[np.ndarray, np.ndarray]:
    """(onset ticks, highest pitch sounding from each onset): the line a listener follows as the melody."""
    starts = np.array([n.start for n in clip.notes], dtype=np.int64)
    pitch = np.array([n.pitch for n in clip.notes], dtype=float)
    if not len(starts):
        return starts, pitch
    order = np.argsort(starts, kind="stable")
    onsets, first = np.unique(starts[order], return_index=True)
    return onsets, np.maximum.reduceat(pitch[order], first)


def _note_stats(clip: Clip, beats: float) -> dict[str, float]:
    notes = clip.notes
    nan = float("nan")
    if not notes:
        return {"silent": 1.0, "log_notes_per_beat": math.log2(1.0 / (4 * beats)), "log_onsets_per_beat": nan,
                "notes_per_onset": nan, "mean_pitch": nan, "pitch_std": nan, "lowest_pitch": nan,
                "highest_pitch": nan, "mean_log_duration": nan, "log_duration_std": nan, "mean_velocity": nan,
                "velocity_std": nan, "mean_leap": nan, "on_beat_fraction": nan, "top_line_slope": nan,
                "top_line_rising_fraction": nan}
    ppq = clip.ppq
    pitch = np.array([n.pitch for n in notes], dtype=float)
    logdur = np.log2(np.maximum(np.array([n.duration for n in notes], dtype=float), 1.0) / ppq)
    vel = np.array([n.velocity for n in notes], dtype=float)
    # The top voice: the highest pitch at each onset; its leaps say how jumpy the line is.
    onsets, top = top_voice(clip)
    steps = np.diff(top)
    leaps = np.abs(steps)
    # Its direction: the least-squares slope over time (semitones per beat) and the share of its moves
    # that go up; undefined (NaN, imputed) with fewer than two onsets / no move.
    beat = onsets / ppq
    slope = float(np.polyfit(beat, top, 1)[0]) if len(onsets) > 1 else nan
    moves = steps[steps != 0]
    rising = float(np.mean(moves > 0)) if len(moves) else nan
    return {
        "silent": 0.0,
        "log_notes_per_beat": math.log2(len(notes) / beats),
        "log_onsets_per_beat": math.log2(len(onsets) / beats),
        "notes_per_onset": len(notes) / len(onsets),
        "mean_pitch": float(pitch.mean()),
        "pitch_std": float(pitch.std()),
        "lowest_pitch": float(pitch.min()),
        "highest_pitch": float(pitch.max()),
        "mean_log_duration": float(logdur.mean()),
        "log_duration_std": float(logdur.std()),
        "mean_velocity": float(vel.mean()),
        "velocity_std": float(vel.std()),
        "mean_leap": float(leaps.mean()) if len(leaps) else 0.0,
        "on_beat_fraction": float(np.mean(onsets % ppq == 0)),
        "top_line_slope": slope,
        "top_line_rising_fraction": rising,
    }


def _pitch_classes(clip: Clip) -> np.ndarray:
    counts = np.bincount([n.pitch % 12 for n in clip.notes], minlength=12).astype(float)
    return counts


def feature_dict(continuation: Clip, prompt: Clip | None = None) -> dict[str, float]:
    """Every named feature of `continuation` given `prompt` (NaN where undefined)."""
    clip, beats = continuation_span(continuation, prompt)
    paper = midi_features(clip)
    out: dict[str, float] = {name: float(paper[name]) for name in PAPER_FEATURES[:6]}
    out.update({f"pitch_class_{i}": v for i, v in enumerate(paper["pitch_histogram"])})
    out.update({f"velocity_bin_{i}": v for i, v in enumerate(paper["velocity_histogram"])})
    stats = _note_stats(clip, beats)
    out.update(stats)
    nan = float("nan")
    rel = dict.fromkeys(PROMPT_FEATURES, nan)
    if prompt is not None and prompt.notes and clip.notes:
        # The prompt's last bars are what the continuation answers.
        tail = prompt.last_bars(4)
        p = _note_stats(tail, max(tail.num_bars * tail.time_signature.ticks_per_bar(tail.ppq) / tail.ppq, 1.0))
        rel["prompt_pitch_shift"] = abs(stats["mean_pitch"] - p["mean_pitch"])
        rel["prompt_density_change"] = abs(stats["log_notes_per_beat"] - p["log_notes_per_beat"])
        rel["prompt_duration_change"] = abs(stats["mean_log_duration"] - p["mean_log_duration"])
        rel["prompt_velocity_change"] = abs(stats["mean_velocity"] - p["mean_velocity"])
        a, b = _pitch_classes(clip), _pitch_classes(tail)
        rel["prompt_pitch_class_similarity"] = float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))
    out.update(rel)
    return out


def midi_vector(continuation: Clip, prompt: Clip | None = None, names: Sequence[str] = REPRESENTATIONS["midi"]) -> np.ndarray:
    d = feature_dict(continuation, prompt)
    return np.array([d[n] for n in names], dtype=np.float64)


# ---------------------------------------------------------------------------- Bradley–Terry fit
@dataclass
class Comparisons:
    """Feature rows of the items and the judged pairs between them: row `a[k]` vs row `b[k]`, with
    target y[k] = 1 (a preferred), 0 (b preferred), 0.5 (tie)."""

    X: np.ndarray  # [items, features], NaN where undefined
    a: np.ndarray  # [pairs] int
    b: np.ndarray
    y: np.ndarray  # [pairs] float

    def __len__(self) -> int:
        return len(self.y)

    @property
    def decisive(self) -> np.ndarray:
        return self.y != 0.5

    def subset(self, idx: np.ndarray) -> "Comparisons":
        return Comparisons(self.X, self.a[idx], self.b[idx], self.y[idx])


def _standardizer(X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    with np.errstate(all="ignore"):
        mean = np.nanmean(X, axis=0) if len(X) else np.zeros(X.shape[1])
        scale = np.nanstd(X, axis=0) if len(X) else np.ones(X.shape[1])
    mean = np.where(np.isfinite(mean), mean, 0.0)
    scale = np.where(np.isfinite(scale) & (scale > 1e-9), scale, 1.0)
    return mean, scale


def standardize(X: np.ndarray, mean: np.ndarray, scale: np.ndarray) -> np.ndarray:
    Z = (np.asarray(X, dtype=np.float64) - mean) / scale
    return np.where(np.isfinite(Z), Z, 0.0)


def _bt_hessian(D: np.ndarray, w: np.ndarray) -> np.ndarray:
    p = 1.0 / (1.0 + np.exp(-np.clip(D @ w, -30, 30)))
    return (D * (p * (1 - p))[:, None]).T @ D


def _newton_bt(D: np.ndarray, y: np.ndarray, prior: float | np.ndarray, iters: int = 50,
               w0: np.ndarray | None = None) -> np.ndarray:
    """MAP weights of σ(D w) ≈ y under an N(0, 1/prior) prior (prior: one precision, or one per feature)."""
    d = D.shape[1]
    precision = np.broadcast_to(np.asarray(prior, dtype=np.float64), (d,))
    w = np.zeros(d) if w0 is None else w0.copy()
    for _ in range(iters):
        p = 1.0 / (1.0 + np.exp(-np.clip(D @ w, -30, 30)))
        grad = D.T @ (p - y) + precision * w
        step = np.linalg.solve(_bt_hessian(D, w) + np.diag(precision), grad)
        w -= step
        if np.max(np.abs(step)) < 1e-8:
            break
    return w


def _laplace_map(D: np.ndarray, y: np.ndarray, lam: float, iters: int = 40,
                 w0: np.ndarray | None = None) -> np.ndarray:
    """MAP weights under a Laplace prior, λ·Σ|w_i|: most features get exactly no weight.

    Majorize–minimize (Hunter & Li 2005): |w| ≤ w² / (2|w₀|) + |w₀| / 2 turns each step into a
    Gaussian-prior fit with precision λ / |w₀| on the features still in play. A weight that falls
    below `tiny` is set to zero and leaves (Fan & Li's deletion: MM only creeps towards zero); at the
    end the optimality condition |∂NLL/∂w_i| ≤ λ is checked for every zero weight, and any that
    violates it comes back, so the result is the Laplace-prior MAP, not an artefact of the path."""
    tiny = 1e-2  # log-odds per standard deviation of a feature: nothing a listener would hear
    d = D.shape[1]
    # From a Gaussian-prior fit (or a neighbouring λ's weights): no weight starts at the kink.
    w = _newton_bt(D, y, lam) if w0 is None else np.where(w0 == 0.0, tiny * 2, w0)
    for _ in range(5):  # rounds of re-admission (one is almost always enough)
        for _ in range(iters):
            live = np.abs(w) >= tiny
            w = np.where(live, w, 0.0)
            if not live.any():
                break
            Dl = D[:, live]
            w_live = _newton_bt(Dl, y, lam / np.abs(w[live]), w0=w[live])
            step = np.max(np.abs(w_live - w[live]))
            w[live] = w_live
            if step < 1e-4:
                break
        w = np.where(np.abs(w) >= tiny, w, 0.0)
        p = 1.0 / (1.0 + np.exp(-np.clip(D @ w, -30, 30)))
        grad = D.T @ (p - y)
        back = (w == 0.0) & (np.abs(grad) > lam * (1 + 1e-6))
        if not back.any():
            break
        w[back] = -np.sign(grad[back]) * tiny * 2
    return w if d else np.zeros(0)


def _map(D: np.ndarray, y: np.ndarray, lam: float, prior: str, w0: np.ndarray | None = None) -> np.ndarray:
    return _laplace_map(D, y, lam, w0=w0) if prior == "laplace" else _newton_bt(D, y, lam, w0=w0)


def _prior_precision(lam: float, prior: str) -> float:
    return lam * lam / 2.0 if prior == "laplace" else lam


def _posterior_covariance(D: np.ndarray, w: np.ndarray, lam: float, prior: str = "laplace") -> np.ndarray:
    """Laplace approximation: the inverse Hessian of the data term plus the prior's (for a Laplace
    prior, a Gaussian of its variance 2/λ²: a weight the prior set to zero keeps the prior's uncertainty)."""
    return np.linalg.inv(_bt_hessian(D, w) + _prior_precision(lam, prior) * np.eye(D.shape[1]))


def _fit_weights(comp: Comparisons, lam: float, mean: np.ndarray, scale: np.ndarray,
                 prior: str = "laplace") -> tuple[np.ndarray, np.ndarray]:
    """MAP weights and their posterior covariance."""
    Z = standardize(comp.X, mean, scale)
    D = Z[comp.a] - Z[comp.b]
    w = _map(D, comp.y, lam, prior)
    return w, _posterior_covariance(D, w, lam, prior)


def _folds(n: int, k: int, rng: np.random.Generator) -> list[np.ndarray]:
    order = rng.permutation(n)
    return [order[i::k] for i in range(min(k, n))]


def _cv_predictions(comp: Comparisons, lam: float | None, k: int, seed: int, prior: str = "laplace") -> np.ndarray:
    """Held-out P(a ≻ b) for every pair (k-fold; λ re-chosen inside each fold when None)."""
    rng = np.random.default_rng(seed)
    pred = np.full(len(comp), np.nan)
    for test in _folds(len(comp), k, rng):
        train = np.setdiff1d(np.arange(len(comp)), test)
        sub = comp.subset(train)
        used = np.unique(np.concatenate([sub.a, sub.b]))
        mean, scale = _standardizer(comp.X[used])
        lam_f = lam if lam is not None else _choose_lambda(sub, mean, scale, seed, prior)
        w, _ = _fit_weights(sub, lam_f, mean, scale, prior)
        Z = standardize(comp.X, mean, scale)
        pred[test] = 1.0 / (1.0 + np.exp(-(Z[comp.a[test]] - Z[comp.b[test]]) @ w))
    return pred


def _choose_lambda(comp: Comparisons, mean: np.ndarray, scale: np.ndarray, seed: int, prior: str = "laplace") -> float:
    """λ with the best inner-CV log-likelihood (ties count too)."""
    if len(comp) < 6:
        return max(LAMBDAS[prior])
    best, best_ll = max(LAMBDAS[prior]), -math.inf
    Z = standardize(comp.X, mean, scale)
    folds = _folds(len(comp), 5, np.random.default_rng(seed + 1))
    ll = dict.fromkeys(LAMBDAS[prior], 0.0)
    for test in folds:
        train = np.setdiff1d(np.arange(len(comp)), test)
        D = Z[comp.a[train]] - Z[comp.b[train]]
        w = None
        for lam in sorted(LAMBDAS[prior], reverse=True):  # strongest first, each fit starting from the last
            w = _map(D, comp.y[train], lam, prior, w0=w)
            p = np.clip(1.0 / (1.0 + np.exp(-(Z[comp.a[test]] - Z[comp.b[test]]) @ w)), 1e-6, 1 - 1e-6)
            y = comp.y[test]
            ll[lam] += float(np.sum(y * np.log(p) + (1 - y) * np.log(1 - p)))
    for lam in LAMBDAS[prior]:
        if ll[lam] > best_ll:
            best, best_ll = lam, ll[lam]
    return best


def wilson_interval(successes: float, n: int, z: float = 1.96) -> tuple[float, float]:
    """95 % Wilson score interval of a proportion (0, 1 when n = 0)."""
    if n <= 0:
        return 0.0, 1.0
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


@dataclass
class TasteModel:
    """A fitted taste: standardization, weights and their Laplace covariance, and its report."""

    representation: str
    feature_names: list[str]
    mean: np.ndarray
    scale: np.ndarray
    weights: np.ndarray
    covariance: np.ndarray
    report: dict = field(default_factory=dict)
    extra: dict = field(default_factory=dict)  # e.g. the policy a hidden-state representation needs

    @property
    def ready(self) -> bool:
        return bool(self.report.get("ready"))

    def check_ready(self) -> None:
        if not self.ready:
            raise UserError(f"this taste has seen {self.report.get('decisive', 0)} decisive pairs; it needs at "
                            f"least {self.report.get('min_pairs', MIN_PAIRS)} before its scores mean anything")

    def score_vectors(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Scores (log-odds units: +1 = e:1 odds of being preferred over a 0) and their posterior std."""
        Z = standardize(np.atleast_2d(X), self.mean, self.scale)
        mean = Z @ self.weights
        std = np.sqrt(np.maximum(np.einsum("ij,jk,ik->i", Z, self.covariance, Z), 0.0))
        return mean, std

    def score(self, continuation: Clip, prompt: Clip | None = None) -> tuple[float, float]:
        """Taste score (and its std) of one continuation given its prompt (MIDI representations only)."""
        self.check_ready()
        if self.representation not in REPRESENTATIONS:
            raise UserError(f"a {self.representation!r} taste scores with the policy: use `smart taste score`")
        s, sd = self.score_vectors(midi_vector(continuation, prompt, self.feature_names)[None])
        return float(s[0]), float(sd[0])

    def preference(self, xa: np.ndarray, xb: np.ndarray) -> float:
        """P(a ≻ b) under the model."""
        s, _ = self.score_vectors(np.stack([xa, xb]))
        return float(1.0 / (1.0 + math.exp(-(s[0] - s[1]))))

    def top_features(self, k: int = 5) -> list[dict]:
        """The k features that weigh most (per standard deviation), for a musician to read."""
        order = np.argsort(-np.abs(self.weights))[:k]
        sd = np.sqrt(np.maximum(np.diag(self.covariance), 0))
        return [{"feature": self.feature_names[i], "weight": round(float(self.weights[i]), 4),
                 "std": round(float(sd[i]), 4)} for i in order]

    # -- files
    def save(self, directory: str | os.PathLike) -> Path:
        from safetensors.numpy import save_file

        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        save_file({"mean": self.mean, "scale": self.scale, "weights": self.weights, "covariance": self.covariance},
                  str(directory / TASTE_ARRAYS))
        meta = {"kind": KIND, "format": FORMAT_VERSION, "representation": self.representation,
                "feature_names": list(self.feature_names), "report": self.report, "extra": self.extra,
                "top_features": self.top_features()}
        atomic_write_text(directory / TASTE_JSON, json.dumps(meta, indent=2))
        return directory

    @classmethod
    def load(cls, directory: str | os.PathLike) -> "TasteModel":
        from safetensors.numpy import load_file

        directory = Path(directory)
        try:
            meta = json.loads((directory / TASTE_JSON).read_text())
            arrays = load_file(str(directory / TASTE_ARRAYS))
        except (OSError, json.JSONDecodeError, ValueError) as exc:
            raise UserError(f"{directory} is not a taste directory ({exc})") from None
        if meta.get("kind") != KIND:
            raise UserError(f"{directory / TASTE_JSON} is not a SMART taste")
        return cls(meta["representation"], list(meta["feature_names"]), arrays["mean"], arrays["scale"],
                   arrays["weights"], arrays["covariance"], meta.get("report", {}), meta.get("extra", {}))


def fit_comparisons(comp: Comparisons, feature_names: Sequence[str], representation: str, *,
                    min_pairs: int = MIN_PAIRS, folds: int = CV_FOLDS, seed: int = 0,
                    prior: str = "laplace") -> TasteModel:
    """Fit on every pair and cross-validate; the report says how far to trust it."""
    n_dec = int(comp.decisive.sum())
    report: dict = {"pairs": len(comp), "decisive": n_dec, "ties": len(comp) - n_dec, "min_pairs": min_pairs,
                    "representation": representation, "features": len(feature_names)}
    used = np.unique(np.concatenate([comp.a, comp.b])) if len(comp) else np.arange(0)
    mean, scale = _standardizer(comp.X[used]) if len(used) else (np.zeros(len(feature_names)),
                                                                  np.ones(len(feature_names)))
    if prior not in PRIORS:
        raise UserError(f"unknown prior {prior!r} (choose from {', '.join(PRIORS)})")
    lam = _choose_lambda(comp, mean, scale, seed, prior) if len(comp) else max(LAMBDAS[prior])
    if len(comp):
        w, cov = _fit_weights(comp, lam, mean, scale, prior)
    else:
        w, cov = np.zeros(len(feature_names)), np.eye(len(feature_names)) / _prior_precision(lam, prior)
    report["prior"] = prior
    report["lambda"] = lam
    report["active_features"] = int(np.count_nonzero(w))
    report["ready"] = n_dec >= min_pairs
    if n_dec >= 2 and len(comp) >= 3:
        pred = _cv_predictions(comp, None, folds, seed, prior)
        dec = comp.decisive
        correct = ((pred[dec] > 0.5) == (comp.y[dec] == 1.0)).astype(float)
        correct[pred[dec] == 0.5] = 0.5
        lo, hi = wilson_interval(float(correct.sum()), int(dec.sum()))
        y, p = comp.y, np.clip(pred, 1e-6, 1 - 1e-6)
        report["cv"] = {"folds": min(folds, len(comp)), "accuracy": round(float(correct.mean()), 4),
                        "accuracy_interval": [round(lo, 4), round(hi, 4)],
                        "log_loss": round(float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p))), 4)}
        # Only a ready taste states its accuracy as a claim; a small one shows its counts and interval.
        report["accuracy"] = report["cv"]["accuracy"] if report["ready"] else None
        report["confident"] = bool(report["ready"] and lo > 0.5)
    else:
        report["cv"] = None
        report["accuracy"] = None
        report["confident"] = False
    return TasteModel(representation, list(feature_names), mean, scale, w, cov, report)


# ---------------------------------------------------------------------------- pairs → comparisons
def comparisons_from_pairs(pairs: Sequence, vectorize: Callable[[Path, Path | None], np.ndarray]) -> tuple[Comparisons, list[str]]:
    """Feature rows for the continuations of `pairs` (engine.preferences.Pair) and their judgements.
    `vectorize(continuation_path, prompt_path)` gives one row; files that do not load are skipped
    with their pair (listed in the returned problems)."""
    rows: list[np.ndarray] = []
    a_idx, b_idx, ys, problems = [], [], [], []
    for pair in pairs:
        try:
            xa, xb = vectorize(pair.a, pair.prompt), vectorize(pair.b, pair.prompt)
        except (UserError, ValueError, OSError) as exc:
            problems.append(f"pair {pair.id}: {exc}")
            continue
        a_idx.append(len(rows))
        rows.append(xa)
        b_idx.append(len(rows))
        rows.append(xb)
        ys.append({"A": 1.0, "B": 0.0, "tie": 0.5}[pair.choice])
    X = np.stack(rows) if rows else np.zeros((0, 0))
    return Comparisons(X, np.array(a_idx, dtype=int), np.array(b_idx, dtype=int), np.array(ys, dtype=float)), problems


def load_midi(path: str | os.PathLike) -> Clip:
    from engine.music import MidiFileError

    try:
        clip, _ = Clip.from_midi(path, mode="user")
    except MidiFileError as exc:
        raise UserError(f"{path}: {exc}") from None
    return clip


def midi_vectorizer(names: Sequence[str] = REPRESENTATIONS["midi"]) -> Callable[[Path, Path | None], np.ndarray]:
    """vectorize(continuation_path, prompt_path) for the MIDI representations (prompts read once)."""
    prompts: dict[Path, Clip] = {}

    def vectorize(path: Path, prompt_path: Path | None) -> np.ndarray:
        prompt = None
        if prompt_path is not None:
            if prompt_path not in prompts:
                prompts[prompt_path] = load_midi(prompt_path)
            prompt = prompts[prompt_path]
        return midi_vector(load_midi(path), prompt, names)

    return vectorize


def fit_taste(pairs: Sequence, representation: str = "midi", **kwargs) -> tuple[TasteModel, list[str]]:
    """Fit a MIDI-feature taste on preference pairs; returns the model and any skipped pairs."""
    if representation not in REPRESENTATIONS:
        raise UserError(f"unknown representation {representation!r} here (choose from {', '.join(REPRESENTATIONS)})")
    names = REPRESENTATIONS[representation]
    comp, problems = comparisons_from_pairs(pairs, midi_vectorizer(names))
    if len(comp) == 0:
        comp = Comparisons(np.zeros((0, len(names))), comp.a, comp.b, comp.y)
    model = fit_comparisons(comp, names, representation, **kwargs)
    model.report["skipped"] = problems
    return model, problems
