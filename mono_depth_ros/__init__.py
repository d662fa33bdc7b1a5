"""mono_depth_ros: single-camera depth (Eigen et al. 2014 coarse-to-fine) for ROS 2.

The package root is ROS-free: importing it never imports rclpy. ROS adapters live in
``mono_depth_ros.ros``.
"""

__version__ = "0.1.0"
