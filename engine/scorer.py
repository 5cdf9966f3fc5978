"""Meta Audiobox Aesthetics (MAA) scoring: CE / CU / PC / PQ on the 1–10 scale.

Built on ``audiobox_aesthetics.model.aes.AesMultiOutput``. ``audiobox_aesthetics.infer`` is never
imported: it imports torchaudio, which is not installed here (its PyPI build fails on CPU), so the
package's windowing / weighting is re-implemented below exactly as ``infer.make_inference_batch`` and
``AesPredictor.forward`` do it, with scipy doing the 16 kHz resampling.

Weights come from (first match wins): an explicit path, ``$SMART_MAA_CHECKPOINT``, or the local
Hugging Face cache. Nothing is downloaded unless ``allow_download=True`` is passed. With no weights,
``MAAUnavailable`` is raised; this module never invents scores.

On a CPU, windows go through ``FastCPUForward`` (bf16 on CPUs with AMX, 2.1–3.2× the float32 model; else
an int8 encoder, ≈ 2× with bf16 convolutions where the CPU has bf16 instructions, 1.7–1.9× with float32
ones where it has not; figures and agreement in BENCHMARKS.md) unless
``exact=True`` or ``$SMART_MAA_EXACT=1``. Its agreement was measured with random weights of the released
architecture: recheck it with the real weights once installed (``benchmarks/bench_maa.py --maa PATH``).
"""

from __future__ import annotations

import math
import os
import pickle
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from audiobox_aesthetics.model.aes import DEFAULT_AUDIO_CFG, AesMultiOutput, Normalize
from audiobox_aesthetics.model.utils import create_mlp_block
from audiobox_aesthetics.model.wavlm import WavLM, WavLMConfig
from torch import nn

from engine.errors import first_line
from engine.maa_fast import (
    FAST_CPU_PRECISIONS,
    FastCPUForward,
    default_fast_cpu_precision,
    fast_cpu_unsupported,
)
from engine.maa_weights import (
    AXES,
    CHECKPOINT_ENV_VAR,
    HF_CONFIG_FILENAME,
    HF_REPO_ID,
    HF_WEIGHTS_FILENAME,
    HOP_SAMPLES,
    MAA_DOWNLOAD_BYTES,
    MAA_SAMPLE_RATE,
    WINDOW_SAMPLES,
    MAACheckpointError,
    MAAUnavailable,
    check_checkpoint,
    download_weights,
    find_checkpoint,
    missing_weights_message,
)

__all__ = [
    "AXES",
    "CHECKPOINT_ENV_VAR",
    "EXACT_ENV_VAR",
    "FAST_CPU_PRECISIONS",
    "HF_REPO_ID",
    "MAA_DOWNLOAD_BYTES",
    "MAA_SAMPLE_RATE",
    "SMALL_WAVLM_CONFIG",
    "ConfigurableAesMultiOutput",
    "FastCPUForward",
    "MAACheckpointError",
    "MAAInputError",
    "MAAScorer",
    "MAAScores",
    "MAAUnavailable",
    "build_maa_model",
    "check_checkpoint",
    "default_fast_cpu_precision",
    "download_weights",
    "fast_cpu_unsupported",
    "fill_windows",
    "find_checkpoint",
    "make_windows",
    "resample_to_maa_rate",
    "save_checkpoint_pt",
    "window_plan",
]


DEFAULT_MAX_BATCH_SIZE = 8
# Set to 1/true to score with the exact float32 model on CPU instead of FastCPUForward.
EXACT_ENV_VAR = "SMART_MAA_EXACT"

# Keys of checkpoint["model_cfg"] that the package passes to AesMultiOutput (infer.py).
_MODEL_CFG_KEYS = (
    "proj_num_layer",
    "proj_ln",
    "proj_act_fn",
    "proj_dropout",
    "nth_layer",
    "use_weighted_layer_sum",
    "precision",
    "normalize_embed",
    "output_dim",
)

# Tiny WavLM for tests / timing. The conv strides are the released ones (5·2⁶ = 320 samples per
# frame) because WavLM's padding-mask downsampling assumes that frame rate; only widths shrink.
SMALL_WAVLM_CONFIG: dict[str, Any] = {
    "encoder_layers": 2,
    "encoder_embed_dim": 64,
    "encoder_ffn_embed_dim": 128,
    "encoder_attention_heads": 2,
    "conv_feature_layers": "[(16,10,5)] + [(16,3,2)] * 4 + [(16,2,2)] * 2",
    "conv_pos": 16,
    "conv_pos_groups": 4,
    "num_buckets": 32,
    "max_distance": 128,
}

# Placeholder output scaling for random-weight models (the real one ships in the checkpoint).
_RANDOM_TARGET_TRANSFORM = {axis: {"mean": 5.5, "std": 1.5} for axis in AXES}

# Deprecation noise from inside the vendored WavLM (weight_norm helper; bool padding mask next to
# a float position-bias mask). Targeted filters, installed once: catch_warnings is not thread-safe.
warnings.filterwarnings("ignore", message=r".*torch\.nn\.utils\.weight_norm.*", category=FutureWarning)
warnings.filterwarnings("ignore", message=r"Support for mismatched key_padding_mask", category=UserWarning)

_PRECISION_NAMES = {torch.float64: "64", torch.float32: "32", torch.half: "16", torch.bfloat16: "bf16"}




class MAAInputError(ValueError):
    """Audio or sample rate handed to the scorer is unusable."""


@dataclass(frozen=True)
class MAAScores:
    CE: float  # content enjoyment
    CU: float  # content usefulness
    PC: float  # production complexity
    PQ: float  # production quality

    def as_dict(self) -> dict:
        return {axis: getattr(self, axis) for axis in AXES}


# --------------------------------------------------------------------------------------------- model


@dataclass(eq=False)
class ConfigurableAesMultiOutput(AesMultiOutput):
    """``AesMultiOutput`` whose WavLM configuration can be changed.

    The package hard-codes the 12-layer WavLM in ``__post_init__``; this subclass builds the same
    modules (same parameter names, so checkpoints are interchangeable) from
    ``DEFAULT_AUDIO_CFG`` updated with ``wavlm_config``. With ``wavlm_config=None`` it *is* the
    released architecture. Both fields are saved in ``config.json`` by ``save_pretrained``.
    """

    wavlm_config: dict[str, Any] | None = None  # overrides of DEFAULT_AUDIO_CFG
    random_weights: bool = False  # provenance flag: True for build_maa_model() output

    def __post_init__(self):
        nn.Module.__init__(self)
        cfg = _merged_wavlm_config(self.wavlm_config)
        if not 1 <= self.nth_layer <= cfg.encoder_layers + 1:
            raise ValueError(
                f"nth_layer={self.nth_layer} needs 1..{cfg.encoder_layers + 1} for a {cfg.encoder_layers}-layer WavLM"
            )
        self.wavlm_model = WavLM(cfg)
        embed_dim = cfg.encoder_embed_dim
        self.axes_name = list(AXES)
        self.proj_layer = nn.ModuleDict(
            {
                axis: nn.Sequential(
                    *create_mlp_block(
                        embed_dim,
                        self.output_dim,
                        self.proj_num_layer,
                        self.proj_act_fn,
                        self.proj_ln,
                        dropout=self.proj_dropout,
                    )
                )
                for axis in self.axes_name
            }
        )
        if self.use_weighted_layer_sum:
            # Encoder.extract_features returns input + one result per layer up to nth_layer.
            n_results = min(self.nth_layer, cfg.encoder_layers + 1)
            self.layer_weights = nn.ParameterDict(
                {axis: nn.Parameter(torch.ones(n_results) / n_results) for axis in self.axes_name}
            )
        precision_map = {"64": torch.float64, "32": torch.float32, "16": torch.half, "bf16": torch.bfloat16}
        self.precision = precision_map[_precision_name(self.precision)]
        # Same (always-off) switch as the package; MAAScorer sets it explicitly per device.
        self.enable_autocast = False


def _precision_name(precision: Any) -> str:
    if isinstance(precision, torch.dtype):
        return _PRECISION_NAMES[precision]
    return str(precision)


def _merged_wavlm_config(overrides: dict[str, Any] | None) -> WavLMConfig:
    cfg = WavLMConfig(dict(DEFAULT_AUDIO_CFG.__dict__))
    if overrides:
        unknown = sorted(set(overrides) - set(cfg.__dict__))
        if unknown:
            raise ValueError(f"unknown WavLM config keys: {', '.join(unknown)}")
        cfg.update(dict(overrides))
    return cfg


def build_maa_model(small: bool = True, seed: int = 0, **overrides) -> ConfigurableAesMultiOutput:
    """A random-weight MAA model, for tests and timing only (never for real scores).

    ``small=True`` uses SMALL_WAVLM_CONFIG; ``small=False`` the released 12-layer WavLM.
    ``overrides`` may hold AesMultiOutput fields (e.g. ``proj_num_layer``, ``target_transform``)
    and WavLM config keys (e.g. ``encoder_layers``), which update the chosen WavLM configuration.
    """
    wavlm_keys = set(WavLMConfig().__dict__) | set(DEFAULT_AUDIO_CFG.__dict__)
    wavlm_overrides = {k: v for k, v in overrides.items() if k in wavlm_keys}
    model_kwargs = {k: v for k, v in overrides.items() if k not in wavlm_keys}
    wavlm_config = {**(SMALL_WAVLM_CONFIG if small else {}), **wavlm_overrides} or None
    n_layers = (wavlm_config or {}).get("encoder_layers", DEFAULT_AUDIO_CFG.encoder_layers)
    model_kwargs.setdefault("nth_layer", n_layers + 1)
    model_kwargs.setdefault("target_transform", {k: dict(v) for k, v in _RANDOM_TARGET_TRANSFORM.items()})
    model_kwargs["random_weights"] = True
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = ConfigurableAesMultiOutput(wavlm_config=wavlm_config, **model_kwargs)
    return model.eval()


# ---------------------------------------------------------------------------------------- checkpoints


def save_checkpoint_pt(model: AesMultiOutput, path: str | os.PathLike) -> Path:
    """Write ``model`` in the package's checkpoint.pt format (loadable by its own AesPredictor).

    Extra model_cfg keys (``wavlm_config``, ``smart_random_weights``) are ignored by the package.
    """
    if model.target_transform is None:
        raise ValueError("model has no target_transform; it cannot produce 1–10 scores")
    path = Path(path)
    model_cfg = {key: getattr(model, key) for key in _MODEL_CFG_KEYS}
    model_cfg["precision"] = _precision_name(model.precision)
    model_cfg["wavlm_config"] = getattr(model, "wavlm_config", None)
    model_cfg["smart_random_weights"] = bool(getattr(model, "random_weights", False))
    checkpoint = {
        "state_dict": {f"model.{k}": v.detach().cpu().clone() for k, v in model.state_dict().items()},
        "model_cfg": model_cfg,
        "target_transform": {
            axis: {"mean": float(t["mean"]), "std": float(t["std"])} for axis, t in model.target_transform.items()
        },
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(checkpoint, tmp)
    os.replace(tmp, path)  # atomic: a crash never leaves a half-written checkpoint behind
    return path


def _load_checkpoint_pt(path: Path) -> ConfigurableAesMultiOutput:
    try:
        # weights_only: the file is plain tensors/dicts/numbers/strings; never run arbitrary pickles.
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        detail = _weights_unpickler_detail(exc)
        if "Unsupported global" in detail:
            raise MAACheckpointError(
                f"{path} holds objects other than tensors/dicts/numbers/strings; refusing to unpickle it ({detail})"
            ) from None
        raise MAACheckpointError(f"{path} is not a readable checkpoint ({detail})") from None
    except Exception as exc:  # noqa: BLE001 -- torch's readers raise KeyError, IndexError, ... on junk
        raise MAACheckpointError(f"{path} is not a readable checkpoint ({first_line(exc) or type(exc).__name__})") from None
    if not isinstance(ckpt, dict) or not {"state_dict", "model_cfg", "target_transform"} <= set(ckpt):
        raise MAACheckpointError(
            f"{path} is not an audiobox-aesthetics checkpoint (needs state_dict, model_cfg, target_transform)"
        )
    model_cfg = ckpt["model_cfg"]
    if not isinstance(model_cfg, dict) or not isinstance(ckpt["state_dict"], dict):
        raise MAACheckpointError(f"{path} is not an audiobox-aesthetics checkpoint (model_cfg and state_dict must be dicts)")
    missing = [k for k in _MODEL_CFG_KEYS if k not in model_cfg]
    if missing:
        raise MAACheckpointError(f"{path}: model_cfg lacks {', '.join(missing)}")
    _check_target_transform(ckpt["target_transform"], path)
    try:
        model = ConfigurableAesMultiOutput(
            **{k: model_cfg[k] for k in _MODEL_CFG_KEYS},
            target_transform=ckpt["target_transform"],
            wavlm_config=model_cfg.get("wavlm_config"),
            random_weights=bool(model_cfg.get("smart_random_weights", False)),
        )
    except (ValueError, KeyError, TypeError, AttributeError, OverflowError, RuntimeError) as exc:
        raise MAACheckpointError(f"{path}: unsupported model configuration ({first_line(exc)})") from None
    state_dict = {str(k).removeprefix("model."): v for k, v in ckpt["state_dict"].items()}
    _load_state_dict(model, state_dict, path)
    return model


def _weights_unpickler_detail(exc: BaseException) -> str:
    """The informative part of torch's long weights_only error (what it could not unpickle)."""
    text = str(exc)
    marker = "WeightsUnpickler error:"
    if marker in text:
        for line in text.split(marker, 1)[1].splitlines():
            if line.strip():
                return line.strip().split(" Please use", 1)[0]  # drop torch's allowlisting advice
    return first_line(exc)


def _load_hf_directory(directory: Path) -> ConfigurableAesMultiOutput:
    for name in (HF_CONFIG_FILENAME, HF_WEIGHTS_FILENAME):
        if not (directory / name).is_file():
            raise MAACheckpointError(f"{directory} lacks {name} (expected a Hugging Face model directory)")
    try:
        model = ConfigurableAesMultiOutput.from_pretrained(directory, strict=True, map_location="cpu")
    except Exception as exc:  # noqa: BLE001 -- safetensors/json/torch raise assorted types; all mean "unreadable"
        raise MAACheckpointError(f"{directory} could not be loaded ({first_line(exc)})") from None
    _check_target_transform(model.target_transform, directory)
    return model


def _load_state_dict(model: nn.Module, state_dict: dict, source: Path) -> None:
    try:
        result = model.load_state_dict(state_dict, strict=False)
    except (RuntimeError, TypeError, ValueError, AttributeError) as exc:  # shapes or non-tensor values
        raise MAACheckpointError(f"{source}: weights do not match the model ({first_line(exc)})") from None
    problems = []
    if result.missing_keys:
        problems.append(f"{len(result.missing_keys)} missing (e.g. {result.missing_keys[0]})")
    if result.unexpected_keys:
        problems.append(f"{len(result.unexpected_keys)} unexpected (e.g. {result.unexpected_keys[0]})")
    if problems:
        raise MAACheckpointError(f"{source}: weights do not match the model: {'; '.join(problems)}")


def _check_target_transform(target_transform: Any, source: Path) -> None:
    ok = isinstance(target_transform, dict) and all(
        isinstance(target_transform.get(axis), dict) and {"mean", "std"} <= set(target_transform[axis]) for axis in AXES
    )
    if not ok:
        raise MAACheckpointError(f"{source}: target_transform must give mean/std for {', '.join(AXES)}")



# ------------------------------------------------------------------------------------- fast CPU path

# -------------------------------------------------------------------------------------------- scoring


class MAAScorer:
    """Scores mono audio clips with an MAA model (batched over windows of many clips)."""

    def __init__(
        self,
        model: AesMultiOutput,
        device: str | torch.device | None = None,
        is_random: bool = False,
        source: str = "in-memory model",
        max_batch_size: int = DEFAULT_MAX_BATCH_SIZE,
        exact: bool | None = None,
        fast_precision: str | None = None,
    ):
        if model.target_transform is None:
            raise ValueError("model has no target_transform; it cannot produce 1–10 scores")
        if max_batch_size < 1:
            raise ValueError(f"max_batch_size must be at least 1, got {max_batch_size}")
        self.device = torch.device(device) if device is not None else _default_device()
        if self.device.type == "cuda" and not torch.cuda.is_available():
            raise ValueError(f"device {self.device} requested but CUDA is not available")
        self.is_random = bool(is_random)
        self.source = source
        self.max_batch_size = int(max_batch_size)
        self.model = model.to(self.device).eval()
        # The package's switch is always off (str(torch.bfloat16) is never "bf16"), and its forward
        # wraps itself in autocast(enabled=switch), which would cancel an outer autocast, so set it here.
        on_cuda = self.device.type == "cuda"
        self.model.precision = torch.bfloat16 if on_cuda else torch.float32
        self.model.enable_autocast = on_cuda
        self._inverse = {
            axis: Normalize(mean=float(t["mean"]), std=float(t["std"])) for axis, t in model.target_transform.items()
        }
        # CPU: FastCPUForward (at fast_precision, default: this CPU's) unless exact is asked for (argument,
        # else $SMART_MAA_EXACT) or the model is one it cannot run; fast_reason says why the exact path was taken.
        if exact is None:
            exact = os.environ.get(EXACT_ENV_VAR, "").strip().lower() in ("1", "true", "yes", "on")
        self._fast: FastCPUForward | None = None
        if on_cuda:
            self.fast_reason = "CUDA runs the exact model in bf16 autocast"
        elif exact:
            self.fast_reason = "exact float32 requested"
        else:
            self.fast_reason = fast_cpu_unsupported(self.model, fast_precision)
            if self.fast_reason is None:
                self._fast = FastCPUForward(self.model, precision=fast_precision)
        # batch {"wav": (B, 1, samples), "mask": (B, 1, samples)} -> {axis: (B,) model-scale outputs}
        self.window_forward = self._fast or self.model

    @property
    def precision(self) -> str:
        """How windows are computed: "fast-cpu" (FastCPUForward), "fp32" or "bf16-autocast"."""
        if self._fast is not None:
            return "fast-cpu"
        return "bf16-autocast" if self.model.enable_autocast else "fp32"

    @property
    def fast_precision(self) -> str | None:
        """FastCPUForward's precision ("bf16" / "int8"), None on the exact or CUDA paths."""
        return None if self._fast is None else self._fast.precision

    @classmethod
    def load(
        cls,
        checkpoint: str | os.PathLike | None = None,
        device: str | torch.device | None = None,
        allow_download: bool = False,
        progress: bool = True,
        max_batch_size: int = DEFAULT_MAX_BATCH_SIZE,
        exact: bool | None = None,
    ) -> MAAScorer:
        """Load weights from a checkpoint.pt / HF directory (see find_checkpoint).

        Downloads from the hub only when ``allow_download`` is True and no location was given.
        """
        path = find_checkpoint(checkpoint)
        location_given = checkpoint is not None or bool(os.environ.get(CHECKPOINT_ENV_VAR))
        if path is None:
            if not allow_download or location_given:
                raise MAAUnavailable(missing_weights_message(checkpoint))
            path = download_weights(progress=progress)
        path = check_checkpoint(path)  # junk, text files, devices: one line naming the file
        model = _load_hf_directory(path) if path.is_dir() else _load_checkpoint_pt(path)
        return cls(
            model,
            device=device,
            is_random=bool(getattr(model, "random_weights", False)),
            source=str(path),
            max_batch_size=max_batch_size,
            exact=exact,
        )

    @classmethod
    def from_model(
        cls,
        model: AesMultiOutput,
        device: str | torch.device | None = None,
        is_random: bool | None = None,
        max_batch_size: int = DEFAULT_MAX_BATCH_SIZE,
        exact: bool | None = None,
        fast_precision: str | None = None,
    ) -> MAAScorer:
        """Wrap an in-memory model (moved to ``device``, put in eval mode).

        ``is_random=None`` takes the model's own ``random_weights`` flag (set by build_maa_model).
        """
        model_random = bool(getattr(model, "random_weights", False))
        random = model_random if is_random is None else bool(is_random) or model_random
        source = "random weights (tests/timing only)" if random else f"in-memory {type(model).__name__}"
        return cls(model, device=device, is_random=random, source=source, max_batch_size=max_batch_size, exact=exact,
                   fast_precision=fast_precision)

    def score_one(self, audio: np.ndarray, sample_rate: int) -> MAAScores:
        return self.score([audio], sample_rate)[0]

    def score(self, audios: Sequence[np.ndarray], sample_rate: int) -> list[MAAScores]:
        """Scores for each clip: length-weighted mean over 10-s windows, 1–10 scale."""
        if isinstance(audios, np.ndarray):
            raise MAAInputError("score() takes a list of clips; use score_one() for a single array")
        sample_rate = _check_sample_rate(sample_rate)
        clips = [resample_to_maa_rate(_check_clip(a, i), sample_rate) for i, a in enumerate(audios)]
        if not clips:
            return []
        clip_ids, starts, lengths = window_plan(clips)
        raw = self._forward_windows(clips, clip_ids, starts, lengths)  # axis -> (n_windows,), model scale
        weights = lengths / WINDOW_SAMPLES
        results = []
        for clip in range(len(clips)):
            sel = clip_ids == clip
            w = weights[sel]
            values = {axis: float(np.sum(self._inverse[axis].inverse(raw[axis][sel]) * w) / np.sum(w)) for axis in AXES}
            results.append(MAAScores(**values))
        return results

    def _forward_windows(
        self, clips: Sequence[np.ndarray], clip_ids: np.ndarray, starts: np.ndarray, lengths: np.ndarray
    ) -> dict[str, np.ndarray]:
        outputs: dict[str, list[np.ndarray]] = {axis: [] for axis in AXES}
        forward = self.window_forward
        with torch.inference_mode():
            # windows are materialised one batch at a time: many long clips never sit padded in memory
            for first in range(0, len(clip_ids), self.max_batch_size):
                batch = slice(first, first + self.max_batch_size)
                windows, masks = fill_windows(clips, clip_ids[batch], starts[batch], lengths[batch])
                wav = torch.from_numpy(windows).to(self.device).unsqueeze(1)
                mask = torch.from_numpy(masks).to(self.device).unsqueeze(1)
                preds = forward({"wav": wav, "mask": mask})
                for axis in AXES:
                    outputs[axis].append(preds[axis].float().cpu().numpy().astype(np.float64))
        return {axis: np.concatenate(parts) for axis, parts in outputs.items()}

    def __repr__(self) -> str:
        fast = "" if self._fast is None else f", fast_precision={self._fast.precision!r}"
        return (f"MAAScorer(source={self.source!r}, device={self.device}, is_random={self.is_random}, "
                f"precision={self.precision!r}{fast})")


def _default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _check_sample_rate(sample_rate: Any) -> int:
    if isinstance(sample_rate, bool) or not isinstance(sample_rate, (int, np.integer)) or sample_rate <= 0:
        raise MAAInputError(f"sample rate must be a positive integer, got {sample_rate!r}")
    return int(sample_rate)


def _check_clip(audio: Any, index: int) -> np.ndarray:
    try:
        clip = np.asarray(audio, dtype=np.float32)
    except (TypeError, ValueError):
        raise MAAInputError(f"clip #{index} is not numeric audio") from None
    if clip.ndim != 1:
        raise MAAInputError(f"clip #{index} must be mono 1-D audio, got shape {clip.shape}")
    if clip.size == 0:
        raise MAAInputError(f"clip #{index} is empty")
    if not np.all(np.isfinite(clip)):
        raise MAAInputError(f"clip #{index} contains NaN or infinite samples")
    return clip


def resample_to_maa_rate(audio: np.ndarray, sample_rate: int) -> np.ndarray:
    """Polyphase resampling to 16 kHz (torchaudio is unavailable, see module docstring)."""
    if sample_rate == MAA_SAMPLE_RATE:
        return np.ascontiguousarray(audio, dtype=np.float32)
    from scipy.signal import resample_poly

    g = math.gcd(sample_rate, MAA_SAMPLE_RATE)
    return resample_poly(audio, MAA_SAMPLE_RATE // g, sample_rate // g).astype(np.float32)


def window_plan(clips: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Window layout of the package's make_inference_batch (10-s windows every 10 s, 16-kHz clips).

    Returns clip_ids, start samples and real lengths (≤ WINDOW_SAMPLES) of every window, in order.
    """
    clip_ids, starts, lengths = [], [], []
    for clip_id, clip in enumerate(clips):
        for start in range(0, len(clip), HOP_SAMPLES):
            clip_ids.append(clip_id)
            starts.append(start)
            lengths.append(min(WINDOW_SAMPLES, len(clip) - start))
    return np.array(clip_ids, dtype=np.int64), np.array(starts, dtype=np.int64), np.array(lengths, dtype=np.int64)


def fill_windows(
    clips: Sequence[np.ndarray], clip_ids: np.ndarray, starts: np.ndarray, lengths: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Zero-padded windows (n, WINDOW_SAMPLES) float32 and masks (True = real audio) for a plan slice."""
    windows = np.zeros((len(clip_ids), WINDOW_SAMPLES), dtype=np.float32)
    masks = np.zeros((len(clip_ids), WINDOW_SAMPLES), dtype=bool)
    for row, (clip_id, start, length) in enumerate(zip(clip_ids, starts, lengths)):
        windows[row, :length] = clips[clip_id][start : start + length]
        masks[row, :length] = True
    return windows, masks


def make_windows(clips: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """All windows at once: windows, masks, weights (real length / window length), clip_ids."""
    clip_ids, starts, lengths = window_plan(clips)
    windows, masks = fill_windows(clips, clip_ids, starts, lengths)
    return windows, masks, lengths / WINDOW_SAMPLES, clip_ids


