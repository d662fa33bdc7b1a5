"""Training frames from recorded bags: each camera image paired with the LiDAR scan nearest in time,
projected into it, extracted once into a cache folder and handed to the trainer as ``Frame``s.

A bag (ROS 2 MCAP / sqlite3, or ROS 1 ``.bag``) is read with ``mono_depth_ros.bags.reader`` and
paired with ``mono_depth_ros.sync.nearest_stamp`` at the evaluation tools' tolerance (``slop``,
0.05 s), so a training frame is exactly what ``evaluate_bag`` would score. The camera is found as
in the bag tools (``bags/topics.py``); the LiDAR -> camera extrinsic comes from ``/tf_static``
(``evaluate_bag.velo_to_camera``) or from a KITTI calibration given with ``bag_calib``.

Cache: ``<bag_cache>/<bag stem>-<key>/`` holds ``images/<stamp>.png``, ``depth/<stamp>.png``
(KITTI depth-benchmark 16-bit PNGs), ``calib.txt`` (KITTI object format: ``P2`` = camera_info's P,
``R0_rect`` = I and ``Tr_velo_to_cam`` such that ``P2 · R0_rect · Tr_velo_to_cam`` is the
projection used) and ``manifest.json``. The key hashes the bag files' names, sizes and
modification times (not their bytes: a digest of a multi-gigabyte bag would cost as much as the
extraction) plus the extraction settings; it is written to a temporary folder and renamed.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from types import SimpleNamespace

import numpy as np

from mono_depth_ros import sync
from mono_depth_ros.bags.reader import (BagError, TfStaticBuffer, camera_matrices, deserialize,
                                        image_to_rgb, iter_messages, open_bag, stamp_ns)
from mono_depth_ros.camera import unrectified
from mono_depth_ros.config import EvalNodeConfig, KittiTopicsConfig
from mono_depth_ros.kitti import write_depth_png

from .data import Frame

CACHE_VERSION = 1
CLOUD_TYPES = ("sensor_msgs/msg/PointCloud2", "sensor_msgs/PointCloud2")
DEFAULT_SLOP = EvalNodeConfig().slop


@dataclass(frozen=True)
class ExtractSettings:
    """What changes the extracted frames (part of the cache key)."""

    image_topic: str = ""     # '' = found as in the bag tools
    lidar_topic: str = ""     # '' = the configured KITTI one, else the bag's only PointCloud2
    slop: float = DEFAULT_SLOP
    calib: str = ""           # KITTI calibration (raw date folder or object-format file)


@dataclass
class BagFrames:
    """One extracted bag: its cache folder, its manifest and its frames in stamp order."""

    folder: Path
    manifest: dict
    frames: list[Frame]
    stamps_ns: list[int]
    cached: bool = False      # True when the cache already held it (nothing was re-read)


def bag_files(path: Path) -> list[Path]:
    """The files that make up a bag: a ROS 1 file, a ROS 2 folder, or a ROS 2 folder's file."""
    if path.is_file() and path.suffix in (".mcap", ".db3") and \
            (path.parent / "metadata.yaml").is_file():
        path = path.parent
    if path.is_dir():
        return sorted(p for p in path.rglob("*") if p.is_file())
    return [path]


def bag_stem(path: Path) -> str:
    if path.is_file() and path.suffix in (".mcap", ".db3") and \
            (path.parent / "metadata.yaml").is_file():
        return path.parent.name
    return path.stem if path.is_file() else path.name


def cache_key(path: Path, settings: ExtractSettings) -> str:
    """sha256 over the bag files' names, sizes and mtimes, the settings (with the calibration
    file's bytes) and the cache format version."""
    if not path.exists():
        raise BagError(f"bag not found: {path}")
    h = hashlib.sha256(f"v{CACHE_VERSION}".encode())
    root = path.parent if path.is_file() else path
    for f in bag_files(path):
        st = f.stat()
        h.update(f"{f.relative_to(root)}|{st.st_size}|{st.st_mtime_ns}\n".encode())
    h.update(json.dumps(asdict(settings), sort_keys=True).encode())
    if settings.calib:
        for f in bag_files(Path(settings.calib)):
            if f.is_file():
                h.update(f.read_bytes())
    return h.hexdigest()[:16]


# --------------------------------------------------------------------------------------------
# Extraction
# --------------------------------------------------------------------------------------------

def choose_lidar(types: dict[str, str], wanted: str, where: str) -> str:
    """The LiDAR topic: the one asked for, else KITTI's when present, else the only PointCloud2."""
    clouds = sorted(t for t, typ in types.items() if typ in CLOUD_TYPES)
    if wanted:
        if wanted not in types:
            raise BagError(f"{where} has no {wanted} topic (PointCloud2 topics: "
                           f"{', '.join(clouds) or 'none'})")
        return wanted
    if KittiTopicsConfig().lidar_topic in clouds:
        return KittiTopicsConfig().lidar_topic
    if not clouds:
        raise BagError(f"{where} has no LiDAR (no sensor_msgs/PointCloud2 topic); training "
                       "needs LiDAR depth")
    if len(clouds) > 1:
        raise BagError(f"{where} has several PointCloud2 topics ({', '.join(clouds)}); pick one "
                       "with --lidar-topic")
    return clouds[0]


def lidar_extrinsic(tf: TfStaticBuffer, camera_frame: str, lidar_frame: str, P: np.ndarray,
                    calib: str, where: str) -> tuple[np.ndarray, str]:
    """4x4 LiDAR -> camera optical frame and where it came from: ``calib`` (a KITTI raw date
    folder, or an object-format file) when given, else /tf_static as ``evaluate_bag`` takes it."""
    from mono_depth_ros.bags.evaluate_bag import velo_to_camera
    from mono_depth_ros.kitti import read_object_calib
    from mono_depth_ros.lidar_eval import calib_velo_to_cam

    if calib:
        c = Path(calib)
        T = calib_velo_to_cam(c) if c.is_dir() else read_object_calib(c).velo_to_cam_optical
        return T, f"geometry: LiDAR -> camera from {calib}"
    if tf.lookup(camera_frame, lidar_frame) is None:
        raise BagError(f"{where}: no transform {lidar_frame} -> {camera_frame} in /tf_static; "
                       "give the LiDAR calibration with --bag-calib (a KITTI calib folder or "
                       "object-format file)")
    return velo_to_camera(SimpleNamespace(tf=tf), camera_frame, lidar_frame, "", P)


def object_calib_text(P: np.ndarray, velo_to_cam: np.ndarray) -> str:
    """KITTI object-format calibration whose ``P2 · R0_rect · Tr_velo_to_cam`` = K · velo_to_cam
    (P2 keeps camera_info's 4th column; Tr takes its offset back out)."""
    from mono_depth_ros.lidar_eval import p_offset

    Tr = np.asarray(velo_to_cam, dtype=np.float64).copy()
    Tr[:3, 3] -= p_offset(P)

    def row(name: str, m: np.ndarray) -> str:
        return f"{name}: " + " ".join(f"{v:.12e}" for v in np.asarray(m).reshape(-1))

    return "\n".join([row("P2", P), row("R0_rect", np.eye(3)),
                      row("Tr_velo_to_cam", Tr[:3, :4])]) + "\n"


def _scan_pass(reader, path: Path, settings: ExtractSettings, topics: KittiTopicsConfig):
    """First pass: topics, stamps of images / scans, camera_infos and /tf_static (no pixels)."""
    from mono_depth_ros.bags.topics import TopicChoiceError, choose_camera

    types = {c.topic: c.msgtype for c in reader.connections}
    try:
        image_topic, info_topic, note = choose_camera(
            types, settings.image_topic or topics.image_topic, topics.camera_info_topic,
            bool(settings.image_topic), where=str(path))
    except TopicChoiceError as exc:
        raise BagError(str(exc)) from None
    lidar_topic = choose_lidar(types, settings.lidar_topic, str(path))
    tf = TfStaticBuffer()
    image_st, scan_st, infos = [], [], {}
    wanted = [image_topic, info_topic, lidar_topic, topics.tf_static_topic]
    for conn, _t, raw in iter_messages(reader, [t for t in wanted if t in types]):
        msg = deserialize(reader, raw, conn)
        if conn.topic == topics.tf_static_topic:
            tf.add_message(msg)
        elif conn.topic == image_topic:
            image_st.append(stamp_ns(msg))
        elif conn.topic == info_topic:
            infos[stamp_ns(msg)] = msg
        else:
            scan_st.append(stamp_ns(msg))
    if not infos:
        raise BagError(f"{path}: no camera_info message on {info_topic}")
    return SimpleNamespace(image=image_topic, info=info_topic, lidar=lidar_topic, note=note,
                           tf=tf, image_st=sorted(image_st), scan_st=sorted(scan_st),
                           infos=infos)


def pair_stamps(image_st: list[int], scan_st: list[int], slop_s: float) -> dict[int, int]:
    """image stamp -> scan stamp: the nearest scan within ``slop_s``, each scan used once
    (earliest image first), as ``bags.reader.read_eval_frames`` pairs them."""
    pairs, used = {}, set()
    slop_ns = int(round(slop_s * 1e9))
    for st in image_st:
        match = sync.nearest_stamp(scan_st, st, slop_ns)
        if match is not None and match not in used:
            used.add(match)
            pairs[st] = match
    return pairs


def _extract(path: Path, out: Path, settings: ExtractSettings, progress: bool) -> dict:
    """Write images, depth PNGs, calib.txt and manifest.json of ``path`` into ``out``."""
    import cv2

    from mono_depth_ros.bags.pointcloud import PointCloudError, cloud_to_xyz
    from mono_depth_ros.lidar_eval import lidar_depth

    t0 = time.monotonic()
    topics = KittiTopicsConfig()
    with open_bag(path) as reader:
        scan = _scan_pass(reader, path, settings, topics)
        pairs = pair_stamps(scan.image_st, scan.scan_st, settings.slop)
        if not pairs:
            raise BagError(f"{path}: no camera image on {scan.image} has a LiDAR scan on "
                           f"{scan.lidar} within {settings.slop} s ({len(scan.image_st)} images, "
                           f"{len(scan.scan_st)} scans)")
        info_st = sorted(scan.infos)
        wanted_scans = set(pairs.values())
        (out / "images").mkdir(parents=True)
        (out / "depth").mkdir()
        images: dict[int, object] = {}   # image stamp -> message, waiting for its scan
        clouds: dict[int, object] = {}   # scan stamp -> message, waiting for its image
        rows, geometry, P0, T = [], "", None, None
        bar = None
        if progress:
            from tqdm import tqdm

            bar = tqdm(total=len(pairs), desc=f"extract {bag_stem(path)}", unit="frame")

        def emit(st: int) -> None:
            nonlocal geometry, P0, T
            img, cloud = images.pop(st), clouds.pop(pairs[st])
            info = scan.infos.get(st) or scan.infos[sync.nearest_stamp(info_st, st, 1 << 62)]
            K, P, w, h = camera_matrices(info)
            if not np.any(P[:, :3]):
                P = np.hstack([K, np.zeros((3, 1))])
            rgb = image_to_rgb(img)
            if rgb.shape[:2] != (h, w):
                raise BagError(f"{path}: image at {st} ns is {rgb.shape[1]}x{rgb.shape[0]} but "
                               f"its camera_info says {w}x{h}")
            if P0 is None:
                P0 = P
                cam = info.header.frame_id.lstrip("/") or img.header.frame_id.lstrip("/")
                T, geometry = lidar_extrinsic(scan.tf, cam, cloud.header.frame_id.lstrip("/"),
                                              P, settings.calib, str(path))
            elif not np.allclose(P, P0, rtol=1e-6, atol=1e-6):
                raise BagError(f"{path}: camera_info changes within the bag (at {st} ns); "
                               "split the bag where the camera changes")
            try:
                pts = cloud_to_xyz(cloud)
            except PointCloudError as exc:
                raise BagError(f"{path}: LiDAR scan at {pairs[st]} ns: {exc}") from None
            depth = lidar_depth(pts, K, T, w, h)
            name = f"{st:019d}.png"
            if not cv2.imwrite(str(out / "images" / name), np.ascontiguousarray(rgb[:, :, ::-1])):
                raise OSError(f"could not write {out / 'images' / name}")
            write_depth_png(out / "depth" / name, depth)
            rows.append({"stamp_ns": st, "lidar_stamp_ns": pairs[st], "image": f"images/{name}",
                         "depth": f"depth/{name}", "lidar_pixels": int((depth > 0).sum())})
            if bar is not None:
                bar.update(1)

        for conn, _t, raw in iter_messages(reader, [scan.image, scan.lidar]):
            if conn.topic == scan.image:
                msg = deserialize(reader, raw, conn)
                st = stamp_ns(msg)
                if st not in pairs or st in images:
                    continue
                images[st] = msg
            else:
                msg = deserialize(reader, raw, conn)
                st = stamp_ns(msg)
                if st not in wanted_scans:
                    continue
                clouds[st] = msg
            for ist in [i for i in images if pairs[i] in clouds]:
                emit(ist)
        if bar is not None:
            bar.close()
    if not rows:
        raise BagError(f"{path}: no frame could be extracted")
    (out / "calib.txt").write_text(object_calib_text(P0, T))
    rows.sort(key=lambda r: r["stamp_ns"])
    info0 = scan.infos[info_st[0]]
    d = getattr(info0, "d", None)
    d = getattr(info0, "D", None) if d is None else d  # ROS 1 field name
    dist = [] if d is None else [float(v) for v in np.asarray(d).reshape(-1)]
    return {"version": CACHE_VERSION, "bag": str(path.resolve()), "bag_stem": bag_stem(path),
            "key_from": "bag file names + sizes + mtimes, settings, calibration file bytes",
            "topics": {"image": scan.image, "camera_info": scan.info, "lidar": scan.lidar,
                       "tf_static": topics.tf_static_topic},
            "camera": scan.note, "geometry": geometry, "settings": asdict(settings),
            "images": len(scan.image_st), "scans": len(scan.scan_st),
            "unmatched_images": len(scan.image_st) - len(rows),
            "width": int(camera_matrices(scan.infos[info_st[0]])[2]),
            "height": int(camera_matrices(scan.infos[info_st[0]])[3]),
            "P": np.asarray(P0).tolist(), "distortion": dist, "frames": rows,
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "seconds": round(time.monotonic() - t0, 3)}


def extract_bag(path: str | Path, cache_root: str | Path,
                settings: ExtractSettings | None = None, progress: bool = True) -> BagFrames:
    """The extracted frames of ``path``: from the cache when its key matches, else extracted now
    (into a temporary folder renamed into place, so a crash never leaves a half cache)."""
    path, cache_root = Path(path), Path(cache_root)
    settings = settings or ExtractSettings()
    key = cache_key(path, settings)
    folder = cache_root / f"{bag_stem(path)}-{key}"
    manifest_path = folder / "manifest.json"
    cached = manifest_path.is_file()
    if not cached:
        cache_root.mkdir(parents=True, exist_ok=True)
        tmp = cache_root / f".tmp-{folder.name}-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        try:
            try:
                manifest = _extract(path, tmp, settings, progress)
            except BagError as exc:  # every message names the bag
                if str(path) in str(exc):
                    raise
                raise BagError(f"{path}: {exc}") from None
            manifest["key"] = key
            (tmp / "manifest.json").write_text(json.dumps(manifest, indent=1))
            try:
                os.rename(tmp, folder)
            except OSError:
                if not manifest_path.is_file():  # not someone else's finished copy: a real error
                    raise
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    manifest = json.loads(manifest_path.read_text())
    drive = f"bag:{manifest['bag_stem']}"
    frames = [Frame(frame_id=f"{drive}/{r['stamp_ns']}", rgb=folder / r["image"],
                    calib_format="object", calib=(folder / "calib.txt",), drive=drive,
                    gt_png=folder / r["depth"]) for r in manifest["frames"]]
    return BagFrames(folder, manifest, frames, [r["stamp_ns"] for r in manifest["frames"]],
                     cached)


# --------------------------------------------------------------------------------------------
# Validation by time
# --------------------------------------------------------------------------------------------

def split_by_time(stamps_ns: list[int], val_fraction: float, gap_s: float
                  ) -> tuple[list[int], list[int]]:
    """(train indices, validation indices) of one bag's frames (``stamps_ns`` ascending): the last
    ``val_fraction`` of the frames (at least one when there are two or more, never all) is held
    out, and training frames within ``gap_s`` seconds before the first held-out one are dropped,
    so no validation frame has a near-duplicate in training."""
    n = len(stamps_ns)
    n_val = 0
    if val_fraction > 0 and n >= 2:
        n_val = min(n - 1, max(1, int(round(n * val_fraction))))
    if n_val == 0:
        return list(range(n)), []
    first = n - n_val
    cutoff = stamps_ns[first] - int(round(gap_s * 1e9))
    train = [i for i in range(first) if stamps_ns[i] < cutoff]
    return train, list(range(first, n))


def frames_from_config(cfg, progress: bool = True, log=print) -> tuple[list[Frame], list[Frame]]:
    """(train, validation) frames of ``cfg.bags`` and ``cfg.val_bags`` (a ``TrainConfig``).

    With ``val_bags`` those bags are the validation set and ``bags`` train whole; otherwise the
    last ``val_fraction`` of each bag (after a ``val_gap_s`` gap) validates. A bag named in both
    lists only validates."""
    settings = ExtractSettings(cfg.image_topic, cfg.lidar_topic, cfg.bag_slop, cfg.bag_calib)
    val_set = {str(Path(b).resolve()) for b in cfg.val_bags}
    train: list[Frame] = []
    val: list[Frame] = []
    seen: dict[str, str] = {}
    for b in list(cfg.bags) + [b for b in cfg.val_bags if b not in cfg.bags]:
        bf = extract_bag(b, cfg.bag_cache, settings, progress)
        frames = bf.frames
        drive = frames[0].drive if frames else ""
        if seen.get(drive, bf.folder.name) != bf.folder.name:  # two bags of one name
            frames = [_regroup(f, f"{drive}-{bf.manifest['key'][:6]}") for f in frames]
        seen[drive] = bf.folder.name
        where = "cache" if bf.cached else "extracted"
        if str(Path(b).resolve()) in val_set:
            val += frames
            log(f"bag {b}: {len(frames)} frames ({where}, {bf.folder}), all for validation")
            continue
        if val_set:
            tr, va = list(range(len(frames))), []
        else:
            tr, va = split_by_time(bf.stamps_ns, cfg.val_fraction, cfg.val_gap_s)
        train += [frames[i] for i in tr]
        val += [frames[i] for i in va]
        dropped = len(frames) - len(tr) - len(va)
        how = "whole (validation: --val-bag)" if val_set else \
            (f"{len(va)} validation (its last {cfg.val_fraction:g}), {dropped} dropped in the "
             f"{cfg.val_gap_s:g} s before them")
        log(f"bag {b}: {len(frames)} frames ({where}, {bf.folder}): {len(tr)} train, {how}; "
            f"{bf.manifest['camera']}; {bf.manifest['geometry']}")
        if unrectified(bf.manifest.get("distortion", []), bf.manifest["topics"]["image"]):
            log(f"warning: {b}: camera_info has distortion coefficients but the images are "
                "projected with P as if rectified; record the rectified image (image_rect*)")
    return train, val


def _regroup(frame: Frame, drive: str) -> Frame:
    from dataclasses import replace

    return replace(frame, drive=drive, frame_id=drive + frame.frame_id[frame.frame_id.find("/"):])
