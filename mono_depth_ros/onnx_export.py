"""Checkpoint -> ONNX (opset 17, static 1x3xHxW) with provenance metadata; ROS-free.

Lives in the runtime package (not ``training/``) so that an installed node can export the shipped
checkpoint into its cache when no ONNX file was shipped. ``training/export.py`` is the CLI.
"""

from __future__ import annotations

import hashlib
import io
import json
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from .model_io import ModelLoadError, atomic_write_bytes, load_checkpoint, model_from_checkpoint

OPSET = 17
INPUT_NAME = "image"
OUTPUT_NAMES = ("depth", "coarse_depth")
CONFIDENCE_NAME = "confidence"  # third output of models with a confidence head
PACKAGE_VERSION = "0.1.0"
EXPORT_REVISION = 3  # bump when the exported graph changes; names cached exports

# Every op the exported graph may contain; all are in TensorRT 10's ONNX operator support list
# (onnx-tensorrt docs/operators.md). test_export checks the graph against it so an architecture
# change that introduces an op TensorRT lacks is caught on a machine without TensorRT.
TENSORRT_OPS = frozenset({
    "Add", "Clip", "Concat", "Constant", "Conv", "Div", "Exp", "Mul", "ReduceMean", "Relu",
    "Resize", "Shape", "Sigmoid", "Slice", "Sub", "Gather", "Unsqueeze", "Cast", "Identity",
})
# Resize variants TensorRT implements: nearest (floor/asymmetric) and linear (half_pixel).
TENSORRT_RESIZE = frozenset({("nearest", "asymmetric"), ("linear", "half_pixel"),
                             ("linear", "align_corners"), ("nearest", "half_pixel")})


class ExportError(RuntimeError):
    """The model could not be exported or the exported file is not a valid model."""


def sha256_file(path: str | Path) -> str:
    """Hex SHA-256 of a file, read in chunks (model files can be large)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _data_hash(meta: dict[str, Any]) -> str:
    """The training-data hash from checkpoint meta, whatever the trainer called the key."""
    for key in ("data_hash", "training_data_hash", "dataset_hash", "split_hash", "data_sha256"):
        if meta.get(key):
            return str(meta[key])
    hashes = {k: v for k, v in meta.items() if "hash" in k.lower() or "sha" in k.lower()}
    return json.dumps(hashes, sort_keys=True, default=str) if hashes else "unknown"


def build_metadata(ckpt: dict[str, Any], ckpt_sha: str, height: int, width: int) -> dict[str, str]:
    """metadata_props stored in the ONNX file: what it expects and where it came from."""
    from .networks import IMAGENET_MEAN, IMAGENET_STD  # torch only where exporting

    meta = ckpt.get("meta", {}) or {}
    version = meta.get("model_version") or meta.get("version") or f"sha256:{ckpt_sha[:12]}"
    return {
        "input_name": INPUT_NAME,
        "input_size": f"1x3x{height}x{width}",
        "input_height": str(height),
        "input_width": str(width),
        "input_range": "float32 RGB in [0, 1]",
        "normalization": json.dumps({"in_graph": True, "kind": "imagenet",
                                     "mean": IMAGENET_MEAN, "std": IMAGENET_STD}),
        "outputs": "depth (fine, metres, 1x1xHxW); coarse_depth (metres, 1x1xHxW)"
                   + ("; confidence (P(|log(depth/gt)| < log 1.25), 0..1, 1x1xHxW)"
                      if _has_confidence(ckpt) else ""),
        "confidence": "true" if _has_confidence(ckpt) else "false",
        "model_version": str(version),
        "model_stage": str(ckpt.get("stage", "")),
        "model_config": json.dumps(ckpt.get("model_config", {}), sort_keys=True, default=str),
        "training_data_hash": _data_hash(meta),
        "checkpoint_meta": json.dumps(meta, sort_keys=True, default=str),
        "checkpoint_sha256": ckpt_sha,
        "exporter": f"mono_depth_ros {PACKAGE_VERSION} onnx_export r{EXPORT_REVISION} "
                    f"opset {OPSET}",
    }


def _has_confidence(ckpt: dict[str, Any]) -> bool:
    """Whether a checkpoint's model has the confidence head (old checkpoints: no)."""
    from .model_io import LEGACY_MODEL_CONFIG

    return bool({**LEGACY_MODEL_CONFIG, **(ckpt.get("model_config") or {})}["confidence"])


def output_names(model) -> tuple[str, ...]:
    """Graph outputs of ``model``: depth, coarse_depth (+ confidence when it has the head)."""
    return OUTPUT_NAMES + ((CONFIDENCE_NAME,) if model.has_confidence else ())


def _export_graph(model):
    """The module torch.onnx traces: ``model.predict`` without the None of a head-less model."""
    import torch

    class _Graph(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.model = model

        def forward(self, image):
            fine, coarse, conf = self.model.predict(image)
            return (fine, coarse) if conf is None else (fine, coarse, conf)

    return _Graph().eval()


def export_model_bytes(model, height: int, width: int, metadata: dict[str, str]) -> bytes:
    """Export ``model`` (DepthCascade, eval) at a static input size; returns checked ONNX bytes.
    Outputs: ``output_names(model)``."""
    import onnx
    import torch

    if height % 32 or width % 32:
        raise ExportError(f"input size {width}x{height}: width and height must be multiples of 32")
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # legacy-exporter deprecation and tracer notices
        # dynamo=False: the TorchScript exporter needs no onnxscript and gives a plain static graph.
        torch.onnx.export(_export_graph(model.eval()), (torch.zeros(1, 3, height, width),), buf,
                          dynamo=False, opset_version=OPSET, input_names=[INPUT_NAME],
                          output_names=list(output_names(model)), do_constant_folding=True)
    proto = fold_static_shapes(onnx.load_from_string(buf.getvalue()))
    for k, v in metadata.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = k, v
    proto.producer_name = "mono_depth_ros"
    proto.model_version = 1
    check_model_proto(proto)
    return proto.SerializeToString()


_FOLDABLE = {"Shape", "Slice", "Concat", "Gather", "Unsqueeze", "Cast", "Constant"}


def fold_static_shapes(proto):
    """Replace Shape ops on static tensors, and the Slice/Concat chains fed only by them and by
    constants, with constants: every Resize then gets constant ``sizes``, so TensorRT sees a
    fully static graph with no shape tensors."""
    import onnx
    from onnx import numpy_helper
    from onnx.reference import ReferenceEvaluator

    inferred = onnx.shape_inference.infer_shapes(proto)
    shapes = {}
    for vi in list(inferred.graph.value_info) + list(inferred.graph.input) + \
            list(inferred.graph.output):
        dims = vi.type.tensor_type.shape.dim
        if dims and all(d.HasField("dim_value") for d in dims):
            shapes[vi.name] = [d.dim_value for d in dims]
    known = {i.name: numpy_helper.to_array(i) for i in proto.graph.initializer}
    keep, folded = [], {}
    for node in proto.graph.node:
        value = None
        if node.op_type == "Shape" and node.input[0] in shapes and len(node.attribute) == 0:
            value = np.array(shapes[node.input[0]], dtype=np.int64)
        elif node.op_type in _FOLDABLE and all(i in known for i in node.input if i):
            single = onnx.helper.make_model(
                onnx.helper.make_graph([node], "fold", [], [
                    onnx.helper.make_tensor_value_info(o, onnx.TensorProto.UNDEFINED, None)
                    for o in node.output]),
                opset_imports=proto.opset_import)
            feeds = {i: known[i] for i in node.input if i}
            single.graph.input.extend(onnx.helper.make_tensor_value_info(
                i, onnx.helper.np_dtype_to_tensor_dtype(v.dtype), v.shape)
                for i, v in feeds.items())
            value = ReferenceEvaluator(single).run(None, feeds)[0]
        if value is None or len(node.output) != 1:
            keep.append(node)
            continue
        known[node.output[0]] = np.asarray(value)
        folded[node.output[0]] = np.asarray(value)
    # Identity of an initializer (the exporter emits these for reused folded weights): rewire.
    outputs = {o.name for o in proto.graph.output}
    alias = {n.output[0]: n.input[0] for n in keep
             if n.op_type == "Identity" and n.input[0] in known and n.output[0] not in outputs}
    keep = [n for n in keep if n.output[0] not in alias] if alias else keep
    for n in keep:
        for i, name in enumerate(n.input):
            while name in alias:
                name = alias[name]
            n.input[i] = name
    used = {i for n in keep for i in n.input} | outputs
    consts = [onnx.helper.make_node("Constant", [], [name],
                                    value=numpy_helper.from_array(v, name))
              for name, v in folded.items() if name in used]
    del proto.graph.node[:]
    proto.graph.node.extend(consts + keep)
    return proto


def check_model_proto(proto) -> None:
    """onnx.checker plus the TensorRT-friendliness rules (static shapes, supported ops)."""
    import onnx

    try:
        onnx.checker.check_model(proto, full_check=True)
    except onnx.checker.ValidationError as exc:
        raise ExportError(f"exported model fails onnx.checker: {str(exc).splitlines()[0]}")
    bad = sorted({n.op_type for n in proto.graph.node} - TENSORRT_OPS)
    if bad:
        raise ExportError(f"exported graph uses ops outside the TensorRT-checked set: {bad}")
    for node in proto.graph.node:
        if node.op_type == "Resize":
            attrs = {a.name: a.s.decode() for a in node.attribute if a.s}
            key = (attrs.get("mode", "nearest"), attrs.get("coordinate_transformation_mode",
                                                           "half_pixel"))
            if key not in TENSORRT_RESIZE:
                raise ExportError(f"Resize {node.name} uses {key}, not known to run in TensorRT")
    for vi in list(proto.graph.input) + list(proto.graph.output):
        dims = vi.type.tensor_type.shape.dim
        if not dims or any(not d.HasField("dim_value") for d in dims):
            raise ExportError(f"tensor {vi.name} has a dynamic shape; the export must be static")


def read_metadata(path: str | Path) -> dict[str, str]:
    """metadata_props of an ONNX file (without loading the weights)."""
    import onnx

    proto = onnx.load(str(path), load_external_data=False)
    return {p.key: p.value for p in proto.metadata_props}


def export_checkpoint(checkpoint: str | Path | None, out: str | Path, height: int | None = None,
                      width: int | None = None) -> Path:
    """Export a checkpoint (None = shipped default) to ``out`` atomically; returns the path.

    ``height``/``width`` default to the size in the checkpoint's model config; the weights are
    fully convolutional, so other multiples of 32 work (used by the benchmark).
    """
    from .model_io import default_model_path

    path = Path(checkpoint) if checkpoint else default_model_path()
    ckpt = load_checkpoint(path)
    model = model_from_checkpoint(ckpt, path)
    h = height or model.cfg.height
    w = width or model.cfg.width
    data = export_model_bytes(model, h, w, build_metadata(ckpt, sha256_file(path), h, w))
    out = Path(out)
    atomic_write_bytes(out, data)
    return out


def parity_log_diff(checkpoint: str | Path | None, onnx_path: str | Path,
                    images: list[np.ndarray]) -> float:
    """Max |log depth (ONNX Runtime) - log depth (PyTorch)| over ``images``, both depth outputs
    (and |confidence difference| when the model has one)."""
    import onnxruntime as ort
    import torch

    from .model_io import load_model
    from .preprocess import to_network_input

    model, _ = load_model(checkpoint)
    sess = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    shape = sess.get_inputs()[0].shape
    worst = 0.0
    for rgb in images:
        x = to_network_input(rgb, int(shape[2]), int(shape[3]))
        with torch.inference_mode():
            ref = [t.numpy() for t in model.predict(torch.from_numpy(x)) if t is not None]
        got = sess.run(list(output_names(model)), {INPUT_NAME: x})
        for a, b in zip(ref[:2], got[:2]):
            worst = max(worst, float(np.max(np.abs(np.log(a) - np.log(b)))))
        if len(got) > 2:
            worst = max(worst, float(np.max(np.abs(ref[2] - got[2]))))
    return worst


__all__ = ["ExportError", "ModelLoadError", "export_checkpoint", "export_model_bytes",
           "output_names", "CONFIDENCE_NAME",
           "read_metadata", "sha256_file", "parity_log_diff", "check_model_proto"]


def onnx_model_config(path: str | Path):
    """ModelConfig of an exported file: metadata ``model_config``, the graph's real input size."""
    import dataclasses

    import onnx

    from .config import ConfigError, ModelConfig, from_dict

    try:
        proto = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # noqa: BLE001 - protobuf raises several types for bad files
        raise ModelLoadError(f"{path}: not a readable ONNX model ({type(exc).__name__})") from None
    meta = {p.key: p.value for p in proto.metadata_props}
    inputs = [i for i in proto.graph.input if i.name == INPUT_NAME]
    if not inputs:
        raise ModelLoadError(f"{path}: no input named '{INPUT_NAME}' (not exported by "
                             "training.export?)")
    dims = [d.dim_value for d in inputs[0].type.tensor_type.shape.dim]
    if len(dims) != 4 or dims[0] != 1 or dims[1] != 3 or min(dims) <= 0:
        raise ModelLoadError(f"{path}: input '{INPUT_NAME}' must be static 1x3xHxW, got {dims}")
    # confidence follows the graph: files exported before the head have two outputs
    has_conf = any(o.name == CONFIDENCE_NAME for o in proto.graph.output)
    try:
        cfg = from_dict(ModelConfig, json.loads(meta.get("model_config", "{}")))
        return dataclasses.replace(cfg, height=dims[2], width=dims[3],
                                   confidence=has_conf).validate(), meta
    except (ConfigError, ValueError) as exc:
        raise ModelLoadError(f"{path}: bad model_config metadata: {exc}") from None
