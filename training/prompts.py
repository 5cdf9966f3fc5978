"""Prompt sources for SMART fine-tuning and evaluation.

A prompt is a list of REMI token ids (it always starts with BOS). Three kinds:

* `procedural` — paper §3.5: BOS Bar TimeSig Position Tempo with a random time signature and
  tempo; `procedural+note` also writes a random first note (as the SMART code can).
* MIDI files or folders — a user's own clips; the last `bars` bars of each file (in the meter the
  model reads, `RemiTokenizer.model_meter`) become a continuation prompt
  (`RemiTokenizer.continuation_prompt`).
* `data:DIR` — a prepared dataset (`smart prepare-data`): a few bars cut at bar lines from its
  val split (or the split named as `data:DIR:split`), paper §5.3.

`PromptSource.sample(n, rng)` draws n prompts; `build_prompt_source(spec, tokenizer)` parses a
spec string (`procedural`, `procedural+note`, `data:DIR[:split]`, or paths joined by commas).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from engine.errors import UserError
from engine.music import Clip, MidiFileError
from engine.tokenizer import RemiTokenizer

MIDI_SUFFIXES = (".mid", ".midi", ".MID", ".MIDI")


class PromptSource:
    """Draws token-id prompts. Subclasses implement `sample`."""

    name = "prompts"

    def sample(self, n: int, rng: random.Random) -> list[list[int]]:
        raise NotImplementedError

    def describe(self) -> dict:
        return {"kind": self.name}


@dataclass
class ProceduralPrompts(PromptSource):
    """Paper §3.5: Bar + random time signature + random tempo (optionally a first note)."""

    tokenizer: RemiTokenizer
    first_note: bool = False
    name: str = "procedural"

    def sample(self, n: int, rng: random.Random) -> list[list[int]]:
        return [self.tokenizer.procedural_prompt(rng, first_note=self.first_note) for _ in range(n)]

    def describe(self) -> dict:
        return {"kind": self.name, "first_note": self.first_note}


@dataclass
class MidiPrompts(PromptSource):
    """Continuation prompts from the last `bars` bars of MIDI files (sampled with replacement)."""

    tokenizer: RemiTokenizer
    paths: list[Path]
    bars: int = 4
    max_prompt_tokens: int = 512
    name: str = "midi"
    prompts: list[list[int]] = field(default_factory=list, init=False)
    skipped: list[str] = field(default_factory=list, init=False)
    meter_notes: list[str] = field(default_factory=list, init=False)  # files read in another meter

    def __post_init__(self) -> None:
        files = expand_midi_paths(self.paths)
        if not files:
            raise UserError(f"no MIDI files in {', '.join(str(p) for p in self.paths)}")
        for f in files:
            try:
                clip, _ = Clip.from_midi(f, mode="user")
            except MidiFileError as exc:
                self.skipped.append(f"{f.name}: {exc}")
                continue
            if not clip.notes:
                self.skipped.append(f"{f.name}: no notes")
                continue
            # The last bars as the model counts them (a 1/4 file: bars of 4 beats, not 4 beats).
            clip, meter_note = self.tokenizer.model_meter(clip)
            if meter_note:
                self.meter_notes.append(f"{f.name}: {meter_note}")
            ids = self.tokenizer.continuation_prompt(clip.last_bars(self.bars))
            if len(ids) > self.max_prompt_tokens:
                # Dense bars: keep BOS + the tail, starting at a bar line so the decoder state is sane.
                tail = ids[-(self.max_prompt_tokens - 1):]
                bar_starts = [i for i, t in enumerate(tail) if t == self.tokenizer.bar_id]
                ids = [self.tokenizer.bos_id] + (tail[bar_starts[0]:] if bar_starts else tail)
            self.prompts.append(ids)
        if not self.prompts:
            raise UserError("none of the MIDI files could be used as a prompt: " + "; ".join(self.skipped[:3]))

    def sample(self, n: int, rng: random.Random) -> list[list[int]]:
        return [list(rng.choice(self.prompts)) for _ in range(n)]

    def describe(self) -> dict:
        return {"kind": self.name, "files": len(self.prompts), "bars": self.bars, "skipped": len(self.skipped),
                "meter_notes": self.meter_notes[:20]}


@dataclass
class DataPrompts(PromptSource):
    """Prompts cut from a prepared dataset split (`smart prepare-data`, read with `training.data.TokenSplit`):
    `bars` whole bars starting at a random bar line of a random piece (paper §5.3 prompts).

    A crop that does not start at the piece's first bar gets the tempo in force inserted after its
    first Position token (every Bar is followed by its TimeSig in this vocabulary), so the prompt
    carries the piece's meter and tempo like a procedural prompt does.
    """

    tokenizer: RemiTokenizer
    directory: Path
    split: str = "val"
    bars: int = 2
    max_prompt_tokens: int = 256
    name: str = "data"

    def __post_init__(self) -> None:
        from training.data import TokenSplit

        self.directory = Path(self.directory)
        split = TokenSplit(self.directory, self.split)
        if len(split) == 0 and self.split == "val":
            split = TokenSplit(self.directory, "train")  # tiny datasets may have no val pieces
        if len(split) == 0 or split.num_tokens == 0:
            raise UserError(f"{self.directory} has no token sequences in its {self.split} split")
        self.data = split
        self.split = split.split

    def sample(self, n: int, rng: random.Random) -> list[list[int]]:
        tok = self.tokenizer
        out: list[list[int]] = []
        for _ in range(n):
            for _attempt in range(20):
                piece = np.asarray(self.data[rng.randrange(len(self.data))][:16384], dtype=np.int64)
                bars = np.flatnonzero(piece == tok.bar_id)
                if len(bars) == 0:
                    continue
                first = rng.randrange(len(bars))
                last = first + self.bars
                stop = bars[last] if last < len(bars) else len(piece)
                ids = [int(t) for t in piece[bars[first]:stop] if t not in (tok.bos_id, tok.eos_id, tok.pad_id)]
                if first > 0:
                    ids = _with_tempo(ids, piece[: bars[first]], tok)
                out.append([tok.bos_id] + ids[: self.max_prompt_tokens - 1])
                break
            else:
                out.append(tok.procedural_prompt(rng))  # a split without Bar tokens: fall back
        return out

    def describe(self) -> dict:
        return {"kind": self.name, "directory": str(self.directory), "split": self.split,
                "sequences": len(self.data), "bars": self.bars}


def _with_tempo(ids: list[int], before: np.ndarray, tok: RemiTokenizer) -> list[int]:
    """Insert the tempo in force before a mid-piece crop after its first Position token."""
    tempo_ids = set(int(i) for i in tok.kind_ids.get("Tempo", []))
    previous = [int(t) for t in before if int(t) in tempo_ids]
    if not previous or any(t in tempo_ids for t in ids[:6]):
        return ids
    for i, t in enumerate(ids[:4]):
        if tok.token_kind(t) == "Position":
            return ids[: i + 1] + [previous[-1]] + ids[i + 1:]
    return ids


def expand_midi_paths(paths: Sequence[str | Path]) -> list[Path]:
    files: list[Path] = []
    for p in paths:
        p = Path(p)
        if p.is_dir():
            files += sorted(f for f in p.rglob("*") if f.suffix in MIDI_SUFFIXES and f.is_file())
        elif p.is_file():
            files.append(p)
        else:
            raise UserError(f"prompt path not found: {p}")
    return files


def build_prompt_source(spec: str, tokenizer: RemiTokenizer, *, bars: int = 4) -> PromptSource:
    """`procedural`, `procedural+note`, `data:DIR[:split]`, or MIDI files/folders separated by commas."""
    spec = (spec or "procedural").strip()
    if spec in ("procedural", "proc"):
        return ProceduralPrompts(tokenizer)
    if spec in ("procedural+note", "procedural-note"):
        return ProceduralPrompts(tokenizer, first_note=True)
    if spec.startswith("data:"):
        rest = spec[len("data:"):]
        directory, split = rest, "val"
        if ":" in rest and not Path(rest).exists() and rest.rsplit(":", 1)[1] in ("train", "val", "test"):
            directory, split = rest.rsplit(":", 1)
        return DataPrompts(tokenizer, Path(directory), split=split)
    return MidiPrompts(tokenizer, [Path(p) for p in spec.split(",") if p], bars=bars)
