"""TensorRT engine cache: engines keyed on (ONNX sha256, TensorRT version, GPU, precision and,
for INT8, the calibration set).

A serialized engine only runs on the GPU model and TensorRT version that built it, and only
matches the ONNX file it came from; an INT8 engine's ranges also come from its calibration frames.
So all of these are in the file name and in a JSON sidecar that is checked on load. Pure
Python (no TensorRT import): the key logic is unit-tested anywhere. Engines are loaded only from
the configured cache folder, never from an arbitrary path.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

from ..model_io import atomic_write_bytes, atomic_write_text

ENGINE_SUFFIX = ".engine"
SIDECAR_SUFFIX = ".json"
PRECISIONS = ("fp32", "fp16", "int8")


class EngineCacheError(RuntimeError):
    """No usable engine in the cache and building is disabled, or the cache folder is unusable."""


def default_cache_dir() -> Path:
    """``$MONO_DEPTH_ENGINE_CACHE`` or ``$XDG_CACHE_HOME/mono_depth_ros/engines`` (~/.cache)."""
    env = os.environ.get("MONO_DEPTH_ENGINE_CACHE")
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "mono_depth_ros" / "engines"


def _slug(text: str) -> str:
    """File-name-safe lower-case form of a free-text value (GPU names contain spaces, slashes)."""
    s = re.sub(r"[^a-z0-9.]+", "-", text.strip().lower()).strip("-.")
    return s or "unknown"


@dataclass(frozen=True)
class EngineKey:
    """Everything a serialized engine depends on."""

    onnx_sha256: str
    trt_version: str
    gpu_name: str
    precision: str
    calibration: str = ""  # calibration set id (calibration.calibration_id), INT8 only

    def __post_init__(self):
        if not re.fullmatch(r"[0-9a-f]{64}", self.onnx_sha256):
            raise ValueError(f"onnx_sha256 must be 64 hex digits, got {self.onnx_sha256!r}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision {self.precision!r} is not one of {', '.join(PRECISIONS)}")
        if not self.trt_version or not self.gpu_name:
            raise ValueError("trt_version and gpu_name must not be empty")
        if (self.precision == "int8") != bool(self.calibration):
            raise ValueError("an int8 key needs its calibration set id, other precisions none")
        if self.calibration and not re.fullmatch(r"[0-9a-f]{16}", self.calibration):
            raise ValueError(f"calibration must be 16 hex digits, got {self.calibration!r}")

    def as_dict(self) -> dict:
        """The key's fields; ``calibration`` only when set, so fp16/fp32 keys read as before."""
        d = asdict(self)
        if not self.calibration:
            del d["calibration"]
        return d

    def filename(self) -> str:
        """``<onnx sha 16>_<precision>[_cal<id 8>]_trt<version>_<gpu>_<digest 8>.engine``.

        The trailing digest of the full key keeps two GPUs whose names slug alike apart.
        """
        digest = hashlib.sha256(json.dumps(self.as_dict(), sort_keys=True).encode()).hexdigest()
        cal = f"_cal{self.calibration[:8]}" if self.calibration else ""
        return (f"{self.onnx_sha256[:16]}_{self.precision}{cal}_trt{_slug(self.trt_version)}_"
                f"{_slug(self.gpu_name)[:40]}_{digest[:8]}{ENGINE_SUFFIX}")


class EngineCache:
    """A folder of ``*.engine`` files with ``*.json`` sidecars holding their key and sha256."""

    def __init__(self, cache_dir: str | Path | None = None):
        self.dir = Path(cache_dir) if cache_dir else default_cache_dir()

    def path_for(self, key: EngineKey) -> Path:
        return self.dir / key.filename()

    def _sidecar(self, path: Path) -> Path:
        return path.with_suffix(SIDECAR_SUFFIX)

    def lookup(self, key: EngineKey) -> bytes | None:
        """The cached engine for ``key``, or None if absent, mismatched or corrupt."""
        path = self.path_for(key)
        if not path.is_file() or path.resolve().parent != self.dir.resolve():
            return None  # absent, or a symlink pointing out of the cache folder
        try:
            side = json.loads(self._sidecar(path).read_text())
            data = path.read_bytes()
        except (OSError, ValueError):
            return None
        if side.get("key") != key.as_dict():
            return None
        if side.get("engine_sha256") != hashlib.sha256(data).hexdigest():
            return None  # truncated or replaced engine file
        return data

    def store(self, key: EngineKey, data: bytes) -> Path:
        """Write engine and sidecar atomically (engine first, so a sidecar never points at half)."""
        if not data:
            raise EngineCacheError("refusing to cache an empty engine")
        path = self.path_for(key)
        try:
            atomic_write_bytes(path, data)
            atomic_write_text(self._sidecar(path), json.dumps(
                {"key": key.as_dict(), "engine_sha256": hashlib.sha256(data).hexdigest()},
                indent=2, sort_keys=True))
        except OSError as exc:
            raise EngineCacheError(f"cannot write engine cache {self.dir}: {exc}") from None
        return path

    def entries(self) -> list[dict]:
        """Keys of every engine in the folder (for error messages and ``--list``)."""
        out = []
        for side in sorted(self.dir.glob(f"*{SIDECAR_SUFFIX}")):
            try:
                out.append(json.loads(side.read_text())["key"])
            except (OSError, ValueError, KeyError):
                continue
        return out

    def get_or_build(self, key: EngineKey, build: Callable[[], bytes],
                     allow_build: bool) -> tuple[bytes, bool]:
        """(engine bytes, built_now). Rebuilds on a miss when allowed, else raises one line."""
        data = self.lookup(key)
        if data is not None:
            return data, False
        if not allow_build:
            others = self.entries()
            hint = (f"; it holds {len(others)} engine(s) for other keys, e.g. {others[0]}"
                    if others else "; it is empty")
            raise EngineCacheError(
                f"no TensorRT engine for {key.precision} / TensorRT {key.trt_version} / "
                f"{key.gpu_name} / onnx {key.onnx_sha256[:12]} in {self.dir}{hint}; build one with "
                f"'python -m training.build_engine' or set allow_engine_build")
        data = build()
        self.store(key, data)
        return data, True
