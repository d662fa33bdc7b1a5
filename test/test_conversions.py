"""Image / CameraInfo / PointCloud2 conversions (no DDS: message objects only)."""

import numpy as np
import pytest

pytest.importorskip("sensor_msgs.msg", reason="sensor_msgs (ros-kilted-sensor-msgs) not installed")

from sensor_msgs.msg import CameraInfo, Image  # noqa: E402

from mono_depth_ros.ros.conversions import (ImageFormatError, cloud_to_array,  # noqa: E402
                                            depth_to_image, depth_to_image_mm, image_to_depth,
                                            image_to_rgb, points_to_cloud, rgb_to_image,
                                            scale_camera_info)

RNG = np.random.default_rng(0)
RGB = RNG.integers(0, 256, (6, 10, 3), dtype=np.uint8)


def raw(arr, encoding, step=None, bigendian=0):
    """An Image holding ``arr``'s bytes as given (rows padded to ``step`` when larger)."""
    h, w = arr.shape[:2]
    rowbytes = arr[0].nbytes
    step = step or rowbytes
    buf = np.zeros((h, step), np.uint8)
    buf[:, :rowbytes] = np.ascontiguousarray(arr).view(np.uint8).reshape(h, rowbytes)
    return Image(height=h, width=w, encoding=encoding, step=step, is_bigendian=bigendian,
                 data=buf.tobytes())


@pytest.mark.parametrize("encoding,make", [
    ("rgb8", lambda c: c), ("bgr8", lambda c: c[:, :, ::-1]), ("8UC3", lambda c: c[:, :, ::-1]),
    ("rgba8", lambda c: np.dstack([c, np.full(c.shape[:2], 7, np.uint8)])),
    ("bgra8", lambda c: np.dstack([c[:, :, ::-1], np.full(c.shape[:2], 7, np.uint8)])),
    ("8UC4", lambda c: np.dstack([c[:, :, ::-1], np.full(c.shape[:2], 7, np.uint8)])),
])
def test_colour_encodings_give_rgb(encoding, make):
    out = image_to_rgb(raw(make(RGB), encoding))
    assert out.dtype == np.uint8 and out.shape == RGB.shape
    np.testing.assert_array_equal(out, RGB)


@pytest.mark.parametrize("encoding", ["mono8", "8UC1"])
def test_mono_is_replicated(encoding):
    gray = RGB[:, :, 0]
    out = image_to_rgb(raw(gray, encoding))
    np.testing.assert_array_equal(out, np.dstack([gray] * 3))


@pytest.mark.parametrize("bigendian", [0, 1])
def test_16bit_respects_endianness(bigendian):
    px = RGB.astype(np.uint16) * 256 + 17  # high byte = the 8-bit value
    data = px.astype(">u2" if bigendian else "<u2")
    out = image_to_rgb(raw(data, "rgb16", bigendian=bigendian))
    np.testing.assert_array_equal(out, RGB)


def test_padded_step_is_honoured():
    np.testing.assert_array_equal(image_to_rgb(raw(RGB, "rgb8", step=40)), RGB)


def test_bayer_rggb_red_scene_is_red():
    mosaic = np.zeros((8, 8), np.uint8)
    mosaic[0::2, 0::2] = 200  # R sites of an RGGB pattern
    out = image_to_rgb(raw(mosaic, "bayer_rggb8"))
    centre = out[2:6, 2:6].reshape(-1, 3).mean(0)
    assert centre[0] > 150 and centre[1] < 30 and centre[2] < 30


def test_yuyv_grey():
    yuyv = np.full((4, 8, 2), 128, np.uint8)  # Y=128, U=V=128: mid grey
    out = image_to_rgb(raw(yuyv, "yuyv"))
    assert np.abs(out.astype(int) - 128).max() <= 2


@pytest.mark.parametrize("mutate,words", [
    (lambda m: setattr(m, "encoding", "32FC1"), "unsupported encoding"),
    (lambda m: setattr(m, "encoding", "jpeg"), "unsupported encoding"),
    (lambda m: setattr(m, "height", 0), "zero size"),
    (lambda m: setattr(m, "width", 0), "zero size"),
    (lambda m: setattr(m, "step", 29), "shorter than one row"),
    (lambda m: setattr(m, "data", bytes(len(m.data) - 1)), "expected step x height"),
    (lambda m: setattr(m, "data", bytes(len(m.data) + 30)), "expected step x height"),
    (lambda m: (setattr(m, "width", 60000), setattr(m, "height", 60000)), "exceeds the limit"),
    (lambda m: setattr(m, "is_bigendian", 7), "is_bigendian"),
])
def test_bad_images_raise_naming_the_problem(mutate, words):
    msg = raw(RGB, "rgb8")
    mutate(msg)
    with pytest.raises(ImageFormatError, match=words):
        image_to_rgb(msg)


def test_pixel_cap():
    with pytest.raises(ImageFormatError, match="exceeds the limit"):
        image_to_rgb(raw(RGB, "rgb8"), max_pixels=59)
    assert image_to_rgb(raw(RGB, "rgb8"), max_pixels=60).shape == RGB.shape


def test_rgb_to_image_round_trip():
    for enc in ("rgb8", "bgr8"):
        msg = rgb_to_image(RGB, encoding=enc)
        assert msg.encoding == enc and msg.step == 30 and len(msg.data) == 180
        np.testing.assert_array_equal(image_to_rgb(msg), RGB)


def test_depth_images():
    d = np.array([[1.5, np.nan], [0.0, 70.0]], np.float32)
    m = depth_to_image(d)
    assert (m.encoding, m.width, m.height, m.step) == ("32FC1", 2, 2, 8)
    np.testing.assert_array_equal(image_to_depth(m), d)
    mm = depth_to_image_mm(np.array([[1.5, np.nan], [0.0, 70.0]], np.float32))
    assert (mm.encoding, mm.step) == ("16UC1", 4)
    raw_mm = np.frombuffer(bytes(mm.data), np.uint16).reshape(2, 2)
    np.testing.assert_array_equal(raw_mm, [[1500, 0], [0, 0]])  # 70 m > 65.535 m -> invalid


def kitti_info():
    info = CameraInfo(width=1242, height=375, distortion_model="plumb_bob")
    info.k = [721.5377, 0.0, 609.5593, 0.0, 721.5377, 172.854, 0.0, 0.0, 1.0]
    info.p = [721.5377, 0.0, 609.5593, 44.85728, 0.0, 721.5377, 172.854, 0.2163791,
              0.0, 0.0, 1.0, 0.002745884]
    info.r = [1.0, 0, 0, 0, 1.0, 0, 0, 0, 1.0]
    info.d = [0.0] * 5
    return info


def test_camera_info_same_size_is_copied():
    info = kitti_info()
    out = scale_camera_info(info, 1242, 375)
    np.testing.assert_array_equal(out.k, info.k)
    np.testing.assert_array_equal(out.p, info.p)


def test_camera_info_half_size():
    out = scale_camera_info(kitti_info(), 621, 187)
    K = np.asarray(out.k).reshape(3, 3)
    assert (out.width, out.height) == (621, 187)
    assert K[0, 0] == pytest.approx(721.5377 / 2)
    assert K[1, 1] == pytest.approx(721.5377 * 187 / 375)
    assert K[0, 2] == pytest.approx((609.5593 + 0.5) / 2 - 0.5)
    P = np.asarray(out.p).reshape(3, 4)
    assert P[0, 3] == pytest.approx(44.85728 / 2) and P[2, 3] == pytest.approx(0.002745884)
    np.testing.assert_array_equal(out.d, [0.0] * 5)


def test_point_clouds():
    pts = np.arange(2 * 3 * 3, dtype=np.float32).reshape(2, 3, 3)
    pts[1, 2] = np.nan
    cloud = points_to_cloud(pts)
    assert (cloud.height, cloud.width, cloud.point_step, cloud.row_step) == (2, 3, 12, 36)
    assert [f.name for f in cloud.fields] == ["x", "y", "z"] and not cloud.is_dense
    arr = cloud_to_array(cloud)
    np.testing.assert_array_equal(arr["z"][0], pts[0, :, 2])
    rgb = np.zeros((2, 3, 3), np.uint8)
    rgb[0, 0] = (255, 128, 1)
    cloud = points_to_cloud(pts, rgb=rgb)
    assert cloud.point_step == 16 and [f.offset for f in cloud.fields] == [0, 4, 8, 12]
    packed = cloud_to_array(cloud)["rgb"][0, 0].view(np.uint32)
    assert packed == (255 << 16) | (128 << 8) | 1


# --- serialized Image (raw subscriptions / publishers) ---------------------------------------
from rclpy.serialization import deserialize_message, serialize_message  # noqa: E402
from std_msgs.msg import Header  # noqa: E402

from mono_depth_ros.ros.conversions import (depth_to_cdr, image_from_cdr,  # noqa: E402
                                            image_to_cdr)


@pytest.mark.parametrize("frame_id", ["", "a", "ab", "abc", "cam0_optical", "kamera_ö"])
@pytest.mark.parametrize("arr,encoding", [
    (RGB, "rgb8"), (np.ascontiguousarray(RGB[:, :, 0]), "mono8"),
    (RGB.astype(np.uint16) * 257, "rgb16"), (RNG.random((5, 7), dtype=np.float32), "32FC1"),
    (RNG.random((3, 1), dtype=np.float32), "32FC1"),
])
def test_cdr_image_matches_rclpy(frame_id, arr, encoding):
    """image_to_cdr writes what rclpy's serializer writes (every header-length alignment), and
    image_from_cdr reads rclpy's bytes back field by field, the pixels as a view."""
    header = Header(frame_id=frame_id)
    header.stamp.sec, header.stamp.nanosec = -3, 999_999_999
    msg = Image(header=header, height=arr.shape[0], width=arr.shape[1], encoding=encoding,
                step=arr.strides[0], data=np.ascontiguousarray(arr).tobytes())
    ours = image_to_cdr(arr, encoding, header)
    assert len(ours) == len(serialize_message(msg))  # (rclpy leaves padding bytes unset)
    assert deserialize_message(ours, Image) == msg
    back = image_from_cdr(serialize_message(msg))
    assert back.header == header
    assert (back.height, back.width, back.encoding, back.is_bigendian, back.step) == \
        (msg.height, msg.width, msg.encoding, msg.is_bigendian, msg.step)
    assert isinstance(back.data, memoryview) and bytes(back.data) == bytes(msg.data)


def test_cdr_image_decodes_like_the_message():
    for enc in ("rgb8", "bgr8"):
        msg = rgb_to_image(RGB, encoding=enc)
        np.testing.assert_array_equal(image_to_rgb(image_from_cdr(serialize_message(msg))), RGB)
    d = np.array([[1.5, np.nan], [0.0, 70.0]], np.float32)
    np.testing.assert_array_equal(image_to_depth(deserialize_message(depth_to_cdr(d), Image)), d)


def test_cdr_bad_image_is_checked_as_the_message():
    msg = raw(RGB, "rgb8")
    msg.data = bytes(len(msg.data) - 1)
    with pytest.raises(ImageFormatError, match="expected step x height"):
        image_to_rgb(image_from_cdr(serialize_message(msg)))


def test_cdr_other_encapsulation_and_garbage():
    big = bytearray(serialize_message(raw(RGB, "rgb8")))
    big[1] = 0  # claims big-endian CDR: read by rclpy's deserializer, which fails here
    with pytest.raises(ImageFormatError, match="cannot read the serialized image"):
        image_from_cdr(bytes(big))
    with pytest.raises(ImageFormatError, match="cannot read the serialized image"):
        image_from_cdr(serialize_message(raw(RGB, "rgb8"))[:60])
