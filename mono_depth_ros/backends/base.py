"""One interface for every inference backend: uint8 RGB in, fine and coarse depth (metres) out."""

from __future__ import annotations

import abc
from dataclasses import dataclass

import numpy as np

from ..config import ModelConfig
from ..preprocess import to_camera_depth, to_network_input


class BackendUnavailable(RuntimeError):
    """This backend cannot run on this machine (library or device missing); the message says why."""


@dataclass
class DepthResult:
    """Depth at the input image's resolution, float32 metres."""

    fine: np.ndarray
    coarse: np.ndarray


class DepthBackend(abc.ABC):
    """Runs the cascade on one image. Subclasses implement ``_run`` on network-size input."""

    name: str = "base"

    def __init__(self, model_config: ModelConfig):
        self.model_config = model_config

    @property
    def input_size(self) -> tuple[int, int]:
        """(height, width) of the network input."""
        return self.model_config.height, self.model_config.width

    @abc.abstractmethod
    def _run(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """float32 1x3xhxw in [0, 1] -> (fine, coarse) depth, each 1x1xhxw metres."""

    def infer(self, rgb: np.ndarray, output_size: tuple[int, int] | None = None) -> DepthResult:
        """RGB uint8 HxWx3 -> depth at ``output_size`` (height, width), default the input's."""
        h, w = output_size or rgb.shape[:2]
        fine, coarse = self._run(to_network_input(rgb, *self.input_size))
        return DepthResult(to_camera_depth(fine, h, w), to_camera_depth(coarse, h, w))

    def describe(self) -> str:
        return self.name
