"""PyTorch backend: the reference implementation (CPU or CUDA)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..model_io import load_model
from .base import BackendUnavailable, DepthBackend


class TorchBackend(DepthBackend):
    name = "torch"

    def __init__(self, checkpoint: str | Path | None = None, device: str = "cpu",
                 threads: int = 0):
        import torch

        if device.startswith("cuda") and not torch.cuda.is_available():
            raise BackendUnavailable("torch backend: CUDA requested but torch.cuda.is_available() "
                                     "is False (CPU-only torch build or no GPU)")
        if threads > 0:
            torch.set_num_threads(threads)
        model, ckpt = load_model(checkpoint)
        super().__init__(model.cfg)
        self.checkpoint = ckpt
        self.device = torch.device(device)
        self.model = model.to(self.device).eval()

    def _run(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        import torch

        with torch.inference_mode():
            fine, coarse, conf = self.model.predict(torch.from_numpy(x).to(self.device))
        return (fine.cpu().numpy(), coarse.cpu().numpy(),
                None if conf is None else conf.cpu().numpy())

    def _describe(self) -> str:
        return f"torch ({self.device})"
