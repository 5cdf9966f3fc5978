"""Where the MAA (Meta Audiobox Aesthetics) weights are and how to get them — light (no torch), so the
studio can show and fetch them without loading the scorer. `engine.scorer` loads what this finds.

Weights come from (first match wins): an explicit path, ``$SMART_MAA_CHECKPOINT``, or the local Hugging
Face cache. Nothing is downloaded unless asked (`download_weights`, with a progress bar).
"""

from __future__ import annotations

import os
from pathlib import Path

from tqdm.auto import tqdm

from engine.errors import first_line, root_cause

AXES: tuple[str, ...] = ("CE", "CU", "PC", "PQ")

HF_REPO_ID = "facebook/audiobox-aesthetics"
CHECKPOINT_FILENAME = "checkpoint.pt"
HF_CONFIG_FILENAME = "config.json"
HF_WEIGHTS_FILENAME = "model.safetensors"
CHECKPOINT_ENV_VAR = "SMART_MAA_CHECKPOINT"

# Approximate size of checkpoint.pt: the fp32 state dict of the released architecture
# (AesMultiOutput with the 12-layer WavLM = 94,385,064 parameters x 4 bytes = 377.5 MB), computed
# from the model definition in audiobox_aesthetics 0.0.x; the hub listing could not be checked offline.
MAA_DOWNLOAD_BYTES: int = 378_000_000

# The package's inference constants (infer.py: AesPredictor.sample_rate, make_inference_batch(…, 10, 10)).
MAA_SAMPLE_RATE = 16_000
WINDOW_SECONDS = 10
HOP_SECONDS = 10
WINDOW_SAMPLES = WINDOW_SECONDS * MAA_SAMPLE_RATE
HOP_SAMPLES = HOP_SECONDS * MAA_SAMPLE_RATE


class MAAUnavailable(RuntimeError):
    """No usable MAA weights (not installed, download failed, or unreadable checkpoint)."""


class MAACheckpointError(MAAUnavailable):
    """A checkpoint file/directory exists but cannot be loaded."""


def _hf_cache_location() -> Path | None:
    """checkpoint.pt or a from_pretrained snapshot of facebook/audiobox-aesthetics, if already cached."""
    from huggingface_hub import try_to_load_from_cache

    cached = try_to_load_from_cache(HF_REPO_ID, CHECKPOINT_FILENAME)
    if isinstance(cached, str):
        return Path(cached)
    weights = try_to_load_from_cache(HF_REPO_ID, HF_WEIGHTS_FILENAME)
    config = try_to_load_from_cache(HF_REPO_ID, HF_CONFIG_FILENAME)
    if isinstance(weights, str) and isinstance(config, str) and Path(weights).parent == Path(config).parent:
        return Path(weights).parent
    return None


def find_checkpoint(explicit: str | os.PathLike | None = None) -> Path | None:
    """Where MAA weights are: ``explicit`` → ``$SMART_MAA_CHECKPOINT`` → local HF cache; else None.

    The first location that is *given* decides: a given path that does not exist yields None
    rather than silently falling back to other weights. Never touches the network.
    """
    given = explicit if explicit is not None else os.environ.get(CHECKPOINT_ENV_VAR) or None
    if given is not None:
        path = Path(given).expanduser()
        if path.is_dir() and not (path / HF_WEIGHTS_FILENAME).exists() and (path / CHECKPOINT_FILENAME).is_file():
            return path / CHECKPOINT_FILENAME
        return path if path.exists() else None
    return _hf_cache_location()


class _SilentTqdm(tqdm):
    """Progress bar class handed to hf_hub_download when progress=False."""

    def __init__(self, *args, **kwargs):
        kwargs["disable"] = True
        super().__init__(*args, **kwargs)


def download_weights(
    progress: bool | type[tqdm] = True, *, cache_dir: str | os.PathLike | None = None, endpoint: str | None = None
) -> Path:
    """Download checkpoint.pt (~378 MB) from the Hugging Face hub into the HF cache; return its path.

    `progress`: True for a console bar, False for none, or a tqdm subclass that reports the bytes
    elsewhere (the studio's progress bar; raising from its `update` cancels the download).
    Raises MAAUnavailable with the reason when the hub cannot be reached.
    """
    from huggingface_hub import hf_hub_download

    tqdm_class = progress if isinstance(progress, type) else (None if progress else _SilentTqdm)
    try:
        path = hf_hub_download(HF_REPO_ID, CHECKPOINT_FILENAME, cache_dir=cache_dir, endpoint=endpoint,
                               tqdm_class=tqdm_class)
    except Exception as exc:  # noqa: BLE001 -- network/offline/HTTP errors come in many types; all mean "not downloaded"
        reason = first_line(root_cause(exc))  # the hub's own wrapper message is generic
        raise MAAUnavailable(f"could not download MAA weights ({HF_REPO_ID}/{CHECKPOINT_FILENAME}): {reason}") from None
    return Path(path)


def missing_weights_message(explicit: str | os.PathLike | None) -> str:
    if explicit is not None:
        looked = f"no checkpoint at {Path(explicit).expanduser()}"
    elif os.environ.get(CHECKPOINT_ENV_VAR):
        looked = f"no checkpoint at ${CHECKPOINT_ENV_VAR}={os.environ[CHECKPOINT_ENV_VAR]}"
    else:
        from huggingface_hub import constants

        looked = f"${CHECKPOINT_ENV_VAR} is unset and the HF cache ({constants.HF_HUB_CACHE}) has no {HF_REPO_ID}"
    return (
        f"MAA weights not installed: {looked}; install with "
        f"`hf download {HF_REPO_ID} {CHECKPOINT_FILENAME}` (~{MAA_DOWNLOAD_BYTES / 1e6:.0f} MB), "
        f"or point ${CHECKPOINT_ENV_VAR} at a checkpoint.pt / HF model directory"
    )
