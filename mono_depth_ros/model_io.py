"""Checkpoints: atomic writes, safe loads (``weights_only=True``), and the shipped default model.

A checkpoint is a plain dict of tensors and primitive values, so it loads without unpickling code:
``{"format", "format_version", "model_config", "state_dict", "stage", "meta", ...}``.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

from .config import ConfigError, ModelConfig, from_dict

CHECKPOINT_FORMAT = "mono_depth_ros/checkpoint"
CHECKPOINT_VERSION = 1
PACKAGE_DIR = Path(__file__).resolve().parent


# Settings that checkpoints written before these options existed were trained with.
LEGACY_MODEL_CONFIG = {"upsample": "nearest", "fine_scale": 1, "output_smoothing": False,
                       "confidence": False}


class ModelLoadError(RuntimeError):
    """A model file is missing, unreadable, or not a model this code can run."""


def default_model_dir() -> Path:
    """Folder of the shipped default model.

    Looked up in order: ``$MONO_DEPTH_MODEL_DIR``; the repository's ``models/default`` (editable
    and source installs); ``share/mono_depth_ros/models/default`` (colcon / pip data files).
    """
    env = os.environ.get("MONO_DEPTH_MODEL_DIR")
    candidates = [Path(env)] if env else []
    candidates.append(PACKAGE_DIR.parent / "models" / "default")
    try:
        from ament_index_python.packages import get_package_share_directory

        share = Path(get_package_share_directory("mono_depth_ros"))
        candidates.append(share / "models" / "default")
    except Exception:  # noqa: BLE001 - ament index absent or package not installed with colcon
        pass
    import sys

    candidates.append(Path(sys.prefix) / "share" / "mono_depth_ros" / "models" / "default")
    for c in candidates:
        if (c / "model.pt").is_file():
            return c
    return candidates[0] if env else candidates[-1]


def default_model_path() -> Path:
    return default_model_dir() / "model.pt"


def default_onnx_path() -> Path:
    return default_model_dir() / "model.onnx"


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that readers see the old file or the new one, never half."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        umask = os.umask(0)
        os.umask(umask)
        os.fchmod(fd, 0o666 & ~umask)  # mkstemp makes 0600; give the file normal permissions
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def save_checkpoint(path: str | Path, obj: dict[str, Any]) -> None:
    """``torch.save`` to a temporary file in the same folder, fsync, then rename over ``path``."""
    import io

    import torch

    payload = {"format": CHECKPOINT_FORMAT, "format_version": CHECKPOINT_VERSION, **obj}
    buf = io.BytesIO()
    torch.save(payload, buf)
    atomic_write_bytes(path, buf.getvalue())


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load a checkpoint with ``weights_only=True`` and check that it is one of ours."""
    import torch

    path = Path(path)
    if not path.is_file():
        raise ModelLoadError(f"model file not found: {path}")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - torch raises many types for corrupt files
        why = ("it holds objects that are not plain tensors/values, refused for safety"
               if "weights_only" in str(exc) and "Unsupported global" in str(exc)
               else f"corrupt, truncated or not a PyTorch file: {type(exc).__name__}")
        raise ModelLoadError(f"{path}: not a readable checkpoint ({why})") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
        raise ModelLoadError(f"{path}: not a mono_depth_ros checkpoint")
    if ckpt.get("format_version", 0) > CHECKPOINT_VERSION:
        raise ModelLoadError(f"{path}: checkpoint format {ckpt['format_version']} is newer than "
                             f"this code understands ({CHECKPOINT_VERSION}); "
                             "upgrade mono_depth_ros")
    for key in ("model_config", "state_dict"):
        if key not in ckpt:
            raise ModelLoadError(f"{path}: checkpoint has no '{key}'")
    return ckpt


def model_from_checkpoint(ckpt: dict[str, Any], path: str | Path = "<checkpoint>"):
    """Build a ``DepthCascade`` in eval mode from a loaded checkpoint."""
    from .networks import DepthCascade

    try:
        cfg = from_dict(ModelConfig, {**LEGACY_MODEL_CONFIG, **ckpt["model_config"]})
    except ConfigError as exc:
        raise ModelLoadError(f"{path}: bad model_config: {exc}") from None
    model = DepthCascade(cfg)
    try:
        model.load_state_dict(ckpt["state_dict"], strict=True)
    except RuntimeError as exc:
        raise ModelLoadError(f"{path}: weights do not match the network "
                             f"({str(exc).splitlines()[0][:160]})") from None
    return model.eval()


def load_model(path: str | Path | None = None):
    """(model, checkpoint) for ``path`` or the shipped default model."""
    path = Path(path) if path else default_model_path()
    ckpt = load_checkpoint(path)
    return model_from_checkpoint(ckpt, path), ckpt
