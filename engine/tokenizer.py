"""The one tokenizer bridge: MidiTok REMI (+ time signatures and tempos) ↔ Clip ↔ ids ↔ HF tokenizer.

* `TokenizerConfig` from MidiTok is the single config; it is saved with every checkpoint
  (`remi_tokenizer.json`) and reloads identically.
* Encoding goes through MidiTok. Decoding is done here by `RemiDecoder`, an incremental
  re-implementation of MidiTok's REMI `_tokens_to_score` for this configuration: it never
  raises on any id sequence and yields each note as soon as its Pitch/Velocity/Duration tokens
  are complete (streaming). Tests check it against MidiTok's own decoder.
* `model_meter(clip)` gives the clip the bar lines the model reads (meters outside the vocabulary
  dropped, changes on bar lines, as MidiTok encodes them) and says what changed, so that prompts,
  "the last N bars" and infill spans count the bars the tokens count.
* `hf_tokenizer()` is a word-level `PreTrainedTokenizerFast` over the same vocabulary, for TRL.
* `GrammarState` masks tokens that cannot legally come next (optional grammar-aware sampling).
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

import miditok
import numpy as np

from engine.meter import TIME_SIGNATURE_RANGE, ModelClip, model_meter
from engine.music import Clip, Note, TempoChange, TimeSignature

REMI_CONFIG_FILE = "remi_tokenizer.json"

PAD, BOS, EOS, MASK = "PAD_None", "BOS_None", "EOS_None", "MASK_None"
FIM_PREFIX, FIM_SUFFIX, FIM_MIDDLE = "FIMPrefix_None", "FIMSuffix_None", "FIMMiddle_None"
SPECIAL_TOKENS = ["PAD", "BOS", "EOS", "MASK", "FIMPrefix", "FIMSuffix", "FIMMiddle"]

# Procedural prompts (paper §3.5) draw from the time signatures musicians actually use.
COMMON_TIME_SIGNATURES = [(4, 4), (3, 4), (2, 4), (6, 8), (12, 8), (9, 8), (5, 4), (2, 2), (3, 8), (6, 4)]


def default_config() -> miditok.TokenizerConfig:
    """REMI with time-signature and tempo tokens, no programs (the paper's REMI+ for one piano)."""
    return miditok.TokenizerConfig(
        pitch_range=(21, 108),  # inclusive: the 88 piano keys
        beat_res={(0, 4): 8, (4, 12): 4},
        num_velocities=20,  # paper §4.2
        use_velocities=True,
        use_tempos=True,
        # 211 linear bins over 40–250 bpm = every integer bpm, so common tempi (60, 72, 96, 120,
        # 126, 132 …) are represented exactly rather than rounded to the nearest bin.
        num_tempos=211,
        tempo_range=(40, 250),
        log_tempos=False,
        use_time_signatures=True,
        time_signature_range=TIME_SIGNATURE_RANGE,
        use_programs=False,
        use_chords=False,
        use_rests=False,
        use_sustain_pedals=False,
        special_tokens=list(SPECIAL_TOKENS),
    )


@dataclass
class _TokenInfo:
    kind: str  # Bar, TimeSig, Position, Tempo, Pitch, Velocity, Duration, or a special name
    value: object


class RemiTokenizer:
    """REMI tokenizer bridge used by the studio, CLI, host and training alike."""

    def __init__(self, remi: miditok.REMI | None = None):
        self.remi = remi if remi is not None else miditok.REMI(default_config())
        self.vocab: dict[str, int] = dict(self.remi.vocab)
        self.id_to_token: list[str] = [""] * len(self.vocab)
        for tok, i in self.vocab.items():
            self.id_to_token[i] = tok
        self.pad_id = self.vocab[PAD]
        self.bos_id = self.vocab[BOS]
        self.eos_id = self.vocab[EOS]
        self.mask_id = self.vocab[MASK]
        self.fim_prefix_id = self.vocab[FIM_PREFIX]
        self.fim_suffix_id = self.vocab[FIM_SUFFIX]
        self.fim_middle_id = self.vocab[FIM_MIDDLE]
        self.bar_id = self.vocab["Bar_None"]
        self.special_ids = {self.vocab[t] for t in self.remi.special_tokens}
        self.time_division = int(self.remi.time_division)
        self.pos_per_beat = int(self.remi.config.max_num_pos_per_beat)
        self._info = [self._parse(t) for t in self.id_to_token]
        self.kind_ids: dict[str, np.ndarray] = {}
        for i, info in enumerate(self._info):
            self.kind_ids.setdefault(info.kind, []).append(i)  # type: ignore[arg-type]
        self.kind_ids = {k: np.array(v) for k, v in self.kind_ids.items()}
        self.tempos = np.array(self.remi.tempos, dtype=float)
        self.time_signatures = [tuple(ts) for ts in self.remi.time_signatures]
        self._hf = None

    # ------------------------------------------------------------------ token tables
    def _parse(self, token: str) -> _TokenInfo:
        kind, _, value = token.partition("_")
        if token in self.remi.special_tokens:
            return _TokenInfo(kind, None)
        if kind in ("Pitch", "Velocity", "Position"):
            return _TokenInfo(kind, int(value))
        if kind == "Tempo":
            return _TokenInfo(kind, float(value))
        if kind == "TimeSig":
            num, den = value.split("/")
            return _TokenInfo(kind, (int(num), int(den)))
        if kind == "Duration":
            return _TokenInfo(kind, value)  # "beats.ticks.res", resolved per beat length when decoding
        return _TokenInfo(kind, None)

    def token_kind(self, token_id: int) -> str | None:
        return self._info[token_id].kind if 0 <= token_id < len(self._info) else None

    def token_value(self, token_id: int):
        return self._info[token_id].value

    @property
    def vocab_size(self) -> int:
        return len(self.vocab)

    def __len__(self) -> int:
        return len(self.vocab)

    def ids_to_tokens(self, ids: Iterable[int]) -> list[str]:
        n = len(self.id_to_token)
        return [self.id_to_token[i] if 0 <= i < n else f"<invalid {i}>" for i in ids]


    def ticks_per_beat(self, denominator: int) -> int:
        return int(self.remi._tpb_per_ts[denominator])

    def duration_ticks(self, value: str, denominator: int) -> int:
        return int(self.remi._tpb_tokens_to_ticks[self.ticks_per_beat(denominator)][value])

    def ticks_per_bar(self, ts: tuple[int, int]) -> int:
        num, den = ts
        return self.time_division * 4 * num // den

    def positions_per_bar(self, ts: tuple[int, int]) -> int:
        num, den = ts
        return num * self.ticks_per_beat(den) // (self.ticks_per_beat(den) // self.pos_per_beat)

    def nearest_tempo(self, bpm: float) -> float:
        return float(self.tempos[np.argmin(np.abs(self.tempos - bpm))])

    # ------------------------------------------------------------------ meter
    def model_meter(self, clip: Clip | ModelClip) -> ModelClip:
        """The clip with the bar lines this vocabulary reads, and a note for the musician (None: unchanged);
        the rule (MidiTok's) is `engine.meter.model_meter`. E.g. POP909's 1/4 files: "1/4 read as 4/4
        (bars of 4 beats)". A `ModelClip` (re-barred where it entered) comes back as it is: the functions
        below take either, and re-bar a plain Clip once."""
        return model_meter(clip, self.time_signatures)

    # ------------------------------------------------------------------ encode
    def encode(self, clip: Clip | ModelClip) -> list[int]:
        """Token ids for a clip (no BOS/EOS), in its `model_meter`. Empty clips give the header of an empty bar."""
        return self._encode(self.model_meter(clip).clip)

    def _encode(self, clip: Clip) -> list[int]:
        """`encode` of a clip in the model's meter, or of a part of one cut at a bar line or from tick 0
        (its meters stay on the bar lines they were on)."""
        if not clip.notes:
            ts = clip.time_signature
            return self.header_ids((ts.numerator, ts.denominator), clip.bpm)
        seqs = self.remi.encode(clip.to_score())
        seq = seqs[0] if isinstance(seqs, list) else seqs
        return list(seq.ids)

    def header_ids(self, ts: tuple[int, int], bpm: float) -> list[int]:
        """`Bar TimeSig Position_0 Tempo`: the start of a piece (and of a procedural prompt)."""
        num, den = ts
        if (num, den) not in self.time_signatures:
            raise ValueError(f"time signature {num}/{den} is not in the vocabulary (see model_meter)")
        return [
            self.bar_id,
            self.vocab[f"TimeSig_{num}/{den}"],
            self.vocab["Position_0"],
            self.vocab[f"Tempo_{self.nearest_tempo(bpm)}"],
        ]

    def bar_spans(self, ids: Sequence[int]) -> list[tuple[int, int]]:
        """(start, end) index ranges of each bar in an encoded sequence (split at Bar tokens)."""
        starts = [i for i, t in enumerate(ids) if t == self.bar_id]
        return [(s, starts[k + 1] if k + 1 < len(starts) else len(ids)) for k, s in enumerate(starts)]

    # ------------------------------------------------------------------ decode
    def decoder(self, ppq: int = 480, initial_time_signature: tuple[int, int] | None = None, initial_bpm: float | None = None) -> "RemiDecoder":
        return RemiDecoder(self, ppq, initial_time_signature, initial_bpm)

    def decode(self, ids: Iterable[int], ppq: int = 480) -> Clip:
        """Decode any id sequence to a Clip. Never raises: invalid ids and broken grammar are skipped,
        duplicated notes (same onset and pitch) dropped."""
        dec = self.decoder(ppq)
        for i in ids:
            dec.feed(i)
        return dec.clip()

    # ------------------------------------------------------------------ prompts
    def procedural_prompt(self, rng: random.Random | None = None, first_note: bool = False,
                          time_signature: tuple[int, int] | None = None, bpm: float | None = None) -> list[int]:
        """Paper §3.5 prompt: BOS, Bar, a random time signature, a random tempo (and optionally a first note)."""
        rng = rng or random.Random()
        ts = time_signature or rng.choice(COMMON_TIME_SIGNATURES)
        tempo = bpm if bpm is not None else rng.uniform(60, 160)
        ids = [self.bos_id] + self.header_ids(ts, tempo)
        if first_note:
            ids += [
                self.vocab[f"Pitch_{rng.randint(48, 72)}"],
                self.vocab[f"Velocity_{int(rng.choice(self.remi.velocities[8:15]))}"],
                self.vocab["Duration_1.0.8"],
            ]
        return ids

    def continuation_prompt(self, clip: Clip | ModelClip, at_tick: int | None = None) -> list[int]:
        """BOS + the clip's notes before `at_tick`, ending inside the (open) bar that contains `at_tick`.

        Bars are those of the clip's `model_meter`. Bars without notes between the last note and
        `at_tick` (silence the clip has) are written out, so the model's next tokens land in the
        bar of `at_tick`; use `position_floor` with `GrammarState.min_position` to keep them at or
        after `at_tick`.
        """
        clip = self.model_meter(clip).clip
        at = clip.end_tick if at_tick is None else at_tick
        context = clip.slice_ticks(0, at, shift_to_zero=False) if clip.notes else clip
        ids = self._encode(context)
        n_bars = sum(1 for t in ids if t == self.bar_id)
        ids += self._empty_bars(clip, n_bars, clip.bar_index_at(at) + 1)
        return [self.bos_id] + ids

    def position_floor(self, clip: Clip | ModelClip, at_tick: int) -> int:
        """Index of the first REMI Position at or after `at_tick` within its bar (of the `model_meter`)."""
        clip = self.model_meter(clip).clip
        bar_start = clip.bar_tick(clip.bar_index_at(at_tick))
        ts = clip.time_signature_at(at_tick)
        ticks_per_pos = self.ticks_per_beat(ts.denominator) // self.pos_per_beat
        offset = (at_tick - bar_start) * self.time_division / clip.ppq
        return int(np.ceil(offset / ticks_per_pos - 1e-9))

    def infill_prompt(self, clip: Clip | ModelClip, start_bar: int, end_bar: int) -> list[int]:
        """Fill-in-the-middle prompt for bars [start_bar, end_bar): FIMPrefix pre FIMSuffix suf FIMMiddle.

        The model then writes the middle bars (starting with a Bar token) and EOS. Bars are those
        of the clip's `model_meter`.
        """
        clip = self.model_meter(clip).clip
        prefix = clip.slice_bars(0, start_bar) if start_bar > 0 else None
        suffix = clip.slice_ticks(clip.bar_tick(end_bar), max(clip.end_tick, clip.bar_tick(end_bar)) + 1)
        pre_ids = self._encode(prefix) if prefix is not None and prefix.notes else self._empty_bars(clip, 0, start_bar)
        if prefix is not None and prefix.notes:
            have = sum(1 for t in pre_ids if t == self.bar_id)
            pre_ids += self._empty_bars(clip, have, start_bar)
        suf_ids = self._encode(suffix) if suffix.notes else []
        return [self.fim_prefix_id] + pre_ids + [self.fim_suffix_id] + suf_ids + [self.fim_middle_id]

    def _empty_bars(self, clip: Clip, first: int, last: int) -> list[int]:
        """`Bar TimeSig` for bars [first, last) of a clip already in its `model_meter`."""
        ids: list[int] = []
        for b in range(first, last):
            ts = clip.time_signature_at(clip.bar_tick(b))
            ids += [self.bar_id, self.vocab[f"TimeSig_{ts.numerator}/{ts.denominator}"]]
            if b == 0:
                ids += [self.vocab["Position_0"], self.vocab[f"Tempo_{self.nearest_tempo(clip.bpm)}"]]
        return ids

    # ------------------------------------------------------------------ grammar
    def grammar(self) -> "GrammarState":
        return GrammarState(self)

    # ------------------------------------------------------------------ save / load / HF bridge
    def save(self, directory: str | Path) -> None:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        self.remi.save(directory / REMI_CONFIG_FILE)
        self.hf_tokenizer().save_pretrained(str(directory))

    @classmethod
    def load(cls, directory: str | Path) -> "RemiTokenizer":
        path = Path(directory)
        path = path / REMI_CONFIG_FILE if path.is_dir() else path
        if not path.exists():
            raise FileNotFoundError(f"no tokenizer config {path.name} in {path.parent}")
        try:
            json.loads(path.read_text())
            remi = miditok.REMI(params=path)
        except Exception as exc:  # miditok raises assorted errors for malformed configs
            raise ValueError(f"unreadable tokenizer config {path}: {exc}") from None
        return cls(remi)

    def hf_tokenizer(self):
        """Word-level `PreTrainedTokenizerFast` over the same vocabulary (tokens separated by spaces)."""
        if self._hf is None:
            from tokenizers import Tokenizer, decoders, models, pre_tokenizers
            from transformers import PreTrainedTokenizerFast

            tok = Tokenizer(models.WordLevel(vocab=dict(self.vocab), unk_token=MASK))
            tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
            tok.decoder = decoders.WordPiece(prefix="##", cleanup=False)  # joins words with spaces
            self._hf = PreTrainedTokenizerFast(
                tokenizer_object=tok,
                bos_token=BOS, eos_token=EOS, pad_token=PAD, unk_token=MASK,
                padding_side="left",  # decoder-only generation pads on the left
                model_input_names=["input_ids", "attention_mask"],
            )
        return self._hf

    def ids_to_text(self, ids: Iterable[int]) -> str:
        return " ".join(self.ids_to_tokens(i for i in ids if 0 <= i < self.vocab_size))

    def text_to_ids(self, text: str) -> list[int]:
        """Inverse of `ids_to_text`; unknown words are dropped (never raises)."""
        return [self.vocab[w] for w in text.split() if w in self.vocab]


class RemiDecoder:
    """Incremental REMI decoder: `feed(id)` returns the notes completed by that token.

    Mirrors MidiTok's REMI `_tokens_to_score` semantics for this configuration (bars advance by
    the current time signature; Position is relative to the bar; a note is Pitch, Velocity,
    Duration in a row), but consumes one id at a time and skips anything invalid.

    This is where tokens become notes for the studio, CLI, host, rewards and evaluation, so it is
    where duplicates go: a note with the onset and pitch of one already decoded is dropped (the
    first one stays — it may already be streamed) and counted in `duplicates`. One piano key
    cannot be struck twice at once; stacked duplicates only sound louder and inflate note counts.
    """

    def __init__(self, tok: RemiTokenizer, ppq: int = 480, initial_time_signature=None, initial_bpm=None):
        self.tok = tok
        self.ppq = ppq
        self.scale = ppq / tok.time_division
        self.notes: list[Note] = []
        self.tempos: list[TempoChange] = []
        self.time_signatures: list[TimeSignature] = []
        self.ts: tuple[int, int] | None = tuple(initial_time_signature) if initial_time_signature else None
        self.initial_bpm = initial_bpm
        self.current_tick = 0
        self.bar_tick = 0
        self.bar = -1
        self.bars_seen = 0
        self._pending: list[tuple[str, object]] = []  # the Pitch / Velocity tokens of a note in progress
        self._onsets: set[tuple[int, int]] = set()  # (start, pitch) of every decoded note
        self.duplicates = 0  # notes dropped because their onset and pitch were already decoded
        self.n_tokens = 0
        self.n_invalid = 0

    def _ts(self) -> tuple[int, int]:
        return self.ts or (4, 4)

    def feed(self, token_id: int) -> list[Note]:
        self.n_tokens += 1
        tok = self.tok
        if not (isinstance(token_id, (int, np.integer)) and 0 <= token_id < tok.vocab_size):
            self.n_invalid += 1
            self._pending.clear()
            return []
        info = tok._info[int(token_id)]
        kind, value = info.kind, info.value
        if kind == "Pitch":
            self._pending = [("Pitch", value)]
            return []
        if kind == "Velocity":
            if len(self._pending) == 1:
                self._pending.append(("Velocity", value))
            else:
                self._pending.clear()
            return []
        if kind == "Duration":
            done: list[Note] = []
            if len(self._pending) == 2:
                pitch, vel = self._pending[0][1], self._pending[1][1]
                dur = tok.duration_ticks(value, self._ts()[1])
                start = round(self.current_tick * self.scale)
                if (start, int(pitch)) in self._onsets:
                    self.duplicates += 1
                else:
                    self._onsets.add((start, int(pitch)))
                    note = Note(start, int(pitch), max(1, round(dur * self.scale)), int(vel))
                    self.notes.append(note)
                    done.append(note)
            self._pending.clear()
            return done
        self._pending.clear()
        if kind == "Bar":
            self.bar += 1
            self.bars_seen += 1
            if self.bar > 0:
                self.current_tick = self.bar_tick + tok.ticks_per_bar(self._ts())
            self.bar_tick = self.current_tick
        elif kind == "Position":
            if self.bar == -1:
                self.bar = 0
            ts = self._ts()
            ticks_per_pos = tok.ticks_per_beat(ts[1]) // tok.pos_per_beat
            self.current_tick = self.bar_tick + int(value) * ticks_per_pos
        elif kind == "Tempo":
            self.tempos.append(TempoChange(round(self.current_tick * self.scale), float(value)))
        elif kind == "TimeSig":
            if self.ts is None:
                self.ts = value  # the first time signature applies from tick 0
                self.time_signatures.append(TimeSignature(0, *value))
            elif value != self.ts:
                self.ts = value
                self.time_signatures.append(TimeSignature(round(self.current_tick * self.scale), *value))
        elif kind not in ("PAD", "BOS", "MASK", "EOS", "FIMPrefix", "FIMSuffix", "FIMMiddle"):
            self.n_invalid += 1
        return []

    def feed_many(self, ids: Iterable[int]) -> list[Note]:
        out: list[Note] = []
        for i in ids:
            out.extend(self.feed(i))
        return out

    def clip(self) -> Clip:
        tempos = list(self.tempos)
        if not tempos or tempos[0].tick != 0:
            tempos.insert(0, TempoChange(0, self.initial_bpm or float(self.tok.remi.default_tempo)))
        sigs = list(self.time_signatures) or [TimeSignature(0, *self._ts())]
        if sigs[0].tick != 0:
            sigs.insert(0, TimeSignature(0, 4, 4))
        return Clip(list(self.notes), self.ppq, tempos, sigs)


class GrammarState:
    """Tracks REMI grammar while sampling and gives the set of ids that may legally come next.

    Rules: Bar → TimeSig; TimeSig → Position | Bar | EOS; Position → Tempo | Pitch;
    Tempo → Pitch | Position | Bar; Pitch → Velocity; Velocity → Duration;
    Duration → Pitch | Position | Bar | EOS. Positions only move forward inside a bar and stay
    inside the bar's length for the current time signature.
    """

    def __init__(self, tok: RemiTokenizer):
        self.tok = tok
        self.last_kind = "BOS"
        self.position = -1
        self.ts = (4, 4)
        self.allowed_pitches: np.ndarray | None = None  # optional key lock / pitch range (bool[128])
        self.min_position = 0  # no notes before this Position in the current bar (continuation start)
        self._masks: dict[tuple, np.ndarray] = {}

    def observe(self, token_id: int) -> None:
        kind = self.tok.token_kind(int(token_id))
        if kind is None:
            return
        value = self.tok.token_value(int(token_id))
        if kind == "Bar":
            self.position = -1
            self.min_position = 0
        elif kind == "Position":
            self.position = int(value)
        elif kind == "TimeSig":
            self.ts = value
        if kind in ("FIMMiddle", "BOS"):
            kind = "BOS"
        self.last_kind = kind

    def observe_many(self, ids: Iterable[int]) -> None:
        for i in ids:
            self.observe(i)

    _NEXT = {
        "BOS": ("Bar",),
        "Bar": ("TimeSig",),
        "TimeSig": ("Position", "Bar", "EOS"),
        "Position": ("Tempo", "Pitch"),
        "Tempo": ("Pitch", "Position", "Bar"),
        "Pitch": ("Velocity",),
        "Velocity": ("Duration",),
        "Duration": ("Pitch", "Position", "Bar", "EOS"),
    }

    def allowed(self) -> np.ndarray:
        """Boolean mask [vocab] of the ids that may come next."""
        key = (self.last_kind, self.position, self.ts, self.min_position)
        mask = self._masks.get(key)
        if mask is None:
            tok = self.tok
            mask = np.zeros(tok.vocab_size, dtype=bool)
            for kind in self._NEXT.get(self.last_kind, ("Bar",)):
                if kind == "EOS":
                    mask[tok.eos_id] = True
                    continue
                ids = tok.kind_ids.get(kind)
                if ids is None:
                    continue
                if kind == "Position":
                    limit = tok.positions_per_bar(self.ts)
                    low = max(self.position + 1, self.min_position)
                    ids = np.array([i for i in ids if low <= tok.token_value(i) < limit], dtype=int)
                if kind == "Pitch" and self.position < self.min_position:
                    continue  # a note here would sound before the continuation point
                if kind == "TimeSig":
                    ids = np.array(ids, dtype=int)
                mask[ids] = True
            self._masks[key] = mask
        if self.allowed_pitches is not None and self.last_kind in ("Position", "Tempo", "Duration"):
            mask = mask.copy()
            pitch_ids = self.tok.kind_ids["Pitch"]
            pitch_vals = np.array([self.tok.token_value(i) for i in pitch_ids])
            mask[pitch_ids] &= self.allowed_pitches[pitch_vals]
        return mask


_default: RemiTokenizer | None = None


def default_tokenizer() -> RemiTokenizer:
    """A shared tokenizer with the default config (building one takes ~50 ms)."""
    global _default
    if _default is None:
        _default = RemiTokenizer()
    return _default
