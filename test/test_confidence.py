"""The fine depth's learned confidence: head, likelihood, export, backends, sparsification."""

from __future__ import annotations

import contextlib
import csv
import math
from dataclasses import asdict

import numpy as np
import onnx
import pytest
import torch

from conftest import SAMPLE
from mono_depth_ros.backends.base import DepthResult
from mono_depth_ros.backends.onnxruntime_backend import OnnxRuntimeBackend
from mono_depth_ros.backends.torch_backend import TorchBackend
from mono_depth_ros.config import ModelConfig
from mono_depth_ros.kitti import read_rgb
from mono_depth_ros.metrics import abs_rel_errors, mean_sparsification, sparsification
from mono_depth_ros.model_io import load_checkpoint, load_model, save_checkpoint
from mono_depth_ros.networks import DepthCascade, confidence_from_log_b
from mono_depth_ros.onnx_export import (TENSORRT_OPS, export_checkpoint, onnx_model_config,
                                        parity_log_diff, read_metadata)
from mono_depth_ros.sample_frames import all_frames
from training import train
from training.losses import laplace_nll

H, W = 64, 192


def _head_model(seed: int = 0, **kw) -> DepthCascade:
    """A small cascade whose fine net and confidence head are not at their (flat) start."""
    torch.manual_seed(seed)
    model = DepthCascade(ModelConfig(height=H, width=W, **kw))
    torch.nn.init.normal_(model.fine.out.weight, std=0.05)
    if model.fine.confidence is not None:
        torch.nn.init.normal_(model.fine.confidence[2].weight, std=0.05)
    return model.eval()


def _save(model: DepthCascade, path, drop: tuple[str, ...] = ()) -> None:
    cfg = {k: v for k, v in asdict(model.cfg).items() if k not in drop}
    save_checkpoint(path, {"model_config": cfg, "state_dict": model.state_dict(),
                           "stage": "fine", "meta": {"data_hash": "test"}})


@pytest.fixture(scope="module")
def kitti_images() -> list[np.ndarray]:
    return [read_rgb(f.image) for f in all_frames()[:3]]


@pytest.fixture(scope="module")
def head_files(tmp_path_factory):
    """(checkpoint, ONNX) of a small model with the confidence head."""
    d = tmp_path_factory.mktemp("conf")
    _save(_head_model(), d / "model.pt")
    return d / "model.pt", export_checkpoint(d / "model.pt", d / "model.onnx")


# --- network -----------------------------------------------------------------------------

def test_head_starts_at_b_0_2_and_confidence_is_the_delta1_probability():
    torch.manual_seed(0)
    model = DepthCascade(ModelConfig(height=H, width=W)).eval()
    fine, coarse, conf = model.predict(torch.rand(1, 3, H, W))
    assert conf.shape == fine.shape == (1, 1, H, W)
    expected = 1 - math.exp(-math.log(1.25) / 0.2)  # independent of the network: 0.672
    assert torch.allclose(conf, torch.full_like(conf, expected), atol=1e-5)
    # b -> 0: sure; b large: almost never within 25 %
    b = torch.tensor([0.01, 0.2, 5.0])
    got = confidence_from_log_b(torch.log(b))
    assert torch.allclose(got, 1 - torch.exp(-math.log(1.25) / b), atol=1e-6)


def test_without_confidence_the_model_is_todays_and_depth_does_not_depend_on_the_head():
    x = torch.rand(2, 3, H, W)
    torch.manual_seed(3)
    off = DepthCascade(ModelConfig(height=H, width=W, confidence=False)).eval()
    torch.manual_seed(3)
    on = DepthCascade(ModelConfig(height=H, width=W)).eval()
    assert off.fine.confidence is None and not off.has_confidence and on.has_confidence
    assert not any("confidence" in k for k in off.state_dict())
    assert {k for k in on.state_dict() if "confidence" not in k} == set(off.state_dict())
    with torch.no_grad():
        assert off.predict(x)[2] is None
        for a, b in zip(off(x), on(x)):
            assert torch.equal(a, b)
        torch.nn.init.normal_(on.fine.confidence[0].weight)  # the head does not touch the depth
        assert torch.equal(on(x)[0], off(x)[0])


def test_likelihood_gradient_never_reaches_the_depth_layers():
    model = _head_model().train()
    x = torch.rand(2, 3, H, W)
    gt = torch.rand(2, 1, H // 4, W // 4) * 50 + 2
    coarse = model.fine_input(x, model.coarse(x))
    fine, log_b = model.fine(x, coarse, with_scale=True)
    laplace_nll(fine.detach(), log_b, gt).backward()
    head = {n for n, _ in model.fine.confidence.named_parameters(prefix="fine.confidence")}
    for name, p in model.named_parameters():
        if name in head:
            assert p.grad is not None and float(p.grad.abs().sum()) > 0, name
        else:
            assert p.grad is None or float(p.grad.abs().sum()) == 0, name


def test_laplace_nll_known_value_and_minimum_at_the_mean_absolute_error():
    fine = torch.zeros(1, 1, 2, 2)
    gt = torch.tensor([[[[math.e, 1.0], [math.exp(-2), 0.0]]]])  # errors 1, 0, 2; one invalid
    log_b = torch.zeros(1, 1, 2, 2)
    assert abs(float(laplace_nll(fine, log_b, gt)) - 1.0) < 1e-6  # mean(|e| / 1 + 0)
    # for one b over all pixels the NLL is smallest at b = mean |e| = 1
    values = {b: float(laplace_nll(fine, torch.full_like(log_b, math.log(b)), gt))
              for b in (0.5, 0.9, 1.0, 1.1, 2.0)}
    assert min(values, key=values.get) == 1.0
    with pytest.raises(ValueError, match="no valid"):
        laplace_nll(fine, log_b, torch.zeros_like(gt))


def test_legacy_checkpoint_loads_without_a_head(tmp_path, kitti_images):
    """A checkpoint written before the option (no ``confidence`` key, no head weights) loads as
    confidence off; its backend results carry no confidence."""
    _save(_head_model(confidence=False), tmp_path / "old.pt", drop=("confidence",))
    model, _ = load_model(tmp_path / "old.pt")
    assert not model.cfg.confidence and not model.has_confidence
    backend = TorchBackend(tmp_path / "old.pt")
    assert not backend.has_confidence
    assert backend.infer(kitti_images[0]).confidence is None
    onnx_path = export_checkpoint(tmp_path / "old.pt", tmp_path / "old.onnx")
    assert [o.name for o in onnx.load(str(onnx_path)).graph.output] == ["depth", "coarse_depth"]
    assert read_metadata(onnx_path)["confidence"] == "false"
    ort = OnnxRuntimeBackend(onnx_path, device="cpu")
    assert not ort.has_confidence and ort.infer(kitti_images[0]).confidence is None


# --- export and backends -------------------------------------------------------------------

def test_export_has_a_static_confidence_output_in_tensorrt_ops(head_files):
    _, onnx_path = head_files
    proto = onnx.load(str(onnx_path))
    outs = {o.name: [d.dim_value for d in o.type.tensor_type.shape.dim] for o in proto.graph.output}
    assert outs == {"depth": [1, 1, H, W], "coarse_depth": [1, 1, H, W],
                    "confidence": [1, 1, H, W]}
    assert {n.op_type for n in proto.graph.node} <= TENSORRT_OPS
    meta = read_metadata(onnx_path)
    assert meta["confidence"] == "true" and "confidence" in meta["outputs"]
    assert onnx_model_config(onnx_path)[0].confidence


def test_onnxruntime_confidence_matches_torch_on_kitti_frames(head_files, kitti_images):
    ckpt, onnx_path = head_files
    assert parity_log_diff(ckpt, onnx_path, kitti_images[:1]) < 1e-3
    torch_b = TorchBackend(ckpt)
    ort_b = OnnxRuntimeBackend(onnx_path, device="cpu")
    assert ort_b._binding is not None  # the IOBinding path, output buffers bound once
    for rgb in kitti_images:
        ref, got = torch_b.infer(rgb), ort_b.infer(rgb)
        assert got.confidence.shape == rgb.shape[:2] and got.confidence.dtype == np.float32
        assert 0.0 <= float(got.confidence.min()) and float(got.confidence.max()) <= 1.0
        assert float(np.abs(got.confidence - ref.confidence).max()) < 1e-4
        assert float(got.confidence.std()) > 1e-3  # a map, not a constant
    ort_b._binding = None  # session.run path
    again = ort_b.infer(kitti_images[0])
    assert float(np.abs(again.confidence - torch_b.infer(kitti_images[0]).confidence).max()) < 1e-4


def test_int8_model_keeps_the_confidence_output(head_files, kitti_images, tmp_path):
    from mono_depth_ros.backends.ort_quant import quantize_onnx

    _, onnx_path = head_files
    q = quantize_onnx(onnx_path, kitti_images, tmp_path / "int8.onnx")
    backend = OnnxRuntimeBackend(q, device="cpu")
    assert backend.precision == "int8" and backend.has_confidence
    ref = OnnxRuntimeBackend(onnx_path, device="cpu").infer(kitti_images[0]).confidence
    conf = backend.infer(kitti_images[0]).confidence
    assert conf.shape == ref.shape and 0.0 <= conf.min() and conf.max() <= 1.0
    assert float(np.abs(conf - ref).mean()) < 0.05


def test_result_confidence_is_resized_only_when_read():
    calls = []

    def make():
        calls.append(1)
        return np.ones((2, 2), np.float32)

    result = DepthResult(np.ones((2, 2), np.float32), np.ones((2, 2), np.float32), make)
    assert not calls
    assert result.confidence is result.confidence and calls == [1]
    assert DepthResult(np.ones(1), np.ones(1)).confidence is None


def test_mock_tensorrt_run_returns_the_confidence_tensor():
    """TensorRT cannot run here: the engine and context are mocks; ``_run`` must read the third
    output by its tensor name after execute_async_v3."""
    from mono_depth_ros.backends.tensorrt_backend import TensorRTBackend

    class Context:
        def __init__(self, buffers):
            self.buffers = buffers

        def execute_async_v3(self, stream_handle):
            self.buffers["depth"].fill_(2.0)
            self.buffers["coarse_depth"].fill_(3.0)
            self.buffers["confidence"].fill_(0.25)
            return True

    class Stream:
        cuda_stream = 0

        def synchronize(self):
            pass

    backend = object.__new__(TensorRTBackend)
    backend.model_config = ModelConfig(height=H, width=W)
    backend.buffers = {n: torch.zeros(1, c, H, W) for n, c in
                       (("image", 3), ("depth", 1), ("coarse_depth", 1), ("confidence", 1))}
    backend.output_names = ("depth", "coarse_depth", "confidence")
    backend.context, backend.stream = Context(backend.buffers), Stream()

    orig = torch.cuda.stream
    torch.cuda.stream = lambda s: contextlib.nullcontext()
    try:
        fine, coarse, conf = backend._run(np.zeros((1, 3, H, W), np.float32))
    finally:
        torch.cuda.stream = orig
    assert float(fine.mean()) == 2.0 and float(coarse.mean()) == 3.0
    assert conf.shape == (1, 1, H, W) and float(conf.mean()) == 0.25


# --- sparsification --------------------------------------------------------------------------

def test_sparsification_hand_computed_example():
    errors = np.array([4.0, 3.0, 2.0, 1.0])
    right = sparsification(errors, np.array([0.1, 0.2, 0.3, 0.4]), steps=4)
    np.testing.assert_allclose(right.fractions, [0, 0.25, 0.5, 0.75])
    np.testing.assert_allclose(right.curve, [2.5, 2.0, 1.5, 1.0])
    np.testing.assert_allclose(right.oracle, [2.5, 2.0, 1.5, 1.0])
    assert right.ause == 0.0
    wrong = sparsification(errors, np.array([0.4, 0.3, 0.2, 0.1]), steps=4)
    np.testing.assert_allclose(wrong.curve, [2.5, 3.0, 3.5, 4.0])
    # area between [2.5, 3, 3.5, 4] and [2.5, 2, 1.5, 1] over steps of 0.25: 0.25 * (0/2 + 1 + 2
    # + 3/2)
    assert abs(wrong.ause - 1.125) < 1e-12


def test_sparsification_perfect_and_random_confidence():
    rng = np.random.default_rng(0)
    errors = rng.exponential(0.1, size=20000)
    perfect = sparsification(errors, -errors)
    assert perfect.ause == 0.0 and np.all(np.diff(perfect.curve) < 0)
    noisy = sparsification(errors, rng.random(errors.size))
    assert np.all(np.abs(noisy.curve / errors.mean() - 1) < 0.05)  # flat
    assert noisy.ause > 0.5 * float(np.mean(errors - perfect.oracle[-1]))
    both = mean_sparsification([perfect, noisy])
    assert abs(both.ause - 0.5 * noisy.ause) < 1e-12
    with pytest.raises(ValueError):
        sparsification(errors, errors[:-1])


def test_abs_rel_errors_match_score_frame():
    from mono_depth_ros.metrics import score_frame

    rng = np.random.default_rng(1)
    gt = rng.uniform(2, 60, size=(40, 120)).astype(np.float32)
    gt[rng.random(gt.shape) < 0.5] = 0
    pred = (gt + rng.normal(0, 1, gt.shape)).clip(1, None).astype(np.float32)
    err, mask = abs_rel_errors(pred, gt)
    assert abs(float(err.mean()) - score_frame(pred, gt).metric["abs_rel"]) < 1e-9
    err, _ = abs_rel_errors(pred, gt, scaled=True)
    assert abs(float(err.mean()) - score_frame(pred, gt).scaled["abs_rel"]) < 1e-9


# --- training -------------------------------------------------------------------------------

def test_fine_stage_trains_the_head_and_leaves_the_depth_alone(tmp_path):
    """Fine stages from one coarse net with confidence_weight 1 and 0 (same seed): the depth
    layers end bit-identical; the trained head's Laplace NLL falls below the untrained one's."""
    lines = (SAMPLE / "index.tsv").read_text().splitlines()
    train_list = SAMPLE / f".train_conf_{tmp_path.name}.tsv"  # paths relative to SAMPLE
    train_list.write_text("\n".join(x for x in lines if "not_for_training" not in x) + "\n")
    base = ["--train-list", str(train_list), "--val-drives", "2011_09_26_drive_0001",
            "--test-scenes", str(SAMPLE / "splits/sfmlearner/test_scenes.txt"),
            "--model-height", str(H), "--model-width", str(W), "--batch-size", "2",
            "--threads", "2", "--no-pretrained", "--val-every", "0"]
    try:
        assert train.main(base + ["--out-dir", str(tmp_path / "c"), "--stages", "coarse",
                                  "--coarse-epochs", "1"]) == 0
        init = ["--stages", "fine", "--init-coarse", str(tmp_path / "c" / "model.pt"),
                "--fine-epochs", "6", "--lr-fine", "3e-3"]
        for weight in ("1", "0"):
            assert train.main(base + init + ["--out-dir", str(tmp_path / f"w{weight}"),
                                             "--confidence-weight", weight]) == 0
    finally:
        train_list.unlink()
    trained = load_checkpoint(tmp_path / "w1" / "model.pt")["state_dict"]
    untrained = load_checkpoint(tmp_path / "w0" / "model.pt")["state_dict"]
    depth_keys = [k for k in trained if k.startswith("fine.") and ".confidence." not in k]
    head_keys = [k for k in trained if k.startswith("fine.confidence.")]
    assert depth_keys and head_keys
    for k in depth_keys:
        assert torch.equal(trained[k], untrained[k]), k
    assert any(not torch.equal(trained[k], untrained[k]) for k in head_keys)

    def nll(run):
        with open(tmp_path / run / "log.csv") as f:
            return [float(r["confidence_nll"]) for r in csv.DictReader(f) if r["stage"] == "fine"]

    # same batches and the same depth in both runs: only the head differs
    trained, untrained = nll("w1"), nll("w0")
    assert len(trained) == 6 and trained[0] == pytest.approx(untrained[0], abs=1e-6)
    assert all(a < b - 0.02 for a, b in zip(trained[2:], untrained[2:])), (trained, untrained)


# --- evaluation --------------------------------------------------------------------------------

def test_evaluate_reports_sparsification_for_checkpoint_and_onnx(head_files, tmp_path, capsys):
    """training.evaluate on the sample frames: the same AUSE from the checkpoint (torch) and its
    ONNX export (onnxruntime); the curves start at the frames' fine AbsRel; a PNG is written."""
    import json

    from training import evaluate

    ckpt, onnx_path = head_files
    runs = {}
    for name, extra in (("torch", []), ("ort", ["--backend", "onnxruntime",
                                                "--onnx", str(onnx_path)])):
        out = tmp_path / name
        assert evaluate.run(["--checkpoint", str(ckpt), "--list", str(SAMPLE / "index.tsv"),
                             "--out", str(out), "--no-panels", *extra]) == 0
        assert "sparsification (metric AbsRel" in capsys.readouterr().out
        runs[name] = json.loads((out / "summary.json").read_text())
        assert (out / "sparsification.png").stat().st_size > 1000
    sp = runs["torch"]["sparsification"]
    for kind, key in (("metric", "metric_abs_rel"), ("median_scaled", "abs_rel")):
        fine = runs["torch"]["summary"]["fine"][key]
        assert sp[kind]["abs_rel"][0] == pytest.approx(fine, rel=1e-6)
        assert all(o <= a + 1e-12 for o, a in zip(sp[kind]["oracle_abs_rel"], sp[kind]["abs_rel"]))
        assert sp[kind]["ause"] == pytest.approx(runs["ort"]["sparsification"][kind]["ause"],
                                                 abs=1e-3)


def test_evaluate_says_when_the_model_has_no_confidence(tmp_path, capsys):
    from training import evaluate

    _save(_head_model(confidence=False), tmp_path / "old.pt", drop=("confidence",))
    assert evaluate.run(["--checkpoint", str(tmp_path / "old.pt"), "--list",
                         str(SAMPLE / "index.tsv"), "--out", str(tmp_path / "e"),
                         "--no-panels", "--drives", "2011_09_26_drive_0001"]) == 0
    assert "no confidence output" in capsys.readouterr().out
    assert not (tmp_path / "e" / "sparsification.png").exists()


def test_predict_writes_the_confidence_beside_the_depth(head_files, tmp_path):
    """mono_depth_predict --confidence: STEM_confidence.npy in [0, 1] at the depth's size; a
    model without the head is one line and exit 2."""
    import subprocess
    import sys

    ckpt, _ = head_files
    image = all_frames()[0].image
    cmd = [sys.executable, "-m", "mono_depth_ros.predict", "--images", str(image), "--backend",
           "torch", "--confidence"]
    r = subprocess.run(cmd + ["--out", str(tmp_path / "a"), "--model", str(ckpt)],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    depth = np.load(tmp_path / "a" / f"{image.stem}.npy")
    conf = np.load(tmp_path / "a" / f"{image.stem}_confidence.npy")
    assert conf.shape == depth.shape and 0.0 <= conf.min() and conf.max() <= 1.0
    assert conf.std() > 0  # a map, not a constant
    _save(_head_model(confidence=False), tmp_path / "old.pt")
    r = subprocess.run(cmd + ["--out", str(tmp_path / "b"), "--model", str(tmp_path / "old.pt")],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "no confidence head" in r.stderr
    assert len([ln for ln in r.stderr.splitlines() if "error" in ln]) == 1
