"""Inference backends behind one interface (see ``base.DepthBackend``)."""

from .base import BackendUnavailable, DepthBackend, DepthResult

__all__ = ["BackendUnavailable", "DepthBackend", "DepthResult"]
