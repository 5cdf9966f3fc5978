"""MAA scorer: windowing, batching, resampling, checkpoint formats, missing weights.

All models here have random weights (build_maa_model); no real MAA checkpoint is needed.
"""

from __future__ import annotations

import json
import math
import os
import time

import numpy as np
import pytest
import torch

from engine import maa_fast
from engine import scorer as maa
from engine.scorer import (
    AXES,
    MAA_SAMPLE_RATE,
    MAACheckpointError,
    MAAInputError,
    MAAScorer,
    MAAScores,
    MAAUnavailable,
    build_maa_model,
    find_checkpoint,
    make_windows,
    save_checkpoint_pt,
)

SR = MAA_SAMPLE_RATE

# Deprecation noise from inside the vendored WavLM (the module filters it, pytest resets filters).
pytestmark = [
    pytest.mark.filterwarnings("ignore:.*torch.nn.utils.weight_norm.*:FutureWarning"),
    pytest.mark.filterwarnings("ignore:Support for mismatched key_padding_mask:UserWarning"),
]


def tone(seconds: float, sr: int = SR, freq: float = 440.0, seed: int = 0) -> np.ndarray:
    """A decaying tone plus a little noise: deterministic, piano-ish test audio."""
    t = np.arange(round(seconds * sr)) / sr
    rng = np.random.default_rng(seed)
    audio = 0.4 * np.sin(2 * np.pi * freq * t) * np.exp(-t / 3) + 0.01 * rng.standard_normal(t.size)
    return audio.astype(np.float32)


@pytest.fixture(scope="module")
def small_model():
    return build_maa_model(small=True, seed=0)


@pytest.fixture(scope="module")
def scorer(small_model):
    # exact: these tests hold the windowing to hand-computed forwards of the package's model
    return MAAScorer.from_model(small_model, device="cpu", exact=True)


@pytest.fixture
def no_weights_anywhere(monkeypatch, tmp_path):
    """No env var and an empty HF cache, so nothing can be found locally."""
    from huggingface_hub import constants

    monkeypatch.delenv(maa.CHECKPOINT_ENV_VAR, raising=False)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "empty-hf-cache"))
    return tmp_path


def assert_scores_equal(a: list[MAAScores], b: list[MAAScores], atol: float = 0.0):
    assert len(a) == len(b)
    for x, y in zip(a, b):
        for axis in AXES:
            assert getattr(x, axis) == pytest.approx(getattr(y, axis), abs=atol, rel=0), axis


# ------------------------------------------------------------------------------------------ scoring


def test_small_model_scores_are_finite_and_deterministic(scorer):
    clips = [tone(3.0, freq=220), tone(4.0, freq=880, seed=1)]
    first = scorer.score(clips, SR)
    second = scorer.score(clips, SR)
    assert_scores_equal(first, second)
    for scores in first:
        assert set(scores.as_dict()) == set(AXES)
        assert all(math.isfinite(v) for v in scores.as_dict().values())
    # different audio must give different outputs, or the model is ignoring its input
    assert first[0].as_dict() != first[1].as_dict()
    assert scorer.is_random and "random" in scorer.source


def test_seed_controls_random_weights():
    clip = [tone(2.0)]
    again = MAAScorer.from_model(build_maa_model(seed=0), device="cpu").score(clip, SR)
    same = MAAScorer.from_model(build_maa_model(seed=0), device="cpu").score(clip, SR)
    other = MAAScorer.from_model(build_maa_model(seed=1), device="cpu").score(clip, SR)
    assert_scores_equal(again, same)
    assert again[0].as_dict() != other[0].as_dict()


def test_random_flag_follows_the_model(small_model):
    # a random-weight model can never be presented as real, whatever the caller claims
    assert MAAScorer.from_model(small_model, device="cpu", is_random=False).is_random
    trained_like = maa.ConfigurableAesMultiOutput(
        wavlm_config=maa.SMALL_WAVLM_CONFIG, nth_layer=3, target_transform=small_model.target_transform
    )
    assert not MAAScorer.from_model(trained_like, device="cpu").is_random
    assert MAAScorer.from_model(trained_like, device="cpu", is_random=True).is_random


def test_make_windows_matches_hand_computed_layout():
    clip_a = np.arange(23 * SR, dtype=np.float32)  # 23 s -> windows of 10, 10, 3 s
    clip_b = np.ones(20 * SR, dtype=np.float32)  # exactly 2 windows, no padding
    windows, masks, weights, clip_ids = make_windows([clip_a, clip_b])
    assert windows.shape == masks.shape == (5, 10 * SR)
    np.testing.assert_allclose(weights, [1.0, 1.0, 0.3, 1.0, 1.0])
    np.testing.assert_array_equal(clip_ids, [0, 0, 0, 1, 1])
    np.testing.assert_array_equal(windows[1], clip_a[10 * SR : 20 * SR])
    np.testing.assert_array_equal(windows[2, : 3 * SR], clip_a[20 * SR :])
    assert not windows[2, 3 * SR :].any()
    assert masks[2, : 3 * SR].all() and not masks[2, 3 * SR :].any()
    assert masks[3].all() and masks[4].all()


def test_windowed_score_equals_length_weighted_mean_of_single_window_forwards(scorer, small_model):
    clip = tone(23.0)  # 3 windows: 10 s, 10 s, 3 s
    got = scorer.score_one(clip, SR)

    win = 10 * SR
    preds, weights = [], []
    with torch.inference_mode():
        for start in range(0, clip.size, win):
            piece = torch.from_numpy(clip[start : start + win])
            wav = torch.nn.functional.pad(piece, (0, win - piece.numel()))
            mask = torch.zeros(win, dtype=torch.bool)
            mask[: piece.numel()] = True
            out = small_model({"wav": wav.view(1, 1, -1), "mask": mask.view(1, 1, -1)})
            preds.append({axis: float(out[axis][0]) for axis in AXES})
            weights.append(piece.numel() / win)
    assert weights == [1.0, 1.0, 0.3]
    for axis in AXES:
        t = small_model.target_transform[axis]
        expected = sum(w * (p[axis] * t["std"] + t["mean"]) for p, w in zip(preds, weights)) / sum(weights)
        assert getattr(got, axis) == pytest.approx(expected, abs=1e-5)
    # the padded tail window must count less: equal weights would give another answer
    unweighted = np.mean([p["CE"] for p in preds]) * small_model.target_transform["CE"]["std"]
    unweighted += small_model.target_transform["CE"]["mean"]
    assert got.CE != pytest.approx(unweighted, abs=1e-7)


def test_batched_many_clips_equal_one_by_one(small_model):
    clips = [tone(2.5, freq=300), tone(12.0, freq=500, seed=2), tone(0.5, freq=700, seed=3)]
    batched = MAAScorer.from_model(small_model, device="cpu", max_batch_size=3).score(clips, SR)
    single = MAAScorer.from_model(small_model, device="cpu", max_batch_size=1)
    one_by_one = [single.score_one(c, SR) for c in clips]
    assert_scores_equal(batched, one_by_one, atol=1e-5)


def test_resampling_from_44100(scorer):
    from scipy.signal import resample_poly

    clip_44k = tone(2.0, sr=44_100)
    resampled = maa.resample_to_maa_rate(clip_44k, 44_100)
    assert resampled.dtype == np.float32 and resampled.size == 2 * SR
    # a 440 Hz tone keeps its pitch: spectrum peak at 440 Hz after resampling
    spectrum = np.abs(np.fft.rfft(resampled))
    assert np.fft.rfftfreq(resampled.size, 1 / SR)[spectrum.argmax()] == pytest.approx(440, abs=1)
    from_44k = scorer.score_one(clip_44k, 44_100)
    from_16k = scorer.score_one(resample_poly(clip_44k, 160, 441).astype(np.float32), SR)
    assert_scores_equal([from_44k], [from_16k], atol=1e-6)


@pytest.mark.parametrize(
    ("audios", "sample_rate", "message"),
    [
        ([np.zeros((2, 16000), np.float32)], SR, "mono 1-D"),
        ([np.zeros(0, np.float32)], SR, "empty"),
        ([np.array([0.0, np.nan], np.float32)], SR, "NaN"),
        ([np.zeros(100, np.float32)], 0, "sample rate"),
        ([np.zeros(100, np.float32)], 16000.5, "sample rate"),
        (np.zeros(100, np.float32), SR, "score_one"),
        ([["a", "b"]], SR, "not numeric"),
    ],
)
def test_bad_input_raises_clear_error(scorer, audios, sample_rate, message):
    with pytest.raises(MAAInputError, match=message):
        scorer.score(audios, sample_rate)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-CUDA error")
def test_cuda_device_without_cuda_is_a_clear_error(small_model):
    with pytest.raises(ValueError, match="CUDA is not available"):
        MAAScorer.from_model(build_maa_model(), device="cuda")


def test_empty_list_scores_nothing(scorer):
    assert scorer.score([], SR) == []


# ---------------------------------------------------------------------------------------- checkpoints


def test_checkpoint_pt_round_trip(tmp_path, small_model, scorer):
    path = save_checkpoint_pt(small_model, tmp_path / "ckpt" / "checkpoint.pt")
    raw = torch.load(path, map_location="cpu", weights_only=True)  # the package's layout, safely loadable
    assert set(raw) == {"state_dict", "model_cfg", "target_transform"}
    assert all(k.startswith("model.") for k in raw["state_dict"])
    assert raw["model_cfg"]["precision"] in {"32", "bf16"}

    loaded = MAAScorer.load(path, device="cpu", exact=True)
    assert loaded.source == str(path)
    assert loaded.is_random  # provenance survives the file round trip
    clips = [tone(3.0), tone(11.0, freq=660, seed=4)]
    assert_scores_equal(loaded.score(clips, SR), scorer.score(clips, SR))
    # a folder holding checkpoint.pt is accepted too
    assert find_checkpoint(path.parent) == path


def test_hf_directory_round_trip_via_env_var(tmp_path, monkeypatch, small_model, scorer):
    small_model.save_pretrained(tmp_path / "hf")
    assert {"config.json", "model.safetensors"} <= set(os.listdir(tmp_path / "hf"))
    monkeypatch.setenv(maa.CHECKPOINT_ENV_VAR, str(tmp_path / "hf"))
    loaded = MAAScorer.load(device="cpu", exact=True)
    assert loaded.source == str(tmp_path / "hf") and loaded.is_random
    clips = [tone(3.0, freq=330)]
    assert_scores_equal(loaded.score(clips, SR), scorer.score(clips, SR))


def test_checkpoint_found_in_local_hf_cache(tmp_path, monkeypatch, small_model, no_weights_anywhere):
    from huggingface_hub import constants

    cache = tmp_path / "hf-cache"
    repo = cache / "models--facebook--audiobox-aesthetics"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text("0" * 40)
    path = save_checkpoint_pt(small_model, repo / "snapshots" / ("0" * 40) / "checkpoint.pt")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    assert find_checkpoint() == path
    assert MAAScorer.load(device="cpu").source == str(path)


def test_missing_weights_raise_maa_unavailable(no_weights_anywhere):
    assert find_checkpoint() is None
    with pytest.raises(MAAUnavailable, match=r"^MAA weights not installed: .*SMART_MAA_CHECKPOINT.*hf download") as err:
        MAAScorer.load()
    assert "\n" not in str(err.value)
    missing = no_weights_anywhere / "nowhere" / "checkpoint.pt"
    with pytest.raises(MAAUnavailable, match=f"no checkpoint at {missing}"):
        MAAScorer.load(missing)


def test_given_location_that_is_missing_never_falls_back(tmp_path, monkeypatch, small_model, no_weights_anywhere):
    from huggingface_hub import constants

    repo = tmp_path / "hf-cache" / "models--facebook--audiobox-aesthetics"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text("1" * 40)
    save_checkpoint_pt(small_model, repo / "snapshots" / ("1" * 40) / "checkpoint.pt")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf-cache"))
    monkeypatch.setenv(maa.CHECKPOINT_ENV_VAR, str(tmp_path / "typo.pt"))
    with pytest.raises(MAAUnavailable, match="SMART_MAA_CHECKPOINT="):
        MAAScorer.load(allow_download=True)  # a given location is never replaced by a download


def test_download_offline_fails_clearly(no_weights_anywhere, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)  # fast, deterministic stand-in for "no internet"
    with pytest.raises(MAAUnavailable, match="could not download MAA weights .*offline"):
        MAAScorer.load(allow_download=True, progress=False)


def test_corrupt_checkpoint_raises_checkpoint_error(tmp_path, small_model):
    garbage = tmp_path / "checkpoint.pt"
    garbage.write_bytes(b"definitely not a checkpoint")
    with pytest.raises(MAACheckpointError, match="not a readable checkpoint"):
        MAAScorer.load(garbage)

    wrong = tmp_path / "other.pt"
    torch.save({"weights": torch.zeros(3)}, wrong)
    with pytest.raises(MAACheckpointError, match="not an audiobox-aesthetics checkpoint"):
        MAAScorer.load(wrong)

    mismatched = tmp_path / "mismatched.pt"
    save_checkpoint_pt(small_model, mismatched)
    ckpt = torch.load(mismatched, weights_only=True)
    del ckpt["state_dict"]["model.proj_layer.CE.0.weight"]
    torch.save(ckpt, mismatched)
    with pytest.raises(MAACheckpointError, match="1 missing"):
        MAAScorer.load(mismatched)

    half_hf = tmp_path / "half-hf"
    half_hf.mkdir()
    (half_hf / "config.json").write_text("{}")
    with pytest.raises(MAACheckpointError, match="lacks model.safetensors"):
        MAAScorer.load(half_hf)


class _Exploit:
    """Pickles into a call that would create a file when unpickled."""

    marker: str = ""

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_checkpoint_with_arbitrary_objects_is_refused(tmp_path):
    _Exploit.marker = str(tmp_path / "pwned")
    path = tmp_path / "evil.pt"
    torch.save({"state_dict": {}, "model_cfg": _Exploit(), "target_transform": {}}, path)
    with pytest.raises(MAACheckpointError, match="refusing to unpickle"):
        MAAScorer.load(path)
    assert not (tmp_path / "pwned").exists()


# ------------------------------------------------------------------------------------------- full size


@pytest.mark.slow
def test_full_size_random_model_matches_released_architecture(tmp_path):
    from audiobox_aesthetics.model.aes import AesMultiOutput

    model = build_maa_model(small=False, seed=0)
    reference = AesMultiOutput()  # the package's own hard-coded 12-layer model
    ours = {k: v.shape for k, v in model.state_dict().items()}
    assert ours == {k: v.shape for k, v in reference.state_dict().items()}
    assert sum(v.numel() for v in model.state_dict().values()) == 94_385_064

    # the file loads the way the package's AesPredictor loads it (same kwargs, strict state dict)
    path = save_checkpoint_pt(model, tmp_path / "checkpoint.pt")
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    kwargs = {k: ckpt["model_cfg"][k] for k in maa._MODEL_CFG_KEYS} | {"target_transform": ckpt["target_transform"]}
    reference = AesMultiOutput(**kwargs)
    reference.load_state_dict({k.removeprefix("model."): v for k, v in ckpt["state_dict"].items()})
    assert os.path.getsize(path) == pytest.approx(maa.MAA_DOWNLOAD_BYTES, rel=0.02)

    scorer = MAAScorer.from_model(model, device="cpu")
    assert scorer.is_random
    start = time.perf_counter()
    scores = scorer.score([tone(12.0)], SR)[0]
    assert all(math.isfinite(v) for v in scores.as_dict().values())
    assert time.perf_counter() - start < 300  # sanity guard only; figures live in benchmarks/bench_maa.py

    loaded = MAAScorer.load(path, device="cpu")
    assert_scores_equal([loaded.score_one(tone(12.0), SR)], [scores])


@pytest.mark.slow
def test_download_with_refused_connection_fails_clearly(tmp_path):
    # huggingface_hub retries with back-off (~25 s) before giving up, hence slow
    with pytest.raises(MAAUnavailable, match="could not download MAA weights .*refused"):
        maa.download_weights(progress=False, cache_dir=tmp_path, endpoint="http://127.0.0.1:9")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_bf16_close_to_cpu_fp32(small_model):
    clip = [tone(12.0)]
    cpu = MAAScorer.from_model(build_maa_model(seed=0), device="cpu").score(clip, SR)
    gpu_scorer = MAAScorer.from_model(build_maa_model(seed=0), device="cuda")
    assert gpu_scorer.model.enable_autocast and gpu_scorer.model.precision == torch.bfloat16
    assert_scores_equal(gpu_scorer.score(clip, SR), cpu, atol=0.05)


# ------------------------------------------------------------------------------------ fast CPU path


def _embeddings(forward, model, wav: torch.Tensor, mask: torch.Tensor) -> dict[str, torch.Tensor]:
    """What the heads read (pooled, normalised embeddings): the heads swapped for Identity."""
    heads = model.proj_layer
    model.proj_layer = torch.nn.ModuleDict({axis: torch.nn.Identity() for axis in AXES})
    try:
        with torch.inference_mode():
            return forward({"wav": wav, "mask": mask})
    finally:
        model.proj_layer = heads


def _two_windows(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """A full window and a 4.2-s clip padded to 10 s (the padding mask matters)."""
    wav = np.zeros((2, 1, 10 * SR), dtype=np.float32)
    wav[0, 0] = tone(10.0, freq=330, seed=seed)
    wav[1, 0, : int(4.2 * SR)] = tone(4.2, freq=520, seed=seed + 1)
    mask = np.zeros_like(wav, dtype=bool)
    mask[0] = True
    mask[1, 0, : int(4.2 * SR)] = True
    return torch.from_numpy(wav), torch.from_numpy(mask)


def _int8_available() -> bool:
    from engine.fastdecode import int8_weights_available

    return int8_weights_available()


@pytest.mark.parametrize("relaid_float32", [{"low_precision": False}, {"precision": "float32"}])
def test_fast_forward_relayout_in_float32_equals_the_package_forward(small_model, relaid_float32):
    # FastCPUForward re-lays the computation out (first conv + GroupNorm as one matmul, im2col convs,
    # fused qkv, sdpa with the gated bias): in float32 it must be the package's forward.
    wav, mask = _two_windows()
    relaid_forward = maa.FastCPUForward(small_model, **relaid_float32)
    assert relaid_forward.precision == "float32"
    exact = _embeddings(small_model, small_model, wav, mask)
    relaid = _embeddings(relaid_forward, small_model, wav, mask)
    for axis in AXES:
        torch.testing.assert_close(relaid[axis], exact[axis], rtol=1e-4, atol=1e-5)
    with torch.inference_mode():
        heads_exact = small_model({"wav": wav, "mask": mask})
        heads_relaid = relaid_forward({"wav": wav, "mask": mask})
    for axis in AXES:
        torch.testing.assert_close(heads_relaid[axis], heads_exact[axis], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("precision", ["bf16", "int8"])
def test_fast_forward_low_precision_embeddings_stay_close_to_exact(small_model, precision):
    if precision == "int8" and not _int8_available():
        pytest.skip("this torch build lacks the fbgemm int8 kernels")
    wav, mask = _two_windows(seed=3)
    exact = _embeddings(small_model, small_model, wav, mask)
    forward = maa.FastCPUForward(small_model, precision=precision)
    fast = _embeddings(forward, small_model, wav, mask)
    for axis in AXES:
        error = (fast[axis] - exact[axis]).norm(dim=-1)
        between_clips = (exact[axis][0] - exact[axis][1]).norm()
        assert float(error.max()) > 0, "a low-precision path that is bit-exact is not running low precision"
        # quantization error is a small fraction of how far apart two different clips land
        assert float(error.max()) < 0.25 * float(between_clips), axis
    with torch.inference_mode():
        heads_exact = small_model({"wav": wav, "mask": mask})
        heads_fast = forward({"wav": wav, "mask": mask})
    for axis in AXES:
        assert heads_fast[axis].dtype == torch.float32
        torch.testing.assert_close(heads_fast[axis], heads_exact[axis], rtol=0, atol=0.02)


def test_default_fast_precision_is_bf16_only_with_amx(monkeypatch):
    monkeypatch.setattr(maa_fast, "cpu_flags", lambda: frozenset({"avx512f", "avx512_bf16", "amx_bf16", "amx_tile"}))
    assert maa.default_fast_cpu_precision() == "bf16"
    # AVX512-BF16 without AMX (e.g. AMD Zen 4): bf16 matmuls were only ≈ 1.5× float32 there, int8 ≈ 2×
    monkeypatch.setattr(maa_fast, "cpu_flags", lambda: frozenset({"avx512f", "avx512_bf16", "avx512_vnni"}))
    assert maa.default_fast_cpu_precision() == "int8"


@pytest.mark.parametrize("has_bf16", [True, False])
def test_int8_path_keeps_convolutions_float32_without_bf16_instructions(small_model, monkeypatch, has_bf16):
    # Emulated bf16 matmuls are 4-10x slower than float32 (BENCHMARKS.md): on a laptop CPU without
    # AVX512-BF16/AMX the "fast" path must not contain any, or it is slower than the exact model.
    if not _int8_available():
        pytest.skip("this torch build lacks the fbgemm int8 kernels")
    monkeypatch.setattr(maa_fast, "native_bf16", lambda: has_bf16)
    forward = maa.FastCPUForward(small_model, precision="int8")
    conv_dtypes = {w.dtype for conv in forward.convs for w in conv.weights} | {forward.pos_weight.dtype}
    assert conv_dtypes == {torch.bfloat16 if has_bf16 else torch.float32}
    wav, mask = _two_windows(seed=5)
    with torch.inference_mode():
        heads_exact = small_model({"wav": wav, "mask": mask})
        heads_fast = forward({"wav": wav, "mask": mask})
    for axis in AXES:
        torch.testing.assert_close(heads_fast[axis], heads_exact[axis], rtol=0, atol=0.02)


def test_unknown_fast_precision_is_refused_clearly(small_model):
    assert "unknown precision" in maa.fast_cpu_unsupported(small_model, "int4")
    with pytest.raises(ValueError, match="unknown precision 'int4'"):
        maa.FastCPUForward(small_model, precision="int4")
    scorer = MAAScorer.from_model(small_model, device="cpu", fast_precision="int4")
    assert scorer.precision == "fp32" and "unknown precision" in scorer.fast_reason


def test_fast_path_is_the_cpu_default_and_exact_can_be_forced(small_model, monkeypatch):
    monkeypatch.delenv(maa.EXACT_ENV_VAR, raising=False)
    fast = MAAScorer.from_model(small_model, device="cpu")
    exact = MAAScorer.from_model(small_model, device="cpu", exact=True)
    assert fast.precision == "fast-cpu" and fast.fast_reason is None
    assert fast.fast_precision == maa.default_fast_cpu_precision()
    assert exact.precision == "fp32" and "exact" in exact.fast_reason and exact.fast_precision is None
    assert exact.window_forward is exact.model  # the exact path is the package's own forward
    monkeypatch.setenv(maa.EXACT_ENV_VAR, "1")
    assert MAAScorer.from_model(small_model, device="cpu").precision == "fp32"
    assert MAAScorer.from_model(small_model, device="cpu", exact=False).precision == "fast-cpu"

    clips = [tone(10.0, freq=250), tone(3.5, freq=600, seed=5), tone(14.0, freq=410, seed=6)]
    assert_scores_equal(fast.score(clips, SR), exact.score(clips, SR), atol=0.02)


def test_smart_score_exact_switch(capsys, tmp_path, small_model, monkeypatch):
    from engine.cli import main
    from engine.render import load_wav, save_wav

    monkeypatch.delenv(maa.EXACT_ENV_VAR, raising=False)
    checkpoint = save_checkpoint_pt(small_model, tmp_path / "checkpoint.pt")
    wav_path = tmp_path / "tone.wav"
    save_wav(wav_path, tone(6.0, freq=300), SR)

    def score(*flags):
        code = main(["score", str(wav_path), "--maa", str(checkpoint), *flags])
        out, err = capsys.readouterr()
        assert code == 0, err
        return json.loads(out)

    fast, exact = score(), score("--exact")
    assert fast["maa_precision"] == "fast-cpu" and exact["maa_precision"] == "fp32"
    expected = MAAScorer.from_model(small_model, device="cpu", exact=True).score_one(*load_wav(wav_path))
    for axis in AXES:
        assert exact[axis] == getattr(expected, axis)  # --exact is the package's forward, bit for bit
        assert fast[axis] == pytest.approx(exact[axis], abs=0.02)
    monkeypatch.setenv(maa.EXACT_ENV_VAR, "1")
    assert score()["maa_precision"] == "fp32"


def test_fast_path_falls_back_to_exact_for_architectures_it_does_not_cover():
    pre_ln = build_maa_model(small=True, seed=0, layer_norm_first=True)
    assert "post-LN" in maa.fast_cpu_unsupported(pre_ln)
    scorer = MAAScorer.from_model(pre_ln, device="cpu")
    assert scorer.precision == "fp32" and "post-LN" in scorer.fast_reason
    with pytest.raises(ValueError, match="post-LN"):
        maa.FastCPUForward(pre_ln)


# ------------------------------------------------------------------------------ length that is scored


def _short_clip():
    from engine.music import Clip, Note

    return Clip(notes=[Note(i * 240, 60 + 4 * i, 240, 90) for i in range(4)])  # 2 beats at 120 bpm: 1 s


def test_render_max_seconds_crops_and_never_pads():
    from engine.music import Clip, Note
    from engine.render import RELEASE_TAIL_SECONDS, RenderError, render

    short = _short_clip()
    natural = render(short)
    assert len(natural) == round((1.0 + RELEASE_TAIL_SECONDS) * SR)
    np.testing.assert_array_equal(render(short, max_seconds=10.0), natural)
    long = Clip(notes=[Note(i * 480, 60, 480) for i in range(40)])  # 20 s at 120 bpm
    np.testing.assert_array_equal(render(long, max_seconds=10.0), render(long, seconds=10.0))
    with pytest.raises(RenderError, match="not both"):
        render(short, seconds=10.0, max_seconds=10.0)


def test_appended_silence_no_longer_changes_a_short_clips_reward_or_host_score(scorer):
    """Rewards/eval (RolloutAnalyzer) and the host (score_clips) score the true length: padding the
    render with silence (what `render(..., seconds=10)` used to do) would change the score."""
    import threading
    from types import SimpleNamespace

    from engine.host.server import score_clips
    from engine.render import render
    from training.rewards import RolloutAnalyzer

    clip = _short_clip()
    true_length = scorer.score_one(render(clip), SR)
    padded = scorer.score_one(render(clip, seconds=10.0), SR)
    assert padded.as_dict() != pytest.approx(true_length.as_dict(), abs=1e-4)  # padding is heard

    analyzer = RolloutAnalyzer(None, scorer=scorer, processes=1, seconds=10.0)
    audio = analyzer.render([clip])
    assert len(audio[0]) == len(render(clip))
    assert analyzer.score(audio)[0] == pytest.approx(true_length.as_dict(), abs=1e-6)

    state = SimpleNamespace(soundfont=None, scorer_lock=threading.Lock(), scorer=scorer)
    assert score_clips(state, [clip])[0] == pytest.approx(true_length.as_dict(), abs=1e-6)
