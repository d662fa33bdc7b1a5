"""Training options: one dataclass shared by the ``train`` CLI flags and its YAML files."""

from __future__ import annotations

import argparse
from dataclasses import dataclass, fields, replace

from mono_depth_ros.config import (EvalNodeConfig, ModelConfig, add_arguments, from_args,
                                   from_dict, opt)


@dataclass
class TrainConfig:
    """Coarse -> freeze -> fine training on KITTI (Eigen et al. 2014)."""

    train_list: str = opt("../shared/kitti/index.tsv",
                          "training frames: index.tsv or a monodepth2 split list")
    data_root: str = opt("", "root that list paths are relative to ('' = the list's folder)")
    val_list: str = opt("", "validation frames ('' = the val_drives frames of train_list)")
    val_drives: list[str] = opt(["2011_09_26_drive_0001"],
                                "drives held out of train_list for validation")
    test_scenes: str = opt("../shared/kitti/splits/sfmlearner/test_scenes.txt",
                           "the 28 Eigen test scenes; training on them is refused")
    out_dir: str = opt("runs/default", "where checkpoints, logs and plots go")
    stages: str = opt("coarse,fine", "stages to run, in order",
                      choices=("coarse,fine", "coarse", "fine"))
    init_coarse: str = opt("", "checkpoint whose coarse net starts the fine stage "
                           "(when only the fine stage runs)")
    coarse_epochs: int = opt(30, "epochs of the coarse stage", range=(0, 100000))
    fine_epochs: int = opt(15, "epochs of the fine stage", range=(0, 100000))
    batch_size: int = opt(4, "images per step (per process under torchrun)", range=(1, 1024))
    lr_coarse: float = opt(3e-4, "AdamW learning rate of the coarse decoder", range=(0.0, 1.0))
    encoder_lr_mult: float = opt(0.3, "encoder learning rate relative to lr_coarse",
                                 range=(0.0, 10.0))
    lr_fine: float = opt(1e-3, "AdamW learning rate of the fine network", range=(0.0, 1.0))
    weight_decay: float = opt(1e-4, "AdamW weight decay", range=(0.0, 1.0))
    lam: float = opt(0.85, "lambda of the scale-invariant loss (0 = L2 in log space, 1 = fully "
                     "scale invariant; Eigen et al. 0.5; 0.85 won cross-drive validation)",
                     range=(0.0, 1.0))
    pretrained: bool = opt(True, "start the encoder from ImageNet EfficientNet-Lite weights")
    flip: bool = opt(True, "random horizontal flips")
    color: bool = opt(True, "random colour, brightness, contrast and gamma")
    max_zoom: float = opt(1.2, "random zoom crops up to this factor (depth divided by it)",
                          range=(1.0, 2.0))
    max_gt_density: float = opt(1.0, "frames whose ground truth covers more than this share of "
                                "the image are treated as interpolated (e.g. the 12 dense object "
                                "frames of shared/kitti) and left out of training; 1 = keep all",
                                range=(0.0, 1.0))
    camera_window: float = opt(0.3, "share of examples seen through a random smaller camera's "
                               "window of the canonical canvas (the rest padding), so cameras "
                               "with a narrower view than KITTI's keep their metres",
                               range=(0.0, 1.0))
    right_images: bool = opt(True, "also train on the right camera (image_03) of frames whose "
                             "right-image ground truth exists")
    per_drive_cap: int = opt(8, "frames each drive (or drive-less frame) gives to one epoch, "
                             "drawn afresh every epoch; 0 = every frame once per epoch",
                             range=(0, 10**6))
    stereo_weight: float = opt(0.0, "weight of the stereo photometric loss (Godard et al. 2017) on "
                               "frames with a right image: the right image warped by the "
                               "predicted disparity must match the left one (0 = off)",
                               range=(0.0, 100.0))
    confidence_weight: float = opt(1.0, "weight of the Laplace log-likelihood that trains the fine "
                                   "net's confidence head (fine stage, models with "
                                   "confidence on); it sees detached depth, so it cannot change "
                                   "the depth", range=(0.0, 100.0))
    coarse_noise: float = opt(0.0, "fine stage: std (log depth) of a smooth random field added "
                              "to the coarse depth the fine net sees in training. The coarse "
                              "net fits its own training frames far better than unseen drives, "
                              "so without it the fine net learns to trust coarse depth that is "
                              "better than it will be (0 = off)", range=(0.0, 2.0))
    fine_oof_folds: int = opt(0, "fine stage: train this many extra coarse nets, each on the "
                              "training drives outside one of K folds by drive, and feed the "
                              "fine net each frame's coarse depth from the net that never saw "
                              "its drive (stacking), as at run time on new drives; costs about "
                              "one more coarse stage (0 = off: the final coarse net's depth)",
                              range=(0, 10))
    gt_preference: list[str] = opt(["png", "lidar", "velodyne_raw", "disparity"],
                                   "ground truth to use where a frame has several, best first")
    val_every: int = opt(10, "validate every N epochs (0 = only at the end)", range=(0, 100000))
    seed: int = opt(0, "random seed (data order, augmentation, initialisation)")
    threads: int = opt(0, "torch CPU threads (0 = default)", range=(0, 256))
    device: str = opt("auto", "cpu, cuda, cuda:N, or auto (CUDA when available); under torchrun "
                      "each process takes the GPU of its LOCAL_RANK and DDP uses NCCL")
    max_frames: int = opt(0, "use only the first N training frames (0 = all; for smoke tests)",
                          range=(0, 10**9))
    resume: str = opt("", "checkpoint (last.pt) to resume from")
    stop_after: int = opt(0, "stop this run once this many epochs (both stages) are done and "
                          "leave last.pt to resume from (0 = run to the end; for time-sliced "
                          "or preemptible jobs)", range=(0, 10**9))
    # --- recorded bags (training/bag_source.py) and fine-tuning ---
    bags: list[str] = opt([], "ROS 2 / ROS 1 bags to train on (camera + LiDAR + camera_info); "
                          "alone unless train_list is given too")
    val_bags: list[str] = opt([], "bags held out whole for validation (then no bag is split "
                              "by time)")
    val_fraction: float = opt(0.2, "share of each bag's frames, at its end, held out for "
                              "validation", range=(0.0, 0.9))
    val_gap_s: float = opt(2.0, "training frames this many seconds before a bag's held-out "
                           "part are dropped", range=(0.0, 3600.0))
    image_topic: str = opt("", "bags' camera image topic ('' = found as in the bag tools)")
    lidar_topic: str = opt("", "bags' PointCloud2 topic ('' = KITTI's, else the only one)")
    bag_slop: float = opt(EvalNodeConfig().slop, "largest camera-LiDAR stamp difference (s); "
                          "default: evaluate_bag's and kitti_eval_node's slop", range=(0.0, 1.0))
    bag_calib: str = opt("", "LiDAR -> camera calibration for bags without /tf_static: a KITTI "
                         "calib folder or object-format file")
    bag_cache: str = opt("cache/bags", "where frames extracted from bags are kept (reused while "
                         "the bag and settings are unchanged)")
    init: str = opt("", "checkpoint to fine-tune from (e.g. models/default/model.pt); its model "
                    "settings are used")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m training.train",
                                description="Train the coarse -> fine depth cascade on KITTI.")
    p.add_argument("--config", help="YAML file with 'train:' and 'model:' sections")
    add_arguments(p, TrainConfig)
    p.add_argument("--bag", dest="bags", action="append", metavar="PATH",
                   help="a bag to train on (repeat for more; same as --bags A,B)")
    p.add_argument("--val-bag", dest="val_bags", action="append", metavar="PATH",
                   help="a bag held out whole for validation (repeatable)")
    add_arguments(p, ModelConfig, prefix="model_")
    p.add_argument("--dump-rank-weights", action="store_true",
                   help="each process writes its final weights (DDP consistency checks)")
    return p


def parse(argv: list[str] | None = None) -> tuple[TrainConfig, ModelConfig, argparse.Namespace]:
    """YAML file (if any) overlaid by command-line flags."""
    import yaml

    from mono_depth_ros.config import ConfigError

    args = build_parser().parse_args(argv)
    train_base, model_base = TrainConfig(), ModelConfig()
    if args.config:
        try:
            with open(args.config) as f:
                raw = yaml.safe_load(f) or {}
        except OSError as exc:
            raise ConfigError(f"cannot read config {args.config}: {exc.strerror}")
        except yaml.YAMLError:
            raise ConfigError(f"config {args.config} is not valid YAML")
        unknown = set(raw) - {"train", "model"}
        if unknown:
            raise ConfigError(f"{args.config}: unknown sections {sorted(unknown)} "
                              "(expected 'train' and 'model')")
        train_base = from_dict(TrainConfig, raw.get("train"))
        model_base = from_dict(ModelConfig, raw.get("model"))
    train = from_args(TrainConfig, args, train_base)
    model = from_args(ModelConfig, args, model_base, prefix="model_")
    given = lambda cls, pre, sect: {f.name for f in fields(cls)  # noqa: E731
                                    if getattr(args, pre + f.name, None) is not None} | \
        set((raw.get(sect) or {}) if args.config else {})
    if (train.bags or train.val_bags) and "train_list" not in given(TrainConfig, "", "train"):
        train = replace(train, train_list="")  # bags alone unless a list is asked for too
    if train.init:
        model = init_model_config(train.init, model, given(ModelConfig, "model_", "model"),
                                  f"{args.config} / the command line" if args.config
                                  else "the command line")
    return train, model, args


def init_model_config(path: str, model: ModelConfig, given: set[str], where: str) -> ModelConfig:
    """The model settings of checkpoint ``path`` (fine-tuning keeps its network); a setting given
    in the YAML model section or a --model-* flag that differs is an error naming both."""
    from mono_depth_ros.config import ConfigError
    from mono_depth_ros.model_io import LEGACY_MODEL_CONFIG, load_checkpoint

    ck = from_dict(ModelConfig, {**LEGACY_MODEL_CONFIG, **load_checkpoint(path)["model_config"]})
    clash = [f"{k}: {getattr(model, k)!r} in {where}, {getattr(ck, k)!r} in {path}"
             for k in sorted(given) if getattr(model, k) != getattr(ck, k)]
    if clash:
        raise ConfigError(f"--init {path} has other model settings than {where} ("
                          f"{'; '.join(clash)}); drop them or make them agree")
    return ck
