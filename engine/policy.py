"""The policy: a Hugging Face Phi-3 causal LM over REMI tokens, and how it generates music.

A checkpoint is a Hugging Face directory: `config.json` + `model.safetensors` (never pickles)
+ the tokenizer (`remi_tokenizer.json` and the word-level HF tokenizer files).

Generation batches N candidates, samples with temperature/top-p/seed (optionally grammar-masked
and key-locked), stops after a number of bars or tokens, slides past the context window, and
streams notes as soon as each note's tokens are complete.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np
import torch

# GenerationSettings and its one validator belong to the API contract (shared with the host, the CLI and
# the studio); `from engine.policy import GenerationSettings` keeps working.
from engine.api import GenerationSettings
from engine.meter import ModelClip
from engine.music import Clip, Note
from engine.sampling import GeneratedRow, LocalSampler, RowGroup, RowRules
from engine.tokenizer import REMI_CONFIG_FILE, RemiTokenizer

PROJECT_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_MODEL_DIR = PROJECT_ROOT / "resources" / "models" / "default"

MODEL_CONFIGS = {
    # The SMART paper's base model (§3.1): 4 layers, hidden 512, 8 heads → ~14.2M parameters.
    "paper": dict(hidden_size=512, intermediate_size=1536, num_hidden_layers=4, num_attention_heads=8,
                  num_key_value_heads=8, max_position_embeddings=2048),
    # For tests: trains for a few hundred steps on CPU in seconds.
    "tiny": dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                 num_key_value_heads=4, max_position_embeddings=1024),
}


class PolicyLoadError(RuntimeError):
    """A model directory could not be loaded (missing files, wrong format, mismatched tokenizer)."""


def build_config(name: str, tokenizer: RemiTokenizer, **overrides):
    from transformers import Phi3Config

    if name not in MODEL_CONFIGS:
        raise ValueError(f"unknown model config {name!r} (choose from {', '.join(MODEL_CONFIGS)})")
    params = dict(MODEL_CONFIGS[name]) | overrides
    return Phi3Config(
        vocab_size=tokenizer.vocab_size,
        pad_token_id=tokenizer.pad_id,
        bos_token_id=tokenizer.bos_id,
        eos_token_id=tokenizer.eos_id,
        tie_word_embeddings=False,
        attention_dropout=0.0,
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        **params,
    )


@dataclass
class Generation:
    """One generated continuation/infill, as the model wrote it: the new notes (absolute ticks in the source
    clip) and its tokens. (A take the studio keeps of one is `studio.generate.history.Candidate`.)"""

    notes: list[Note]
    token_ids: list[int]
    bars: int  # bars written, counted from the continuation point (a bar it starts inside is not counted)
    finished_by: str  # why it stopped: "bars" (all requested bars), "eos", "tokens" (budget), "cancelled"
    clip: Clip  # the new notes with the tempo map and time signatures they were written in
    end_tick: int = 0  # where the output ends on the clip's timeline: the bar line closing its last bar
    # when finished_by == "bars" (a last note may ring past it), else the end of its last note or position


@dataclass
class NoteEvent:
    candidate: int
    note: Note


class Policy:
    """A Phi-3 REMI model with its tokenizer.

    Generation builds a `RowGroup` per call and hands it to a sampler that drives the one sampling loop
    (`engine.sampling`): by default a loop of its own (`LocalSampler`); the host gives each request a view
    (`using(scheduler)`) whose rows join its shared batch.
    """

    def __init__(self, model, tokenizer: RemiTokenizer, path: Path | None = None, sampler=None):
        self.model = model
        self.tokenizer = tokenizer
        self.path = path
        self.sampler = sampler if sampler is not None else LocalSampler()
        self.model.eval()

    def using(self, sampler) -> "Policy":
        """This policy (same model and tokenizer) generating through `sampler`, e.g. the host's scheduler."""
        return Policy(self.model, self.tokenizer, self.path, sampler)

    # ------------------------------------------------------------------ construction / IO
    @classmethod
    def create(cls, config: str = "paper", tokenizer: RemiTokenizer | None = None, seed: int = 0, **overrides) -> "Policy":
        from transformers import Phi3ForCausalLM

        tokenizer = tokenizer or RemiTokenizer()
        torch.manual_seed(seed)
        model = Phi3ForCausalLM(build_config(config, tokenizer, **overrides))
        return cls(model, tokenizer)

    @classmethod
    def load(cls, directory: str | Path | None = None, device: str | torch.device | None = None,
             dtype: torch.dtype | None = None) -> "Policy":
        from transformers import Phi3ForCausalLM

        path = Path(directory) if directory is not None else DEFAULT_MODEL_DIR
        if not path.is_dir():
            raise PolicyLoadError(f"model directory not found: {path}")
        missing = [f for f in ("config.json", "model.safetensors", REMI_CONFIG_FILE) if not (path / f).exists()]
        if missing:
            raise PolicyLoadError(f"{path} is not a SMART model directory (missing {', '.join(missing)}; "
                                  "checkpoints must be safetensors)")
        try:
            tokenizer = RemiTokenizer.load(path)
        except (OSError, ValueError) as exc:
            raise PolicyLoadError(f"tokenizer in {path} does not load: {exc}") from None
        try:
            model = Phi3ForCausalLM.from_pretrained(str(path), use_safetensors=True, dtype=dtype or torch.float32)
        except Exception as exc:  # transformers raises many kinds for corrupt configs/weights
            msg = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else type(exc).__name__
            raise PolicyLoadError(f"model in {path} does not load: {msg}") from None
        if model.config.vocab_size != tokenizer.vocab_size:
            raise PolicyLoadError(f"model vocabulary ({model.config.vocab_size}) does not match its tokenizer "
                                  f"({tokenizer.vocab_size}) in {path}")
        if device is not None:
            model.to(device)
        return cls(model, tokenizer, path)

    def save(self, directory: str | Path) -> None:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        self.model.save_pretrained(str(directory), safe_serialization=True)
        self.tokenizer.save(directory)
        self.path = directory

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def context_length(self) -> int:
        return int(self.model.config.max_position_embeddings)

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.model.parameters())

    def describe(self) -> dict:
        cfg = self.model.config
        return {
            "path": str(self.path) if self.path else None,
            "parameters": self.num_parameters(),
            "layers": cfg.num_hidden_layers,
            "hidden_size": cfg.hidden_size,
            "heads": cfg.num_attention_heads,
            "context_length": self.context_length,
            "vocab_size": cfg.vocab_size,
            "device": str(self.device),
        }

    # ------------------------------------------------------------------ sampling
    def row_group(self, prompts: Sequence[Sequence[int]], settings: GenerationSettings, *, opened_bars: int = 0,
                  position_floor: int = 0, keep_meter: bool = False,
                  meter: tuple[int, int] | None = None) -> RowGroup:
        """The rows for `prompts` with `settings`' rules, grammar (key/pitch lock, position floor) and a seeded
        generator. `opened_bars`: 1 when each prompt opens the first output bar itself (see GeneratedRow);
        `keep_meter`: new bars keep the time signature in force (continuing or infilling a clip): the
        prompt's last one, or `meter` (an infill's span)."""
        settings.validate()
        tok = self.tokenizer
        allowed = None
        if settings.allowed_pitches is not None:
            allowed = np.zeros(128, dtype=bool)
            allowed[[p for p in settings.allowed_pitches if 0 <= p < 128]] = True
        rows = []
        for prompt in prompts:
            grammar = None
            if settings.grammar:
                grammar = tok.grammar()
                grammar.observe_many(prompt)
                grammar.allowed_pitches = allowed
                grammar.min_position = position_floor
                if meter is not None:
                    grammar.ts = tuple(meter)
            rows.append(GeneratedRow(prompt, grammar, opened_bars=opened_bars))
        family_factors = tuple((tuple(int(i) for i in tok.kind_ids.get(family, ())), float(factor))
                               for family, factor in sorted(settings.temperature_factors.items()) if factor != 1.0)
        rules = RowRules(temperature=settings.temperature, top_p=settings.top_p, family_factors=family_factors,
                         bars=settings.bars, max_new_tokens=settings.max_new_tokens, stop_ids=(tok.eos_id,),
                         bar_id=tok.bar_id,
                         meter_ids={ts: tok.vocab[f"TimeSig_{ts[0]}/{ts[1]}"] for ts in tok.time_signatures}
                         if keep_meter else None)
        gen = torch.Generator(device=self.device)  # sampling happens where the logits are
        gen.manual_seed(settings.seed if settings.seed is not None else random.randrange(2**31))
        return RowGroup(rows, rules, gen)

    def sample(self, group: RowGroup, should_stop: Callable[[], bool] | None = None) -> Iterator[tuple[int, int]]:
        """Run `group` through this policy's sampler; yields (row, token_id) as tokens are accepted.
        Afterwards each row says how many bars it wrote and why it stopped (`group.finish()`)."""
        tok = self.tokenizer
        return self.sampler.sample(self.model, group, pad_id=tok.pad_id, bar_id=tok.bar_id,
                                   context=self.context_length, should_stop=should_stop)

    # ------------------------------------------------------------------ music-level generation
    def continue_clip(
        self,
        clip: Clip | ModelClip,
        settings: GenerationSettings,
        at_tick: int | None = None,
        on_note: Callable[[NoteEvent], None] | None = None,
        should_stop: Callable[[], bool] | None = None,
    ) -> list[Generation]:
        """Continue `clip` from `at_tick` (default: its end). New notes are in the clip's ticks."""
        tok = self.tokenizer
        model = tok.model_meter(clip)  # once (a ModelClip as it is): the prompt and its floor count these bars
        at = model.clip.end_tick if at_tick is None else at_tick
        prompt = tok.continuation_prompt(model, at)
        # The prompt ends inside the open bar that contains `at`. From a bar line that bar is the first of
        # the `settings.bars`; from inside a bar the model finishes it, then writes `settings.bars` more.
        floor = tok.position_floor(model, at)
        return self._run([prompt] * settings.candidates, settings, model.clip.ppq,
                         opened_bars=1 if floor == 0 else 0, on_note=on_note, should_stop=should_stop, min_tick=at,
                         position_floor=floor, keep_meter=True)

    def generate_procedural(self, settings: GenerationSettings, ppq: int = 480, first_note: bool = False,
                            on_note=None, should_stop=None) -> tuple[list[Generation], list[list[int]]]:
        """Paper §3.5: each candidate from its own procedural prompt (Bar + time signature + tempo)."""
        rng = random.Random(settings.seed)
        prompts = [self.tokenizer.procedural_prompt(rng, first_note=first_note) for _ in range(settings.candidates)]
        # The prompt opens bar 1 (Bar TimeSig Position Tempo): it is the first of the `bars`.
        cands = self._run(prompts, settings, ppq, opened_bars=1, on_note=on_note, should_stop=should_stop)
        return cands, prompts

    def infill(self, clip: Clip | ModelClip, start_bar: int, end_bar: int, settings: GenerationSettings,
               on_note=None, should_stop=None) -> list[Generation]:
        """Regenerate bars [start_bar, end_bar) given what comes before and after (bar-level FIM)."""
        if not 0 <= start_bar < end_bar:
            raise ValueError("infill needs 0 <= start_bar < end_bar")
        tok = self.tokenizer
        model = tok.model_meter(clip)  # once (a ModelClip as it is): the bars are those the prompt counts
        clip = model.clip
        prompt = tok.infill_prompt(model, start_bar, end_bar)
        span = end_bar - start_bar
        s = GenerationSettings(**{**settings.__dict__, "bars": span})
        start_tick, end_tick = clip.bar_tick(start_bar), clip.bar_tick(end_bar)
        ts = clip.time_signature_at(start_tick)
        cands = self._run([prompt] * s.candidates, s, clip.ppq, should_stop=should_stop, keep_meter=True,
                          infill=(start_tick, (ts.numerator, ts.denominator), clip.tempo_at(start_tick)))
        out = []
        for c in cands:
            notes = [n for n in c.notes if start_tick <= n.start < end_tick]
            notes = [Note(n.start, n.pitch, min(n.duration, end_tick - n.start), n.velocity) for n in notes]
            end = end_tick if c.finished_by == "bars" else min(c.end_tick, end_tick)
            out.append(Generation(notes, c.token_ids, c.bars, c.finished_by, clip.with_notes(notes), end))
            if on_note:
                for n in notes:
                    on_note(NoteEvent(len(out) - 1, n))
        return out

    def _run(self, prompts, settings, ppq, *, opened_bars=0, on_note=None, should_stop=None, min_tick=0,
             infill=None, position_floor=0, keep_meter=False) -> list[Generation]:
        """Sample, decode each row incrementally, and collect the new notes per candidate.

        infill=(start_tick, time_signature, bpm): the rows write middle bars that begin at start_tick.
        """
        tok = self.tokenizer
        n = len(prompts)
        decoders = []
        for r in range(n):
            if infill is not None:
                start_tick, ts, bpm = infill
                decoders.append((tok.decoder(ppq, initial_time_signature=ts, initial_bpm=bpm), start_tick))
            else:
                d = tok.decoder(ppq)
                d.feed_many(prompts[r])
                decoders.append((d, 0))
        group = self.row_group(prompts, settings, opened_bars=opened_bars, position_floor=position_floor,
                               keep_meter=keep_meter, meter=infill[1] if infill is not None else None)
        notes: list[list[Note]] = [[] for _ in range(n)]
        for row, t in self.sample(group, should_stop):
            d, offset = decoders[row]
            for note in d.feed(t):
                if offset:
                    note = Note(note.start + offset, note.pitch, note.duration, note.velocity)
                if note.start < min_tick:
                    continue  # a model writing into the past of an open bar: not part of the continuation
                notes[row].append(note)
                if on_note is not None and infill is None:
                    on_note(NoteEvent(row, note))
        out = []
        for r, (row, finish) in enumerate(zip(group.rows, group.finish())):
            d, offset = decoders[r]
            if finish == "bars":  # the Bar that ended the row (not emitted) is where the last bar ends
                d.feed(tok.bar_id)  # (a note may ring past it: notes are streamed as decoded, never cut)
                end = offset + round(d.current_tick * d.scale)
            else:
                end = max([offset + round(d.current_tick * d.scale), min_tick] + [x.end for x in notes[r]])
            out.append(Generation(notes[r], row.output, row.bars, finish, d.clip().with_notes(notes[r]), end))
        return out
