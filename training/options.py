"""Training options: one dataclass shared by the ``train`` CLI flags and its YAML files."""

from __future__ import annotations

import argparse
from dataclasses import dataclass

from mono_depth_ros.config import ModelConfig, add_arguments, from_args, from_dict, opt


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
    lam: float = opt(0.5, "lambda of the scale-invariant loss (0 = L2 in log space, 1 = fully "
                     "scale invariant)", range=(0.0, 1.0))
    pretrained: bool = opt(True, "start the encoder from ImageNet EfficientNet-Lite0 weights")
    flip: bool = opt(True, "random horizontal flips")
    color: bool = opt(True, "random colour, brightness, contrast and gamma")
    max_zoom: float = opt(1.2, "random zoom crops up to this factor (depth divided by it)",
                          range=(1.0, 2.0))
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


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m training.train",
                                description="Train the coarse -> fine depth cascade on KITTI.")
    p.add_argument("--config", help="YAML file with 'train:' and 'model:' sections")
    add_arguments(p, TrainConfig)
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
    return train, model, args
