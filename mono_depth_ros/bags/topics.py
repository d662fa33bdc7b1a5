"""Names shared by the bag writer, the reader, the player, the launch files and the docs."""

from ..config import KittiTopicsConfig

KITTI = KittiTopicsConfig()

IMAGE_TOPIC = KITTI.image_topic
CAMERA_INFO_TOPIC = KITTI.camera_info_topic
LIDAR_TOPIC = KITTI.lidar_topic
TF_STATIC_TOPIC = KITTI.tf_static_topic
CAMERA_FRAME = KITTI.camera_frame
LIDAR_FRAME = KITTI.lidar_frame
