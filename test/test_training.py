"""Training on real KITTI frames: stages, freezing, resume, checkpoints, the test-scene guard."""


import pytest
import torch

from conftest import SAMPLE
from mono_depth_ros.model_io import load_checkpoint, load_model
from training import data as D
from training import train
from training.options import TrainConfig

TINY = ["--train-list", str(SAMPLE / "index.tsv"), "--val-drives", "2011_09_26_drive_0001",
        "--test-scenes", str(SAMPLE / "splits/sfmlearner/test_scenes.txt"),
        "--model-height", "64", "--model-width", "192", "--batch-size", "2", "--threads", "2",
        "--no-pretrained", "--val-every", "1"]


def _train_list_without_test_frames(tmp_path):
    """The sample's index minus its Eigen-test-scene frame (kept there as a test frame)."""
    lines = (SAMPLE / "index.tsv").read_text().splitlines()
    keep = [x for x in lines if "not_for_training" not in x]
    path = SAMPLE / f".train_{tmp_path.name}.tsv"  # paths in the index are relative to SAMPLE
    path.write_text("\n".join(keep) + "\n")
    return path


@pytest.fixture()
def train_list(tmp_path):
    path = _train_list_without_test_frames(tmp_path)
    yield path
    path.unlink()


def _args(train_list, out, *extra):
    args = list(TINY)
    args[1] = str(train_list)
    return args + ["--out-dir", str(out), *extra]


def test_refuses_eigen_test_scene(tmp_path, capsys):
    rc = train.main(TINY + ["--out-dir", str(tmp_path), "--coarse-epochs", "1",
                            "--fine-epochs", "0"])
    err = capsys.readouterr().err.strip()
    assert rc == 2
    assert "2011_09_26_drive_0101" in err and "Eigen test scenes" in err
    assert len(err.splitlines()) == 1


def test_refusal_is_by_drive_not_by_path(tmp_path):
    frames = D.read_index(SAMPLE / "index.tsv")
    scenes = {"2011_09_26_drive_0005"}
    with pytest.raises(D.TestSceneError, match="drive_0005"):
        D.check_not_test_scenes([f for f in frames if f.drive == "2011_09_26_drive_0005"], scenes)


def test_coarse_frozen_during_fine_stage(tmp_path, train_list):
    assert train.main(_args(train_list, tmp_path / "a", "--coarse-epochs", "1",
                            "--fine-epochs", "0", "--stages", "coarse")) == 0
    after_coarse = load_checkpoint(tmp_path / "a" / "model.pt")["state_dict"]
    assert train.main(_args(train_list, tmp_path / "b", "--stages", "fine", "--fine-epochs", "2",
                            "--init-coarse", str(tmp_path / "a" / "model.pt"))) == 0
    after_fine = load_checkpoint(tmp_path / "b" / "model.pt")["state_dict"]
    coarse_keys = [k for k in after_coarse if k.startswith("coarse.")]
    fine_keys = [k for k in after_coarse if k.startswith("fine.")]
    assert coarse_keys and fine_keys
    for k in coarse_keys:  # weights AND BatchNorm statistics
        assert torch.equal(after_coarse[k], after_fine[k]), k
    assert any(not torch.equal(after_coarse[k], after_fine[k]) for k in fine_keys)


def test_checkpoint_contents_and_resume(tmp_path, train_list):
    full, part = tmp_path / "full", tmp_path / "part"
    assert train.main(_args(train_list, full, "--coarse-epochs", "2", "--fine-epochs", "1")) == 0
    ck = load_checkpoint(full / "model.pt")
    meta = ck["meta"]
    assert ck["model_config"]["height"] == 64 and ck["stage"] == "fine"
    assert len(meta["data_hash"]) == 16 and meta["code_version"].startswith("0.1.0")
    assert meta["train_config"]["lam"] == TrainConfig().lam
    assert len(meta["row_median_depth"]) == 64
    assert meta["val_frames"] and all("drive_0001" in f for f in meta["val_frames"])
    assert not any("drive_0001" in f for f in meta["train_frames"])
    for name in ("last.pt", "log.csv", "loss_curve.png", "summary.json"):
        assert (full / name).is_file(), name
    model, _ = load_model(full / "model.pt")  # loads with weights_only=True

    # interrupted after 1 coarse epoch, then resumed: same weights as the uninterrupted run
    assert train.main(_args(train_list, part, "--coarse-epochs", "2", "--fine-epochs", "1",
                            "--stop-after", "1")) == 0
    assert not (part / "model.pt").exists() and (part / "last.pt").is_file()
    assert train.main(_args(train_list, part, "--coarse-epochs", "2", "--fine-epochs", "1",
                            "--resume", str(part / "last.pt"))) == 0
    a = load_checkpoint(full / "model.pt")["state_dict"]
    b = load_checkpoint(part / "model.pt")["state_dict"]
    for k in a:
        assert torch.allclose(a[k].float(), b[k].float(), atol=1e-5), k


def test_resume_refuses_other_model_settings(tmp_path, train_list, capsys):
    assert train.main(_args(train_list, tmp_path, "--coarse-epochs", "1", "--fine-epochs",
                            "0")) == 0
    rc = train.main(_args(train_list, tmp_path, "--model-fine-channels", "8", "--resume",
                          str(tmp_path / "last.pt")))
    assert rc == 2 and "was trained with model settings" in capsys.readouterr().err


def test_augmentation_keeps_geometry():
    """A zoom of s divides depth by s; flips move depth with the image."""
    import numpy as np

    frame = [f for f in D.read_index(SAMPLE / "index.tsv") if f.velodyne is not None][0]
    s = D.load_sample(frame, ("lidar",))
    plain_img, plain_d = D.make_pair(s, 64, 192)
    assert plain_img.shape == (3, 64, 192) and plain_d.shape == (1, 64, 192)
    zoom_img, zoom_d = D.make_pair(s, 64, 192, np.random.default_rng(1),
                                   D.AugmentConfig(flip=False, color=False, max_zoom=1.5))
    # replay the zoom the generator drew: the canvas image grows from rw to round(rw * s)
    from mono_depth_ros import camera

    h, w = s.depth.shape
    base = camera.canvas_map(w, h, camera.KITTI_REFERENCE.resized(192, 64), s.camera)
    applied = round(base.rw * np.random.default_rng(1).uniform(1.0, 1.5)) / base.rw
    assert applied > 1.05
    vals = np.unique(s.depth[s.depth > 0])
    z = zoom_d[zoom_d > 0] * applied
    i = np.clip(np.searchsorted(vals, z), 1, len(vals) - 1)
    nearest = np.where(np.abs(vals[i] - z) < np.abs(vals[i - 1] - z), vals[i], vals[i - 1])
    assert np.allclose(nearest, z, rtol=1e-5)  # every depth is an original one divided by s
    flip_img, flip_d = D.make_pair(s, 64, 192, np.random.default_rng(3),
                                   D.AugmentConfig(flip=True, color=False, max_zoom=1.0))
    # flipped or not, image and depth move together
    flipped = np.allclose(flip_img, plain_img[:, :, ::-1])
    assert flipped or np.allclose(flip_img, plain_img)
    assert np.array_equal(flip_d, plain_d[:, :, ::-1] if flipped else plain_d)


def test_size_mismatch_is_one_clear_error(tmp_path):
    from mono_depth_ros.kitti import KittiFormatError

    frame = D.read_index(SAMPLE / "index.tsv")[0]
    small = tmp_path / "small.png"
    import cv2
    import numpy as np
    cv2.imwrite(str(small), np.zeros((10, 10), np.uint16))
    bad = D.Frame(frame.frame_id, frame.rgb, "raw", frame.calib, frame.drive, gt_png=small)
    with pytest.raises(KittiFormatError, match="1242x375 but its png ground truth is 10x10"):
        D.load_sample(bad)


def test_cuda_device_without_gpu_is_one_clear_error(tmp_path, capsys):
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is present: --device cuda is valid here")
    rc = train.main(TINY + ["--out-dir", str(tmp_path), "--device", "cuda"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and "torch.cuda.is_available() is False" in err and len(err.splitlines()) == 1


def test_dense_ground_truth_can_be_left_out_of_training(tmp_path, train_list):
    """max_gt_density: frames whose ground truth covers more of the image than that (the
    interpolated dense maps of shared/kitti's 12 object frames) are not trained on."""
    import numpy as np

    from mono_depth_ros.config import ModelConfig
    from training.options import TrainConfig

    frames = [f for f in D.read_index(train_list, SAMPLE) if f.gt_kinds()]
    cache = {f.frame_id: D.load_sample(f) for f in frames}
    dense = cache[frames[0].frame_id]
    dense.depth = np.where(dense.depth > 0, dense.depth, np.float32(20.0))  # 100 % covered
    cfg = TrainConfig(out_dir=str(tmp_path), pretrained=False, threads=1, max_gt_density=0.5,
                      test_scenes=str(SAMPLE / "splits/sfmlearner/test_scenes.txt"))
    trainer = train.Trainer(cfg, ModelConfig(height=64, width=192), frames=(frames, []),
                            sample_cache=cache)
    kept = [s.frame.frame_id for s in trainer.train_samples]
    assert frames[0].frame_id not in kept and len(kept) == len(frames) - 1
    everything = train.Trainer(TrainConfig(out_dir=str(tmp_path), pretrained=False, threads=1),
                               ModelConfig(height=64, width=192), frames=(frames, []),
                               sample_cache=cache)
    assert len(everything.train_samples) == len(frames)


def test_out_of_fold_coarse_nets_feed_the_fine_stage(tmp_path, train_list):
    """fine_oof_folds: K extra coarse nets, each trained without one fold of drives; each
    training example's coarse depth comes from the net that never saw its drive."""
    import numpy as np

    out = tmp_path / "oof"

    def args(*extra):  # both of the sample's drives trained on (2 groups, 2 folds)
        a = _args(train_list, out, *extra)
        a[a.index("--val-drives") + 1] = "none"
        return a

    assert train.main(args("--coarse-epochs", "1", "--fine-epochs", "1",
                           "--fine-oof-folds", "2")) == 0
    main_frames = set(load_checkpoint(out / "model.pt")["meta"]["train_frames"])
    groups = {}
    for i in range(2):
        meta = load_checkpoint(out / f"oof{i}" / "model.pt")["meta"]
        assert meta["epochs_done"]["coarse"] == 1 and meta["epochs_done"]["fine"] == 0
        seen = set(meta["train_frames"])
        assert seen and seen < main_frames
        groups[i] = main_frames - seen
    assert groups[0] and groups[1] and not groups[0] & groups[1]
    assert groups[0] | groups[1] == main_frames  # every frame held out of exactly one net

    # the routing: each example gets its own fold's net's coarse depth; a rerun of the fine
    # stage reuses the nets on disk (no retraining: same weights, same result)
    from training.options import parse

    cfg, model_cfg, _ = parse(args("--fine-oof-folds", "2", "--stages", "fine",
                                   "--init-coarse", str(out / "model.pt")))
    trainer = train.Trainer(cfg, model_cfg)
    before = {i: (out / f"oof{i}" / "model.pt").stat().st_mtime_ns for i in range(2)}
    nets = trainer._oof_coarse_nets()
    assert before == {i: (out / f"oof{i}" / "model.pt").stat().st_mtime_ns for i in range(2)}
    image, _, _, _, idx = next(trainer._batches(0))
    idx = np.asarray(idx)
    with torch.no_grad():
        coarse, _ = trainer._coarse_for_fine(image, idx, nets)
        for row, j in enumerate(idx):
            own, _ = nets[trainer.oof_fold[j]].coarse_pass(image[row:row + 1])
            assert torch.allclose(coarse[row:row + 1], own), row
            held_out = trainer.train_samples[j].frame.frame_id
            assert held_out in groups[trainer.oof_fold[j]]


def test_out_of_fold_needs_two_folds(tmp_path, train_list, capsys):
    rc = train.main(_args(train_list, tmp_path, "--coarse-epochs", "1", "--fine-epochs", "1",
                          "--fine-oof-folds", "1"))
    err = capsys.readouterr().err.strip()
    assert rc == 2 and "fine_oof_folds 1" in err and len(err.splitlines()) == 1
