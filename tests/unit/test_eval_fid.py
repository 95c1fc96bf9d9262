"""FD/FID and KID: agreement with torchmetrics on the same network and images, independence of
batch size and sharding, the offline EfficientNet-Lite0 weights, the FID Inception's weight file."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torchmetrics.image.fid import FrechetInceptionDistance
from torchmetrics.image.kid import KernelInceptionDistance

from evaluation.features import load_extractor
from evaluation.fid import feature_moments, frechet_distance, frechet_distance_from, merge_moments
from evaluation.kid import kernel_inception_distance, kid_sample, merge_samples
from sfsr.synth import render_batch

N = 40  # images per side


@pytest.fixture(scope="module")
def extractor():
    return load_extractor()  # offline default: EfficientNet-Lite0


@pytest.fixture(scope="module")
def images():
    real = render_batch(N, seed=11, size=64)[0]
    fake = render_batch(N, seed=12, size=64, split="test")[0]
    fake[: N // 2] = (fake[: N // 2] * 0.7).astype(np.uint8)  # darker half: a clearly different set
    return real, fake


@pytest.fixture(scope="module")
def features(extractor, images):
    return extractor(images[0]), extractor(images[1])


def _nchw(a: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(a)).permute(0, 3, 1, 2)


def test_offline_network_is_a_real_imagenet_classifier(extractor):
    from PIL import Image

    from tests.fixtures.photos import photos_dir

    coffee = np.asarray(Image.open(photos_dir() / "coffee.png").convert("RGB"))
    with torch.no_grad():
        probs = extractor.net.logits(_nchw(coffee[None])).softmax(1)[0]
    # ImageNet 967 = espresso, 968 = cup: the package's weights load into our network correctly
    assert int(probs.argmax()) in (967, 968) and float(probs[967] + probs[968]) > 0.8
    assert extractor.info.dim == 1280 and not extractor.info.comparable
    assert "not comparable to published FID" in extractor.info.score_name


def test_fd_matches_torchmetrics(extractor, images, features):
    tm = FrechetInceptionDistance(feature=extractor.net)
    for i in range(0, N, 16):
        tm.update(_nchw(images[0][i : i + 16]), real=True)
        tm.update(_nchw(images[1][i : i + 16]), real=False)
    theirs = float(tm.compute())
    ours = frechet_distance(feature_moments(features[0], "e"), feature_moments(features[1], "e"))
    assert ours > 1.0  # the sets differ, so the check is not 0 vs 0
    assert abs(ours - theirs) / theirs < 1e-3


class _Double(torch.nn.Module):
    """The same network with float64 output, so torchmetrics' KID runs in float64 like ours."""

    def __init__(self, net: torch.nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).double()


@pytest.mark.parametrize("double", [True, False])
def test_kid_matches_torchmetrics(extractor, images, features, double):
    net = _Double(extractor.net) if double else extractor.net
    tm = KernelInceptionDistance(feature=net, subsets=20, subset_size=25)
    tm.update(_nchw(images[0]), real=True)
    tm.update(_nchw(images[1]), real=False)
    torch.manual_seed(5)  # torchmetrics draws subsets from the global generator
    mean, std = (float(v) for v in tm.compute())
    ours = kernel_inception_distance(
        kid_sample(features[0], np.arange(N), feature="e"),
        kid_sample(features[1], np.arange(N), feature="e"),
        subsets=20,
        subset_size=25,
        seed=5,
    )
    assert ours.mean > 1e-3
    assert abs(ours.mean - mean) / abs(mean) < 1e-3 and abs(ours.std - std) / abs(std) < 1e-3


@pytest.mark.parametrize("batch", [1, 7, 64])
def test_features_do_not_depend_on_batch_size(extractor, images, features, batch):
    imgs = images[1][:9]
    got = np.concatenate([extractor(imgs[i : i + batch]) for i in range(0, len(imgs), batch)])
    np.testing.assert_array_equal(got, features[1][:9])


@pytest.fixture(scope="module")
def reference(features):
    real, fake = features
    fd = frechet_distance(feature_moments(real, "e"), feature_moments(fake, "e"))
    kid = kernel_inception_distance(
        kid_sample(real, np.arange(N), 30, "e"), kid_sample(fake, np.arange(N), 30, "e"), subsets=10, subset_size=20
    )
    return fd, kid.mean


@pytest.mark.parametrize(("batch", "shards"), [(1, 1), (7, 1), (64, 1), (7, 2), (7, 5)])
def test_scores_do_not_depend_on_batching_or_sharding(features, reference, shards, batch):
    real, fake = features
    ref_fd, ref_kid = reference

    def reduce(feats):
        shard_stats = []
        for idx in np.array_split(np.arange(N), shards):
            parts = [
                (feature_moments(feats[i], "e"), kid_sample(feats[i], i, 30, "e"))
                for i in (idx[j : j + batch] for j in range(0, len(idx), batch))
            ]
            shard_stats.append((merge_moments(*[p[0] for p in parts]), merge_samples(*[p[1] for p in parts])))
        return merge_moments(*[s[0] for s in shard_stats]), merge_samples(*[s[1] for s in shard_stats])

    (mr, kr), (mf, kf) = reduce(real), reduce(fake)
    assert (mr.n, mf.n, kr.size, kr.n_seen) == (N, N, 30, N)  # the KID sample is bounded by its capacity
    assert abs(frechet_distance(mr, mf) - ref_fd) / ref_fd < 1e-6
    kid = kernel_inception_distance(kr, kf, subsets=10, subset_size=20)
    assert abs(kid.mean - ref_kid) / abs(ref_kid) < 1e-6


def test_kid_sample_is_exact_and_bounded():
    rng = np.random.default_rng(0)
    feats = rng.normal(size=(200, 4)).astype(np.float32)
    full = kid_sample(feats, np.arange(200), capacity=50)
    parts = merge_samples(*[kid_sample(feats[i::3], np.arange(200)[i::3], capacity=50) for i in range(3)])
    np.testing.assert_array_equal(full.keys, parts.keys)
    np.testing.assert_array_equal(full.features, parts.features)
    assert full.size == 50 and full.n_seen == 200 == parts.n_seen
    # a uniform sample: the kept keys are spread over the whole range, not the first 50
    assert full.keys.max() > 150 and full.keys.min() < 50
    with pytest.raises(ValueError, match="same key appears"):
        merge_samples(full, full)


def test_frechet_distance_closed_form():
    # 1-d Gaussians: (m1 - m2)^2 + s1 + s2 - 2 sqrt(s1 s2) = (m1 - m2)^2 + (sd1 - sd2)^2
    d = frechet_distance_from(np.array([1.0]), np.array([[4.0]]), np.array([3.0]), np.array([[9.0]]))
    assert abs(d - (4.0 + 1.0)) < 1e-12
    # identical sets score 0 even with singular covariances (n < D), up to the square roots of
    # rounding-level eigenvalues (~1e-8 each)
    m = feature_moments(np.random.default_rng(1).normal(size=(5, 16)))
    assert abs(frechet_distance(m, m)) < 1e-6 * np.trace(m.cov())


def test_moments_merge_rejects_other_networks():
    a = feature_moments(np.ones((2, 3)), "efficientnet-lite0")
    b = feature_moments(np.ones((2, 3)), "inception-v3-fid")
    with pytest.raises(ValueError, match="one feature network"):
        merge_moments(a, b)
    with pytest.raises(ValueError, match="same network"):
        frechet_distance(a, b)


def test_small_batches_keep_rows_until_they_outgrow_the_square():
    rng = np.random.default_rng(2)
    x = rng.normal(size=(50, 16))
    small = feature_moments(x[:8])
    assert small.outer is None and small.rows.shape == (8, 16)  # 8 <= 16 / 2: rows are smaller
    merged = merge_moments(*[feature_moments(x[i : i + 5]) for i in range(0, 50, 5)])
    assert merged.rows.shape[0] <= 8 and merged.outer is not None  # folded once past D/2 rows
    np.testing.assert_allclose(merged.outer_sum(), x.T @ x, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(merged.cov(), np.cov(x, rowvar=False), rtol=1e-10, atol=1e-12)
