"""Feature extractors: the missing-weights error, real weight loading, radiomics features."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

from gliomagen.fidelity import features as FT


@pytest.fixture()
def empty_torch_hub(tmp_path: Path) -> Iterator[Path]:
    """A torch hub cache without any weights (whatever this machine's cache holds)."""
    old = torch.hub.get_dir()
    torch.hub.set_dir(str(tmp_path / "hub"))
    yield tmp_path / "hub"
    torch.hub.set_dir(old)


@pytest.mark.parametrize("name", ["inception-torchvision", "inception-fid"])
def test_missing_weights_fail_fast_with_instructions(
    name: str, empty_torch_hub: Path, tmp_path: Path
) -> None:
    start = time.monotonic()
    with pytest.raises(FT.WeightsMissingError) as info:
        FT.build_extractor(name, weights_dir=str(tmp_path / "nowhere"))
    assert time.monotonic() - start < 5  # a file check, never a download attempt
    message = str(info.value)
    assert name in message
    assert FT.REGISTRY[name].weights.filename in message  # type: ignore[union-attr]
    assert "gliomagen fetch-weights" in message and "fidelity.weights_dir" in message
    assert str(tmp_path / "nowhere") in message and str(empty_torch_hub) in message


def test_unknown_extractor_lists_the_registry() -> None:
    with pytest.raises(KeyError, match="inception-fid"):
        FT.build_extractor("vgg")


@pytest.mark.slow
def test_torchvision_inception_loads_local_weights_and_batches(empty_torch_hub: Path, tmp_path: Path) -> None:
    from torchvision.models import inception_v3

    # random (not ImageNet) weights saved under the expected name: exercises the real loading path offline
    torch.manual_seed(0)
    net = inception_v3(weights=None, aux_logits=True, init_weights=False)
    torch.save(net.state_dict(), tmp_path / FT.TORCHVISION_INCEPTION.filename)
    extractor = FT.build_extractor(
        "inception-torchvision", batch_size=2, device="cpu", weights_dir=str(tmp_path)
    )
    slices = np.random.default_rng(0).random((3, 24, 20)).astype(np.float32)
    feats = extractor.extract(slices, progress=False)
    assert feats.shape == (3, 2048)
    assert np.isfinite(feats).all()
    # batching does not change the features (eval mode: batch norm uses running statistics)
    one = FT.build_extractor("inception-torchvision", batch_size=3, device="cpu", weights_dir=str(tmp_path))
    assert np.allclose(one.extract(slices, progress=False), feats, atol=1e-4)


@pytest.mark.slow  # builds two 27M-parameter networks: ~3 s on an idle 2-core CPU
def test_torchvision_inception_has_the_weights_enum_input_transform(tmp_path: Path) -> None:
    """The paper extractor equals torchvision's inception_v3(weights=IMAGENET1K_V1) network semantics.

    That call sets transform_input=True; here the reference is built with those flags and random weights
    (no download), fed the original's preprocessing: slice repeated to 3 channels, bilinear to 299, ImageNet
    mean/SD normalisation.
    """
    import torch.nn.functional as F
    from torchvision.models import inception_v3

    torch.manual_seed(1)
    reference = inception_v3(weights=None, aux_logits=True, transform_input=True, init_weights=False)
    torch.save(reference.state_dict(), tmp_path / FT.TORCHVISION_INCEPTION.filename)
    reference.fc = torch.nn.Identity()
    reference.eval()
    extractor = FT.build_extractor(
        "inception-torchvision", batch_size=2, device="cpu", weights_dir=str(tmp_path)
    )
    slices = np.random.default_rng(5).random((2, 40, 36)).astype(np.float32)
    ours = extractor.extract(slices, progress=False)

    x = F.interpolate(
        torch.from_numpy(slices)[:, None].repeat(1, 3, 1, 1),
        size=(299, 299),
        mode="bilinear",
        align_corners=False,
    )
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    with torch.no_grad():
        expected = reference((x - mean) / std).numpy()
        reference.transform_input = False  # the trap: same weights, no input transform
        trapped = reference((x - mean) / std).numpy()
    scale = np.linalg.norm(expected)
    assert np.linalg.norm(ours - expected) / scale < 1e-5
    assert np.linalg.norm(trapped - expected) / scale > 1e-2  # the transform matters: the test can fail


def test_radiomics_features_are_deterministic_and_worker_independent() -> None:
    rng = np.random.default_rng(1)
    slices = rng.random((4, 20, 24)).astype(np.float32)
    slices[3] = 0.0  # an empty slice must not break extraction
    single = FT.build_extractor("radiomics", workers=1)
    feats = single.extract(slices, progress=False)
    assert feats.shape == (4, len(single.names)) and len(single.names) > 50
    assert np.isfinite(feats).all()
    assert np.array_equal(feats[3], FT.radiomics_of_slice(np.zeros((20, 24)))[1].astype(np.float32))
    parallel = FT.build_extractor("radiomics", workers=2).extract(slices, progress=False)
    assert np.array_equal(feats, parallel)
    assert not np.allclose(feats[0], feats[1])
    assert FT.RadiomicsExtractor.standardise


def test_radiomics_depends_on_absolute_intensity() -> None:
    # no per-slice normalisation: a darker copy of a slice has different first-order features
    extractor = FT.build_extractor("radiomics")
    base = np.random.default_rng(2).random((1, 16, 16)).astype(np.float32)
    feats = extractor.extract(np.concatenate([base, 0.5 * base]), progress=False)
    mean_col = extractor.names.index("original_firstorder_Mean")
    assert feats[1, mean_col] == pytest.approx(0.5 * feats[0, mean_col], rel=1e-4)
