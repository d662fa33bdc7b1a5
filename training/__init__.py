"""Offline side of mono_depth_ros: KITTI data, losses, coarse -> fine training, evaluation, export.

Run from the repository (``python -m training.train``); it is not installed into site-packages.
"""
