"""Console scripts of the ROS executables (setup.py ``console_scripts``).

Each installs the stop handlers of ``lifecycle`` before importing its node module (rclpy, numpy,
the model backends take seconds on a busy machine), so that SIGINT/SIGTERM during those imports
exits 0 too instead of printing a KeyboardInterrupt traceback or dying by the signal.
"""

from .lifecycle import run_console_script


def depth_node() -> int:
    return run_console_script("mono_depth_ros.ros.depth_node")


def kitti_eval_node() -> int:
    return run_console_script("mono_depth_ros.ros.kitti_eval_node")


def kitti_bag_player() -> int:
    return run_console_script("mono_depth_ros.ros.bag_player")


def mono_depth_bringup() -> int:
    return run_console_script("mono_depth_ros.ros.bringup")
