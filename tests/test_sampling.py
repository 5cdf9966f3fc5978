"""The one sampling loop: requested length in any meter, from bar lines and mid-bar; the scheduler's shared
batch and prompt cache sample what the policy samples alone."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from engine.sampling import SampleGroup, sample_rows, sampling_distribution
from engine.host.scheduler import DecodeScheduler
from engine.music import Clip, Note, TimeSignature
from engine.policy import GenerationSettings, Policy
from engine.sampling import GeneratedRow, LocalSampler, RowGroup, RowRules
from engine.tokenizer import RemiTokenizer


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


# ---------------------------------------------------------------------------- per-family temperature factors
def test_temperature_factors_are_checked_by_the_one_validator():
    from pydantic import ValidationError

    from engine.api import DEFAULT_TEMPERATURE_FACTORS, HOST_LIMITS, TOKEN_FAMILIES, GenerateRequest

    GenerationSettings(temperature_factors={"Pitch": 0.7, "Velocity": 1.3}).validate()
    GenerationSettings(temperature_factors={}).validate()
    assert GenerationSettings().temperature_factors == dict(DEFAULT_TEMPERATURE_FACTORS)
    for bad, what in (({"Pitchh": 0.8}, "unknown token family"), ({"Pitch": 0}, "Pitch"), ({"Pitch": -1.0}, "Pitch"),
                      ({"Pitch": float("nan")}, "Pitch"), ({"Pitch": True}, "Pitch"), ({"Pitch": 5.5}, "Pitch"),
                      ({"BOS": 0.8}, "unknown token family"), ([("Pitch", 0.8)], "map token families")):
        with pytest.raises(ValueError, match=what):
            GenerationSettings(temperature_factors=bad).validate()
    # The host's request: omitted → the shipped default; {} → none; checked by the same validator (→ 422).
    assert GenerateRequest().settings().temperature_factors == dict(DEFAULT_TEMPERATURE_FACTORS)
    assert GenerateRequest(temperature_factors={}).settings().temperature_factors == {}
    req = GenerateRequest(temperature_factors={"Pitch": 0.8})
    assert req.settings().temperature_factors == {"Pitch": 0.8}
    req.settings().validate(HOST_LIMITS)
    for bad in ({"Pitch": 0.0}, {"Chord": 0.8}, {"Pitch": "cool"}):
        with pytest.raises(ValidationError):
            GenerateRequest(temperature_factors=bad)
    tok = RemiTokenizer()
    assert set(TOKEN_FAMILIES) <= set(tok.kind_ids)  # every family a factor may name is a token kind


def family_case():
    """Logits over 12 tokens, two rows; "family" = tokens 3..7."""
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 12, generator=gen) * 2
    family = (3, 4, 5, 6, 7)
    return logits, family


@pytest.mark.parametrize("temperature", [0.7, 1.0, 1.4])
@pytest.mark.parametrize("factor", [0.5, 2.0])
def test_a_family_factor_reshapes_only_that_family(temperature, factor):
    logits, family = family_case()
    others = [i for i in range(12) if i not in family]
    _, plain = sampling_distribution(logits, [SampleGroup(0, 2, temperature, 1.0, None, None)])
    _, shaped = sampling_distribution(logits, [SampleGroup(0, 2, temperature, 1.0, None, None, 0,
                                                           ((family, factor),))])
    cols = list(family)
    assert torch.equal(shaped[:, others], plain[:, others])  # every other token: exactly unchanged
    assert torch.allclose(shaped[:, cols].sum(-1), plain[:, cols].sum(-1), atol=1e-6)  # the family's share too
    within = shaped[:, cols] / shaped[:, cols].sum(-1, keepdim=True)
    assert torch.allclose(within, torch.softmax(logits[:, cols] / (temperature * factor), -1), atol=1e-6)
    assert not torch.allclose(within, plain[:, cols] / plain[:, cols].sum(-1, keepdim=True), atol=1e-3)
    # Sharper below 1, flatter above: the family's most likely token gains (loses) share.
    top = logits[:, cols].argmax(-1)
    gain = within.gather(1, top[:, None]) - (plain[:, cols] / plain[:, cols].sum(-1, keepdim=True)).gather(1, top[:, None])
    assert bool((gain > 0).all()) if factor < 1 else bool((gain < 0).all())
    # Independent of the logits' offset (softmax's invariance survives the factor).
    _, shifted = sampling_distribution(logits + 7.0, [SampleGroup(0, 2, temperature, 1.0, None, None, 0,
                                                                  ((family, factor),))])
    assert torch.allclose(shifted, shaped, atol=1e-6)


def test_family_factors_with_masks_top_p_greedy_and_other_groups():
    logits, family = family_case()
    # Factor 1 is no factor.
    _, plain = sampling_distribution(logits, [SampleGroup(0, 2, 1.0, 0.9, None, None)])
    _, one = sampling_distribution(logits, [SampleGroup(0, 2, 1.0, 0.9, None, None, 0, ((family, 1.0),))])
    assert torch.equal(one, plain)
    # A row whose family is all masked out keeps a proper distribution (no NaN).
    mask = np.ones((2, 12), dtype=bool)
    mask[0, list(family)] = False
    _, masked = sampling_distribution(logits, [SampleGroup(0, 2, 1.0, 1.0, None, mask, 0, ((family, 0.5),))])
    assert not torch.isnan(masked).any() and float(masked[0, list(family)].sum()) == 0.0
    assert torch.allclose(masked.sum(-1), torch.ones(2), atol=1e-6)
    # Greedy ignores factors; a group with factors does not change its neighbour's rows.
    greedy = sample_rows(logits, [SampleGroup(0, 2, 0.0, 1.0, None, None, 0, ((family, 0.2),))])
    assert torch.equal(greedy, logits.argmax(-1))
    both = [SampleGroup(0, 1, 1.0, 0.95, None, None), SampleGroup(1, 1, 1.0, 0.95, None, None, 0, ((family, 0.3),))]
    _, together = sampling_distribution(logits, both)
    _, first_alone = sampling_distribution(logits[:1], [SampleGroup(0, 1, 1.0, 0.95, None, None)])
    _, second_alone = sampling_distribution(logits[1:], [SampleGroup(0, 1, 1.0, 0.95, None, None, 0, ((family, 0.3),))])
    assert torch.equal(together[:1], first_alone) and torch.equal(together[1:], second_alone)
    with pytest.raises(ValueError, match="factor"):
        sample_rows(logits, [SampleGroup(0, 2, 1.0, 1.0, None, None, 0, ((family, 0.0),))])
    with pytest.raises(ValueError, match="ids"):
        sample_rows(logits, [SampleGroup(0, 2, 1.0, 1.0, None, None, 0, (((3, 12), 0.5),))])


def test_pitch_factor_is_seeded_and_reaches_the_pitch_tokens():
    """The policy maps family names to the tokenizer's kinds; a seeded run repeats; a cool Pitch factor
    changes the continuation (and only through its pitches: the first notes' velocities stay comparable)."""
    policy = Policy.create("tiny", seed=5)
    tok = policy.tokenizer
    group = policy.row_group([tok.procedural_prompt()], GenerationSettings(candidates=1, temperature_factors={
        "Pitch": 0.5, "Velocity": 1.0}))
    assert group.rules.family_factors == ((tuple(int(i) for i in tok.kind_ids["Pitch"]), 0.5),)  # 1.0 dropped
    clip = meter_clip(4, 4)

    def run(**factors):
        s = GenerationSettings(candidates=2, bars=2, seed=12, max_new_tokens=120, **factors)
        return [c.token_ids for c in policy.continue_clip(clip, s)]

    cool = run(temperature_factors={"Pitch": 0.3})
    assert run(temperature_factors={"Pitch": 0.3}) == cool
    assert run(temperature_factors={}) != cool
