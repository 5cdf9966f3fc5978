
import pytest

from engine.music import Clip, Note
from engine.policy import GenerationSettings, Policy, PolicyLoadError
from engine.tokenizer import RemiTokenizer


@pytest.fixture(scope="module")
def policy():
    return Policy.create("tiny", seed=0)


@pytest.fixture(scope="module")
def sketch():
    return Clip([Note(i * 240, 60 + (i * 5) % 12, 240, 80) for i in range(16)])  # two 4/4 bars


def test_paper_config_has_about_14m_parameters():
    p = Policy.create("paper")
    assert 13.5e6 < p.num_parameters() < 15e6
    cfg = p.model.config
    assert (cfg.num_hidden_layers, cfg.hidden_size, cfg.num_attention_heads) == (4, 512, 8)


def test_save_and_load_round_trip(policy, tmp_path):
    policy.save(tmp_path / "m")
    names = {p.name for p in (tmp_path / "m").iterdir()}
    assert {"config.json", "model.safetensors", "remi_tokenizer.json", "tokenizer.json"} <= names
    assert not any(n.endswith((".bin", ".pt", ".pkl")) for n in names)
    again = Policy.load(tmp_path / "m")
    ids = policy.tokenizer.procedural_prompt()
    import torch
    with torch.no_grad():
        a = policy.model(torch.tensor([ids])).logits
        b = again.model(torch.tensor([ids])).logits
    assert torch.allclose(a, b)


def test_bad_model_directories(tmp_path, policy):
    with pytest.raises(PolicyLoadError, match="not found"):
        Policy.load(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(PolicyLoadError, match="missing"):
        Policy.load(tmp_path / "empty")
    policy.save(tmp_path / "bad")
    (tmp_path / "bad" / "model.safetensors").write_bytes(b"not safetensors")
    with pytest.raises(PolicyLoadError, match="does not load"):
        Policy.load(tmp_path / "bad")
    policy.save(tmp_path / "badcfg")
    (tmp_path / "badcfg" / "config.json").write_text("{broken")
    with pytest.raises(PolicyLoadError):
        Policy.load(tmp_path / "badcfg")


def test_candidates_are_seeded_and_bar_limited(policy, sketch):
    s = GenerationSettings(candidates=3, bars=2, seed=7, max_new_tokens=150)
    a = policy.continue_clip(sketch, s)
    b = policy.continue_clip(sketch, s)
    assert len(a) == 3
    assert [c.token_ids for c in a] == [c.token_ids for c in b]
    end_limit = sketch.bar_tick(2 + 2)  # from the bar line after bar 2: bars 3..4
    for c in a:
        assert c.bars == 2 and c.finished_by == "bars" or c.finished_by == "tokens"
        assert all(sketch.end_tick <= n.start < end_limit for n in c.notes)


def test_streaming_reports_notes_as_they_are_decoded(policy, sketch):
    events = []
    cands = policy.continue_clip(sketch, GenerationSettings(candidates=2, bars=2, seed=3, max_new_tokens=150),
                                 on_note=events.append)
    assert sorted((e.candidate, e.note) for e in events) == sorted((i, n) for i, c in enumerate(cands) for n in c.notes)


def test_cancel_stops_generation(policy, sketch):
    calls = {"n": 0}

    def stop():
        calls["n"] += 1
        return calls["n"] > 5

    cands = policy.continue_clip(sketch, GenerationSettings(candidates=2, bars=8, seed=1, max_new_tokens=2000),
                                 should_stop=stop)
    assert all(c.finished_by == "cancelled" for c in cands)
    assert all(len(c.token_ids) <= 5 for c in cands)


def test_sliding_beyond_the_context_window(sketch):
    small = Policy.create("tiny", max_position_embeddings=48)
    cands = small.continue_clip(sketch, GenerationSettings(candidates=2, bars=None, max_new_tokens=120, seed=0))
    assert all(len(c.token_ids) == 120 or c.finished_by == "eos" for c in cands)
    assert any(len(c.token_ids) > 48 for c in cands)


def test_infill_writes_only_inside_the_span(policy):
    clip = Clip([Note(i * 480, 60, 480, 80) for i in range(16)])  # four bars of quarter notes
    cands = policy.infill(clip, 1, 3, GenerationSettings(candidates=3, seed=2, max_new_tokens=150))
    for c in cands:
        assert all(clip.bar_tick(1) <= n.start and n.end <= clip.bar_tick(3) for n in c.notes)
        assert c.bars <= 2


def test_key_lock(policy, sketch):
    c_major = [p for p in range(21, 109) if p % 12 in (0, 2, 4, 5, 7, 9, 11)]
    cands = policy.continue_clip(sketch, GenerationSettings(candidates=3, bars=2, seed=5, max_new_tokens=150, allowed_pitches=c_major))
    notes = [n for c in cands for n in c.notes]
    assert all(n.pitch % 12 in (0, 2, 4, 5, 7, 9, 11) for n in notes)


def test_procedural_generation(policy):
    cands, prompts = policy.generate_procedural(GenerationSettings(candidates=4, bars=2, seed=0, max_new_tokens=150))
    assert len(cands) == len(prompts) == 4
    for c in cands:
        assert c.bars <= 2  # the prompt opens bar 1: it counts as the first of the 2
        assert sum(1 for t in c.token_ids if t == policy.tokenizer.bar_id) == c.bars - 1
        assert c.clip.tempos and c.clip.time_signatures


def test_settings_validation():
    for bad in (dict(candidates=0), dict(temperature=-1), dict(top_p=0), dict(bars=0)):
        with pytest.raises(ValueError):
            GenerationSettings(**bad).validate()


def test_generated_row_stopping_rules_and_window():
    from engine.sampling import GeneratedRow, RowRules

    tok = RemiTokenizer()
    pos, pitch = tok.vocab["Position_0"], tok.vocab["Pitch_60"]
    bars = dict(stop_ids=(tok.eos_id,), bar_id=tok.bar_id)
    # Bars: with bars=1 and a prompt that opens bar 1 itself, the first new Bar already ends the row.
    row = GeneratedRow([tok.bar_id, pos], opened_bars=1)
    assert row.accept(pitch, RowRules(bars=1, **bars))
    assert not row.accept(tok.bar_id, RowRules(bars=1, **bars))
    assert row.done and row.finish == "bars" and row.history == [tok.bar_id, pos, pitch] and row.bars == 1
    # From inside a bar one Bar is allowed (it opens bar 1), the second ends the row and is not emitted.
    row = GeneratedRow([tok.bar_id])
    assert row.accept(tok.bar_id, RowRules(bars=1, **bars)) and not row.done and row.bars == 1
    assert not row.accept(tok.bar_id, RowRules(bars=1, **bars)) and row.finish == "bars"
    assert row.output == [tok.bar_id]
    # EOS ends without being emitted (or, kept for GRPO completions, as their last token).
    row = GeneratedRow([tok.bar_id])
    assert not row.accept(tok.eos_id, RowRules(**bars)) and row.finish == "eos"
    row = GeneratedRow([tok.bar_id])
    assert row.accept(tok.eos_id, RowRules(stop_ids=(tok.eos_id,), keep_stop=True)) and row.done
    assert row.output == [tok.eos_id] and row.finish == "eos"
    # The token budget ends after the last emitted token.
    row = GeneratedRow([tok.bar_id])
    assert row.accept(pos, RowRules(max_new_tokens=2)) and not row.done
    assert row.accept(pitch, RowRules(max_new_tokens=2)) and row.done and row.finish == "tokens"
    # Window: everything while it fits; past the context, the recent half from its first bar line.
    history = [tok.bar_id, pos, pitch, pitch, tok.bar_id, pos, pitch, pitch]
    row = GeneratedRow(history)
    assert row.window(9, tok.bar_id) == history
    assert row.window(8, tok.bar_id) == [tok.bar_id, pos, pitch, pitch]
    assert row.window(6, tok.bar_id) == [pos, pitch, pitch]  # no bar line in the recent half: all of it
