"""A musician's preference pairs: the one store the studio writes and taste learning reads (no Qt, no torch).

Folder layout (one musician profile under the user's data dir, and optionally one per project,
`SONG.smart` → `SONG.preferences/`):

    preferences.jsonl     one JSON object per judgement (see `PreferenceSet.record`)
    tally.json            counts per compared model pair (blind A/B of a base and a tuned model)
    pairs/NNNNNN-a.mid    the two continuations the musician heard, and the prompt they continue
    pairs/NNNNNN-b.mid    (the continuations hold the new notes at their ticks after the prompt;
    pairs/NNNNNN-prompt.mid  a procedural prompt has no prompt file)

`choice` is "A", "B" or "tie"; ties are kept as ties (they carry information: "these two are
equally good to me"). Each line also says where A and B came from (`a`/`b`: {"role", "path", ...}),
the `source` of the judgement (blind A/B, accept, explicit A/B) and what the caller adds.
"""

from __future__ import annotations

import json
import os
import shutil
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

from engine.music import atomic_write_bytes, atomic_write_text

FILE = "preferences.jsonl"
TALLY = "tally.json"
PAIRS = "pairs"
CHOICES = ("A", "B", "tie")
PROFILE_ENV_VAR = "SMART_PREFERENCES_DIR"


def user_preference_dir() -> Path:
    """The musician's profile set, shared by every project: `$SMART_PREFERENCES_DIR`, else
    `$XDG_DATA_HOME/smart-studio/preferences` (~/.local/share/... by default)."""
    env = os.environ.get(PROFILE_ENV_VAR)
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_DATA_HOME") or (Path.home() / ".local" / "share")
    return Path(base) / "smart-studio" / "preferences"


def project_preference_dir(project_path: str | os.PathLike) -> Path:
    """`SONG.preferences` next to `SONG.smart`."""
    p = Path(project_path)
    return p.with_name(p.stem + ".preferences")


def preference_dir(project_path: str | os.PathLike | None, fallback: str | os.PathLike | None = None) -> Path:
    """The per-project set of a saved project; `fallback` (default: the user's profile) for an unsaved one."""
    if project_path:
        return project_preference_dir(project_path)
    return Path(fallback) if fallback is not None else user_preference_dir()


def normalize_choice(choice: str) -> str:
    """"A"/"a", "B"/"b" or "tie" → "A", "B", "tie"; anything else is a ValueError."""
    c = {"a": "A", "b": "B", "tie": "tie"}.get(str(choice).strip().lower())
    if c is None:
        raise ValueError(f"choice must be A, B or tie, not {choice!r}")
    return c


@dataclass(frozen=True)
class Pair:
    """One judged pair, with absolute paths to its MIDI files."""

    id: str
    choice: str  # "A", "B" or "tie"
    a: Path
    b: Path
    prompt: Path | None
    record: dict

    @property
    def chosen(self) -> Path | None:
        return None if self.choice == "tie" else (self.a if self.choice == "A" else self.b)

    @property
    def rejected(self) -> Path | None:
        return None if self.choice == "tie" else (self.b if self.choice == "A" else self.a)


class PreferenceSet:
    """The pairs in one folder: append, read, tally, export, reset."""

    def __init__(self, directory: str | os.PathLike):
        self.dir = Path(directory)

    @property
    def path(self) -> Path:
        return self.dir / FILE

    def __len__(self) -> int:
        return len(self.records())

    def records(self) -> list[dict]:
        try:
            lines = self.path.read_text().splitlines()
        except OSError:
            return []
        out = []
        for line in lines:
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                continue  # a torn last line
            if isinstance(rec, dict):
                out.append(rec)
        return out

    def record(self, *, a_midi: bytes, b_midi: bytes, prompt_midi: bytes | None, choice: str,
               a_model: dict | None = None, b_model: dict | None = None, source: str | None = None,
               extra: dict | None = None) -> dict:
        """Save one judgement: the two continuations' MIDI bytes, the prompt's (None for a procedural
        prompt), `choice` ("A", "B" or "tie"), what A and B were (`a_model`/`b_model`, e.g.
        {"role": "base"|"tuned", "path": ...}), where the judgement came from (`source`: "blind-ab",
        "accept", "ab", ...) and any `extra` fields. Returns the stored record."""
        choice = normalize_choice(choice)
        a_model, b_model = dict(a_model or {}), dict(b_model or {})
        self.dir.mkdir(parents=True, exist_ok=True)
        pairs = self.dir / PAIRS
        index = len(self.records()) + 1
        stem = f"{index:06d}"
        while (pairs / f"{stem}-a.mid").exists():
            index += 1
            stem = f"{index:06d}"
        atomic_write_bytes(pairs / f"{stem}-a.mid", a_midi)
        atomic_write_bytes(pairs / f"{stem}-b.mid", b_midi)
        if prompt_midi is not None:
            atomic_write_bytes(pairs / f"{stem}-prompt.mid", prompt_midi)
        preferred = None if choice == "tie" else (a_model if choice == "A" else b_model).get("role")
        rec = {"id": stem, "time": time.strftime("%Y-%m-%dT%H:%M:%S"), "choice": choice, "preferred": preferred,
               "a": {**a_model, "midi": f"{PAIRS}/{stem}-a.mid"}, "b": {**b_model, "midi": f"{PAIRS}/{stem}-b.mid"},
               "prompt": f"{PAIRS}/{stem}-prompt.mid" if prompt_midi is not None else None,
               **({"source": source} if source else {}), **(extra or {})}
        with open(self.path, "a") as f:
            f.write(json.dumps(rec) + "\n")
            f.flush()
            os.fsync(f.fileno())
        atomic_write_text(self.dir / TALLY, json.dumps(self.tally(), indent=2))
        return rec

    def pairs(self) -> list[Pair]:
        """Every judged pair whose continuation files are present (a pair with a missing file is skipped)."""
        out = []
        for rec in self.records():
            try:
                choice = normalize_choice(rec.get("choice", ""))
                a, b = self.dir / rec["a"]["midi"], self.dir / rec["b"]["midi"]
            except (ValueError, KeyError, TypeError):
                continue
            if not (a.is_file() and b.is_file()):
                continue
            prompt = self.dir / rec["prompt"] if rec.get("prompt") else None
            if prompt is not None and not prompt.is_file():
                prompt = None
            out.append(Pair(str(rec.get("id", a.stem)), choice, a, b, prompt, rec))
        return out

    def tally(self) -> dict:
        """Counts per (base, tuned) pair: {"base_path → tuned_path": {"tuned": n, "base": n, "tie": n}}.
        Only judgements between a base and a tuned model count (blind A/B of a checkpoint)."""
        out: dict[str, dict] = {}
        for rec in self.records():
            a, b = rec.get("a") or {}, rec.get("b") or {}
            models = {a.get("role"): a.get("path"), b.get("role"): b.get("path")}
            if set(models) != {"base", "tuned"}:
                continue
            key = f"{models.get('base')} → {models.get('tuned')}"
            counts = out.setdefault(key, {"tuned": 0, "base": 0, "tie": 0})
            counts[rec.get("preferred") or "tie"] += 1
        return out

    def summary(self) -> dict:
        """What the set holds, for inspection: counts by choice and by source."""
        recs = self.records()
        by_choice = {c: sum(1 for r in recs if r.get("choice") == c) for c in CHOICES}
        by_source: dict[str, int] = {}
        for r in recs:
            by_source[r.get("source") or "unknown"] = by_source.get(r.get("source") or "unknown", 0) + 1
        return {"dir": str(self.dir), "pairs": len(recs), "decisive": by_choice["A"] + by_choice["B"],
                "ties": by_choice["tie"], "by_source": by_source}

    def export(self, dest: str | os.PathLike) -> Path:
        """Write the whole set (preferences.jsonl, tally.json, pairs/) into a zip archive `dest`."""
        dest = Path(dest)
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_name(dest.name + ".tmp")
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as z:
            for name in (FILE, TALLY):
                if (self.dir / name).is_file():
                    z.write(self.dir / name, name)
            if (self.dir / PAIRS).is_dir():
                for f in sorted((self.dir / PAIRS).iterdir()):
                    if f.is_file():
                        z.write(f, f"{PAIRS}/{f.name}")
        os.replace(tmp, dest)
        return dest

    def reset(self) -> int:
        """Forget every judgement of this set (its files are deleted); returns how many there were."""
        n = len(self.records())
        for name in (FILE, TALLY):
            try:
                (self.dir / name).unlink()
            except FileNotFoundError:
                pass
        shutil.rmtree(self.dir / PAIRS, ignore_errors=True)
        return n


def read_pairs(directories: Iterable[str | os.PathLike]) -> list[Pair]:
    """The pairs of several sets (e.g. the profile and a project), in order."""
    out: list[Pair] = []
    for d in directories:
        d = Path(d)
        if not (d / FILE).is_file():
            raise FileNotFoundError(f"no {FILE} in {d}")
        out.extend(PreferenceSet(d).pairs())
    return out
