"""A personal preference data set (no Qt): blind A/B choices between the base and a tuned model.

Folder layout (next to the project: `SONG.smart` → `SONG.preferences/`):

    preferences.jsonl     one JSON object per choice (see `PreferenceSet.record`)
    tally.json            counts per compared model pair
    pairs/NNNNNN-a.mid    the two continuations the musician heard, and the prompt
    pairs/NNNNNN-b.mid
    pairs/NNNNNN-prompt.mid

Each line says which file came from which model, which one was picked, the job and the checkpoint,
so the set can later train a reward model or a DPO step on the musician's own taste.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from engine.music import atomic_write_bytes, atomic_write_text

FILE = "preferences.jsonl"
TALLY = "tally.json"


def preference_dir(project_path: str | os.PathLike | None, fallback: str | os.PathLike) -> Path:
    """`SONG.preferences` next to a saved project; `fallback` for an unsaved one."""
    if project_path:
        p = Path(project_path)
        return p.with_name(p.stem + ".preferences")
    return Path(fallback)


class PreferenceSet:
    def __init__(self, directory: str | os.PathLike):
        self.dir = Path(directory)

    @property
    def path(self) -> Path:
        return self.dir / FILE

    def records(self) -> list[dict]:
        try:
            lines = self.path.read_text().splitlines()
        except OSError:
            return []
        out = []
        for line in lines:
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                continue  # a torn last line
        return out

    def record(self, *, a_midi: bytes, b_midi: bytes, prompt_midi: bytes | None, a_model: dict, b_model: dict,
               choice: str, extra: dict | None = None) -> dict:
        """Save one blind choice: `choice` is "A", "B" or "tie"; a_model/b_model say what A and B were
        ({"role": "base"|"tuned", "path": ...})."""
        if choice not in ("A", "B", "tie"):
            raise ValueError(f"choice must be A, B or tie, not {choice!r}")
        self.dir.mkdir(parents=True, exist_ok=True)
        pairs = self.dir / "pairs"
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
               "a": {**a_model, "midi": f"pairs/{stem}-a.mid"}, "b": {**b_model, "midi": f"pairs/{stem}-b.mid"},
               "prompt": f"pairs/{stem}-prompt.mid" if prompt_midi is not None else None, **(extra or {})}
        with open(self.path, "a") as f:
            f.write(json.dumps(rec) + "\n")
            f.flush()
            os.fsync(f.fileno())
        atomic_write_text(self.dir / TALLY, json.dumps(self.tally(), indent=2))
        return rec

    def tally(self) -> dict:
        """Counts per (base, tuned) pair: {"base_path → tuned_path": {"tuned": n, "base": n, "tie": n}}."""
        out: dict[str, dict] = {}
        for rec in self.records():
            models = {rec["a"].get("role"): rec["a"].get("path"), rec["b"].get("role"): rec["b"].get("path")}
            key = f"{models.get('base')} → {models.get('tuned')}"
            counts = out.setdefault(key, {"tuned": 0, "base": 0, "tie": 0})
            counts[rec.get("preferred") or "tie"] += 1
        return out
