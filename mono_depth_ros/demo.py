"""``python -m mono_depth_ros.demo --out demo_output`` (``make demo``): the whole chain on the
in-repo KITTI sample, in a few minutes on two CPU cores.

1. panels: image | coarse | fine | LiDAR ground truth for every sample frame, with a metrics table
   (the default model, scored by metrics.score_frame);
2. ``kitti_to_bag``: the sample drives 0001 and 0005 become one ROS 2 bag (MCAP);
3. live: ``mono_depth_bringup config/kitti_eval.yaml`` plays the bag through ``depth_node`` and
   ``kitti_eval_node`` over real DDS (separate processes, loopback only, large-image profile);
4. offline: ``evaluate_bag`` on the same bag, to show both agree;
5. a colourised depth strip and an animated GIF of the frames.

Everything goes to ``--out``; the summary table and the paths are printed at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
SAMPLE = REPO / "data" / "kitti_sample" / "2011_09_26"
DRIVES = [SAMPLE / "2011_09_26_drive_0001_sync", SAMPLE / "2011_09_26_drive_0005_sync"]


def panels(out: Path, backend) -> tuple[list[dict], list[np.ndarray]]:
    """Per-frame panel images + metrics of the model on frames with a LiDAR scan."""
    from .colorize import colorize, colorize_sparse, stack_panels, write_rgb
    from .config import EvalConfig
    from .geometry import project_points
    from .kitti import find_raw_calib, read_rgb, read_velodyne
    from .metrics import score_frame

    rows, strip = [], []
    (out / "panels").mkdir(parents=True, exist_ok=True)
    for drive in DRIVES:
        calib = find_raw_calib(drive)
        for png in sorted((drive / "image_02" / "data").glob("*.png")):
            rgb = read_rgb(png)
            res = backend.infer(rgb)
            velo = drive / "velodyne_points" / "data" / f"{png.stem}.bin"
            items = [("image", rgb), ("coarse", colorize(res.coarse)), ("fine", colorize(res.fine))]
            row = {"frame": f"{drive.name[17:21]}/{int(png.stem)}",
                   "id": f"{drive.parent.name}/{drive.name}/{png.stem}"}
            if velo.is_file():
                gt = project_points(read_velodyne(velo), calib.velo_to_image, rgb.shape[1],
                                    rgb.shape[0])
                items.append(("LiDAR ground truth", colorize_sparse(gt)))
                row.update(score_frame(res.fine, gt, EvalConfig()).flat())
            name = f"{drive.name}_{png.stem}.png"
            write_rgb(out / "panels" / name, stack_panels(items))
            rows.append(row)
            strip.append(np.vstack([rgb, colorize(res.fine)]))
    return rows, strip


def trained_on(model: str | None) -> set[str]:
    """Frame ids the model's checkpoint says it trained on (empty where it does not say)."""
    from .model_io import ModelLoadError, default_model_path, load_checkpoint

    try:
        meta = load_checkpoint(model or default_model_path()).get("meta", {}) or {}
    except ModelLoadError:
        return set()
    return set(meta.get("train_frames", []))


def write_strip_and_gif(out: Path, frames: list[np.ndarray]) -> tuple[Path, Path]:
    import cv2
    from PIL import Image

    from .colorize import write_rgb

    small = [cv2.resize(f, (f.shape[1] // 2, f.shape[0] // 2), interpolation=cv2.INTER_AREA)
             for f in frames]
    strip_path = out / "depth_strip.png"
    write_rgb(strip_path, np.hstack(small))
    gif_path = out / "depth.gif"
    imgs = [Image.fromarray(f) for f in small]
    imgs[0].save(gif_path, save_all=True, append_images=imgs[1:], duration=800, loop=0)
    return strip_path, gif_path


def run_child(cmd: list[str], env: dict, cwd: Path) -> int | None:
    """Run the bring-up; SIGINT/SIGTERM to the demo is passed on to it (it stops its nodes, which
    write their reports) and gives None once it has exited."""
    from .ros import lifecycle

    stop = lifecycle.install().defer()
    p = subprocess.Popen(cmd, env=env, cwd=cwd)
    while p.poll() is None:
        if stop.wait(0.2):
            p.send_signal(stop.signum)
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
            return None
    stop.exit_at_once = True  # back to: a signal ends the demo at once
    return p.returncode


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="mono_depth_ros.demo", description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="demo_output")
    ap.add_argument("--rate", type=float, default=2.0, help="bag playback rate")
    ap.add_argument("--backend", default="auto")
    ap.add_argument("--model", default="", help="checkpoint; default: the shipped model")
    ap.add_argument("--skip-live", action="store_true", help="no DDS part (offline only)")
    args = ap.parse_args(argv)
    from .ros.lifecycle import install

    install()  # SIGINT/SIGTERM: exit 0 at once (the live step passes them on to its children)
    t0 = time.monotonic()
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)

    from .bags.evaluate_bag import evaluate, make_backend
    from .bags.kitti_to_bag import convert
    from .config import BackendConfig, EvalNodeConfig, from_dict
    from .lidar_eval import format_table

    bcfg = from_dict(BackendConfig, {"backend": args.backend, "checkpoint": args.model})
    backend = make_backend(bcfg)
    print(f"[demo] backend: {backend.describe()}", flush=True)

    print("[demo] 1/5 panels (image | coarse | fine | LiDAR)", flush=True)
    rows, strip = panels(out, backend)
    (out / "panel_metrics.json").write_text(json.dumps(rows, indent=2))

    print("[demo] 2/5 kitti_to_bag: sample drives -> ROS 2 bag", flush=True)
    bag = out / "kitti_sample_bag"
    if bag.exists():
        shutil.rmtree(bag)
    info = convert(DRIVES, bag, progress=False)
    print(f"        {bag}: {len(info['frames'])} frames, {info['scans']} LiDAR scans", flush=True)

    live = None
    if not args.skip_live:
        print("[demo] 3/5 live: kitti_bag_player -> depth_node -> kitti_eval_node over DDS",
              flush=True)
        env = dict(os.environ)
        env.setdefault("ROS_DOMAIN_ID", "42")
        env["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
        env.setdefault("FASTDDS_DEFAULT_PROFILES_FILE",
                       str(REPO / "config" / "fastdds_large_images.xml"))
        cmd = [sys.executable, "-m", "mono_depth_ros.ros.bringup",
               str(REPO / "config" / "kitti_eval.yaml"), "--bag", str(bag), "--rate",
               str(args.rate), "--output-dir", str(out / "live"), "--calib-dir", str(SAMPLE),
               "--backend", args.backend, "--log-dir", str(out / "logs"), "--timeout", "240"]
        if args.model:
            cmd += ["--model", args.model]
        rc = run_child(cmd, env, out)
        if rc is None:
            print("[demo] stopped; the live run wrote what it had", flush=True)
            return 0
        if rc != 0 or not (out / "live" / "metrics.json").is_file():
            print(f"[demo] live run failed (exit {rc}); see {out / 'logs'}", file=sys.stderr)
            return 1
        live = json.loads((out / "live" / "metrics.json").read_text())

    print("[demo] 4/5 offline: evaluate_bag on the same bag", flush=True)
    offline = evaluate(bag, out / "offline", backend=backend,
                       eval_cfg=EvalNodeConfig(calib_dir=str(SAMPLE)))

    print("[demo] 5/5 depth strip + GIF", flush=True)
    strip_path, gif_path = write_strip_and_gif(out, strip)

    seen = trained_on(args.model)
    print("\nper-frame (median-scaled abs_rel / metric abs_rel; 'trained on' = a frame the model "
          "saw in training, so its score shows fit, not generalisation: the model card has the "
          "test-drive figures):")
    for r in rows:
        if "abs_rel" in r:
            print(f"  {r['frame']:>10}  {r['abs_rel']:.4f} / {r['metric_abs_rel']:.4f}  "
                  f"({r['valid_pixels']} LiDAR pixels)"
                  + ("  trained on" if r["id"] in seen else ""))
        else:
            print(f"  {r['frame']:>10}  no LiDAR scan")
    if live is not None:
        print(f"\nlive over DDS ({live['frames']} frames scored, unmatched depth frames "
              f"{live['unmatched']['depth']}):")
        print(format_table(live))
    print(f"\noffline evaluate_bag ({offline['frames']} frames):")
    print(format_table(offline))
    if live is not None and live["frames"]:
        diff = max(abs(live[k] - offline[k]) for k in ("abs_rel", "rmse", "metric_abs_rel"))
        print(f"live vs offline: largest difference {diff:.2e}")
    print(f"\nresults in {out}:")
    for p in ("panels/", "depth_strip.png", "depth.gif", "live/metrics.json", "live/metrics.csv",
              "live/per_frame_metrics.png", "live/error_vs_distance.png",
              "offline/metrics.json", "kitti_sample_bag/", "logs/"):
        if (out / p).exists():
            print(f"  {out / p}")
    print(f"demo took {time.monotonic() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
