"""Slice feature extractors for FID/KID, as a registry, and the weight fetcher used by the Docker build.

Extractors (``REGISTRY``):

- ``inception-torchvision``: the paper's network, torchvision's ImageNet InceptionV3; each slice is
  repeated to 3 channels, resized to 299x299 (bilinear), normalised with the ImageNet mean/SD, and the
  2048-d average-pool features are returned. The network is built with ``transform_input=True``, as
  ``inception_v3(weights=IMAGENET1K_V1)`` (the original's call) builds it: that first layer maps the
  ImageNet-normalised input back to ``(x - 0.5) / 0.5``, the scaling the Google weights were trained with.
  Without it the same weights see differently scaled input and give other features.
- ``inception-fid``: torch-fidelity's port of the TensorFlow FID Inception (the standard FID network);
  slices become 8-bit RGB as that network expects, 2048-d pool features. Its input scaling
  ``(x - 128) / 128`` is fixed inside the network (no ``transform_input`` switch to get wrong).
- ``radiomics``: pyradiomics texture and first-order features of each slice on absolute intensities
  (no download needed). The features have very different scales, so the evaluation z-scores them with
  the pooled statistics of both sets before FID/KID (``standardise = True``), as FRD v0 does.

Weights are looked up in ``fidelity.weights_dir`` and then in the torch hub cache
(``$TORCH_HOME/hub/checkpoints``); nothing is ever downloaded during an evaluation. When they are absent a
:class:`WeightsMissingError` says how to get them. ``gliomagen fetch-weights`` (:mod:`gliomagen.fidelity.cli`)
downloads them with :func:`fetch_all` (the Dockerfile runs it at build time).
"""

from __future__ import annotations

import logging
import multiprocessing as mp
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from gliomagen.runtime import resolve_device

log = logging.getLogger(__name__)


class WeightsMissingError(FileNotFoundError):
    """The pretrained weights of an extractor are not on this machine."""


@dataclass(frozen=True)
class WeightsSpec:
    """Where an extractor's weights come from.

    Args:
        filename: file name in the torch hub cache (as ``torch.hub`` saves it) or in ``weights_dir``.
        url: where ``gliomagen fetch-weights`` downloads it from.
    """

    filename: str
    url: str


TORCHVISION_INCEPTION = WeightsSpec(
    "inception_v3_google-0cc3c7bd.pth", "https://download.pytorch.org/models/inception_v3_google-0cc3c7bd.pth"
)
FID_INCEPTION = WeightsSpec(
    "weights-inception-2015-12-05-6726825d.pth",
    "https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/weights-inception-2015-12-05-6726825d.pth",
)


def weight_search_dirs(weights_dir: str | Path | None = None) -> list[Path]:
    """Folders searched for weights, in order: ``weights_dir`` (if given), the torch hub cache."""
    dirs = [Path(weights_dir).expanduser()] if weights_dir else []
    return [*dirs, Path(torch.hub.get_dir()) / "checkpoints"]


def find_weights(spec: WeightsSpec, weights_dir: str | Path | None = None, extractor: str = "") -> Path:
    """The local weights file of ``spec`` (a file check only: never a download, so never a hang).

    Raises:
        WeightsMissingError: naming the folders searched and how to obtain the file.
    """
    searched = weight_search_dirs(weights_dir)
    for folder in searched:
        candidate = folder / spec.filename
        if candidate.is_file():
            return candidate
    where = ", ".join(str(d) for d in searched)
    raise WeightsMissingError(
        f"weights for extractor {extractor!r} not found: {spec.filename} is in none of [{where}].\n"
        f"Get them on a machine with internet with `gliomagen fetch-weights` "
        f"(the Docker image does this at build time), or download {spec.url} and put the file into "
        f"fidelity.weights_dir (e.g. --set fidelity.weights_dir=/path/to/weights). Offline, use the "
        f"'radiomics' extractor, which needs no weights."
    )


# ------------------------------------------------------------------------------------------ interface
class FeatureExtractor(ABC):
    """Maps a stack of 2D slices ``(N, H, W)`` with values in [0, 1] to features ``(N, D)``."""

    name: str = ""
    description: str = ""
    #: z-score features before FID/KID (hand-crafted, mixed-scale features)
    standardise: bool = False
    #: what else determines the features (e.g. the weights file); part of the feature-cache key
    identity: str = ""

    @abstractmethod
    def extract(self, slices: np.ndarray, progress: bool = True) -> np.ndarray:
        """Features of every slice (float32 ``(N, D)``)."""


class _TorchExtractor(FeatureExtractor):
    """A network applied to batches of slices (never one slice per forward pass)."""

    net: torch.nn.Module  # built by the subclass

    def __init__(self, batch_size: int, device: str) -> None:
        self.batch_size = batch_size
        self.device = resolve_device(device)

    @abstractmethod
    def _forward(self, batch: torch.Tensor) -> torch.Tensor:
        """Features of a ``(B, 1, H, W)`` float batch in [0, 1]."""

    @torch.no_grad()
    def extract(self, slices: np.ndarray, progress: bool = True) -> np.ndarray:
        data = torch.as_tensor(np.clip(np.asarray(slices, np.float32), 0.0, 1.0)).unsqueeze(1)
        out = []
        for start in tqdm(
            range(0, len(data), self.batch_size),
            desc=self.name,
            unit="batch",
            disable=not progress,
            leave=False,
        ):
            batch = data[start : start + self.batch_size].to(self.device)
            out.append(self._forward(batch).float().cpu())
        return torch.cat(out).numpy() if out else np.zeros((0, 2048), np.float32)


class TorchvisionInception(_TorchExtractor):
    name = "inception-torchvision"
    description = (
        "torchvision ImageNet InceptionV3 (IMAGENET1K_V1, transform_input=True as its weights enum sets it), "
        "slice repeated to 3 channels, 299x299 bilinear, ImageNet normalisation (which transform_input maps to "
        "2x-1), 2048-d average-pool features (the paper's extractor)"
    )
    MEAN = (0.485, 0.456, 0.406)
    STD = (0.229, 0.224, 0.225)

    def __init__(self, batch_size: int = 64, device: str = "auto", weights_dir: str | None = None) -> None:
        super().__init__(batch_size, device)
        path = find_weights(TORCHVISION_INCEPTION, weights_dir, self.name)
        self.identity = f"{path}:{path.stat().st_size}:{path.stat().st_mtime_ns}"
        from torchvision.models import inception_v3  # type: ignore[import-untyped]

        # torchvision's inception_v3(weights=IMAGENET1K_V1), which the original called, switches on
        # transform_input; building with weights=None and loading the file afterwards would leave it off
        net = inception_v3(weights=None, aux_logits=True, transform_input=True, init_weights=False)
        net.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
        net.fc = torch.nn.Identity()  # the 2048-d pool output instead of the 1000 class logits
        self.net = net.eval().to(self.device)
        self.mean = torch.tensor(self.MEAN, device=self.device).view(1, 3, 1, 1)
        self.std = torch.tensor(self.STD, device=self.device).view(1, 3, 1, 1)

    def _forward(self, batch: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(batch.repeat(1, 3, 1, 1), size=(299, 299), mode="bilinear", align_corners=False)
        return self.net((x - self.mean) / self.std)


class FidInception(_TorchExtractor):
    name = "inception-fid"
    description = (
        "torch-fidelity FID InceptionV3 (TensorFlow 2015-12-05 weights), slice as 8-bit RGB, resized to "
        "299x299 inside the network, 2048-d pool features (the standard FID network)"
    )

    def __init__(self, batch_size: int = 64, device: str = "auto", weights_dir: str | None = None) -> None:
        super().__init__(batch_size, device)
        path = find_weights(FID_INCEPTION, weights_dir, self.name)
        self.identity = f"{path}:{path.stat().st_size}:{path.stat().st_mtime_ns}"
        from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

        net = FeatureExtractorInceptionV3(
            "inception-v3-compat", ["2048"], feature_extractor_weights_path=str(path)
        )
        self.net = net.eval().to(self.device)

    def _forward(self, batch: torch.Tensor) -> torch.Tensor:
        rgb = (batch * 255).round().to(torch.uint8).repeat(1, 3, 1, 1)
        return self.net(rgb)[0]


# -------------------------------------------------------------------------------------------- radiomics
#: pyradiomics settings: absolute intensities in [0, 1] binned in 1/32 steps (no per-slice normalisation,
#: so a globally darker synthetic slice *is* different), the whole slice as region (corner voxel excluded to
#: avoid pyradiomics' single-label bug, as frd-score does), 2D texture matrices.
RADIOMICS_SETTINGS: dict[str, object] = {
    "binWidth": 1 / 32,
    "voxelArrayShift": 0,
    "force2D": True,
    "force2Ddimension": 0,
    "label": 1,
    "minimumROIDimensions": 1,
    "normalize": False,
}
RADIOMICS_CLASSES: tuple[str, ...] = ("firstorder", "glcm", "glrlm", "glszm", "gldm", "ngtdm")

_worker_extractor = None


def _make_radiomics_extractor() -> object:
    from radiomics import featureextractor, setVerbosity

    setVerbosity(60)  # pyradiomics' own handler; the logger itself also propagates to the root logger
    logging.getLogger("radiomics").setLevel(logging.ERROR)
    extractor = featureextractor.RadiomicsFeatureExtractor(**RADIOMICS_SETTINGS)
    extractor.disableAllFeatures()
    for name in RADIOMICS_CLASSES:
        extractor.enableFeatureClassByName(name)
    return extractor


def radiomics_of_slice(slice2d: np.ndarray, extractor: object | None = None) -> tuple[list[str], np.ndarray]:
    """pyradiomics features of one 2D slice: (names, float64 values)."""
    import SimpleITK as sitk

    extractor = extractor or _make_radiomics_extractor()
    image = sitk.GetImageFromArray(np.clip(slice2d, 0.0, 1.0).astype(np.float32)[None])
    region = np.ones((1, *slice2d.shape), np.uint8)
    region[0, 0, 0] = 0
    result = extractor.execute(image, sitk.GetImageFromArray(region))  # type: ignore[attr-defined]
    names = [k for k in result if not k.startswith("diagnostics")]
    return names, np.asarray([float(result[k]) for k in names], np.float64)


def _radiomics_worker(slice2d: np.ndarray) -> np.ndarray:
    global _worker_extractor
    if _worker_extractor is None:
        _worker_extractor = _make_radiomics_extractor()
    return radiomics_of_slice(slice2d, _worker_extractor)[1]


class RadiomicsExtractor(FeatureExtractor):
    name = "radiomics"
    description = (
        "pyradiomics first-order + GLCM/GLRLM/GLSZM/GLDM/NGTDM features of each whole slice (absolute "
        "intensities, bin width 1/32), z-scored with the pooled real+generated statistics (no downloaded weights)"
    )
    standardise = True

    def __init__(self, workers: int = 1, **_: object) -> None:
        try:
            import radiomics  # noqa: F401
        except ImportError as exc:
            raise ImportError(
                "the 'radiomics' extractor needs pyradiomics, which has no wheel for Python 3.11: install it "
                "with `pip install versioneer numpy && pip install --no-build-isolation pyradiomics==3.0.1`"
            ) from exc
        self.workers = workers
        self.names = radiomics_of_slice(np.random.default_rng(0).random((16, 16)))[0]

    def extract(self, slices: np.ndarray, progress: bool = True) -> np.ndarray:
        data = np.asarray(slices, np.float32)
        out = np.zeros((len(data), len(self.names)), np.float32)
        # all-zero (padding) slices have identical features: extract them once
        blank = ~data.reshape(len(data), -1).any(axis=1)
        if blank.any():
            out[blank] = _radiomics_worker(np.zeros(data.shape[1:], np.float32))
        todo = np.flatnonzero(~blank)
        bar = tqdm(total=len(todo), desc=self.name, unit="slice", disable=not progress, leave=False)
        if self.workers > 1 and len(todo) > 1:
            with mp.get_context("fork").Pool(self.workers) as pool:
                for i, row in zip(
                    todo, pool.imap(_radiomics_worker, list(data[todo]), chunksize=8), strict=True
                ):
                    out[i] = row
                    bar.update()
        else:
            for i in todo:
                out[i] = _radiomics_worker(data[i])
                bar.update()
        bar.close()
        return out


# --------------------------------------------------------------------------------------------- registry
@dataclass(frozen=True)
class ExtractorEntry:
    """One registered extractor: its constructor and (if any) the weights it needs."""

    factory: Callable[..., FeatureExtractor]
    weights: WeightsSpec | None
    description: str


REGISTRY: dict[str, ExtractorEntry] = {
    "inception-torchvision": ExtractorEntry(
        TorchvisionInception, TORCHVISION_INCEPTION, TorchvisionInception.description
    ),
    "inception-fid": ExtractorEntry(FidInception, FID_INCEPTION, FidInception.description),
    "radiomics": ExtractorEntry(RadiomicsExtractor, None, RadiomicsExtractor.description),
}


def build_extractor(
    name: str, batch_size: int = 64, device: str = "auto", weights_dir: str | None = None, workers: int = 1
) -> FeatureExtractor:
    """Instantiate a registered extractor.

    Raises:
        KeyError: unknown name (the message lists the registry).
        WeightsMissingError: its weights are not on this machine.
    """
    if name not in REGISTRY:
        raise KeyError(f"unknown feature extractor {name!r}; known: {', '.join(REGISTRY)}")
    entry = REGISTRY[name]
    if entry.weights is not None:
        return entry.factory(batch_size=batch_size, device=device, weights_dir=weights_dir)
    return entry.factory(workers=workers)


def fetch_all(target_dir: str | Path | None = None, names: Sequence[str] | None = None) -> list[Path]:
    """Download the weights of every registered extractor that needs any (needs internet).

    Args:
        target_dir: destination folder; default the torch hub cache, where evaluations look.
        names: only these extractors.
    """
    folder = Path(target_dir) if target_dir else Path(torch.hub.get_dir()) / "checkpoints"
    folder.mkdir(parents=True, exist_ok=True)
    done = []
    for name, entry in REGISTRY.items():
        if entry.weights is None or (names and name not in names):
            continue
        dest = folder / entry.weights.filename
        if not dest.is_file():
            log.info("downloading %s weights from %s", name, entry.weights.url)
            torch.hub.download_url_to_file(entry.weights.url, str(dest), progress=True)
        done.append(dest)
    return done
