"""Rendering panels: one display rule for real and synthetic alike (RAS, head-voxel percentile window,
physical aspect ratio, PNGs that hold pixels only).
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image

from gliomagen.cases import load_case, modality_path
from gliomagen.config import MODALITIES, ReaderStudyConfig
from gliomagen.data.geometry import voxel_spacing
from gliomagen.reader_study.design import Panel
from gliomagen.reader_study.pairs import to_ras


def window(volume: np.ndarray, head: np.ndarray, percentiles: tuple[float, float]) -> tuple[float, float]:
    """Display window of a volume: percentiles of its head voxels (all voxels if the head is empty)."""
    values = volume[head] if head.any() else volume.ravel()
    lo, hi = np.percentile(values, percentiles)
    if not hi > lo:
        hi = lo + 1e-6
    return float(lo), float(hi)


def render_slice(
    volume: np.ndarray,
    z: int,
    win: tuple[float, float],
    spacing_xy: tuple[float, float],
    image_size: int,
    convention: str,
) -> np.ndarray:
    """One axial slice of a RAS volume as an 8-bit image (anterior up, physical aspect ratio).

    Args:
        volume: RAS+ volume (x right, y anterior, z superior).
        z: axial index.
        win: (low, high) intensity window mapped to 0..255.
        spacing_xy: voxel size along x and y (mm), so that pixels come out square.
        image_size: longer side of the output in pixels (never below the native size).
        convention: ``radiological`` puts the patient's right on the image's left.
    """
    plane = volume[:, :, z].T[::-1, :]  # rows: anterior at the top; columns: x (patient's left->right)
    if convention == "radiological":
        plane = plane[:, ::-1]
    lo, hi = win
    grey = np.round(np.clip((plane - lo) / (hi - lo), 0, 1) * 255).astype(np.uint8)
    width_mm, height_mm = plane.shape[1] * spacing_xy[0], plane.shape[0] * spacing_xy[1]
    scale = max(image_size / max(width_mm, height_mm), 1 / min(spacing_xy))
    size = (max(1, round(width_mm * scale)), max(1, round(height_mm * scale)))
    image = Image.fromarray(np.ascontiguousarray(grey))
    if size != image.size:
        image = image.resize(size, Image.Resampling.BICUBIC)
    return np.asarray(image)


def png_bytes(pixels: np.ndarray) -> bytes:
    """An 8-bit greyscale PNG with no text, time or physical-size chunks (nothing but pixels).

    Stored without compression (zlib level 0): the file size then depends on the image size only. A
    compressed PNG of a noisier image is larger, and file sizes would let a reader sort the panels by class
    without looking at them.
    """
    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(pixels, dtype=np.uint8)).save(
        buffer, format="PNG", optimize=False, compress_level=0
    )
    return buffer.getvalue()


def render_case(
    folder: Path, mask_ras: np.ndarray, panels: list[Panel], rs: ReaderStudyConfig
) -> dict[str, bytes]:
    """PNG bytes of every image of ``panels`` (all from this one volume), keyed by image file name."""
    case = load_case(folder, with_seg=False)
    head = mask_ras != 0
    for channel, modality in enumerate(MODALITIES):
        if not np.isfinite(case.image[channel]).all():
            raise ValueError(f"{modality_path(folder, modality)}: contains NaN or infinite values")
    volumes, affine = {}, case.affine
    for channel, modality in enumerate(MODALITIES):
        volumes[modality], ras_affine = to_ras(case.image[channel], affine)
    spacing = voxel_spacing(ras_affine)
    windows = {m: window(v, head, rs.window_percentiles) for m, v in volumes.items()}
    out: dict[str, bytes] = {}
    for panel in panels:
        modalities = MODALITIES if panel.kind == "all" else (panel.kind,)
        for modality, name in zip(modalities, panel.images, strict=True):
            pixels = render_slice(
                volumes[modality],
                panel.slice,
                windows[modality],
                (float(spacing[0]), float(spacing[1])),
                rs.image_size,
                rs.convention,
            )
            out[name] = png_bytes(pixels)
    return out
