"""Phi3Decoder must reproduce Hugging Face Phi-3 logits exactly (fp32) and sample_next must honour its knobs."""

from __future__ import annotations

import pytest
import torch
from transformers import Phi3Config, Phi3ForCausalLM
from transformers.utils import logging as hf_logging

from engine.fastdecode import PackedWeights, Phi3Decoder, fp16_weights_available, int8_weights_available
from engine.sampling import sample_next

hf_logging.set_verbosity_error()
VOCAB = 600


def make_model(seed: int = 0, **overrides) -> Phi3ForCausalLM:
    torch.manual_seed(seed)
    kwargs = dict(
        vocab_size=VOCAB, hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=4,
        intermediate_size=128, max_position_embeddings=256, tie_word_embeddings=False,
        pad_token_id=0, bos_token_id=1, eos_token_id=2,
    )
    kwargs.update(overrides)
    model = Phi3ForCausalLM(Phi3Config(**kwargs)).eval()
    # Default init is std 0.02: bump it so logits are far from uniform and mismatches cannot hide.
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 2:
                p.normal_(0.0, 0.08)
            else:
                p.uniform_(0.5, 1.5)
    return model


TINY = {}
PAPER_SHAPED = dict(hidden_size=128, num_hidden_layers=4, num_attention_heads=8, num_key_value_heads=8,
                    intermediate_size=384, max_position_embeddings=2048)
GQA_PARTIAL_ROPE = dict(num_attention_heads=4, num_key_value_heads=2, partial_rotary_factor=0.5)


def left_padded_batch(lengths: list[int], seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    T = max(lengths)
    ids = torch.zeros(len(lengths), T, dtype=torch.long)
    mask = torch.zeros(len(lengths), T, dtype=torch.bool)
    for row, n in enumerate(lengths):
        ids[row, T - n:] = torch.randint(3, VOCAB, (n,), generator=g)
        mask[row, T - n:] = True
    return ids, mask


def hf_last_logits(model, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    # HF generate's convention: positions count from each row's first real token.
    positions = (mask.long().cumsum(-1) - 1).masked_fill(~mask, 0)
    with torch.no_grad():
        return model(ids, attention_mask=mask.long(), position_ids=positions).logits[:, -1].float()


@pytest.fixture(autouse=True)
def one_thread():
    # Tiny matmuls gain nothing from a second thread, and OpenMP spin-waiting makes a shared CPU crawl.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.mark.parametrize("overrides", [TINY, PAPER_SHAPED, GQA_PARTIAL_ROPE], ids=["tiny", "paper-shaped", "gqa-partial-rope"])
@pytest.mark.parametrize("lengths", [[9], [9, 5, 1], [6, 6]], ids=["single", "left-padded", "equal"])
def test_prefill_and_steps_match_hf_forward(overrides, lengths):
    model = make_model(**overrides)
    ids, mask = left_padded_batch(lengths)
    B, prompt_len, steps = len(lengths), ids.shape[1], 24
    g = torch.Generator().manual_seed(2)
    fed = torch.randint(3, VOCAB, (B, steps), generator=g)
    full_ids = torch.cat([ids, fed], dim=1)
    full_mask = torch.cat([mask, torch.ones(B, steps, dtype=torch.bool)], dim=1)
    # One causal HF forward over the whole sequence gives the reference for every step.
    positions = (full_mask.long().cumsum(-1) - 1).masked_fill(~full_mask, 0)
    with torch.no_grad():
        expected = model(full_ids, attention_mask=full_mask.long(), position_ids=positions).logits.float()

    decoder = Phi3Decoder(model, batch_size=B, max_len=64)
    logits = decoder.prefill(ids, mask)
    for step in range(steps + 1):
        assert logits.dtype == torch.float32 and logits.shape == (B, VOCAB)
        torch.testing.assert_close(logits, expected[:, prompt_len - 1 + step], atol=1e-4, rtol=0,
                                   msg=lambda m: f"step {step}: {m}")
        if step < steps:
            logits = decoder.step(fed[:, step])
    assert decoder.length == full_ids.shape[1]


def test_greedy_matches_hf_generate_on_left_padded_batch():
    model = make_model(**PAPER_SHAPED)
    ids, mask = left_padded_batch([12, 7, 3])
    new_tokens = 24
    with torch.no_grad():
        hf = model.generate(ids, attention_mask=mask.long(), max_new_tokens=new_tokens, min_new_tokens=new_tokens,
                            do_sample=False, pad_token_id=0, eos_token_id=None)[:, ids.shape[1]:]
    decoder = Phi3Decoder(model, batch_size=3, max_len=ids.shape[1] + new_tokens)
    logits = decoder.prefill(ids, mask)
    ours = []
    for i in range(new_tokens):
        nxt = sample_next(logits, temperature=0.0)
        ours.append(nxt)
        if i + 1 < new_tokens:
            logits = decoder.step(nxt)
    assert torch.equal(torch.stack(ours, dim=1), hf)


def test_reset_and_prefill_again_equals_fresh_decoder():
    model = make_model()
    ids, mask = left_padded_batch([8, 4], seed=3)
    decoder = Phi3Decoder(model, batch_size=2, max_len=16)
    decoder.prefill(*left_padded_batch([10, 2], seed=4))
    for _ in range(5):
        decoder.step(torch.tensor([5, 6]))
    decoder.reset()
    assert decoder.length == 0
    reused = decoder.prefill(ids, mask)
    fresh = Phi3Decoder(model, batch_size=2, max_len=16).prefill(ids, mask)
    torch.testing.assert_close(reused, fresh, atol=0, rtol=0)
    torch.testing.assert_close(decoder.step(torch.tensor([7, 8])),
                               hf_last_logits(model, torch.cat([ids, torch.tensor([[7], [8]])], 1),
                                              torch.cat([mask, torch.ones(2, 1, dtype=torch.bool)], 1)),
                               atol=1e-4, rtol=0)


def test_decoder_reads_live_weights():
    model = make_model()
    ids, mask = left_padded_batch([5])
    decoder = Phi3Decoder(model, batch_size=1, max_len=8)
    before = decoder.prefill(ids, mask)
    with torch.no_grad():
        model.lm_head.weight.mul_(2.0)  # an in-place optimizer-style update
    after = decoder.prefill(ids, mask)
    torch.testing.assert_close(after, 2.0 * before, atol=1e-5, rtol=1e-5)


@pytest.mark.skipif(not fp16_weights_available(), reason="fbgemm fp16 kernels not in this torch build")
def test_fp16_weights_mode_is_close_to_exact():
    model = make_model(**PAPER_SHAPED)
    ids, mask = left_padded_batch([10, 4])
    exact = Phi3Decoder(model, batch_size=2, max_len=32)
    fast = Phi3Decoder(model, batch_size=2, max_len=32, weights="fp16")
    a, b = exact.prefill(ids, mask), fast.prefill(ids, mask)
    for _ in range(10):
        scale = a.abs().max()
        assert (a - b).abs().max() < 5e-3 * scale  # fp16 weight rounding only, not a different model
        assert not torch.equal(a, b)  # it really used the packed fp16 weights
        nxt = a.argmax(-1)
        a, b = exact.step(nxt), fast.step(nxt)


@pytest.mark.skipif(not int8_weights_available(), reason="fbgemm int8 kernels not in this torch build")
def test_int8_weights_mode_is_close_to_exact_and_packs_once():
    model = make_model(**PAPER_SHAPED)
    ids, mask = left_padded_batch([10, 4])
    exact = Phi3Decoder(model, batch_size=2, max_len=32)
    fresh = Phi3Decoder(model, batch_size=2, max_len=32, weights="int8")
    packed = PackedWeights(model, "int8")
    shared = [Phi3Decoder(model, batch_size=2, max_len=32, packed=packed) for _ in range(2)]
    assert all(d.weights == "int8" and d.layers is packed.layers for d in shared)
    a, b = exact.prefill(ids, mask), fresh.prefill(ids, mask)
    c = [d.prefill(ids, mask) for d in shared]
    for _ in range(10):
        p_exact, p_int8 = torch.softmax(a, -1), torch.softmax(b, -1)
        # Quantization noise only: the next-token distributions stay close (total variation) ...
        assert 0.5 * (p_exact - p_int8).abs().sum(-1).max() < 0.1
        assert not torch.equal(a, b)  # ... and it really used the int8 weights
        for other in c:
            assert torch.equal(other, b)  # a shared pack is the same model as a freshly packed one
        nxt = a.argmax(-1)
        a, b = exact.step(nxt), fresh.step(nxt)
        c = [d.step(nxt) for d in shared]
    with pytest.raises(ValueError, match="another model"):
        Phi3Decoder(make_model(seed=1, **PAPER_SHAPED), batch_size=1, max_len=8, packed=packed)
    with pytest.raises(ValueError, match="CPU"):
        Phi3Decoder(model.to(torch.bfloat16), batch_size=1, max_len=8, weights="int8")
    with pytest.raises(ValueError, match="nothing to pack"):
        PackedWeights(make_model(), "model")


def test_errors_are_clear():
    model = make_model()
    decoder = Phi3Decoder(model, batch_size=2, max_len=6)
    with pytest.raises(RuntimeError, match="prefill"):
        decoder.step(torch.tensor([3, 4]))
    ids, mask = left_padded_batch([4, 2])
    decoder.prefill(ids, mask)
    decoder.step(torch.tensor([3, 4]))
    decoder.step(torch.tensor([3, 4]))
    assert decoder.length == 6
    with pytest.raises(RuntimeError, match="KV cache full"):
        decoder.step(torch.tensor([3, 4]))
    with pytest.raises(ValueError, match="LEFT-padded"):
        decoder.prefill(ids, mask.flip(1))  # right padding
    with pytest.raises(ValueError, match="batch_size"):
        decoder.prefill(ids[:1], mask[:1])
    with pytest.raises(ValueError, match="max_len"):
        decoder.prefill(*left_padded_batch([7, 7]))
    with pytest.raises(ValueError, match="weights"):
        Phi3Decoder(model, batch_size=1, max_len=8, weights="int3")


def test_unsupported_configs_raise():
    windowed = make_model(sliding_window=16)
    Phi3Decoder(windowed, batch_size=1, max_len=16)  # window never slides within max_len: fine
    with pytest.raises(NotImplementedError, match="sliding_window"):
        Phi3Decoder(windowed, batch_size=1, max_len=32)
    longrope = make_model(
        max_position_embeddings=256, original_max_position_embeddings=64,
        rope_scaling={"rope_type": "longrope", "short_factor": [1.0] * 8, "long_factor": [2.0] * 8},
    )
    with pytest.raises(NotImplementedError, match="rope_type"):
        Phi3Decoder(longrope, batch_size=1, max_len=8)


# ---------------------------------------------------------------- sample_next

def test_greedy_and_mask():
    logits = torch.tensor([[0.0, 3.0, 1.0, 2.0], [5.0, 0.0, 1.0, 0.0]])
    assert sample_next(logits, temperature=0.0).tolist() == [1, 0]
    mask = torch.tensor([[True, False, True, True], [False, False, False, False]])
    assert sample_next(logits, temperature=0.0, mask=mask).tolist() == [3, 0]  # row 1: empty mask → unmasked
    g = torch.Generator().manual_seed(0)
    draws = torch.stack([sample_next(logits, generator=g, mask=mask) for _ in range(300)])
    assert set(draws[:, 0].tolist()) <= {0, 2, 3} and len(set(draws[:, 0].tolist())) == 3
    assert len(set(draws[:, 1].tolist())) > 1  # fallback row samples the full distribution, no NaN crash


def test_top_p_keeps_the_nucleus_only():
    probs = torch.tensor([[0.05, 0.5, 0.15, 0.3]])
    logits = probs.log()
    g = torch.Generator().manual_seed(0)
    only_top = {sample_next(logits, top_p=0.5, generator=g).item() for _ in range(200)}
    assert only_top == {1}
    nucleus = torch.stack([sample_next(logits, top_p=0.7, generator=g) for _ in range(2000)]).flatten()
    assert set(nucleus.tolist()) == {1, 3}
    share = (nucleus == 1).float().mean().item()
    assert abs(share - 0.5 / 0.8) < 0.04  # renormalised within the nucleus


def test_temperature_shapes_the_distribution():
    logits = torch.tensor([[0.0, 1.0]]).expand(20000, 2)
    g = torch.Generator().manual_seed(0)
    for temperature in (1.0, 2.0, 0.5):
        p1 = torch.sigmoid(torch.tensor(1.0 / temperature)).item()
        share = sample_next(logits, temperature=temperature, generator=g).float().mean().item()
        assert abs(share - p1) < 0.015, (temperature, share, p1)


def test_seeded_sampling_is_deterministic():
    logits = torch.randn(4, VOCAB, generator=torch.Generator().manual_seed(0))
    a = [sample_next(logits, top_p=0.9, generator=torch.Generator().manual_seed(7)) for _ in range(3)]
    b = [sample_next(logits, top_p=0.9, generator=torch.Generator().manual_seed(7)) for _ in range(3)]
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    g1, g2 = torch.Generator().manual_seed(1), torch.Generator().manual_seed(2)
    s1 = torch.stack([sample_next(logits, generator=g1) for _ in range(10)])
    s2 = torch.stack([sample_next(logits, generator=g2) for _ in range(10)])
    assert not torch.equal(s1, s2)


def test_sample_next_validates_arguments():
    logits = torch.zeros(2, 5)
    with pytest.raises(ValueError, match="temperature"):
        sample_next(logits, temperature=-1.0)
    with pytest.raises(ValueError, match="top_p"):
        sample_next(logits, top_p=0.0)
    with pytest.raises(ValueError, match="mask"):
        sample_next(logits, mask=torch.ones(2, 4, dtype=torch.bool))


def test_rows_appended_and_dropped_in_place_keep_their_logits():
    """`append`/`keep_rows` give the same next logits as `splice` (which copies into a new cache)."""
    model = make_model(seed=5)
    with torch.inference_mode():
        running = Phi3Decoder(model, 3, 64, row_capacity=6)
        running.prefill(*left_padded_batch([9, 9, 9], seed=6))
        for t in (5, 6):
            running.step(torch.tensor([t, t + 1, t + 2]))
        joining = Phi3Decoder(model, 2, 8)
        joining.prefill(*left_padded_batch([7, 4], seed=7))  # padded itself, and shorter than the batch
        reference = Phi3Decoder.splice(model, [(running, [0, 2]), (joining, [1, 0, 1])], 64)
        running.keep_rows([0, 2])
        running.append(joining, [1, 0, 1])
        assert running.batch_size == 5 and running.row_capacity == 6
        assert not running.can_append(2, 4) and not running.can_append(1, running.length + 1)
        for t in (7, 8, 9):
            step = torch.tensor([t, 3, t, 4, 5])
            assert torch.allclose(running.step(step), reference.step(step), atol=1e-5)
        with pytest.raises(ValueError):
            running.append(joining, [0, 1])
