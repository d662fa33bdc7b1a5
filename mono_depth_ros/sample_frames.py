"""Locate the KITTI sample frames shipped in data/kitti_sample (tests, export checks, benchmark)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

SAMPLE_ROOT = Path(__file__).resolve().parent.parent / "data" / "kitti_sample"
DRIVE_0001 = "2011_09_26/2011_09_26_drive_0001_sync"
DRIVE_0005 = "2011_09_26/2011_09_26_drive_0005_sync"
VALIDATION_FRAMES = (5, 50, 100)  # drive 0001 frames with annotated ground truth


@dataclass(frozen=True)
class SampleFrame:
    """Paths of one sample frame; ``gt`` (annotated depth PNG) and ``velodyne`` may be None."""

    drive_dir: Path
    frame: int
    image: Path
    gt: Path | None
    velodyne: Path | None


def sample_frame(drive: str, frame: int, root: Path = SAMPLE_ROOT) -> SampleFrame:
    """One frame of a raw drive in the sample layout; missing optional files come back as None."""
    drive_dir = root / drive
    name = f"{frame:010d}"
    image = drive_dir / "image_02" / "data" / f"{name}.png"
    if not image.is_file():
        raise FileNotFoundError(f"KITTI sample image not found: {image}")
    gt = (root / "data_depth_annotated" / "train" / Path(drive).name / "proj_depth" /
          "groundtruth" / "image_02" / f"{name}.png")
    velo = drive_dir / "velodyne_points" / "data" / f"{name}.bin"
    return SampleFrame(drive_dir, frame, image, gt if gt.is_file() else None,
                       velo if velo.is_file() else None)


def validation_frames(root: Path = SAMPLE_ROOT) -> list[SampleFrame]:
    """Drive 0001 frames 5/50/100, which have annotated ground truth."""
    return [sample_frame(DRIVE_0001, f, root) for f in VALIDATION_FRAMES]


def all_frames(root: Path = SAMPLE_ROOT) -> list[SampleFrame]:
    """Every sample frame with an image_02 picture."""
    return validation_frames(root) + [sample_frame(DRIVE_0005, 137, root)]
