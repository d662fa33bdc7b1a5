"""ONNX export: file format, metadata, TensorRT-friendly graph, parity with PyTorch, CLI errors."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest

from mono_depth_ros.kitti import read_rgb
from mono_depth_ros.model_io import default_model_path
from mono_depth_ros.onnx_export import (TENSORRT_OPS, ExportError, check_model_proto,
                                        export_checkpoint, parity_log_diff, read_metadata,
                                        sha256_file)
from mono_depth_ros.sample_frames import all_frames
from training import export as export_cli

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("export")
    assert export_cli.main(["--out", str(out), "--no-verify"]) == 0
    return out / "model.onnx"


@pytest.fixture(scope="module")
def kitti_images() -> list[np.ndarray]:
    return [read_rgb(f.image) for f in all_frames()]


def test_export_writes_checked_static_onnx(exported):
    proto = onnx.load(str(exported))
    onnx.checker.check_model(proto, full_check=True)
    assert [o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")] == [17]
    (inp,) = proto.graph.input
    assert inp.name == "image"
    assert inp.type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert [d.dim_value for d in inp.type.tensor_type.shape.dim] == [1, 3, 192, 640]
    outs = {o.name: [d.dim_value for d in o.type.tensor_type.shape.dim] for o in proto.graph.output}
    assert outs == {"depth": [1, 1, 192, 640], "coarse_depth": [1, 1, 192, 640],
                    "confidence": [1, 1, 192, 640]}  # the shipped model has the head
    assert not [p for p in exported.parent.iterdir() if p.name.endswith(".tmp")]


def test_export_metadata_records_provenance(exported):
    meta = read_metadata(exported)
    assert meta["input_size"] == "1x3x192x640"
    assert '"in_graph": true' in meta["normalization"] and "imagenet" in meta["normalization"]
    assert meta["checkpoint_sha256"] == sha256_file(default_model_path())
    assert meta["model_version"] and meta["training_data_hash"]
    assert meta["checkpoint_meta"].startswith("{")


def test_graph_is_tensorrt_friendly(exported):
    proto = onnx.load(str(exported))
    ops = {n.op_type for n in proto.graph.node}
    assert ops <= TENSORRT_OPS
    resize = [n for n in proto.graph.node if n.op_type == "Resize"]
    assert resize, "the cascade upsamples; Resize nodes expected"
    modes = {next(a.s for a in n.attribute if a.name == "mode") for n in resize}
    assert modes <= {b"nearest", b"linear"}
    check_model_proto(proto)  # the same rules export enforces
    # Static shapes are folded: no shape tensors, every Resize gets constant sizes; the only
    # Slices (edge rows and columns of the output filter) take constant starts and ends.
    assert not ops & {"Shape", "Gather"}
    constants = {n.output[0] for n in proto.graph.node if n.op_type == "Constant"}
    constants |= {i.name for i in proto.graph.initializer}
    for n in proto.graph.node:
        if n.op_type == "Slice":
            assert all(i in constants for i in n.input[1:] if i), n.name
    assert all(n.input[3] in constants for n in resize)


def test_check_rejects_dynamic_shapes_and_unknown_ops(exported):
    proto = onnx.load(str(exported))
    proto.graph.input[0].type.tensor_type.shape.dim[2].dim_param = "height"
    with pytest.raises(ExportError, match="dynamic shape"):
        check_model_proto(proto)
    proto = onnx.load(str(exported))
    proto.graph.node[0].op_type = "GridSample"
    with pytest.raises(ExportError):
        check_model_proto(proto)


def test_onnx_matches_pytorch_on_kitti_frames(exported, kitti_images):
    diff = parity_log_diff(None, exported, kitti_images)
    print(f"max |log depth| ONNX Runtime vs PyTorch on {len(kitti_images)} KITTI frames: "
          f"{diff:.2e}")
    assert diff <= 1e-4


def test_export_at_another_size_keeps_parity(tmp_path, kitti_images):
    path = export_checkpoint(None, tmp_path / "small.onnx", height=128, width=416)
    assert read_metadata(path)["input_size"] == "1x3x128x416"
    assert parity_log_diff(None, path, kitti_images[:1]) <= 1e-4


def test_failed_export_leaves_existing_file(tmp_path):
    out = tmp_path / "model.onnx"
    out.write_bytes(b"old")
    with pytest.raises(ExportError, match="multiples of 32"):
        export_checkpoint(None, out, height=100, width=416)
    assert out.read_bytes() == b"old"


def test_cli_bad_checkpoint_is_one_line_error(tmp_path):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    r = subprocess.run([sys.executable, "-m", "training.export", "--checkpoint", str(bad),
                        "--out", str(tmp_path)], cwd=REPO, capture_output=True, text=True,
                       timeout=120)
    assert r.returncode != 0
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "not a readable checkpoint" in lines[0], r.stderr
    assert not (tmp_path / "model.onnx").exists()
