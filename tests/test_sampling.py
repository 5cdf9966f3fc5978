"""The one sampling loop: requested length in any meter, from bar lines and mid-bar; the scheduler's shared
batch and prompt cache sample what the policy samples alone."""

from __future__ import annotations

import pytest
import torch

from engine.host.scheduler import DecodeScheduler
from engine.music import Clip, Note, TimeSignature
from engine.policy import GenerationSettings, Policy
from engine.sampling import GeneratedRow, LocalSampler, RowGroup, RowRules


@pytest.fixture(scope="module")
def barred_policy():
    """A tiny policy whose next-token logits are the same after every token: 0 for everything but Bar
    (≈15 % among ~100 legal tokens) and EOS (likelier than Bar, so only the loop's rules keep it out).
    Grammar-masked sampling then writes notes and bar lines at random: a fast stand-in for a trained model
    when what is tested is where bars begin and end."""
    policy = Policy.create("tiny", seed=0)
    model, tok = policy.model, policy.tokenizer
    with torch.no_grad():
        for layer in model.model.layers:
            layer.self_attn.o_proj.weight.zero_()
            layer.mlp.down_proj.weight.zero_()
        model.model.embed_tokens.weight.fill_(1.0)  # every position's hidden state: the same vector
        model.lm_head.weight.zero_()
        hidden = model.config.hidden_size
        model.lm_head.weight[tok.bar_id] = 2.9 / hidden
        model.lm_head.weight[tok.eos_id] = 5.0 / hidden
    return policy


def meter_clip(num: int, den: int, bars: int = 3) -> Clip:
    ppq = 480
    beat = ppq * 4 // den
    sig = TimeSignature(0, num, den)
    n = bars * num
    return Clip([Note(i * beat, 60 + i % 7, beat, 80) for i in range(n)], ppq, time_signatures=[sig])


@pytest.mark.parametrize("meter", [(4, 4), (3, 4), (6, 8)])
@pytest.mark.parametrize("mid_bar", [False, True])
def test_a_continuation_is_exactly_the_bars_asked_for(barred_policy, meter, mid_bar):
    clip = meter_clip(*meter)
    bar = 1
    at = clip.bar_tick(bar) + (clip.ppq * 4 // meter[1] if mid_bar else 0)  # a beat into bar 1, or its bar line
    want = 3
    cands = barred_policy.continue_clip(clip, GenerationSettings(candidates=3, bars=want, seed=4,
                                                                 max_new_tokens=2000), at_tick=at)
    # From a bar line the bar it opens is the first of the 3; from inside one, it is finished, then 3 more.
    end = clip.bar_tick(bar + want + (1 if mid_bar else 0))
    for c in cands:
        assert (c.finished_by, c.bars, c.end_tick) == ("bars", want, end)
        assert all(at <= n.start < end for n in c.notes)
        assert barred_policy.tokenizer.eos_id not in c.token_ids
    assert any(c.notes for c in cands)


def test_the_token_budget_is_reported_as_the_reason(barred_policy):
    clip = meter_clip(4, 4)
    cands = barred_policy.continue_clip(clip, GenerationSettings(candidates=2, bars=8, seed=1, max_new_tokens=20))
    assert all(c.finished_by == "tokens" and len(c.token_ids) == 20 and c.bars < 8 for c in cands)


def test_without_a_bar_budget_eos_ends_a_row(barred_policy):
    cands, _ = barred_policy.generate_procedural(GenerationSettings(candidates=4, bars=None, seed=2,
                                                                    max_new_tokens=500))
    assert any(c.finished_by == "eos" for c in cands)


def test_scheduler_and_prompt_cache_sample_what_the_policy_samples(barred_policy):
    clip = meter_clip(3, 4)
    settings = GenerationSettings(candidates=2, bars=2, seed=9, max_new_tokens=200)
    direct = barred_policy.continue_clip(clip, settings, at_tick=clip.bar_tick(1) + 100)
    scheduler = DecodeScheduler(max_rows=8)
    try:
        view = barred_policy.using(scheduler)
        for _ in range(2):  # the second time the prompt comes from the cache
            hosted = view.continue_clip(clip, settings, at_tick=clip.bar_tick(1) + 100)
            assert [c.token_ids for c in hosted] == [c.token_ids for c in direct]
            assert [(c.bars, c.finished_by, c.end_tick) for c in hosted] == \
                [(c.bars, c.finished_by, c.end_tick) for c in direct]
        stats = scheduler.stats
        assert stats.prefill_rows == 1  # two candidates × two requests, one prompt window computed
        assert stats.reused_rows == 3
    finally:
        scheduler.close()


@pytest.mark.parametrize("max_rows", [None, 8])
def test_rows_join_and_leave_a_running_loop_without_changing_their_samples(max_rows):
    """Groups added while others run (different prompt lengths, left-padded) sample what they sample alone,
    whether the cache is copied on every change (no room kept) or rows join and leave in place."""
    policy = Policy.create("tiny", seed=3)
    tok = policy.tokenizer
    model = policy.model
    prompts = [tok.procedural_prompt(first_note=bool(i % 2)) for i in range(3)]
    prompts[2] = prompts[2] + prompts[1][1:]  # longer than the running rows at its join: no room in place

    def group(i: int) -> RowGroup:
        # Group 0 outlives the first cache allocation (128 positions), so the cache grows under it.
        rules = RowRules(temperature=1.0, top_p=0.9, max_new_tokens=150 if i == 0 else 12 + 4 * i)
        return RowGroup([GeneratedRow(prompts[i]), GeneratedRow(prompts[i][:-1])], rules,
                        torch.Generator().manual_seed(i))

    alone = []
    for i in range(3):
        g = group(i)
        list(LocalSampler().sample(model, g, pad_id=tok.pad_id, bar_id=tok.bar_id, context=1024))
        alone.append([r.output for r in g.rows])
    from engine.sampling import SamplingLoop

    loop = SamplingLoop(model, pad_id=tok.pad_id, bar_id=tok.bar_id, headroom=8, max_rows=max_rows)
    groups = [group(0)]
    loop.add(groups)
    for step in range(150):
        if step in (3, 5):
            groups.append(group(len(groups)))
            loop.add([groups[-1]])
        if step == 40:
            loop.compact()
        loop.step()
    assert all(g.done for g in groups)
    assert (loop.stats.joins, loop.stats.compactions, loop.stats.grows) == (2, 1, 1)
    assert [[r.output for r in g.rows] for g in groups] == alone


def test_prompts_of_very_different_lengths_are_prefilled_in_bands():
    policy = Policy.create("tiny", seed=4)
    tok = policy.tokenizer
    short = tok.procedural_prompt()
    long = tok.continuation_prompt(meter_clip(4, 4, bars=4))
    assert len(long) > 2 * len(short)
    from engine.sampling import SamplingLoop

    def group(prompt, seed):
        rules = RowRules(temperature=1.0, max_new_tokens=10)
        return RowGroup([GeneratedRow(prompt)], rules, torch.Generator().manual_seed(seed))

    alone = []
    for seed, prompt in enumerate((short, long, short)):
        g = group(prompt, seed)
        list(LocalSampler().sample(policy.model, g, pad_id=tok.pad_id, bar_id=tok.bar_id, context=1024))
        alone.append(g.rows[0].output)
    loop = SamplingLoop(policy.model, pad_id=tok.pad_id, bar_id=tok.bar_id, max_rows=4)
    groups = [group(p, seed) for seed, p in enumerate((short, long, short))]
    loop.add(groups)
    assert (loop.stats.prefills, loop.stats.prefill_rows, loop.stats.reused_rows) == (2, 2, 1)
    while not all(g.done for g in groups):
        loop.step()
    assert [g.rows[0].output for g in groups] == alone
