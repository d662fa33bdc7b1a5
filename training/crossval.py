"""Cross-drive validation: K folds by drive, several seeds, coarse / fine / baseline / shuffled.

    python -m training.crossval --config config/train_default.yaml --folds 3 --seeds 2 \
        --out runs/crossval [--coarse-epochs 12 --fine-epochs 6 ...]   # any train flag overrides

A group is a raw drive (object and stereo frames carry their drive in ``index.tsv``); frames of
unknown drive are groups of their own. Groups, largest first, are dealt to the folds in turn, so
no drive is ever on both sides and every fold holds several drives. Each (fold, seed) trains the
full coarse -> freeze -> fine schedule on the other folds and scores its fold's left images (at
most ``--val-per-drive`` per drive), median-scaled and metric, plus the untouched test frames of
``--test-list`` (``not_for_training/``: frames of Eigen test drives, never trained on or tuned
for). Every finished run leaves ``result.json``; a rerun skips those and resumes unfinished
training from its ``last.pt``. With ``--init-coarse-from`` an earlier run's folder, each run
trains only the fine stage, on that folder's coarse net of its fold (fine-stage settings compared
paired and cheaply). Writes ``crossval.json``, ``crossval.md`` and ``crossval.png``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from mono_depth_ros.config import ConfigError
from mono_depth_ros.kitti import KittiFormatError
from mono_depth_ros.model_io import ModelLoadError, atomic_write_text

from . import data as D
from .options import build_parser, parse

REPORTED = ("coarse", "fine", "fine_flip", "baseline", "shuffled")
# fine_flip: the fine depth with test-time flip averaging (``mono_depth_ros/flip_average.py``)


def make_folds(frames: list[D.Frame], k: int) -> list[list[str]]:
    """Groups dealt to ``k`` folds, largest group first (ties by name), round robin."""
    sizes: dict[str, int] = {}
    for f in frames:
        sizes[f.group] = sizes.get(f.group, 0) + 1
    if len(sizes) < k:
        raise ConfigError(f"{len(sizes)} drives/groups cannot make {k} folds")
    folds: list[list[str]] = [[] for _ in range(k)]
    for i, g in enumerate(sorted(sizes, key=lambda g: (-sizes[g], g))):
        folds[i % k].append(g)
    return folds


def cap_per_group(frames: list[D.Frame], cap: int) -> list[D.Frame]:
    """At most ``cap`` frames per group, spread evenly over each group's list (0 = all)."""
    if cap <= 0:
        return frames
    by: dict[str, list[D.Frame]] = {}
    for f in frames:
        by.setdefault(f.group, []).append(f)
    out = []
    for g in sorted(by):
        fs = by[g]
        idx = np.unique(np.linspace(0, len(fs) - 1, min(cap, len(fs))).round().astype(int))
        out.extend(fs[i] for i in idx)
    return out


def _summaries(scores: dict) -> dict[str, dict[str, float]]:
    from mono_depth_ros.metrics import mean_scores

    return {name: mean_scores(sc) for name, sc in scores.items()}


def score_model(backend, samples: list[D.Sample], row_medians) -> dict:
    """Coarse, fine, fine with flip averaging, baseline and shuffled scores (means) and AbsRel
    per frame."""
    from .evaluate import evaluate_frames

    scores = evaluate_frames(backend, samples, row_medians, progress=False)
    scores["fine_flip"] = flip_scores(backend, samples)
    return {"summary": _summaries(scores),
            "per_frame": {s.frame.frame_id: {m: scores[m][i].scaled["abs_rel"]
                                             for m in scores}
                          for i, s in enumerate(samples)}}


def flip_scores(backend, samples: list[D.Sample]) -> list:
    """The fine depth's scores with test-time flip averaging on (same backend, same frames)."""
    from .evaluate import evaluate_frames

    backend.flip_average = True
    try:
        return evaluate_frames(backend, samples, None, progress=False)["fine"]
    finally:
        backend.flip_average = False


def add_flip_scores(result: dict, model: Path, val: list[D.Sample], test: list[D.Sample]) -> bool:
    """Score a run finished before fine_flip existed (its result.json lacks it) from its
    model.pt; True if ``result`` changed."""
    from mono_depth_ros.metrics import mean_scores
    from mono_depth_ros.predict import make_backend

    # only where the frames are the ones it was scored on (not another --val-per-drive / list)
    parts = [(k, smp) for k, smp in (("val", val), ("test", test))
             if k in result and "fine_flip" not in result[k]["summary"]
             and [s.frame.frame_id for s in smp] == list(result[k]["per_frame"])]
    if not parts or not model.is_file():
        return False
    backend = make_backend("torch", str(model))
    for part, smp in parts:
        sc = flip_scores(backend, smp)
        result[part]["summary"]["fine_flip"] = mean_scores(sc)
        for s, f in zip(smp, sc):
            result[part]["per_frame"][s.frame.frame_id]["fine_flip"] = f.scaled["abs_rel"]
    return True


def run_one(cfg, model_cfg, train: list[D.Frame], val: list[D.Frame], test: list[D.Sample],
            out: Path, cache: dict[str, D.Sample]) -> dict:
    """Train one fold/seed (resuming if a ``last.pt`` is there) and score it."""
    from mono_depth_ros.predict import make_backend

    from .train import Trainer

    result_path = out / "result.json"
    if result_path.is_file():
        result = json.loads(result_path.read_text())
        val_samples = [cache.get(f.frame_id) or D.load_sample(f) for f in val]
        if add_flip_scores(result, out / "model.pt", val_samples, test):
            atomic_write_text(result_path, json.dumps(result, indent=2))
        return result
    t0 = time.perf_counter()
    resume = str(out / "last.pt") if (out / "last.pt").is_file() else ""
    run_cfg = replace(cfg, out_dir=str(out), resume=resume, val_every=0, stop_after=0)
    trainer = Trainer(run_cfg, model_cfg, frames=(train, []), sample_cache=cache)
    trainer.run()
    val_samples = [cache.get(f.frame_id) or D.load_sample(f) for f in val]
    backend = make_backend("torch", str(out / "model.pt"))
    result = {"train_groups": sorted({f.group for f in train}),
              "val_frames": [f.frame_id for f in val],
              "train_frames": len(trainer.train_samples),
              "seconds": time.perf_counter() - t0,
              "val": score_model(backend, val_samples, trainer.row_medians)}
    if test:
        result["test"] = score_model(backend, test, trainer.row_medians)
    atomic_write_text(result_path, json.dumps(result, indent=2))
    (out / "last.pt").unlink(missing_ok=True)  # model.pt stays; last.pt only served resuming
    return result


def parse_folds(text: str, k: int) -> set[int]:
    """The folds named in ``--only-folds`` ('' = all ``k``)."""
    if not text.strip():
        return set(range(k))
    try:
        only = {int(x) for x in text.split(",") if x.strip()}
    except ValueError:
        raise ConfigError(f"--only-folds {text!r}: give fold numbers like 0,2") from None
    if not only or not only <= set(range(k)):
        raise ConfigError(f"--only-folds {text!r}: folds are numbered 0..{k - 1}")
    return only


def coarse_from(folder: Path, fold: int, seed: int) -> Path:
    """The model.pt of ``folder``'s run of ``fold`` with ``seed``, else its first seed's."""
    same = folder / f"fold{fold}_seed{seed}" / "model.pt"
    if same.is_file():
        return same
    runs = sorted(folder.glob(f"fold{fold}_seed*/model.pt"),
                  key=lambda p: int(p.parent.name.rsplit("seed", 1)[1]))
    if not runs:
        raise ConfigError(f"--init-coarse-from {folder}: no finished run of fold {fold} "
                          f"(fold{fold}_seed*/model.pt)")
    return runs[0]


def aggregate(results: list[dict], part: str) -> dict[str, dict[str, tuple[float, float]]]:
    """mean and std over runs of each model's AbsRel (median-scaled), metric AbsRel and d1."""
    out: dict[str, dict[str, tuple[float, float]]] = {}
    for m in REPORTED:
        rows = [r[part]["summary"][m] for r in results if m in r.get(part, {}).get("summary", {})]
        if not rows:
            continue
        out[m] = {k: (float(np.mean([x[k] for x in rows])), float(np.std([x[k] for x in rows])))
                  for k in ("abs_rel", "metric_abs_rel", "d1")}
    return out


def paired_gain(results: list[dict], part: str = "val", worse: str = "coarse",
                better: str = "fine") -> tuple[float, float]:
    """mean and std over runs of (worse - better) AbsRel: > 0 where ``better`` helps (default:
    the fine stage over the coarse one); NaN when no run has both."""
    d = [r[part]["summary"][worse]["abs_rel"] - r[part]["summary"][better]["abs_rel"]
         for r in results if {worse, better} <= set(r.get(part, {}).get("summary", {}))]
    return (float(np.mean(d)), float(np.std(d))) if d else (float("nan"), float("nan"))


def format_report(results: list[dict], keys: list[tuple[int, int]], name: str) -> str:
    lines = [f"## Cross-drive validation: {name}", "",
             "| fold | seed | val frames | coarse | fine | baseline | shuffled | fine metric |"
             " test fine | test fine metric |", "|---" * 10 + "|"]
    for (fold, seed), r in zip(keys, results):
        v, t = r["val"]["summary"], r.get("test", {}).get("summary", {})
        lines.append(
            f"| {fold} | {seed} | {len(r['val_frames'])} | {v['coarse']['abs_rel']:.3f} | "
            f"{v['fine']['abs_rel']:.3f} | {v['baseline']['abs_rel']:.3f} | "
            f"{v.get('shuffled', {}).get('abs_rel', float('nan')):.3f} | "
            f"{v['fine']['metric_abs_rel']:.3f} | "
            f"{t.get('fine', {}).get('abs_rel', float('nan')):.3f} | "
            f"{t.get('fine', {}).get('metric_abs_rel', float('nan')):.3f} |")
    lines += ["", "| set | model | AbsRel (median-scaled) | metric AbsRel | d1 |",
              "|---|---|---|---|---|"]
    for part in ("val", "test"):
        for m, agg in aggregate(results, part).items():
            lines.append(f"| {part} | {m} | {agg['abs_rel'][0]:.3f} ± {agg['abs_rel'][1]:.3f} | "
                         f"{agg['metric_abs_rel'][0]:.3f} ± {agg['metric_abs_rel'][1]:.3f} | "
                         f"{agg['d1'][0]:.3f} ± {agg['d1'][1]:.3f} |")
    g, gs = paired_gain(results)
    agg = aggregate(results, "val")
    sh = agg.get("shuffled", {}).get("abs_rel", (float("nan"),))[0] - agg["fine"]["abs_rel"][0]
    lines += ["", f"fine stage gain (coarse - fine AbsRel, paired per run): {g:+.4f} ± {gs:.4f}; "
              f"fold spread of fine AbsRel: {agg['fine']['abs_rel'][1]:.4f}",
              f"shuffled-prediction gap (shuffled - fine AbsRel): {sh:+.3f}"]
    f, fs = paired_gain(results, worse="fine", better="fine_flip")
    if not np.isnan(f):  # some run has fine_flip scores
        better = sum(r["val"]["summary"]["fine_flip"]["abs_rel"]
                     < r["val"]["summary"]["fine"]["abs_rel"] for r in results
                     if "fine_flip" in r["val"]["summary"])
        lines.append(f"flip averaging gain (fine - fine_flip AbsRel, paired per run): "
                     f"{f:+.4f} ± {fs:.4f}, better in {better} runs")
    return "\n".join(lines)


def plot(results: list[dict], keys: list[tuple[int, int]], path: Path) -> None:
    from .evaluate import write_bar_chart

    write_bar_chart(path, [f"fold {f}\nseed {s}" for f, s in keys],
                    {m: [r["val"]["summary"].get(m, {}).get("abs_rel", np.nan) for r in results]
                     for m in REPORTED},
                    "AbsRel (median-scaled), held-out drives", inch_per_group=1.1, rotation=0)


def main(argv: list[str] | None = None) -> int:
    from tqdm import tqdm

    from mono_depth_ros.kitti import read_test_scenes

    # no abbreviations: "--seed 1" (the trainer's flag, passed on) must not be read as "--seeds 1"
    p = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    p.add_argument("--folds", type=int, default=3)
    p.add_argument("--seeds", type=int, default=2)
    p.add_argument("--out", default="runs/crossval")
    p.add_argument("--val-per-drive", type=int, default=6,
                   help="left images scored per held-out drive (0 = all)")
    p.add_argument("--test-list", default="../shared/kitti/not_for_training/index.tsv",
                   help="untouched test frames scored by every run ('' = none)")
    p.add_argument("--test-root", default="../shared/kitti")
    p.add_argument("--init-coarse-from", default="",
                   help="an earlier crossval --out folder: each run trains only the fine stage, "
                   "on the coarse net of that folder's run of the same fold (same seed if it "
                   "has one, else its first seed), so fine-stage settings compare paired, at "
                   "a fraction of the time")
    p.add_argument("--only-folds", default="",
                   help="comma-separated fold numbers to run in this call ('' = all), e.g. to "
                   "run folds in parallel processes on one --out; a later call without it "
                   "skips the finished runs and reports them all")
    own, rest = p.parse_known_args(argv)
    if "-h" in rest or "--help" in rest:
        print(__doc__)
        build_parser().print_help()
        return 0
    try:
        cfg, model_cfg, _ = parse(rest)
        if own.folds < 2 or own.seeds < 1:
            raise ConfigError("--folds must be >= 2 and --seeds >= 1")
        frames = D.load_frames(cfg.train_list, cfg.data_root or None)
        D.check_not_test_scenes(frames, read_test_scenes(cfg.test_scenes))
        folds = make_folds(frames, own.folds)
        test = []
        if own.test_list:
            test = [D.load_sample(f) for f in D.load_frames(own.test_list, own.test_root)]
        out = Path(own.out)
        out.mkdir(parents=True, exist_ok=True)
        prefer = tuple(cfg.gt_preference)
        views = frames + ([r for r in (f.right_view() for f in frames) if r is not None]
                          if cfg.right_images else [])
        cache = {f.frame_id: D.load_sample(f, prefer, cfg.stereo_weight > 0)
                 for f in tqdm(views, desc="load frames", unit="frame", leave=False)}
        only = parse_folds(own.only_folds, own.folds)
        jobs = [(fold, cfg.seed + s) for s in range(own.seeds) for fold in range(own.folds)
                if fold in only]
        results, t0 = [], time.perf_counter()
        for fold, seed in tqdm(jobs, desc="crossval runs", unit="run"):
            held = set(folds[fold])
            train = [f for f in frames if f.group not in held]
            val = cap_per_group([f for f in frames if f.group in held], own.val_per_drive)
            run_cfg = replace(cfg, seed=seed)
            if own.init_coarse_from:
                run_cfg = replace(run_cfg, stages="fine", init_coarse=str(
                    coarse_from(Path(own.init_coarse_from), fold, seed)))
            results.append(run_one(run_cfg, model_cfg, train, val, test,
                                   out / f"fold{fold}_seed{seed}", cache))
    except (ConfigError, KittiFormatError, D.TestSceneError, ModelLoadError) as exc:
        print(f"crossval: error: {exc}", file=sys.stderr)
        return 2
    name = f"{own.folds} folds x {own.seeds} seeds"
    if len(only) < own.folds:
        name += f", folds {','.join(map(str, sorted(only)))} only"
    report = format_report(results, jobs, name)
    atomic_write_text(out / "crossval.md", report + "\n")
    atomic_write_text(out / "crossval.json", json.dumps(
        {"folds": folds, "jobs": jobs, "results": results,
         "val": aggregate(results, "val"), "test": aggregate(results, "test"),
         "fine_gain": paired_gain(results),
         "flip_gain": paired_gain(results, worse="fine", better="fine_flip"),
         "seconds_this_call": time.perf_counter() - t0},
        indent=2))
    plot(results, jobs, out / "crossval.png")
    print(report)
    print(f"wrote {out}/crossval.md, crossval.json, crossval.png "
          f"({time.perf_counter() - t0:.0f} s in this call)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
