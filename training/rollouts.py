"""GRPO rollouts that sample like the studio, scored with the log-probabilities they were drawn from.

The studio never plays raw model samples: it masks what the REMI grammar forbids next and reshapes
token families by the card's factors (`engine.api.DEFAULT_TEMPERATURE_FACTORS`). Measured on
GRPO's procedural prompts with the shipped model (`benchmarks/bench_rollout_gap.py`, BENCHMARKS.md),
raw samples put ~4 % of their probability on tokens the grammar forbids and most 256-token completions
contain one, so tuning on raw samples tunes outputs the musician can never hear.

**How this stays on-policy.** With `rollouts="studio"` the policy GRPO optimises *is* the studio's
sampler over the model's logits: q(token) = grammar mask, then softmax at the rollout temperature, then
each factored family's share redistributed at temperature × factor (exactly `engine.sampling.
sampling_distribution`). Rollouts are drawn from q by the one sampling loop, and the trainer's
log-probabilities — for the loss, the PPO ratio, the KL to the reference and the entropy — are log q of
the same tokens, recomputed from the live weights with the same masks (`studio_log_probs`, replacing TRL's
fused LM head for this one model). So π_old, π_θ and the sampler are one distribution, and the
gradient of log q flows through the logits as TRL's does through log_softmax. Only top-p is left out
of log q, as TRL leaves it out (GRPO's default top_p is 1.0). `rollouts="model"` keeps TRL's plain
π_T for both (and samples without grammar), as before.

`SmartGRPOTrainer` (built lazily: importing TRL is slow) overrides three TRL 1.16 methods; the
signatures are pinned by tests/test_grpo.py.
"""

from __future__ import annotations

import time
from collections import defaultdict
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

from engine.errors import UserError

# Masked logits: finite (an -inf would turn 0 × -inf into NaN in the entropy and the padded positions).
_MASKED = -1e9


@dataclass(frozen=True)
class StudioSampler:
    """What makes the studio's sampling differ from the model's own: the grammar and the family factors."""

    grammar: Callable[[], object]  # a fresh GrammarState (tokenizer.grammar)
    family_factors: tuple[tuple[tuple[int, ...], float], ...]  # ((token ids, factor), ...), factors != 1

    @classmethod
    def for_tokenizer(cls, tokenizer, factors: dict[str, float]) -> "StudioSampler":
        fams = tuple((tuple(int(i) for i in tokenizer.kind_ids.get(family, ())), float(f))
                     for family, f in sorted(factors.items()) if f != 1.0)
        return cls(tokenizer.grammar, fams)

    def masks(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, keep: int, vocab: int) -> np.ndarray:
        """[B, keep, V] bool: what the grammar allowed for each of the last `keep` tokens of each row, replayed
        over the row's real tokens (padding skipped, as the sampler never saw it)."""
        ids, att = input_ids.tolist(), attention_mask.tolist()
        width = len(ids[0]) if ids else 0
        out = np.ones((len(ids), keep, vocab), dtype=bool)
        first = width - keep  # the first scored token's position
        for b, (row, real) in enumerate(zip(ids, att)):
            g = self.grammar()
            for pos in range(width):
                if pos >= first and real[pos]:
                    out[b, pos - first] = g.allowed()[:vocab]
                if real[pos]:
                    g.observe(row[pos])
        return out

    def log_probs(self, logits: torch.Tensor, allowed: np.ndarray | None, temperature: float) -> torch.Tensor:
        """log q over the vocabulary for logits [..., V] (differentiable): masks, temperature, family shares."""
        logits = logits.float()
        if allowed is not None:
            logits = logits.masked_fill(~torch.from_numpy(allowed).to(logits.device), _MASKED)
        logq = torch.log_softmax(logits / temperature, dim=-1)
        if not self.family_factors:
            return logq
        parts = logq.clone()
        for ids, factor in self.family_factors:
            cols = torch.as_tensor(ids, dtype=torch.long, device=logits.device)
            family_mass = torch.logsumexp(logq[..., cols], dim=-1, keepdim=True)
            parts[..., cols] = family_mass + torch.log_softmax(logits[..., cols] / (temperature * factor), dim=-1)
        return parts


def studio_log_probs(model, sampler: StudioSampler, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                     logits_to_keep: int, temperature: float, compute_entropy: bool = False):
    """(log q of the last `logits_to_keep` tokens [B, K], entropies of q [B, K] or None); 0 where padded."""
    out = model(input_ids=input_ids, attention_mask=attention_mask, logits_to_keep=logits_to_keep + 1)
    logits = out.logits[:, :-1, :]  # position i predicts token i + 1
    targets = input_ids[:, -logits_to_keep:]
    allowed = sampler.masks(input_ids, attention_mask, logits_to_keep, logits.shape[-1])
    logq = sampler.log_probs(logits, allowed, temperature)
    real = attention_mask[:, -logits_to_keep:].bool()
    logps = logq.gather(-1, targets.unsqueeze(-1)).squeeze(-1).masked_fill(~real, 0.0)
    entropy = None
    if compute_entropy:
        entropy = -(logq.exp() * logq).sum(-1).masked_fill(~real, 0.0)
    return logps, entropy


def fast_generate(model, prompt_ids: list[list[int]], *, max_new_tokens: int, temperature: float, top_p: float,
                  top_k: int, eos_ids: list[int], pad_id: int, generator: torch.Generator,
                  sampler: StudioSampler | None = None) -> list[list[int]]:
    """Sample completions on the one sampling loop (`engine.sampling`) over the live, exact weights.

    Without `sampler`: the model's own distribution, as `generate(do_sample=True)` with these settings.
    With it: the studio's (grammar masks, family factors). Each completion ends with its first EOS (kept,
    as TRL keeps it) or at `max_new_tokens`. Prompts of different lengths are left-padded in the KV cache.
    """
    from engine.sampling import GeneratedRow, LocalSampler, RowGroup, RowRules

    rules = RowRules(temperature=temperature, top_p=top_p, top_k=top_k or 0, max_new_tokens=max_new_tokens,
                     stop_ids=tuple(eos_ids), keep_stop=True,
                     family_factors=sampler.family_factors if sampler is not None else ())
    rows = []
    for p in prompt_ids:
        grammar = None
        if sampler is not None:
            grammar = sampler.grammar()
            grammar.observe_many(p)
        rows.append(GeneratedRow(p, grammar))
    group = RowGroup(rows, rules, generator)
    for _ in LocalSampler().sample(model, group, pad_id=pad_id, bar_id=None,
                                   context=int(model.config.max_position_embeddings)):
        pass
    return [row.output for row in group.rows]


def make_trainer_class():
    """GRPOTrainer with the fast (and studio-like) rollouts, matching log-probabilities and phase timings."""
    from trl import GRPOTrainer

    class SmartGRPOTrainer(GRPOTrainer):
        def __init__(self, *args, generation: str = "auto", analyzer=None, sampler: StudioSampler | None = None,
                     **kwargs):
            super().__init__(*args, **kwargs)
            self.analyzer = analyzer
            self.phase_times: dict[str, float] = defaultdict(float)
            self.generation_backend = self._choose_generation(generation)
            # The studio's sampler needs our loop (grammar masks per row): HF and vLLM generation cannot
            # draw from it, and then the run says it sampled the model's own distribution.
            self.sampler = sampler if self.generation_backend == "fast" else None
            self.rollouts = "studio" if self.sampler is not None else "model"
            # Which path generated each step's rollouts ("fast" = ours) and how often log q scored them: a TRL
            # upgrade that stops calling an override shows up in the step records (tests/test_grpo.py checks).
            self.rollout_calls: dict[str, int] = defaultdict(int)
            self.studio_logp_calls = 0

        def _choose_generation(self, generation: str) -> str:
            if self.use_vllm:
                return "vllm"
            zero3 = self.is_deepspeed_enabled and getattr(self.accelerator.state.deepspeed_plugin, "zero_stage", 0) == 3
            if generation == "hf" or zero3 or self.is_fsdp_enabled:
                return "hf"  # sharded weights: only HF generate gathers them
            model = self.accelerator.unwrap_model(self.model)
            if type(model).__name__ != "Phi3ForCausalLM":
                if generation == "fast":
                    raise UserError("fast generation supports Phi-3 policies only")
                return "hf"
            return "fast"

        def _generate_single_turn(self, prompt_ids, images, multimodal_fields, num_generations, has_tool_images=False):
            t0 = time.perf_counter()
            if self.generation_backend == "fast":
                model = self.accelerator.unwrap_model(self.model)
                gen = torch.Generator(device=next(model.parameters()).device)
                # Reproducible per (seed, step, process); resumed runs continue the same stream.
                gen.manual_seed(self.args.seed * 1_000_003 + self.state.global_step * 997 + self.accelerator.process_index)
                completion_ids = fast_generate(
                    model, [list(p) for p in prompt_ids], max_new_tokens=self.max_completion_length,
                    temperature=self.temperature, top_p=self.top_p, top_k=self.top_k or 0,
                    eos_ids=list(self.eos_token_ids), pad_id=self._tokenizer.pad_token_id, generator=gen,
                    sampler=self.sampler)
                out = (completion_ids, None)
                self.rollout_calls["fast"] += 1
            else:
                self.rollout_calls["hf"] += 1
                out = super()._generate_single_turn(prompt_ids, images, multimodal_fields, num_generations,
                                                    has_tool_images)
            self.phase_times["generate_s"] += time.perf_counter() - t0
            return out

        def _get_per_token_logps_and_entropies(
                self, model, input_ids, attention_mask, logits_to_keep, batch_size=None, compute_entropy=False,
                compute_aux_loss=False, pixel_values=None, image_grid_thw=None, num_images=None,
                pixel_attention_mask=None, spatial_shapes=None, num_tiles=None, image_sizes=None,
                token_type_ids=None, mm_token_type_ids=None, image_position_ids=None):
            if self.sampler is None:
                return super()._get_per_token_logps_and_entropies(
                    model, input_ids, attention_mask, logits_to_keep, batch_size=batch_size,
                    compute_entropy=compute_entropy, compute_aux_loss=compute_aux_loss, pixel_values=pixel_values,
                    image_grid_thw=image_grid_thw, num_images=num_images, pixel_attention_mask=pixel_attention_mask,
                    spatial_shapes=spatial_shapes, num_tiles=num_tiles, image_sizes=image_sizes,
                    token_type_ids=token_type_ids, mm_token_type_ids=mm_token_type_ids,
                    image_position_ids=image_position_ids)
            self.studio_logp_calls += 1
            batch_size = batch_size or input_ids.size(0)
            logps, entropies = [], []
            for start in range(0, input_ids.size(0), batch_size):
                with self.accelerator.autocast():
                    lp, ent = studio_log_probs(model, self.sampler, input_ids[start:start + batch_size],
                                               attention_mask[start:start + batch_size], logits_to_keep,
                                               self.temperature, compute_entropy)
                logps.append(lp)
                entropies.append(ent)
            return (torch.cat(logps), torch.cat(entropies) if compute_entropy else None,
                    None)  # no MoE aux loss: a Phi-3 policy

        def _calculate_rewards(self, inputs, prompts, completions, completion_ids_list):
            t0 = time.perf_counter()
            out = super()._calculate_rewards(inputs, prompts, completions, completion_ids_list)
            self.phase_times["reward_s"] += time.perf_counter() - t0
            batch = getattr(self.analyzer, "_last", None)
            if batch is not None:
                for k, v in batch.timings.items():
                    self.phase_times[k] += v
                batch.timings.clear()
            return out

    return SmartGRPOTrainer
