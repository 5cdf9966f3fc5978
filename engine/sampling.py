"""The one token-sampling loop: rows of one or more requests, sampled together over one KV cache.

`SamplingLoop` holds the rows being generated, the `Phi3Decoder` with their KV cache and the next-token
logits. Each request is a `RowGroup` (its rows, its `RowRules`, its own random generator); `step()`
samples every live group, applies each row's stopping rules and feeds the accepted tokens back.
Everything that generates tokens drives this loop:

- `Policy` (engine/policy.py) runs one group alone (`LocalSampler`),
- the host's scheduler (engine/host/scheduler.py) adds and drops the groups of concurrent requests
  on one long-lived loop (`add`, `compact`),
- GRPO rollouts (training/grpo.py `fast_generate`) run one group with EOS kept in the completion.

A group's rows sample exactly what they would alone: the sampling math runs once over the batch but each
group draws from its own generator on its own rows (done rows too), and joining, compacting, growing the
cache or sliding past the context never changes a row's next logits.

This module must never import Qt.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from dataclasses import dataclass
from typing import Callable, Iterator, Mapping, Sequence

import numpy as np
import torch

from engine.fastdecode import PackedWeights, Phi3Decoder

__all__ = ["RowRules", "GeneratedRow", "RowGroup", "SamplingLoop", "PromptCache", "LocalSampler", "left_padded",
           "SampleGroup", "sampling_distribution", "sample_rows", "sample_next"]


# ============================================================================ the sampling maths
@dataclass
class SampleGroup:
    """Rows [start, start+n) of a batch sampled with one request's settings and random generator."""

    start: int
    n: int
    temperature: float
    top_p: float
    generator: torch.Generator | None
    masks: np.ndarray | None  # [n, V] bool, True = allowed, or None
    top_k: int = 0  # 0: no top-k cut
    # ((token ids of a family, factor), ...): that family's tokens are sampled at temperature × factor
    # among themselves while the family keeps the probability it has at `temperature` (see sample_rows).
    family_factors: tuple[tuple[tuple[int, ...], float], ...] = ()


def sampling_distribution(logits: torch.Tensor, groups: Sequence[SampleGroup]) -> tuple[torch.Tensor, torch.Tensor]:
    """What `sample_rows` draws from: (the logits after masks and top-k [B, V] fp32, the probabilities [B, V]
    after temperature, family factors and top-p, not renormalised; rows greedy or in no group: 0)."""
    logits = logits.float()
    if any(g.masks is not None for g in groups):
        allowed = np.ones(tuple(logits.shape), dtype=bool)
        for g in groups:
            if g.masks is not None:
                allowed[g.start:g.start + g.n] = g.masks
        mask = torch.from_numpy(allowed).to(logits.device)
        usable = mask.any(dim=-1, keepdim=True)  # a row that allows nothing keeps its unmasked distribution
        logits = logits.masked_fill(~mask & usable, float("-inf"))
    for g in groups:
        if g.top_k and g.top_k < logits.shape[1]:
            rows = slice(g.start, g.start + g.n)
            kth = torch.topk(logits[rows], g.top_k, dim=-1).values[:, -1:]
            logits[rows] = logits[rows].masked_fill(logits[rows] < kth, float("-inf"))
    probs = torch.zeros_like(logits)  # rows in no group stay 0: never drawn from
    for temperature in {g.temperature for g in groups if g.temperature > 0}:
        rows = torch.tensor([g.start + k for g in groups if g.temperature == temperature for k in range(g.n)],
                            device=logits.device)
        # A Python scalar divisor for every group, so batched and alone are bit-identical.
        probs[rows] = torch.softmax(logits[rows] / temperature, dim=-1)
    for g in groups:
        if g.temperature == 0:
            continue
        for ids, factor in g.family_factors:
            if factor == 1.0 or not len(ids):
                continue
            rows = slice(g.start, g.start + g.n)
            cols = torch.as_tensor(ids, dtype=torch.long, device=logits.device)
            mass = probs[rows][:, cols].sum(dim=-1, keepdim=True)
            # A row whose family is all masked has mass 0 and NaN shares: it keeps its zeros.
            shares = torch.softmax(logits[rows][:, cols] / (g.temperature * factor), dim=-1).nan_to_num_(0.0)
            probs[rows, cols] = mass * shares
    if any(g.top_p < 1.0 and g.temperature > 0 for g in groups):
        threshold = torch.full((logits.shape[0], 1), math.inf, device=logits.device)
        for g in groups:
            if g.top_p < 1.0:
                threshold[g.start:g.start + g.n] = g.top_p
        sorted_probs, order = probs.sort(dim=-1, descending=True)
        mass_before = sorted_probs.cumsum(dim=-1) - sorted_probs
        sorted_probs = sorted_probs.masked_fill(mass_before >= threshold, 0.0)
        probs = torch.zeros_like(probs).scatter_(-1, order, sorted_probs)
    return logits, probs


def sample_rows(logits: torch.Tensor, groups: Sequence[SampleGroup]) -> torch.Tensor:
    """Pick one token per row of logits [B, V] for many groups at once → LongTensor [B] (rows in no group: 0).

    Per group: temperature 0 is greedy; top_k > 0 keeps the k most likely tokens; family_factors reshape
    the distribution within token families: a family (e.g. the Pitch tokens) keeps the total probability
    it has at `temperature`, and its tokens share it as at temperature × factor, so every other token's
    probability is unchanged (dividing only some logits by another temperature would instead move mass
    between families by the logits' arbitrary offset); top_p < 1 then keeps the
    smallest set of most likely tokens whose probability reaches top_p (the top token always survives);
    masks [n, V] (True = allowed) restrict the choice, and a row whose mask allows nothing falls back to
    its unmasked distribution instead of producing NaNs.
    The masking, softmax and top-p work runs once over all rows (once per distinct temperature); only the
    draw is per group, from its own generator, on its own rows, so each group samples exactly what it
    would alone.
    """
    if logits.dim() != 2:
        raise ValueError(f"logits must be [B, V], got {tuple(logits.shape)}")
    for g in groups:
        if g.temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {g.temperature}")
        if not 0.0 < g.top_p <= 1.0:
            raise ValueError(f"top_p must be in (0, 1], got {g.top_p}")
        if g.masks is not None and tuple(g.masks.shape) != (g.n, logits.shape[1]):
            raise ValueError(f"mask shape {tuple(g.masks.shape)} != logits shape {(g.n, logits.shape[1])}")
        for ids, factor in g.family_factors:
            if not factor > 0 or not math.isfinite(factor):
                raise ValueError(f"a family temperature factor must be > 0, got {factor}")
            if len(ids) and not 0 <= min(ids) <= max(ids) < logits.shape[1]:
                raise ValueError(f"family token ids must be in [0, {logits.shape[1]})")
    out = torch.zeros(logits.shape[0], dtype=torch.long, device=logits.device)
    if not groups:
        return out
    logits, probs = sampling_distribution(logits, groups)
    # The draw: one uniform number per row from its group's generator, then the inverse CDF for all rows
    # at once (one call per group to torch.multinomial cost more than the rest of the sampling together).
    u = torch.zeros(logits.shape[0], 1, dtype=torch.float64, device=logits.device)
    for g in groups:
        if g.temperature > 0:
            u[g.start:g.start + g.n, 0] = torch.rand(g.n, generator=g.generator, dtype=torch.float64,
                                                     device=logits.device)
    cdf = probs.double().cumsum(dim=-1)
    total = cdf[:, -1:]
    # Strictly below the total, so the first entry above it is a token of non-zero probability.
    target = torch.minimum(u * total, torch.nextafter(total, torch.zeros_like(total)))
    drawn = torch.searchsorted(cdf, target, right=True).squeeze(-1).clamp_(max=logits.shape[1] - 1)
    for g in groups:
        rows = slice(g.start, g.start + g.n)
        out[rows] = logits[rows].argmax(dim=-1) if g.temperature == 0 else drawn[rows]
    return out


def sample_next(
    logits: torch.Tensor,
    temperature: float = 1.0,
    top_p: float = 1.0,
    generator: torch.Generator | None = None,
    mask: torch.Tensor | None = None,
    top_k: int = 0,
    family_factors: tuple[tuple[tuple[int, ...], float], ...] = (),
) -> torch.Tensor:
    """`sample_rows` for one group of rows: logits [B, V] → LongTensor [B]; mask [B, V] (True = allowed)."""
    if logits.dim() != 2:
        raise ValueError(f"logits must be [B, V], got {tuple(logits.shape)}")
    if mask is not None:
        if mask.shape != logits.shape:
            raise ValueError(f"mask shape {tuple(mask.shape)} != logits shape {tuple(logits.shape)}")
        mask = mask.to(dtype=torch.bool).cpu().numpy()
    return sample_rows(logits, [SampleGroup(0, logits.shape[0], temperature, top_p, generator, mask, top_k,
                                            family_factors)])


# ============================================================================ the loop


@dataclass(frozen=True)
class RowRules:
    """How one request's rows are sampled and when each row stops.

    A row stops on a stop token (EOS), at the token budget, or — when `bars` is set — at the Bar token
    that would open bar `bars + 1` counted from the continuation point (that Bar is not emitted). A
    request for a number of bars gets them: its stop tokens are masked out until then, so only the
    token budget (or a cancel) can end it early, and it says so (`GeneratedRow.finish`).
    """

    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0  # 0: no top-k cut
    # ((token ids, factor), ...): per token family, sample its tokens at temperature × factor among themselves
    # (the family keeps its probability; sample_rows)
    family_factors: tuple[tuple[tuple[int, ...], float], ...] = ()
    bars: int | None = None
    max_new_tokens: int = 1024
    stop_ids: tuple[int, ...] = ()
    keep_stop: bool = False  # the stop token is part of the output (GRPO completions end with EOS, as TRL keeps it)
    bar_id: int | None = None  # the Bar token (needed when `bars` is set)
    # {(numerator, denominator): TimeSig token}: when set, a grammar row's Bar is followed by the TimeSig
    # in force (a continuation keeps the musician's meter, so its bars are the clip's bars).
    meter_ids: Mapping[tuple[int, int], int] | None = None

    def __post_init__(self):
        if self.bars is not None and self.bar_id is None:
            raise ValueError("a bar budget needs the Bar token id")


class GeneratedRow:
    """One row being generated: its history (prompt + accepted tokens), its grammar, its bar count
    (bars of the output so far, counted from the continuation point) and why it stopped."""

    __slots__ = ("history", "grammar", "bars", "produced", "done", "finish", "prompt_length")

    def __init__(self, prompt: Sequence[int], grammar=None, *, opened_bars: int = 0):
        """`opened_bars`: 1 when the prompt itself opens the first bar of the output (it ends with an empty
        bar at the continuation point: a continuation from a bar line, a procedural prompt), else 0 (the
        prompt ends mid-bar: the rest of that bar is not counted, the next Bar opens bar 1)."""
        self.history = list(prompt)
        self.prompt_length = len(self.history)
        self.grammar = grammar
        self.bars = opened_bars
        self.produced = 0
        self.done = False
        self.finish = "tokens"

    @property
    def output(self) -> list[int]:
        return self.history[self.prompt_length:]

    def accept(self, token: int, rules: RowRules) -> bool:
        """Apply a sampled token. True when it belongs to the output (it was appended); False when it
        ended the row instead (a stop token not kept, or the Bar past the budget). Check `done` after."""
        if token in rules.stop_ids:
            self.done, self.finish = True, "eos"
            if not rules.keep_stop:
                return False
        elif rules.bar_id is not None and token == rules.bar_id:
            if rules.bars is not None and self.bars >= rules.bars:
                self.done, self.finish = True, "bars"
                return False
            self.bars += 1
        self.history.append(token)
        self.produced += 1
        if self.grammar is not None:
            self.grammar.observe(token)
        if not self.done and self.produced >= rules.max_new_tokens:
            self.done, self.finish = True, "tokens"
        return True

    def window(self, context: int, bar_id: int | None) -> list[int]:
        """What the decoder sees: the whole history while it fits, else (sliding past the context) the
        recent half starting at a bar line, so the model sees whole bars."""
        h = self.history
        if len(h) + 1 <= context:
            return h
        tail = h[-(context // 2):]
        bars = [i for i, t in enumerate(tail) if t == bar_id] if bar_id is not None else []
        return tail[bars[0]:] if bars else tail


class RowGroup:
    """One request's rows, sampled with its rules and its own random generator."""

    def __init__(self, rows: Sequence[GeneratedRow], rules: RowRules, generator: torch.Generator | None):
        self.rows = list(rows)
        self.rules = rules
        self.generator = generator
        self.cancelled = False  # set by whoever drives the loop: the group ends, its rows stop being sampled

    @property
    def done(self) -> bool:
        return all(r.done for r in self.rows)

    @property
    def ended(self) -> bool:
        return self.cancelled or self.done

    def finish(self) -> list[str]:
        return [r.finish if r.done else "cancelled" for r in self.rows]

    def masks(self, vocab: int) -> np.ndarray | None:
        """[rows, vocab] bool of what each row may sample next (grammar; stop tokens while bars are due),
        or None when nothing is masked."""
        rules = self.rules
        forbid = list(rules.stop_ids) if rules.bars is not None else []
        grammar = self.rows[0].grammar is not None
        if not grammar and not forbid:
            return None
        if grammar:
            m = np.stack([r.grammar.allowed() for r in self.rows])  # a fresh array: safe to edit
            if rules.meter_ids is not None:
                for k, r in enumerate(self.rows):
                    meter = rules.meter_ids.get(tuple(r.grammar.ts)) if r.grammar.last_kind == "Bar" else None
                    if meter is not None:
                        m[k] = False
                        m[k, meter] = True
        else:
            m = np.ones((len(self.rows), vocab), dtype=bool)
        if forbid:
            m[:, forbid] = False
        return m


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


class PromptCache:
    """Prefilled prompt windows (KV cache + next logits) for reuse across requests: the studio re-sends the
    same sketch, and every candidate of a request shares its prompt. Keyed by the model, its packed
    weights and the token window; least recently used first out. A snapshot of the weights: `clear()`
    after they change in place."""

    def __init__(self, max_entries: int = 64):
        self.max_entries = max_entries
        self._entries: OrderedDict[tuple, tuple[Phi3Decoder, int, torch.Tensor]] = OrderedDict()
        self._owner: tuple | None = None
        self.hits = 0
        self.misses = 0

    def _check_owner(self, model, packed) -> None:
        owner = (id(model), id(packed))
        if owner != self._owner:
            self._entries.clear()
            self._owner = owner

    def get(self, model, packed, window: tuple[int, ...]):
        self._check_owner(model, packed)
        entry = self._entries.get(window)
        if entry is not None:
            self._entries.move_to_end(window)
            self.hits += 1
        else:
            self.misses += 1
        return entry

    def put(self, model, packed, window: tuple[int, ...], entry) -> None:
        self._check_owner(model, packed)
        self._entries[window] = entry
        self._entries.move_to_end(window)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)

    def clear(self) -> None:
        self._entries.clear()


@dataclass
class LoopStats:
    prefills: int = 0  # prefill calls (each may cover many rows)
    prefill_rows: int = 0  # rows computed by prefill (distinct windows not in the cache)
    reused_rows: int = 0  # rows whose prompt came from the cache or a twin row
    joins: int = 0  # add() into a running loop
    compactions: int = 0
    grows: int = 0
    reprefills: int = 0  # slides past the context window


class SamplingLoop:
    """The rows being generated together, their decoder (KV cache) and next-token logits."""

    def __init__(self, model, *, pad_id: int, bar_id: int | None, context: int | None = None, device=None,
                 packed: PackedWeights | None = None, headroom: int = 256, prompt_cache: PromptCache | None = None,
                 max_rows: int | None = None):
        """`headroom`: positions allocated beyond the longest row when the cache is (re)allocated (callers
        that know their budget pass it, so the cache never grows); `context`: where rows slide (default:
        the model's positions); `max_rows`: the most rows `add` will hold (the cache keeps room for them, so
        joining and dropping rows happen in place instead of copying the whole cache)."""
        self.model = model
        self.pad_id = pad_id
        self.bar_id = bar_id
        self.context = int(context or model.config.max_position_embeddings)
        self.device = torch.device(device) if device is not None else next(model.parameters()).device
        self.packed = packed
        self.headroom = headroom
        self.cache = prompt_cache
        self.max_rows = max_rows
        self.groups: list[RowGroup] = []
        self.decoder: Phi3Decoder | None = None
        self.logits: torch.Tensor | None = None
        self.stats = LoopStats()

    # ------------------------------------------------------------------ rows
    @property
    def rows(self) -> list[GeneratedRow]:
        return [r for g in self.groups for r in g.rows]

    @property
    def live_groups(self) -> list[RowGroup]:
        return [g for g in self.groups if not g.ended]

    def live_rows(self) -> int:
        return sum(len(g.rows) for g in self.groups if not g.ended)

    def _capacity(self, length: int) -> int:
        return min(self.context, 128 * math.ceil((length + self.headroom) / 128))

    def _prefill(self, windows: list[list[int]], capacity: int | None = None):
        ids, mask = left_padded(windows, self.pad_id)
        decoder = Phi3Decoder(self.model, batch_size=len(windows), max_len=capacity or ids.shape[1],
                              device=self.device, packed=self.packed)
        logits = decoder.prefill(ids.to(self.device), mask.to(self.device))
        self.stats.prefills += 1
        self.stats.prefill_rows += len(windows)
        return decoder, logits

    # ------------------------------------------------------------------ joining and dropping groups
    def add(self, groups: Sequence[RowGroup]) -> None:
        """Start sampling these groups: their prompt windows are prefilled together (each distinct window once,
        in bands of similar length; windows in the prompt cache not at all) and join the running rows (in
        place when the cache has room, else in a new cache)."""
        groups = list(groups)
        rows = [r for g in groups for r in g.rows]
        if not rows:
            return
        with torch.inference_mode():
            windows = [tuple(r.window(self.context, self.bar_id)) for r in rows]
            found: dict[tuple, tuple] = {}
            if self.cache is not None:
                for w in dict.fromkeys(windows):
                    entry = self.cache.get(self.model, self.packed, w)
                    if entry is not None:
                        found[w] = entry
            missing = [w for w in dict.fromkeys(windows) if w not in found]
            # One prefill per band of similar lengths: left-padding a 5-token prompt to a 500-token one
            # would compute 495 pad positions (and the long row would stop short rows joining in place).
            bands: list[list[tuple]] = []
            for w in sorted(missing, key=len):
                if bands and len(w) <= 2 * len(bands[-1][0]):
                    bands[-1].append(w)
                else:
                    bands.append([w])
            for band in bands:
                decoder, logits = self._prefill([list(w) for w in band])
                for i, w in enumerate(band):
                    found[w] = (decoder, i, logits[i:i + 1])
                    if self.cache is not None:
                        self.cache.put(self.model, self.packed, w, found[w])
            self.stats.reused_rows += len(rows) - len(missing)
            # New rows in order: consecutive rows from the same source decoder make one part.
            parts: list[tuple[Phi3Decoder, list[int]]] = []
            for w in windows:
                d, i, _ = found[w]
                if parts and parts[-1][0] is d:
                    parts[-1][1].append(i)
                else:
                    parts.append((d, [i]))
            keep = self._kept_indices() if self.decoder is not None else []
            new_logits = [found[w][2] for w in windows]
            if keep:
                self.stats.joins += 1
            if keep and self.decoder.can_append(len(rows), max(d.length for d, _ in parts)):
                # In place: the running rows stay where they are (finished ones dropped), the new ones follow.
                if len(keep) < self.decoder.batch_size:
                    self.decoder.keep_rows(keep)
                for d, idx in parts:
                    self.decoder.append(d, idx)
            else:
                if keep:
                    parts.insert(0, (self.decoder, keep))
                length = max(d.length for d, _ in parts)
                capacity = max(self.decoder.max_len if keep else 0, self._capacity(length),
                               length + 1)  # at the context limit: the next step slides
                self.decoder = Phi3Decoder.splice(self.model, parts, capacity, self.max_rows)
            self.logits = torch.cat(([self.logits[keep]] if keep else []) + new_logits)
            self.groups = [g for g in self.groups if not g.ended] + groups

    def _kept_indices(self) -> list[int]:
        out, start = [], 0
        for g in self.groups:
            if not g.ended:
                out += range(start, start + len(g.rows))
            start += len(g.rows)
        return out

    def compact(self) -> None:
        """Drop the rows of ended groups from the batch (and from the cache)."""
        keep = self._kept_indices()
        if len(keep) == sum(len(g.rows) for g in self.groups):
            return
        self.groups = [g for g in self.groups if not g.ended]
        if keep:
            self.decoder.keep_rows(keep)
            self.logits = self.logits[keep]
        else:
            self.decoder, self.logits = None, None
        self.stats.compactions += 1

    # ------------------------------------------------------------------ the step
    def step(self) -> list[tuple[RowGroup, int, int]]:
        """Sample the next token of every live group's rows, apply their rules and advance the decoder.
        Returns the accepted tokens as (group, row index in the group, token)."""
        out: list[tuple[RowGroup, int, int]] = []
        if self.decoder is None:
            return out
        with torch.inference_mode():
            sample_groups, start = [], 0
            for g in self.groups:
                if not g.ended:
                    r = g.rules
                    sample_groups.append(SampleGroup(start, len(g.rows), r.temperature, r.top_p, g.generator,
                                                     g.masks(self.logits.shape[1]), r.top_k, r.family_factors))
                start += len(g.rows)
            if not sample_groups:
                return out
            sampled = sample_rows(self.logits, sample_groups).tolist()
            next_ids = [self.pad_id] * len(sampled)
            start = 0
            for g in self.groups:
                n = len(g.rows)
                if not g.ended:
                    for k, row in enumerate(g.rows):
                        if row.done:
                            continue
                        t = sampled[start + k]
                        if row.accept(t, g.rules):
                            next_ids[start + k] = t
                            out.append((g, k, t))
                start += n
            if all(g.ended for g in self.groups):
                return out
            if self.decoder.length >= self.context:
                self._reprefill()  # slide past the context window: the accepted tokens are in the histories
            else:
                if self.decoder.length >= self.decoder.max_len:
                    self._grow()
                self.logits = self.decoder.step(torch.tensor(next_ids, dtype=torch.long, device=self.device))
        return out

    def _grow(self) -> None:
        capacity = min(self.context, max(2 * self.decoder.max_len, self.decoder.length + self.headroom))
        self.decoder = Phi3Decoder.splice(self.model, [(self.decoder, range(self.decoder.batch_size))], capacity,
                                          self.max_rows)
        self.stats.grows += 1

    def _reprefill(self) -> None:
        self.groups = [g for g in self.groups if not g.ended]
        windows = [r.window(self.context, self.bar_id) for r in self.rows]
        self.decoder, self.logits = self._prefill(windows, self.context)
        self.stats.reprefills += 1


class LocalSampler:
    """Runs a group on a loop of its own, in the caller's thread (the policy used directly)."""

    def sample(self, model, group: RowGroup, *, pad_id: int, bar_id: int | None, context: int,
               should_stop: Callable[[], bool] | None = None) -> Iterator[tuple[int, int]]:
        """Yields (row index, token) as tokens are accepted, until the group ends."""
        headroom = max(len(r.history) for r in group.rows) + group.rules.max_new_tokens
        loop = SamplingLoop(model, pad_id=pad_id, bar_id=bar_id, context=context, headroom=headroom)
        loop.add([group])
        while not group.ended:
            if should_stop is not None and should_stop():
                group.cancelled = True
                return
            for _g, k, t in loop.step():
                yield k, t
