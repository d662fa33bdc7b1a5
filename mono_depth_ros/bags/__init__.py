"""ROS bags without ROS: KITTI -> ROS 2 bag, reading kitti2bag / ROS 2 bags, offline evaluation.

Nothing in this package imports rclpy; it uses ``rosbags`` only, so it runs on any machine.
"""
