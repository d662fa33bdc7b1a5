"""Names shared by the bag writer, the reader, the player, the launch files and the docs, and the
choice of a bag's camera topics when the configured ones are absent.

KITTI bags in the wild come in three layouts (all read here): image topic, encoding, frame of
the camera_info header, and who writes it:

- ``/kitti/camera_color_left/image_raw``, bgr8, ``camera_color_left`` (camera 2): kitti2bag master
  and its PyPI release 1.5, and kitti_to_bag;
- ``/kitti/camera_color/left/image_rect_color``, bgr8, ``camera_gray_left`` (camera 0; P carries
  camera 2's offset): a kitti2bag branch (its PR 38);
- ``/kitti/camera_color_left/image``, rgb8, ``camera_color_left``: kitti_to_bag before issue 11.
"""

from __future__ import annotations

import posixpath

from ..config import KittiTopicsConfig

KITTI = KittiTopicsConfig()

IMAGE_TOPIC = KITTI.image_topic
CAMERA_INFO_TOPIC = KITTI.camera_info_topic
LIDAR_TOPIC = KITTI.lidar_topic
TF_STATIC_TOPIC = KITTI.tf_static_topic
CAMERA_FRAME = KITTI.camera_frame
LIDAR_FRAME = KITTI.lidar_frame
GRAY_FRAME = "camera_gray_left"  # camera 0, the rectified reference camera (kitti2bag's name)

IMAGE_TYPES = ("sensor_msgs/msg/Image", "sensor_msgs/Image")
INFO_TYPES = ("sensor_msgs/msg/CameraInfo", "sensor_msgs/CameraInfo")
IMAGE_NAMES = ("image_raw", "image", "image_rect_color", "image_color", "image_rect")
LEFT_COLOUR = ("camera_color_left", "camera_color/left")  # KITTI image_02


class TopicChoiceError(ValueError):
    """No camera topic, or several equally good ones; the message names them."""


def camera_info_sibling(image_topic: str) -> str:
    """``/a/b/image_raw`` -> ``/a/b/camera_info`` (image_transport's convention)."""
    return posixpath.join(posixpath.dirname(image_topic), "camera_info")


def camera_candidates(types: dict[str, str]) -> list[str]:
    """Image topics (of ``{topic: type}``) whose sibling ``camera_info`` is a CameraInfo topic,
    best first: camera_color_left (KITTI image_02) before other cameras, the usual image names
    (image_raw, image, image_rect_color, ...) before others (e.g. a recorded ``depth``)."""
    found = [t for t, typ in types.items() if typ in IMAGE_TYPES
             and types.get(camera_info_sibling(t)) in INFO_TYPES]
    return sorted(found, key=lambda t: (rank(t), t))


def rank(topic: str) -> tuple[int, int]:
    return (0 if any(k in topic for k in LEFT_COLOUR) else 1,
            0 if posixpath.basename(topic) in IMAGE_NAMES else 1)


def choose_camera(types: dict[str, str], image_topic: str = IMAGE_TOPIC,
                  camera_info_topic: str = CAMERA_INFO_TOPIC, explicit: bool = False,
                  where: str = "the bag") -> tuple[str, str, str]:
    """(image topic, camera_info topic, one line saying what was chosen and why).

    The configured topics when present (or when ``explicit``: a topic the user named is never
    replaced; its absence is an error); otherwise the best candidate of ``camera_candidates``.
    Two candidates of the same rank are an error naming both."""
    cands = camera_candidates(types)
    listed = ", ".join(cands) or "none"
    if image_topic in types or explicit:
        if image_topic not in types:
            raise TopicChoiceError(f"{where} has no {image_topic} topic (camera topics found: "
                                   f"{listed})")
        info = camera_info_topic if camera_info_topic in types else \
            camera_info_sibling(image_topic)
        if info not in types:
            raise TopicChoiceError(f"{where} has no {camera_info_topic} topic for "
                                   f"{image_topic}")
        return image_topic, info, f"camera: {image_topic} + {info}"
    if not cands:
        raise TopicChoiceError(f"{where} has no {image_topic} and no other sensor_msgs/Image "
                               "topic with a sibling camera_info; name one with --image-topic "
                               f"(topics: {', '.join(sorted(types)) or 'none'})")
    best = [t for t in cands if rank(t) == rank(cands[0])]
    if len(best) > 1:
        raise TopicChoiceError(f"{where} has no {image_topic} and several equally good camera "
                               f"topics: {', '.join(best)}; pick one with --image-topic")
    image = best[0]
    info = camera_info_sibling(image)
    return image, info, f"camera: {image} + {info} (found; {image_topic} is not in {where})"
