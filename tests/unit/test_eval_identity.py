"""Identity and pose metrics on real photos with the builtin pack, and their bookkeeping."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from evaluation.identity import (
    identity_score,
    identity_statistics,
    make_gallery,
    merge_identity,
    retrieval_ranks,
    same_recogniser,
)
from evaluation.pose import crop_poses, merge_pose, pose_statistics
from tests.fixtures.photos import PEOPLE, load

NAMES = sorted(PEOPLE)  # astronaut, biden, obama, obama2, obama3


@pytest.fixture(scope="module")
def pack():
    from sfsr.faces import open_pack

    return open_pack("builtin")


@pytest.fixture(scope="module")
def crops(pack):
    """Aligned crops of each photo, and of a mirrored, 0.7x copy of it (a new query image)."""
    from sfsr.faces import analyze_image

    originals, queries = [], []
    for name in NAMES:
        img = load(name)
        originals.append(analyze_image(pack, img)[0].crop)
        q = cv2.resize(np.ascontiguousarray(img[:, ::-1]), None, fx=0.7, fy=0.7, interpolation=cv2.INTER_AREA)
        queries.append(analyze_image(pack, q)[0].crop)
    return np.stack(originals), np.stack(queries)


@pytest.fixture(scope="module")
def embeddings(pack, crops):
    from sfsr.faces import encode_crops

    return encode_crops(pack, crops[0])[0], encode_crops(pack, crops[1])[0]


def test_retrieval_finds_the_person_on_real_photos(embeddings):
    labels = [PEOPLE[n] for n in NAMES]
    gallery = make_gallery(embeddings[0], labels)
    # new images of every person retrieve that person first
    np.testing.assert_array_equal(retrieval_ranks(gallery, embeddings[1], labels), np.ones(len(NAMES)))
    # leave-one-out: each Obama photo finds another Obama photo first; Biden and Collins have no
    # second photo, so there is nothing to find (rank inf), which the pack cannot change
    loo = retrieval_ranks(gallery, embeddings[0], labels, exclude=np.eye(len(NAMES), dtype=bool))
    assert [loo[NAMES.index(n)] for n in ("obama.jpg", "obama2.jpg", "obama3.jpg")] == [1.0, 1.0, 1.0]
    assert np.isinf(loo[NAMES.index("biden.jpg")]) and np.isinf(loo[NAMES.index("astronaut.png")])


def test_identity_statistics_on_real_photos(embeddings):
    labels = [PEOPLE[n] for n in NAMES]
    gallery = make_gallery(embeddings[0], labels)
    # "outputs" = the new images, "sources" = the originals: same person in every pair
    same = identity_score(identity_statistics(embeddings[1], embeddings[0], labels, gallery, "dlib"))
    # pairs of two different people: astronaut-biden, biden-obama, obama-astronaut, ...
    src = [1, 2, 0, 1, 0]
    other = identity_score(
        identity_statistics(embeddings[1], embeddings[0][src], [labels[i] for i in src], gallery, "dlib")
    )
    assert same["retrieval_top1"] == 1.0 and other["retrieval_top1"] == 0.0
    assert same["cosine"]["min"] > other["cosine"]["max"] - 0.05
    assert same["cosine"]["mean"] > 0.93 and other["cosine"]["mean"] < 0.88


def test_retrieval_ranks_ties_absent_labels_and_missing():
    g = make_gallery(np.array([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]]), ["a", "b", "c"])
    q = np.array([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [np.nan, np.nan]])
    ranks = retrieval_ranks(g, q, ["a", "b", "z", "a"])
    # ties go to the lower gallery index, an absent label is inf, a NaN query is NaN
    assert ranks[0] == 1 and ranks[1] == 2 and np.isinf(ranks[2]) and np.isnan(ranks[3])
    st = identity_statistics(q, q, ["a", "b", "z", "a"], g, "r")
    assert (st.top1.n, st.top1.missing, st.top1.mean, st.top5.mean) == (3, 1, 1 / 3, 2 / 3)
    assert st.cosine.n == 3 and st.cosine.missing == 1


@pytest.mark.parametrize("shards", [1, 2, 5])
@pytest.mark.parametrize("batch", [1, 7, 64])
def test_identity_statistics_merge_exactly(batch, shards):
    rng = np.random.default_rng(3)
    out, src = rng.normal(size=(40, 8)), rng.normal(size=(40, 8))
    labels = [f"p{i % 9}" for i in range(40)]
    gallery = make_gallery(src, labels)
    ref = identity_score(identity_statistics(out, src, labels, gallery, "r"))
    parts = []
    for idx in np.array_split(np.arange(40), shards):
        for j in range(0, len(idx), batch):
            i = idx[j : j + batch]
            parts.append(identity_statistics(out[i], src[i], [labels[k] for k in i], gallery, "r"))
    got = identity_score(merge_identity(*parts))
    assert got["cosine"]["histogram"] == ref["cosine"]["histogram"]
    assert abs(got["cosine"]["mean"] - ref["cosine"]["mean"]) <= 1e-12
    assert (got["retrieval_top1"], got["retrieval_top5"]) == (ref["retrieval_top1"], ref["retrieval_top5"])


def test_pose_on_real_crops_follows_a_mirror(pack, crops):
    poses = crop_poses(pack, crops[0])
    mirrored = crop_poses(pack, np.ascontiguousarray(crops[0][:, :, ::-1]))
    assert np.isfinite(poses).all() and np.isfinite(mirrored).all()
    turned = np.abs(poses[:, 0]) > 10  # a mirror negates yaw (and roll), keeps pitch
    assert turned.sum() >= 2
    assert (np.sign(poses[turned, 0]) == -np.sign(mirrored[turned, 0])).all()
    assert np.abs(poses[:, 1] - mirrored[:, 1]).max() < 6
    st = pose_statistics(poses, poses, "pnp")
    assert st.l2.n == len(NAMES) and st.l2.maximum == 0.0
    both = merge_pose(pose_statistics(mirrored[:2], poses[:2], "pnp"), pose_statistics(mirrored[2:], poses[2:], "pnp"))
    ref = pose_statistics(mirrored, poses, "pnp")
    assert abs(both.l2.mean - ref.l2.mean) < 1e-12 and both.l2.mean > 5


def test_no_face_counts_as_missing(pack):
    flat = np.full((2, 112, 112, 3), 128, np.uint8)
    poses = crop_poses(pack, flat)
    assert np.isnan(poses).all()
    st = pose_statistics(poses, np.zeros((2, 3)), "pnp")
    assert (st.l2.n, st.l2.missing) == (0, 2)


def test_same_recogniser_warning_condition():
    assert same_recogniser("dlib_resnet_v1", ["dlib_resnet_v1", "arcface"])
    assert same_recogniser("dlib_resnet_v1@1", ["dlib_resnet_v1@2"])
    assert not same_recogniser("arcface_r100", ["dlib_resnet_v1"])
