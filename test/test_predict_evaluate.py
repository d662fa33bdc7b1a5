"""predict and evaluate CLIs on real KITTI frames with the shipped default model."""

import json
import subprocess
import sys

import numpy as np
import pytest

from conftest import DRIVE_0001, REPO, SAMPLE
from mono_depth_ros import kitti
from mono_depth_ros.model_io import default_model_path

IMAGES = DRIVE_0001 / "image_02" / "data"


def _predict(*args):
    return subprocess.run([sys.executable, "-m", "mono_depth_ros.predict", *map(str, args)],
                          cwd=REPO, capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def npy_out(tmp_path_factory):
    out = tmp_path_factory.mktemp("npy")
    proc = _predict("--images", IMAGES, "--out", out, "--format", "npy", "--backend", "torch")
    assert proc.returncode == 0, proc.stderr
    return out


def test_shipped_model_exists_and_loads():
    from mono_depth_ros.model_io import load_model

    model, ckpt = load_model()
    assert default_model_path().stat().st_size < 25 * 2 ** 20
    assert ckpt["stage"] == "fine"


def test_npy_full_resolution_same_stem(npy_out):
    names = sorted(p.stem for p in npy_out.iterdir())
    assert names == ["0000000005", "0000000050", "0000000100"]
    d = np.load(npy_out / "0000000005.npy")
    assert d.dtype == np.float32 and d.shape == (375, 1242)
    assert np.isfinite(d).all() and d.min() > 0


def test_png16_matches_npy_and_color_is_rgb(npy_out, tmp_path):
    img = IMAGES / "0000000050.png"
    assert _predict("--images", img, "--out", tmp_path / "p", "--format", "png16",
                    "--backend", "torch").returncode == 0
    png = kitti.read_depth_png(tmp_path / "p" / "0000000050.png")
    ref = np.load(npy_out / "0000000050.npy")
    assert png.shape == ref.shape
    assert np.abs(png - ref).max() <= 1 / 256 + 1e-6  # metres x 256, rounded
    assert _predict("--images", img, "--out", tmp_path / "c", "--format", "color",
                    "--backend", "torch").returncode == 0
    import cv2
    col = cv2.imread(str(tmp_path / "c" / "0000000050.png"), cv2.IMREAD_UNCHANGED)
    assert col.shape == (375, 1242, 3) and col.dtype == np.uint8 and col.std() > 5


def test_coarse_stage_differs_from_fine(npy_out, tmp_path):
    assert _predict("--images", IMAGES / "0000000005.png", "--out", tmp_path, "--stage", "coarse",
                    "--backend", "torch").returncode == 0
    coarse = np.load(tmp_path / "0000000005.npy")
    fine = np.load(npy_out / "0000000005.npy")
    assert coarse.shape == fine.shape and not np.allclose(coarse, fine)


@pytest.mark.parametrize("what", ["image", "model", "missing"])
def test_bad_input_one_line_nonzero(tmp_path, what):
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n not really")
    if what == "image":
        proc = _predict("--images", bad, "--out", tmp_path / "o", "--backend", "torch")
        assert "not a readable image" in proc.stderr
    elif what == "model":
        proc = _predict("--images", IMAGES / "0000000005.png", "--out", tmp_path / "o",
                        "--model", bad, "--backend", "torch")
        assert "not a readable checkpoint" in proc.stderr
    else:
        proc = _predict("--images", tmp_path / "nothing", "--out", tmp_path / "o")
        assert "no such image file or directory" in proc.stderr
    assert proc.returncode != 0
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr


def test_evaluate_cli_table_files_and_consistency(tmp_path):
    from mono_depth_ros.backends.torch_backend import TorchBackend
    from mono_depth_ros.metrics import score_frame
    from training import data as D

    proc = subprocess.run([sys.executable, "-m", "training.evaluate", "--list",
                           str(SAMPLE / "index.tsv"), "--drives", "2011_09_26_drive_0001",
                           "--out", str(tmp_path)], cwd=REPO, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr
    for row in ("| coarse |", "| fine |", "| baseline |", "| shuffled |"):
        assert row in proc.stdout
    report = json.loads((tmp_path / "summary.json").read_text())
    assert report["summary"]["fine"]["frames"] == 3
    assert (tmp_path / "per_frame.csv").read_text().count("\n") == 1 + 4 * 3
    assert len(list((tmp_path / "panels").glob("*.png"))) == 3
    assert (tmp_path / "abs_rel_per_frame.png").stat().st_size > 1000
    # the same numbers computed directly with the shared metric code
    frame = D.read_index(SAMPLE / "index.tsv")[1]
    s = D.load_sample(frame)
    direct = score_frame(TorchBackend().infer(s.rgb).fine, s.depth)
    per_frame = (tmp_path / "per_frame.csv").read_text().splitlines()
    header = per_frame[0].split(",")
    row = next(r.split(",") for r in per_frame if r.startswith(frame.frame_id + ",fine"))
    assert float(row[header.index("abs_rel")]) == pytest.approx(direct.scaled["abs_rel"], rel=1e-6)
