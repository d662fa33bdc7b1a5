"""One interface for every inference backend: uint8 RGB in, fine and coarse depth (metres) out."""

from __future__ import annotations

import abc
import time
from typing import Callable

import numpy as np

from ..config import ModelConfig
from ..preprocess import Buffers, to_camera_depth, to_network_input


class BackendUnavailable(RuntimeError):
    """This backend cannot run on this machine (library or device missing); the message says why."""


class DepthResult:
    """Depth at the requested resolution, float32 metres (``fine`` and ``coarse``).

    ``coarse`` may be given as a function: it is then resized on first access only, so a caller
    that never reads it (the depth node without a depth/coarse subscriber) does not pay for it.
    """

    __slots__ = ("fine", "_coarse", "_make_coarse")

    def __init__(self, fine: np.ndarray, coarse: np.ndarray | Callable[[], np.ndarray]):
        self.fine = fine
        if callable(coarse):
            self._coarse, self._make_coarse = None, coarse
        else:
            self._coarse, self._make_coarse = coarse, None

    @property
    def coarse(self) -> np.ndarray:
        if self._coarse is None:
            self._coarse, self._make_coarse = self._make_coarse(), None
        return self._coarse

    @coarse.setter
    def coarse(self, value: np.ndarray) -> None:
        self._coarse, self._make_coarse = value, None


class DepthBackend(abc.ABC):
    """Runs the cascade on one image. Subclasses implement ``_run`` on network-size input.

    ``infer`` reuses its input tensor and work buffers from frame to frame and records the
    seconds of its stages in ``last_timing`` (preprocess, inference, postprocess).
    """

    name: str = "base"

    def __init__(self, model_config: ModelConfig):
        self.model_config = model_config
        self._buffers = Buffers()
        self.last_timing: dict[str, float] = {}

    @property
    def input_size(self) -> tuple[int, int]:
        """(height, width) of the network input."""
        return self.model_config.height, self.model_config.width

    @abc.abstractmethod
    def _run(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """float32 1x3xhxw in [0, 1] -> (fine, coarse) depth, each 1x1xhxw metres.

        The returned arrays may be the backend's own output buffers, valid until the next call.
        """

    def infer(self, rgb: np.ndarray, output_size: tuple[int, int] | None = None) -> DepthResult:
        """RGB uint8 HxWx3 -> depth at ``output_size`` (height, width), default the input's."""
        h, w = output_size or rgb.shape[:2]
        t0 = time.perf_counter()
        nh, nw = self.input_size
        x = to_network_input(rgb, nh, nw, self._buffers.get("input", (1, 3, nh, nw), np.float32),
                             self._buffers)
        t1 = time.perf_counter()
        fine, coarse = self._run(x)
        t2 = time.perf_counter()
        out = to_camera_depth(fine, h, w, self._buffers, "fine")
        coarse_net = np.array(coarse, dtype=np.float32)  # small; _run's buffer is reused next call
        t3 = time.perf_counter()
        self.last_timing = {"preprocess": t1 - t0, "inference": t2 - t1, "postprocess": t3 - t2}
        return DepthResult(out, lambda: to_camera_depth(coarse_net, h, w))

    def describe(self) -> str:
        return self.name
