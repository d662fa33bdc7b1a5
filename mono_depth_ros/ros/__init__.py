"""ROS 2 adapters: everything in the package that imports rclpy or ROS message types lives here."""
