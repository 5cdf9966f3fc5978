"""Where the MAA (Meta Audiobox Aesthetics) weights are and how to get them — light (no torch), so the
studio can show and fetch them without loading the scorer. `engine.scorer` loads what this finds.

Weights come from (first match wins): an explicit path, ``$SMART_MAA_CHECKPOINT``, or the local Hugging
Face cache. Nothing is downloaded unless asked (`download_weights`, with a progress bar).
"""

from __future__ import annotations

import json
import os
import struct
import zipfile
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


# torch.save's legacy (pre-1.6, non-zip) format starts with its magic number pickled at protocol 2.
_LEGACY_TORCH_MAGIC = b"\x80\x02\x8a\nl\xfc\x9cF\xf9 j\xa8P\x19."
_MAX_SAFETENSORS_HEADER = 100_000_000  # the format's own limit on its JSON header
_MAX_CONFIG_BYTES = 1_000_000


def check_checkpoint(path: str | os.PathLike) -> Path:
    """The MAA weights at `path`, checked without torch; raise `MAACheckpointError` (one line naming
    the file) when they cannot be weights.

    `path` is a ``checkpoint.pt`` (torch's zip format or its legacy pickle format), a folder holding
    one, or a Hugging Face folder (``config.json`` + ``model.safetensors``). Returns the file or the
    HF folder to load (what `find_checkpoint` would). Only the files' framing is read (zip directory,
    magic bytes, safetensors header), so a junk or huge file, a device (``/dev/zero``) or a text file
    such as ``/etc/passwd`` is refused at once; `engine.scorer` still checks the contents as it loads.
    """
    given = Path(path).expanduser()
    if not given.exists():
        raise MAACheckpointError(f"no MAA checkpoint at {given}")
    if given.is_dir():
        if (given / HF_WEIGHTS_FILENAME).exists() or (given / HF_CONFIG_FILENAME).exists():
            _check_hf_directory(given)
            return given
        if (given / CHECKPOINT_FILENAME).exists():
            return check_checkpoint(given / CHECKPOINT_FILENAME)
        raise MAACheckpointError(f"{given} holds no MAA weights (need {CHECKPOINT_FILENAME}, or "
                                 f"{HF_CONFIG_FILENAME} + {HF_WEIGHTS_FILENAME})")
    if not given.is_file():
        raise MAACheckpointError(f"{given} is not a readable checkpoint (not a regular file)")
    try:
        with open(given, "rb") as f:
            head = f.read(len(_LEGACY_TORCH_MAGIC))
        if head == _LEGACY_TORCH_MAGIC:
            return given
        if head[:4] == b"PK\x03\x04" and zipfile.is_zipfile(given):
            with zipfile.ZipFile(given) as z:
                names = z.namelist()
            if any(n == "data.pkl" or n.endswith("/data.pkl") for n in names):
                return given
            raise MAACheckpointError(f"{given} is not a readable checkpoint (a zip file but not one torch.save wrote)")
    except (OSError, zipfile.BadZipFile, ValueError) as exc:
        raise MAACheckpointError(f"{given} is not a readable checkpoint ({first_line(exc)})") from None
    raise MAACheckpointError(f"{given} is not a readable checkpoint (not a file torch.save wrote)")


def _check_hf_directory(directory: Path) -> None:
    for name in (HF_CONFIG_FILENAME, HF_WEIGHTS_FILENAME):
        if not (directory / name).is_file():
            raise MAACheckpointError(f"{directory} lacks {name} (expected a Hugging Face model directory)")
    config = directory / HF_CONFIG_FILENAME
    weights = directory / HF_WEIGHTS_FILENAME
    try:
        if config.stat().st_size > _MAX_CONFIG_BYTES:
            raise MAACheckpointError(f"{config} is not an MAA config (over {_MAX_CONFIG_BYTES // 1000} kB)")
        if not isinstance(json.loads(config.read_bytes()), dict):
            raise MAACheckpointError(f"{config} is not an MAA config (not a JSON object)")
    except (OSError, ValueError, RecursionError) as exc:
        raise MAACheckpointError(f"{config} is not an MAA config ({first_line(exc)})") from None
    try:
        size = weights.stat().st_size
        with open(weights, "rb") as f:
            head = f.read(9)
    except OSError as exc:
        raise MAACheckpointError(f"{weights} is not a readable safetensors file ({first_line(exc)})") from None
    header_len = struct.unpack("<Q", head[:8])[0] if len(head) == 9 else 0
    if not (2 <= header_len <= _MAX_SAFETENSORS_HEADER and 8 + header_len <= size and head[8:9] == b"{"):
        raise MAACheckpointError(f"{weights} is not a readable safetensors file (bad header)")


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
