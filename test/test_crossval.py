"""Cross-drive validation on real KITTI frames: folds by drive, sampling, right views, the shuffled
check, and one tiny end-to-end run of ``training.crossval``."""

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from conftest import REPO
from training import crossval, crossval_probe
from training import data as D
from training.evaluate import shuffled_partner

SHARED = REPO.parent / "shared" / "kitti"
needs_shared = pytest.mark.skipif(not (SHARED / "index.tsv").is_file(),
                                  reason="../shared/kitti (the project's KITTI data) is not beside "
                                         "the repository")


@pytest.fixture(scope="module")
def shared_frames():
    if not (SHARED / "index.tsv").is_file():
        pytest.skip("../shared/kitti is not beside the repository")
    return D.read_index(SHARED / "index.tsv")


@needs_shared
def test_folds_never_split_a_drive(shared_frames):
    folds = crossval.make_folds(shared_frames, 3)
    groups = [g for fold in folds for g in fold]
    assert len(groups) == len(set(groups)) == len({f.group for f in shared_frames})
    sizes = Counter(f.group for f in shared_frames)
    biggest = sorted(sizes, key=lambda g: -sizes[g])[:3]
    assert [next(i for i, fold in enumerate(folds) if g in fold) for g in biggest] == [0, 1, 2]
    for fold in folds:  # every fold holds several drives, not one
        assert len(fold) >= 5
    # frames of unknown drive are groups of their own
    unknown = [f for f in shared_frames if f.drive is None]
    assert unknown and all(f.group == f"frame:{f.frame_id}" for f in unknown)
    with pytest.raises(crossval.ConfigError, match="cannot make"):
        crossval.make_folds(shared_frames[:2], 3)


def test_balanced_epoch_caps_each_drive():
    groups = ["a"] * 50 + ["b"] * 30 + ["c"] * 2 + ["d"]
    rng = np.random.default_rng(0)
    epoch = D.balanced_epoch(groups, 4, rng)
    counts = Counter(groups[i] for i in epoch)
    assert counts == {"a": 4, "b": 4, "c": 2, "d": 1}
    assert len(set(epoch.tolist())) == len(epoch)
    again = D.balanced_epoch(groups, 4, rng)  # a fresh draw of the long drives each epoch
    assert set(epoch.tolist()) != set(again.tolist())
    assert sorted(D.balanced_epoch(groups, 0, rng).tolist()) == list(range(len(groups)))


def test_cap_per_group_spreads_over_the_drive():
    frames = [D.Frame(f"d/{i:04d}", Path(f"{i}.png"), "raw", (), "d") for i in range(20)]
    kept = crossval.cap_per_group(frames, 3)
    assert [f.frame_id for f in kept] == ["d/0000", "d/0010", "d/0019"]
    assert crossval.cap_per_group(frames, 0) == frames


@needs_shared
def test_right_views_have_their_own_ground_truth(shared_frames):
    rights = [r for r in (f.right_view() for f in shared_frames) if r is not None]
    assert len(rights) >= 60
    r = rights[0]
    assert "image_03" in str(r.rgb) and "image_03" in str(r.gt_png)
    left = next(f for f in shared_frames
                if f.right_view() and f.right_view().frame_id == r.frame_id)
    assert r.group == left.group  # same drive: always on the same side of a split
    s = D.load_sample(r)
    assert s.depth.shape == s.rgb.shape[:2] and (s.depth > 0).sum() > 5000
    # the right image is another view: not the left image, but nearly the same scene
    ls = D.load_sample(left)
    assert not np.array_equal(ls.rgb, s.rgb)
    med_left, med_right = (float(np.median(x.depth[x.depth > 0])) for x in (ls, s))
    assert abs(med_left - med_right) < 3


def test_shuffled_partner_is_another_frame_mostly_of_another_drive():
    groups = ["a"] * 4 + ["b"] * 4 + ["c"] * 2
    partner = shuffled_partner(groups)
    assert all(p != i for i, p in enumerate(partner))
    assert sum(groups[p] != groups[i] for i, p in enumerate(partner)) >= 8
    assert shuffled_partner(["a", "a"]) == [1, 0]


@needs_shared
def test_crossval_end_to_end_tiny(tmp_path, capsys):
    """Two folds over three small drives, one tiny epoch each: every artefact is written, the
    shuffled and baseline rows are there, a rerun resumes from the results (no retraining), a
    fine-only rerun reuses the coarse nets, and scale_eval scores each fold's held-out drives."""
    lines = (SHARED / "index.tsv").read_text().splitlines()
    keep = ("2011_09_26_drive_0022", "2011_09_26_drive_0061", "2011_09_26_drive_0087")
    subset = tmp_path / "subset.tsv"
    subset.write_text("\n".join([lines[0]] + [x for x in lines[1:] if any(k in x for k in keep)])
                      + "\n")
    out = tmp_path / "cv"
    args = ["--folds", "2", "--seeds", "1", "--val-per-drive", "2", "--out", str(out),
            "--test-list", "", "--train-list", str(subset), "--data-root", str(SHARED),
            "--test-scenes", str(SHARED / "splits/sfmlearner/test_scenes.txt"),
            "--model-height", "64", "--model-width", "192", "--batch-size", "2",
            "--coarse-epochs", "1", "--fine-epochs", "1", "--per-drive-cap", "1",
            "--no-pretrained", "--threads", "2", "--stereo-weight", "0.5"]
    # one fold alone first (as a second process would run it), then the rest: the later call
    # trains only the missing fold and reports both
    assert crossval.main(args + ["--only-folds", "1"]) == 0
    assert len(json.loads((out / "crossval.json").read_text())["results"]) == 1
    assert sorted(p.name for p in out.glob("fold*")) == ["fold1_seed0"]
    assert "folds 1 only" in (out / "crossval.md").read_text()
    stamp1 = (out / "fold1_seed0" / "result.json").stat().st_mtime_ns
    assert crossval.main(args) == 0
    assert (out / "fold1_seed0" / "result.json").stat().st_mtime_ns == stamp1
    report = json.loads((out / "crossval.json").read_text())
    assert len(report["results"]) == 2
    group_of = {f.frame_id: f.group for f in D.read_index(subset, SHARED)}
    for r in report["results"]:
        held = {group_of[v] for v in r["val_frames"]}
        assert held and not held & set(r["train_groups"])  # no drive on both sides
        assert {"coarse", "fine", "fine_flip", "baseline", "shuffled"} <= set(r["val"]["summary"])
        assert r["val"]["summary"]["fine_flip"] != r["val"]["summary"]["fine"]
    assert (out / "crossval.png").stat().st_size > 1000
    md = (out / "crossval.md").read_text()
    assert "shuffled-prediction gap" in md and "flip averaging gain" in md
    stamp = (out / "fold0_seed0" / "result.json").stat().st_mtime_ns
    assert crossval.main(args) == 0  # resumes: finished runs are not trained again
    assert (out / "fold0_seed0" / "result.json").stat().st_mtime_ns == stamp

    # a run finished before flip averaging existed is scored from its model.pt on a rerun
    old = out / "fold1_seed0" / "result.json"
    r1 = json.loads(old.read_text())
    flip = r1["val"]["summary"].pop("fine_flip")
    for v in r1["val"]["per_frame"].values():
        v.pop("fine_flip")
    old.write_text(json.dumps(r1))
    model_stamp = (out / "fold1_seed0" / "model.pt").stat().st_mtime_ns
    assert crossval.main(args) == 0
    again = json.loads(old.read_text())["val"]
    assert again["summary"]["fine_flip"] == pytest.approx(flip)
    assert all("fine_flip" in v for v in again["per_frame"].values())
    assert (out / "fold1_seed0" / "model.pt").stat().st_mtime_ns == model_stamp

    # fine stage only, on these runs' coarse nets (seed 3 has none of its own: seed 0's), the
    # trainer's --seed passed on (not taken for crossval's --seeds): the coarse scores are the
    # same to the last digit (same net, same frames), the fine ones are not (another fine stage)
    fine_only = tmp_path / "cv_fine"
    args_fine = [a if a != str(out) else str(fine_only) for a in args]
    assert crossval.main(args_fine + ["--init-coarse-from", str(out), "--coarse-noise",
                                      "0.2", "--seed", "3"]) == 0
    again = json.loads((fine_only / "crossval.json").read_text())
    assert len(again["results"]) == 2
    for a, b in zip(report["results"], again["results"]):
        assert a["val"]["summary"]["coarse"] == b["val"]["summary"]["coarse"]
        assert a["val"]["summary"]["fine"] != b["val"]["summary"]["fine"]
    log = (fine_only / "fold0_seed3" / "log.csv").read_text()
    assert ",fine," in log and ",coarse," not in log
    assert crossval.main(args_fine + ["--init-coarse-from", str(tmp_path)]) == 2

    # the probes: the fine scores reproduce the cross-validation's, the second net's are the
    # fine-only runs' own, and the log-average of the two is scored beside them
    probe_args = [str(out), "--list", str(subset), "--data-root", str(SHARED)]
    assert crossval_probe.main(probe_args + ["--with", str(fine_only)]) == 0
    probed = json.loads((out / "probe.json").read_text())["runs"]
    for (name, p), a, b in zip(sorted(probed.items()), report["results"], again["results"]):
        assert p["fine"] == pytest.approx(a["val"]["summary"]["fine"]["abs_rel"], rel=1e-5)
        assert p["second net"] == pytest.approx(b["val"]["summary"]["fine"]["abs_rel"], rel=1e-5)
        assert {"grid 1/8", "grid 1/16", "grid 1/32", "both, log-averaged"} <= set(p)
    assert "vs fine" in capsys.readouterr().out
    assert crossval_probe.main([str(tmp_path / "nothing")]) == 2
    assert "no finished run" in capsys.readouterr().err

    # the ground-plane scale of each fold's model on the drives it held out
    from mono_depth_ros import scale_eval

    assert scale_eval.main(["--crossval", str(out), "--frames"]) == 0
    text = capsys.readouterr().out
    for fold, r in enumerate(report["results"]):
        rows = [x.split(" | ")[1] for x in text.splitlines()
                if x.startswith(f"| fold {fold} (held out) | ")]
        scored = [v for v in rows if v in group_of]  # one row per frame, besides the summary
        assert len(rows) == 1 + len(scored) and len(scored) >= 2
        assert {group_of[v] for v in scored} == {group_of[v] for v in r["val_frames"]}


def test_through_grid_keeps_coarse_layout_and_drops_detail():
    """A depth map through a coarse grid keeps what varies slowly and loses a thin object."""
    # log depth linear in the row: exact between the first and last cell centres (rows 8..87)
    depth = np.tile(np.geomspace(5.0, 50.0, 96, dtype=np.float32)[:, None], (1, 320))
    kept = crossval_probe.through_grid(depth, (20, 6))
    assert np.allclose(kept[8:-8], depth[8:-8], rtol=1e-3)
    pole = depth.copy()
    pole[:, 150:153] = 2.0  # a 3-pixel pole in front of the scene
    lost = crossval_probe.through_grid(pole, (20, 6))
    assert lost[40:60, 151].min() > 2.0 * 2  # averaged away into the scene behind


def test_crossval_bad_folds_is_one_line(capsys):
    assert crossval.main(["--folds", "1"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--folds" in err


def test_only_folds_parsing():
    assert crossval.parse_folds("", 3) == {0, 1, 2}
    assert crossval.parse_folds("0, 2", 3) == {0, 2}
    for bad in ("3", "a", ",", "-1"):
        with pytest.raises(crossval.ConfigError, match="--only-folds"):
            crossval.parse_folds(bad, 3)


@needs_shared
@pytest.mark.parametrize("zoom", [False, True])
def test_stereo_warp_with_lidar_depth_matches_the_left_image(shared_frames, zoom):
    """The right image warped by LiDAR disparity (k / depth, k from the calibration) matches the
    left image better than with depth 30 % off either way: the pair geometry, the crop and the
    disparity factor are right, also under a zoom crop."""
    import torch

    from training.losses import stereo_photometric_loss, warp_right_to_left

    frame = next(f for f in shared_frames
                 if f.frame_id == "2011_09_26/2011_09_26_drive_0001_sync/0000000005")
    s = D.load_sample(frame, stereo=True)
    assert s.rgb_right is not None and s.stereo is not None
    fx, baseline = s.stereo
    assert 700 < fx < 730 and 0.5 < baseline < 0.56
    rng = np.random.default_rng(4) if zoom else None
    aug = D.AugmentConfig(flip=False, color=False, max_zoom=1.2) if zoom else None
    im, d, right, k = D.make_example(s, 192, 640, rng, aug)
    assert k > 0
    left, right, d = (torch.from_numpy(a)[None] for a in (im, right, d))
    valid = d > 0
    errs = []
    for factor in (1 / 1.3, 1.0, 1.3):
        disp = torch.where(valid, k / (d * factor).clamp(min=1e-3), torch.zeros_like(d))
        warped, inside = warp_right_to_left(right, disp)
        m = valid & (inside > 0)
        errs.append(float((warped - left).abs().mean(1, keepdim=True)[m].mean()))
    assert errs[1] < 0.8 * min(errs[0], errs[2]), errs
    # the loss itself is finite, differentiable and skips examples without a pair (k = 0)
    pred = torch.full_like(d, np.log(20.0), requires_grad=True)
    loss = stereo_photometric_loss(pred, left, right, torch.tensor([k]))
    loss.backward()
    assert torch.isfinite(loss) and pred.grad.abs().sum() > 0
    assert float(stereo_photometric_loss(pred, left, right, torch.tensor([0.0])).detach()) == 0.0
    # a flipped example carries no stereo factor
    rngs = [np.random.default_rng(i) for i in range(8)]
    ks = [D.make_example(s, 192, 640, r, D.AugmentConfig(True, False, 1.0))[3] for r in rngs]
    assert 0.0 in ks and any(x > 0 for x in ks)
