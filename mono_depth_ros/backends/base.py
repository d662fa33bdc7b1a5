"""One interface for every inference backend: uint8 RGB in, fine and coarse depth (metres) out."""

from __future__ import annotations

import abc
import time
from typing import Callable

import numpy as np

from ..camera import CanvasMap, Intrinsics, canonical_camera, canvas_map
from ..config import ModelConfig
from ..flip_average import blend_depth, blend_linear
from ..preprocess import Buffers, to_camera_confidence, to_camera_depth, to_network_input


class BackendUnavailable(RuntimeError):
    """This backend cannot run on this machine (library or device missing); the message says why."""


class DepthResult:
    """Depth at the requested resolution, float32 metres (``fine`` and ``coarse``), and the
    fine depth's ``confidence`` (float32 0..1, P(|log(depth/truth)| < log 1.25); None when the
    model has no confidence head).

    ``coarse`` and ``confidence`` may be given as functions: they are then resized on first
    access only, so a caller that never reads them (the depth node without a depth/coarse or
    depth/confidence subscriber) does not pay for them.
    """

    __slots__ = ("fine", "_coarse", "_make_coarse", "_confidence", "_make_confidence")

    def __init__(self, fine: np.ndarray, coarse: np.ndarray | Callable[[], np.ndarray],
                 confidence: np.ndarray | Callable[[], np.ndarray] | None = None):
        self.fine = fine
        if callable(coarse):
            self._coarse, self._make_coarse = None, coarse
        else:
            self._coarse, self._make_coarse = coarse, None
        if callable(confidence):
            self._confidence, self._make_confidence = None, confidence
        else:
            self._confidence, self._make_confidence = confidence, None

    @property
    def confidence(self) -> np.ndarray | None:
        if self._make_confidence is not None:
            self._confidence, self._make_confidence = self._make_confidence(), None
        return self._confidence

    @confidence.setter
    def confidence(self, value: np.ndarray | None) -> None:
        self._confidence, self._make_confidence = value, None

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
    # blend each prediction with the mirrored image's (``flip_average.py``): x2 inference
    flip_average: bool = False

    def __init__(self, model_config: ModelConfig):
        self.model_config = model_config
        self._buffers = Buffers()
        self.last_timing: dict[str, float] = {}

    @property
    def input_size(self) -> tuple[int, int]:
        """(height, width) of the network input."""
        return self.model_config.height, self.model_config.width

    @property
    def has_confidence(self) -> bool:
        """Whether results carry a confidence (the model has the confidence head)."""
        return bool(getattr(self.model_config, "confidence", False))

    @abc.abstractmethod
    def _run(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """float32 1x3xhxw in [0, 1] -> (fine, coarse) depth, each 1x1xhxw metres, and the
        confidence (1x1xhxw, 0..1; None when the model has no confidence head).

        The returned arrays may be the backend's own output buffers, valid until the next call.
        """

    def canvas_map(self, width: int, height: int,
                   camera: Intrinsics | None = None) -> CanvasMap:
        """How an image of this size from ``camera`` reaches the network (``camera.py``); no
        intrinsics: the image is taken to show the model's own camera's view."""
        return canvas_map(width, height, canonical_camera(self.model_config), camera)

    def infer(self, rgb: np.ndarray, output_size: tuple[int, int] | None = None,
              camera: Intrinsics | None = None) -> DepthResult:
        """RGB uint8 HxWx3 -> depth at ``output_size`` (height, width), default the input's.

        ``camera``: the image's intrinsics; the image is brought to the model's canonical camera
        so that its metres stay metres (raises ``camera.CameraError`` for impossible ones).
        """
        h, w = output_size or rgb.shape[:2]
        t0 = time.perf_counter()
        nh, nw = self.input_size
        cmap = None if camera is None else self.canvas_map(rgb.shape[1], rgb.shape[0], camera)
        x = to_network_input(rgb, nh, nw, self._buffers.get("input", (1, 3, nh, nw), np.float32),
                             self._buffers, cmap)
        t1 = time.perf_counter()
        fine, coarse, conf = self._run(x)
        if self.flip_average:
            fine, coarse, conf = self._blend_with_mirror(x, fine, coarse, conf)
        t2 = time.perf_counter()
        out = to_camera_depth(fine, h, w, self._buffers, "fine", cmap)
        coarse_net = np.array(coarse, dtype=np.float32)  # small; _run's buffer is reused next call
        conf_net = None if conf is None else np.array(conf, dtype=np.float32)
        t3 = time.perf_counter()
        self.last_timing = {"preprocess": t1 - t0, "inference": t2 - t1, "postprocess": t3 - t2}
        return DepthResult(out, lambda: to_camera_depth(coarse_net, h, w, cmap=cmap),
                           None if conf_net is None
                           else lambda: to_camera_confidence(conf_net, h, w, cmap=cmap))

    def _blend_with_mirror(self, x, fine, coarse, conf):
        """The network's outputs for ``x`` blended with those for its mirror image, mirrored
        back (the first outputs are copied: ``_run`` may reuse its buffers)."""
        fine, coarse = np.array(fine, dtype=np.float32), np.array(coarse, dtype=np.float32)
        conf = None if conf is None else np.array(conf, dtype=np.float32)
        mirror = self._buffers.get("mirror", x.shape, np.float32)
        np.copyto(mirror, x[..., ::-1])
        fine_m, coarse_m, conf_m = self._run(mirror)
        fine = blend_depth(fine, fine_m[..., ::-1])
        coarse = blend_depth(coarse, coarse_m[..., ::-1])
        if conf is not None and conf_m is not None:
            conf = blend_linear(conf, conf_m[..., ::-1])
        return fine, coarse, conf

    def describe(self) -> str:
        """What runs, for logs and reports (with flip averaging when it is on)."""
        return self._describe() + (" + flip averaging" if self.flip_average else "")

    def _describe(self) -> str:
        return self.name
