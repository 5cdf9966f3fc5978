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

from engine.music import Clip, Note
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
class GenerationSettings:
    candidates: int = 4
    temperature: float = 1.0
    top_p: float = 0.95
    seed: int | None = None
    bars: int | None = 4  # stop each candidate after this many new bars…
    max_new_tokens: int = 1024  # …or this many tokens, whichever first
    grammar: bool = True  # mask tokens that cannot legally come next
    allowed_pitches: Sequence[int] | None = None  # key/scale lock and pitch range (logit mask)

    def validate(self) -> None:
        if not 1 <= self.candidates <= 64:
            raise ValueError("candidates must be between 1 and 64")
        if not 0.0 <= self.temperature <= 5.0:
            raise ValueError("temperature must be between 0 and 5")
        if not 0.0 < self.top_p <= 1.0:
            raise ValueError("top_p must be in (0, 1]")
        if self.bars is not None and not 1 <= self.bars <= 256:
            raise ValueError("bars must be between 1 and 256")
        if not 1 <= self.max_new_tokens <= 65536:
            raise ValueError("max_new_tokens must be between 1 and 65536")
        if self.allowed_pitches is not None and not self.grammar:
            raise ValueError("a pitch/key lock needs grammar-aware sampling (grammar=True)")


@dataclass
class Candidate:
    """One generated continuation/infill: the new notes (absolute ticks in the source clip) and its tokens."""

    notes: list[Note]
    token_ids: list[int]
    bars: int
    finished_by: str  # "bars", "eos", "tokens", "cancelled"
    clip: Clip  # the new notes with the tempo map and time signatures they were written in


@dataclass
class NoteEvent:
    candidate: int
    note: Note


class GeneratedRow:
    """One row being generated: its history (prompt + accepted tokens), its grammar, and the stopping
    rules — EOS; the Bar that would open one bar too many (not emitted); the token budget.
    `Policy.stream_ids` and the host's batched scheduler both advance rows with it, so they stop alike."""

    __slots__ = ("history", "grammar", "new_bars", "produced", "done", "finish")

    def __init__(self, prompt: Sequence[int], grammar=None):
        self.history = list(prompt)
        self.grammar = grammar
        self.new_bars = 0
        self.produced = 0
        self.done = False
        self.finish = "tokens"

    def accept(self, token: int, tok: RemiTokenizer, settings: "GenerationSettings", bar_offset: int = 0) -> bool:
        """Apply a sampled token. True when it belongs to the output (it was appended); False when it
        ended the row instead (EOS, or the Bar past the budget). Check `done` after either."""
        if token == tok.eos_id:
            self.done, self.finish = True, "eos"
            return False
        if token == tok.bar_id:
            self.new_bars += 1
            if settings.bars is not None and self.new_bars > settings.bars + bar_offset:
                self.done, self.finish = True, "bars"
                return False
        self.history.append(token)
        self.produced += 1
        if self.grammar is not None:
            self.grammar.observe(token)
        if self.produced >= settings.max_new_tokens:
            self.done, self.finish = True, "tokens"
        return True

    def window(self, context: int, bar_id: int) -> list[int]:
        """What the decoder sees: the whole history while it fits, else (sliding past the context) the
        recent half starting at a bar line, so the model sees whole bars."""
        h = self.history
        if len(h) + 1 <= context:
            return h
        tail = h[-(context // 2):]
        bars = [i for i, t in enumerate(tail) if t == bar_id]
        return tail[bars[0]:] if bars else tail


def new_rows(tok: RemiTokenizer, prompts: Sequence[Sequence[int]], settings: "GenerationSettings",
             position_floor: int = 0, make: Callable | None = None) -> list:
    """A row per prompt, with its grammar when `settings.grammar` (key/pitch lock, position floor).
    `make(index, prompt, grammar)` builds each row (default: a GeneratedRow)."""
    allowed = None
    if settings.allowed_pitches is not None:
        allowed = np.zeros(128, dtype=bool)
        allowed[[p for p in settings.allowed_pitches if 0 <= p < 128]] = True
    rows = []
    for i, prompt in enumerate(prompts):
        grammar = None
        if settings.grammar:
            grammar = tok.grammar()
            grammar.observe_many(prompt)
            grammar.allowed_pitches = allowed
            grammar.min_position = position_floor
        rows.append(make(i, prompt, grammar) if make is not None else GeneratedRow(prompt, grammar))
    return rows


def left_padded(windows: Sequence[Sequence[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Token windows as one left-padded batch (ids, attention mask), the layout `Phi3Decoder.prefill` takes."""
    width = max(len(w) for w in windows)
    ids = torch.full((len(windows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(windows), width), dtype=torch.bool)
    for r, w in enumerate(windows):
        if w:
            ids[r, width - len(w):] = torch.tensor(w, dtype=torch.long)
            mask[r, width - len(w):] = True
    return ids, mask


class Policy:
    """A Phi-3 REMI model with its tokenizer."""

    def __init__(self, model, tokenizer: RemiTokenizer, path: Path | None = None):
        self.model = model
        self.tokenizer = tokenizer
        self.path = path
        self.model.eval()

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

    # ------------------------------------------------------------------ core sampling loop
    def stream_ids(
        self,
        prompts: Sequence[Sequence[int]],
        settings: GenerationSettings,
        *,
        bar_offset: int = 0,
        should_stop: Callable[[], bool] | None = None,
        position_floor: int = 0,
    ) -> Iterator[tuple[int, int]]:
        """Sample continuations of each prompt; yields (row, token_id) as tokens are produced.

        Rows stop on EOS, after `settings.bars` new Bar tokens (the Bar that would start one bar
        too many is not emitted), or after `settings.max_new_tokens`.
        `bar_offset`: extra Bar tokens allowed beyond `settings.bars` (-1 when the prompt itself opens bar 1).
        """
        from engine.fastdecode import Phi3Decoder, sample_next

        settings.validate()
        tok = self.tokenizer
        batch = len(prompts)
        if batch == 0:
            return
        device = self.device
        gen = torch.Generator(device=device)  # sampling happens where the logits are
        gen.manual_seed(settings.seed if settings.seed is not None else random.randrange(2**31))
        max_ctx = self.context_length
        rows = new_rows(tok, prompts, settings, position_floor)
        decoder = Phi3Decoder(self.model, batch_size=batch, max_len=max_ctx, device=device)
        self.last_finish = [row.finish for row in rows]

        def prefill_windows() -> torch.Tensor:
            ids, mask = left_padded([row.window(max_ctx, tok.bar_id) for row in rows], tok.pad_id)
            decoder.reset()
            return decoder.prefill(ids.to(device), mask.to(device))

        with torch.inference_mode():
            logits = prefill_windows()
            while not all(row.done for row in rows):
                if should_stop is not None and should_stop():
                    self.last_finish = ["cancelled" if not row.done else row.finish for row in rows]
                    return
                mask_t = None
                if settings.grammar:
                    mask_t = torch.from_numpy(np.stack([row.grammar.allowed() for row in rows])).to(logits.device)
                next_ids = sample_next(logits, temperature=settings.temperature, top_p=settings.top_p,
                                       generator=gen, mask=mask_t).cpu()
                for r, row in enumerate(rows):
                    t = int(next_ids[r])
                    if row.done or not row.accept(t, tok, settings, bar_offset):
                        next_ids[r] = tok.pad_id
                        self.last_finish[r] = row.finish
                        continue
                    self.last_finish[r] = row.finish
                    yield r, t
                if all(row.done for row in rows):
                    break
                if decoder.length >= max_ctx:
                    logits = prefill_windows()
                else:
                    logits = decoder.step(next_ids.to(device))

    # ------------------------------------------------------------------ music-level generation
    def continue_clip(
        self,
        clip: Clip,
        settings: GenerationSettings,
        at_tick: int | None = None,
        on_note: Callable[[NoteEvent], None] | None = None,
        should_stop: Callable[[], bool] | None = None,
    ) -> list[Candidate]:
        """Continue `clip` from `at_tick` (default: its end). New notes are in the clip's ticks."""
        tok = self.tokenizer
        at = clip.end_tick if at_tick is None else at_tick
        prompt = tok.continuation_prompt(clip, at)
        # The prompt ends inside the open bar that contains `at`: the model fills the rest of that
        # bar, then writes new bars up to `settings.bars` bars counted from it.
        return self._run([prompt] * settings.candidates, settings, clip.ppq, bar_offset=-1,
                         on_note=on_note, should_stop=should_stop, min_tick=at,
                         position_floor=tok.position_floor(clip, at))

    def generate_procedural(self, settings: GenerationSettings, ppq: int = 480, first_note: bool = False,
                            on_note=None, should_stop=None) -> tuple[list[Candidate], list[list[int]]]:
        """Paper §3.5: each candidate from its own procedural prompt (Bar + time signature + tempo)."""
        rng = random.Random(settings.seed)
        prompts = [self.tokenizer.procedural_prompt(rng, first_note=first_note) for _ in range(settings.candidates)]
        # The prompt opens bar 1 (Bar TimeSig Position Tempo), so `bars` in total = bars - 1 new Bar tokens.
        cands = self._run(prompts, settings, ppq, bar_offset=-1, on_note=on_note, should_stop=should_stop)
        return cands, prompts

    def infill(self, clip: Clip, start_bar: int, end_bar: int, settings: GenerationSettings,
               on_note=None, should_stop=None) -> list[Candidate]:
        """Regenerate bars [start_bar, end_bar) given what comes before and after (bar-level FIM)."""
        if not 0 <= start_bar < end_bar:
            raise ValueError("infill needs 0 <= start_bar < end_bar")
        tok = self.tokenizer
        prompt = tok.infill_prompt(clip, start_bar, end_bar)
        span = end_bar - start_bar
        s = GenerationSettings(**{**settings.__dict__, "bars": span})
        start_tick, end_tick = clip.bar_tick(start_bar), clip.bar_tick(end_bar)
        ts = clip.time_signature_at(start_tick)
        cands = self._run([prompt] * s.candidates, s, clip.ppq, should_stop=should_stop,
                          infill=(start_tick, (ts.numerator, ts.denominator), clip.tempo_at(start_tick)))
        out = []
        for c in cands:
            notes = [n for n in c.notes if start_tick <= n.start < end_tick]
            notes = [Note(n.start, n.pitch, min(n.duration, end_tick - n.start), n.velocity) for n in notes]
            out.append(Candidate(notes, c.token_ids, c.bars, c.finished_by, clip.with_notes(notes)))
            if on_note:
                for n in notes:
                    on_note(NoteEvent(len(out) - 1, n))
        return out

    def _run(self, prompts, settings, ppq, *, bar_offset=0, on_note=None, should_stop=None, min_tick=0,
             infill=None, position_floor=0) -> list[Candidate]:
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
        token_ids: list[list[int]] = [[] for _ in range(n)]
        notes: list[list[Note]] = [[] for _ in range(n)]
        for row, t in self.stream_ids(prompts, settings, bar_offset=bar_offset, should_stop=should_stop,
                                      position_floor=position_floor):
            token_ids[row].append(t)
            d, offset = decoders[row]
            for note in d.feed(t):
                if offset:
                    note = Note(note.start + offset, note.pitch, note.duration, note.velocity)
                if note.start < min_tick:
                    continue  # a model writing into the past of an open bar: not part of the continuation
                notes[row].append(note)
                if on_note is not None and infill is None:
                    on_note(NoteEvent(row, note))
        finish = getattr(self, "last_finish", ["tokens"] * n)
        return [Candidate(notes[r], token_ids[r], sum(1 for t in token_ids[r] if t == tok.bar_id), finish[r],
                          decoders[r][0].clip().with_notes(notes[r]))
                for r in range(n)]

