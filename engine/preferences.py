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

from engine.music import atomic_write_text

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
        """Every readable judgement, in order. A damaged line (a torn write, bytes that are not UTF-8,
        JSON nested too deeply, not an object) is skipped, never fatal: the file itself is left as it is,
        so nothing in it is lost (`damaged_lines` counts them)."""
        return self._read()[0]

    def damaged_lines(self) -> int:
        """How many non-empty lines of preferences.jsonl could not be read as a judgement."""
        return self._read()[1]

    def _read(self) -> tuple[list[dict], int]:
        try:
            raw = self.path.read_bytes()
        except OSError:
            return [], 0
        out, damaged = [], 0
        for line in raw.split(b"\n"):
            if not line.strip():
                continue
            try:
                rec = json.loads(line.decode("utf-8"))
            except (ValueError, RecursionError):  # not UTF-8, not JSON, nested too deeply
                damaged += 1
                continue
            if isinstance(rec, dict):
                out.append(rec)
            else:
                damaged += 1
        return out, damaged

    def record(self, *, a_midi: bytes, b_midi: bytes, prompt_midi: bytes | None, choice: str,
               a_model: dict | None = None, b_model: dict | None = None, source: str | None = None,
               extra: dict | None = None) -> dict:
        """Save one judgement: the two continuations' MIDI bytes, the prompt's (None for a procedural
        prompt), `choice` ("A", "B" or "tie"), what A and B were (`a_model`/`b_model`, e.g.
        {"role": "base"|"tuned", "path": ...}), where the judgement came from (`source`: "blind-ab",
        "accept", "ab", ...) and any `extra` fields. Returns the stored record."""
        return self.record_many([dict(a_midi=a_midi, b_midi=b_midi, prompt_midi=prompt_midi, choice=choice,
                                      a_model=a_model, b_model=b_model, source=source, extra=extra)])[0]

    def record_many(self, judgements: Iterable[dict]) -> list[dict]:
        """Save several judgements (each a dict of `record`'s keyword arguments) at once: the set is read
        once, their lines are appended in one write and synced once, the tally written once — so the
        cost grows with the number of pairs, not its square. Returns the stored records."""
        items = [dict(j) for j in judgements]
        for j in items:
            j["choice"] = normalize_choice(j["choice"])
        if not items:
            return []
        self.dir.mkdir(parents=True, exist_ok=True)
        pairs = self.dir / PAIRS
        existing = self.records()
        index = len(existing)
        recs = []
        for j in items:
            index += 1
            stem = f"{index:06d}"
            while (pairs / f"{stem}-a.mid").exists():
                index += 1
                stem = f"{index:06d}"
            a_model, b_model = dict(j.get("a_model") or {}), dict(j.get("b_model") or {})
            prompt_midi = j.get("prompt_midi")
            pairs.mkdir(exist_ok=True)
            _write_new(pairs / f"{stem}-a.mid", j["a_midi"])
            _write_new(pairs / f"{stem}-b.mid", j["b_midi"])
            if prompt_midi is not None:
                _write_new(pairs / f"{stem}-prompt.mid", prompt_midi)
            choice = j["choice"]
            preferred = None if choice == "tie" else (a_model if choice == "A" else b_model).get("role")
            source = j.get("source")
            recs.append({"id": stem, "time": time.strftime("%Y-%m-%dT%H:%M:%S"), "choice": choice,
                         "preferred": preferred,
                         "a": {**a_model, "midi": f"{PAIRS}/{stem}-a.mid"},
                         "b": {**b_model, "midi": f"{PAIRS}/{stem}-b.mid"},
                         "prompt": f"{PAIRS}/{stem}-prompt.mid" if prompt_midi is not None else None,
                         **({"source": source} if source else {}), **(j.get("extra") or {})})
        _sync_dir(pairs)  # the pair files are on disk before the lines that name them
        with open(self.path, "ab") as f:
            if f.tell() > 0 and not _ends_with_newline(self.path):
                f.write(b"\n")  # a torn last line stays a line of its own
            f.write("".join(json.dumps(rec) + "\n" for rec in recs).encode("utf-8"))
            f.flush()
            os.fsync(f.fileno())
        atomic_write_text(self.dir / TALLY, json.dumps(self._tally(existing + recs), indent=2))
        return recs

    def pairs(self) -> list[Pair]:
        """Every judged pair whose continuation files are present (a pair with a missing file is skipped)."""
        out = []
        for rec in self.records():
            try:
                choice = normalize_choice(rec.get("choice", ""))
                a, b = self.dir / rec["a"]["midi"], self.dir / rec["b"]["midi"]
                prompt = self.dir / rec["prompt"] if rec.get("prompt") else None
                if not (a.is_file() and b.is_file()):
                    continue
                if prompt is not None and not prompt.is_file():
                    prompt = None
            except (ValueError, KeyError, TypeError, OSError):  # a field of the wrong type, a NUL in a name
                continue
            out.append(Pair(str(rec.get("id", a.stem)), choice, a, b, prompt, rec))
        return out

    def tally(self) -> dict:
        """Counts per (base, tuned) pair: {"base_path → tuned_path": {"tuned": n, "base": n, "tie": n}}.
        Only judgements between a base and a tuned model count (blind A/B of a checkpoint)."""
        return self._tally(self.records())

    @staticmethod
    def _tally(records: list[dict]) -> dict:
        out: dict[str, dict] = {}
        for rec in records:
            a, b = rec.get("a"), rec.get("b")
            if not (isinstance(a, dict) and isinstance(b, dict)):
                continue
            roles = (a.get("role"), b.get("role"))
            if not all(isinstance(r, str) for r in roles) or set(roles) != {"base", "tuned"}:
                continue
            if rec.get("preferred") not in ("base", "tuned", None):
                continue
            models = {a.get("role"): a.get("path"), b.get("role"): b.get("path")}
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
            source = r.get("source") if isinstance(r.get("source"), str) and r.get("source") else "unknown"
            by_source[source] = by_source.get(source, 0) + 1
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


def _write_new(path: Path, data: bytes) -> None:
    """A new pair file (its name is not taken: `record_many` checks), written before the line that names
    it is appended; a stale file of an earlier crashed write (no line names it) is replaced. Not synced
    one by one (thousands of fsyncs cost minutes): `record_many` syncs the batch once."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_BINARY", 0), 0o666)
    with os.fdopen(fd, "wb") as f:
        f.write(data)


def _ends_with_newline(path: Path) -> bool:
    with open(path, "rb") as f:
        f.seek(-1, os.SEEK_END)
        return f.read(1) == b"\n"


def _sync_dir(directory: Path) -> None:
    """fsync a folder (its new entries are on disk); a no-op where folders cannot be opened."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def read_pairs(directories: Iterable[str | os.PathLike]) -> list[Pair]:
    """The pairs of several sets (e.g. the profile and a project), in order."""
    out: list[Pair] = []
    for d in directories:
        d = Path(d)
        if not (d / FILE).is_file():
            raise FileNotFoundError(f"no {FILE} in {d}")
        out.extend(PreferenceSet(d).pairs())
    return out
