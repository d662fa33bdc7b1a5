"""The canonical camera: other cameras' images reach the network as the model's own camera would
see them, so metres stay metres (camera.py, camera_eval.py, predict --fx)."""

import subprocess
import sys

import numpy as np
import pytest

from conftest import REPO, SAMPLE
from mono_depth_ros import camera
from mono_depth_ros.camera import CameraError, Intrinsics
from mono_depth_ros.config import ModelConfig

SHARED = REPO.parent / "shared" / "kitti"
CANON = camera.canonical_camera(ModelConfig())


def _sample_frame():
    from mono_depth_ros.kitti import read_rgb
    from mono_depth_ros.kitti_index import ground_truth, intrinsics, read_index

    f = [f for f in read_index(SAMPLE / "index.tsv") if f.camera == 2 and f.gt_png][0]
    rgb = read_rgb(f.rgb)
    gt, _ = ground_truth(f, *rgb.shape[:2])
    return rgb, gt, Intrinsics.from_matrix(intrinsics(f), rgb.shape[1], rgb.shape[0])


def test_kitti_camera_is_a_plain_resize():
    """The reference camera (and no intrinsics at all) map the frame onto the whole input, so
    models trained before the canonical camera see exactly what they saw then."""
    assert camera.canvas_map(1242, 375, CANON, camera.KITTI_REFERENCE).is_plain_resize
    assert camera.canvas_map(1000, 300, CANON, None).is_plain_resize
    assert CANON.width == 640 and CANON.height == 192
    assert CANON.fx == pytest.approx(721.5377 * 640 / 1242)


def test_intrinsics_follow_resize_and_crop():
    cam = camera.KITTI_REFERENCE
    half = cam.resized(621, 187)
    assert half.fx == pytest.approx(cam.fx / 2) and half.fy == pytest.approx(cam.fy * 187 / 375)
    # pixel-centre convention: the centre of the image stays the centre
    assert (half.cx + 0.5) / 621 == pytest.approx((cam.cx + 0.5) / 1242)
    crop = cam.cropped(100, 50, 600, 200)
    assert (crop.fx, crop.cx, crop.cy) == (cam.fx, cam.cx - 100, cam.cy - 50)


@pytest.mark.parametrize("bad", [dict(fx=0.0), dict(fx=-5.0), dict(fy=float("nan"))])
def test_bad_intrinsics_are_one_clear_error(bad):
    kw = dict(fx=700.0, fy=700.0, cx=600.0, cy=180.0, width=1242, height=375) | bad
    with pytest.raises(CameraError, match="focal"):
        Intrinsics(**kw).validate()


def test_intrinsics_that_miss_the_canvas_are_refused():
    far = Intrinsics(721.5, 721.5, 50000.0, 180.0, 1242, 375)
    with pytest.raises(CameraError, match="off the network's canvas"):
        camera.canvas_map(1242, 375, CANON, far)
    tiny = Intrinsics(1e6, 1e6, 600.0, 180.0, 1242, 375)
    with pytest.raises(CameraError, match="check the intrinsics"):
        camera.canvas_map(1242, 375, CANON, tiny)


def test_a_crop_lands_where_the_native_frame_has_it():
    """A centre crop with its intrinsics fills the part of the canvas the native frame shows
    there (same scale, same place), and padding elsewhere."""
    rgb, _, cam = _sample_frame()
    h, w = rgb.shape[:2]
    x0, y0, cw, ch = w // 4, h // 4, w // 2, h // 2
    crop = np.ascontiguousarray(rgb[y0:y0 + ch, x0:x0 + cw])
    full = camera.to_canvas(rgb, camera.canvas_map(w, h, CANON, cam)).astype(np.float32)
    cmap = camera.canvas_map(cw, ch, CANON, cam.cropped(x0, y0, cw, ch))
    part = camera.to_canvas(crop, cmap).astype(np.float32)
    X0, Y0, X1, Y1 = cmap.overlap()
    assert (X1 - X0, Y1 - Y0) == (320, 96)
    # resampling phases differ by a fraction of a pixel (offsets are whole canvas pixels):
    # compare after a blur; a shift by one pixel matches much worse without it
    import cv2

    def diff(dy, dx):
        a = cv2.GaussianBlur(part, (7, 7), 1.5)[Y0 + 3:Y1 - 3, X0 + 3:X1 - 3]
        b = cv2.GaussianBlur(full, (7, 7), 1.5)[Y0 + 3 + dy:Y1 - 3 + dy, X0 + 3 + dx:X1 - 3 + dx]
        return np.abs(a - b).mean()

    assert diff(0, 0) < 4.0
    pad = np.ones(part.shape[:2], bool)
    pad[Y0:Y1, X0:X1] = False
    assert np.all(part[pad] == np.asarray(camera.PAD_RGB, np.float32))


def test_from_canvas_inverts_to_canvas():
    """Depth on the canvas goes back to the image's pixels; unseen pixels take the nearest seen
    value (depth) or the fill value (confidence)."""
    cam = Intrinsics(1400.0, 1400.0, 499.5, 249.5, 1000, 500)  # telephoto: a window
    cmap = camera.canvas_map(1000, 500, CANON, cam)
    xs = np.linspace(5.0, 50.0, CANON.width, dtype=np.float32)
    canvas = np.repeat(xs[None], CANON.height, axis=0)
    back = camera.from_canvas(canvas, cmap)
    assert back.shape == (500, 1000)
    assert camera.seen_mask(cmap).all()  # the whole image fits the canvas
    # the image's principal point gets the canvas value at the canonical principal point
    assert back[250, 500] == pytest.approx(np.interp(CANON.cx, np.arange(CANON.width), xs),
                                           rel=0.01)
    wide = Intrinsics(500.0, 500.0, 500.0, 400.0, 1000, 800)  # wider than the canvas
    cmap = camera.canvas_map(1000, 800, CANON, wide)
    seen = camera.seen_mask(cmap)
    assert 0.2 < seen.mean() < 0.9
    conf = camera.from_canvas(np.ones_like(canvas), cmap, log=False, fill=0.0)
    assert np.all(conf[~seen] < 0.5) and np.all(conf[seen] > 0.5)
    depth = camera.from_canvas(canvas, cmap)
    assert np.all(np.isfinite(depth)) and depth.min() > 0
    assert depth[0].min() >= 5.0 - 1e-3  # above the canvas: the nearest seen row


def test_sparse_depth_keeps_its_values():
    _, gt, cam = _sample_frame()
    cmap = camera.canvas_map(gt.shape[1], gt.shape[0], CANON, cam)
    d = camera.sparse_to_canvas(gt, cmap)
    vals = np.unique(gt[gt > 0])
    assert np.isin(d[d > 0], vals).all() and (d > 0).sum() > 1000


@pytest.fixture(scope="module")
def onnx_backend():
    from mono_depth_ros.backends.factory import create_backend
    from mono_depth_ros.config import BackendConfig

    return create_backend(BackendConfig(backend="onnxruntime"))


def test_other_cameras_keep_their_metres(onnx_backend):
    """Frames of drives the model never trained on, turned into other cameras (centre crops,
    resizes, both): with the cameras' intrinsics the ground-truth / prediction scale stays
    within 10 % of the native camera's on the same pixels and the metric AbsRel at most 10 %
    worse; without them the half-size crop (a telephoto camera) is far off, which is what the
    canonical camera fixes."""
    from mono_depth_ros.camera_eval import CAMERAS, evaluate, keeps_metres, to_markdown
    from mono_depth_ros.scale_eval import select_frames

    index = SHARED / "not_for_training" / "index.tsv"
    if not index.is_file():
        pytest.skip(f"{index} is not on this machine (the shared KITTI folder)")
    frames = select_frames([index], 4)
    assert len(frames) >= 5
    names = ("native", "crop 1/2", "crop 0.7", "resize 1/2", "resize 1/2 + crop 0.7")
    rows = evaluate(onnx_backend, frames, {n: CAMERAS[n] for n in names})
    print(to_markdown(rows))
    given = {r["camera"]: r for r in rows if r["intrinsics"]}
    blind = {r["camera"]: r for r in rows if not r["intrinsics"]}
    for name in names:
        assert keeps_metres(given[name]), given[name]
    assert not keeps_metres(blind["crop 1/2"])
    assert blind["crop 1/2"]["scale_vs_native"] > 1.3


def test_predict_fx_brings_a_crop_to_the_model_camera(tmp_path):
    """--fx on a crop gives depth at the crop's size whose scale matches the full frame's on
    the same pixels; a bad --fx is one line and exit 2."""
    from mono_depth_ros.colorize import write_rgb

    rgb, gt, cam = _sample_frame()
    h, w = rgb.shape[:2]
    x0, y0, cw, ch = w // 4, h // 4, w // 2, h // 2
    write_rgb(tmp_path / "crop.png", np.ascontiguousarray(rgb[y0:y0 + ch, x0:x0 + cw]))
    write_rgb(tmp_path / "full.png", rgb)
    crop_cam = cam.cropped(x0, y0, cw, ch)

    def predict(name, *extra):
        return subprocess.run([sys.executable, "-m", "mono_depth_ros.predict", "--images",
                               str(tmp_path / name), "--out", str(tmp_path / "out"),
                               "--backend", "onnxruntime", *extra],
                              capture_output=True, text=True, timeout=120)

    assert predict("full.png").returncode == 0
    r = predict("crop.png", "--fx", str(crop_cam.fx), "--cx", str(crop_cam.cx), "--cy",
                str(crop_cam.cy))
    assert r.returncode == 0, r.stderr
    crop_depth = np.load(tmp_path / "out" / "crop.npy")
    full_depth = np.load(tmp_path / "out" / "full.npy")[y0:y0 + ch, x0:x0 + cw]
    assert crop_depth.shape == (ch, cw)
    g = gt[y0:y0 + ch, x0:x0 + cw]
    m = g > 0
    ratio = np.median(g[m] / crop_depth[m]) / np.median(g[m] / full_depth[m])
    assert abs(ratio - 1) < 0.15, ratio
    bad = predict("crop.png", "--fx", "-3")
    assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1
    assert "focal" in bad.stderr


def test_rows_below_the_canvas_follow_the_road():
    """A camera taller than the canvas (1600x900 at fx 1266, a common automotive camera): its
    bottom rows are not seen; their depth continues a flat road (depth ∝ 1 / (row - horizon))
    from the last seen row instead of copying it."""
    cam = Intrinsics(1266.0, 1266.0, 799.5, 449.5, 1600, 900)
    cmap = camera.canvas_map(1600, 900, CANON, cam)
    assert cmap.oy < 0 and cmap.oy + cmap.rh > CANON.height  # cut at top and bottom
    h = CANON.cy + 0.5
    rows = np.arange(CANON.height, dtype=np.float32) + 0.5
    road = np.where(rows > h + 1, 1.65 * CANON.fy / np.maximum(rows - h, 1e-3), 80.0)
    canvas = np.repeat(road[:, None], CANON.width, axis=1).astype(np.float32)
    depth = camera.from_canvas(canvas, cmap)
    # the image's bottom row, seen by a camera fy = 1266 at 1.65 m: depth = 1.65 fy / (v - cy)
    v = 899.0
    expected = 1.65 * cam.fy / (v + 0.5 - (cam.cy + 0.5))
    assert depth[899, 800] == pytest.approx(expected, rel=0.03)
    assert depth[899, 800] < 0.8 * canvas[-1, 320]  # nearer than the last seen row
    # confidence there is 0: the network did not see it
    conf = camera.from_canvas(np.ones_like(canvas), cmap, log=False, fill=0.0)
    assert conf[899, 800] == 0.0 and conf[450, 800] == 1.0


def test_unrectified_needs_distortion_and_a_topic_without_rect():
    """The one rule the depth node and training from bags warn by."""
    d = [-0.369, 0.197, 0.00135, 0.000568, -0.0688]
    assert camera.unrectified(d, "/kitti/camera_color_left/image_raw")
    assert not camera.unrectified(d, "/camera/image_rect_color")
    assert not camera.unrectified([0.0] * 5, "/camera/image_raw")
    assert not camera.unrectified([], "/camera/image_raw")
