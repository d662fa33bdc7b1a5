"""Measurement commands run from the repository root (``python -m tools.<name>``); not installed.

They may import both the runtime (``mono_depth_ros``) and ``training`` (data loading), which the
installed runtime itself must not.
"""
