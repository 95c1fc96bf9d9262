"""The pairing protocol of face-swapping and reenactment papers, and the trivial baselines.

Face-swapping papers (FaceShifter, SimSwap, ...) score N (source, target) pairs drawn with a fixed
seed, never pairing an identity with itself; reenactment papers score (source, driver) pairs the
same way. We use one pair record for the three tasks, by the role each face plays:

    task      identity face   background face   expression from
    swap      source          target            target (driver = target)
    reenact   source          source            driver
    generate  identity        background        driver face or expression word

So every metric reads its reference the same way: identity against the identity face, expression
against the driver (or the word's target), pose and background against the background face.

Pairs depend only on (faces, task, n, seed): pair k is drawn from a generator seeded with
(seed, task, k), so the pair list never depends on how it is later sharded, and each pair carries
its own sampling seed for the generator.

Baselines, computed alongside every evaluation so each number has a floor to read against:
- swap: "copy target" (output = target: no identity transfer) and "paste source" (the source's
  face pasted into the target through the source's face mask: identity transfer by brute force);
- reenact: "copy source" (no expression transfer) and "copy driver" (expression, but the wrong
  person);
- generate: "copy background" and "paste identity".
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass

import numpy as np

TASKS = ("swap", "reenact", "generate")
_TASK_CODE = {"swap": 1, "reenact": 2, "generate": 3}
BASELINES = {
    "swap": ("copy_target", "paste_source"),
    "reenact": ("copy_source", "copy_driver"),
    "generate": ("copy_background", "paste_identity"),
}
ROLE_NAMES = {  # how reports name each face role for a task
    "swap": {"identity": "source", "background": "target", "driver": "target"},
    "reenact": {"identity": "source", "background": "source", "driver": "driver"},
    "generate": {"identity": "identity", "background": "background", "driver": "driver"},
}


@dataclass(frozen=True)
class Face:
    """What pairing needs of a face-table row."""

    face_id: str
    identity: str  # the person (labels.identity_label, a synthetic identity id, ...)


@dataclass(frozen=True)
class Pair:
    pair_id: str  # "<task>-<seed>-<index>", unique within an evaluation
    task: str
    index: int
    identity: str  # face_id whose identity the output must carry
    background: str  # face_id whose pose and background the output keeps
    driver: str | None  # face_id whose expression the output takes (None when a word is used)
    word: str | None  # expression word (generate/reenact with words)
    seed: int  # sampling seed for the generator on this pair

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)


def identity_of(labels: dict | None, face_id: str) -> tuple[str, bool]:
    """The person of a face-table row from its `labels` struct: (label, known). Synthetic rows
    use their identity id; rows without labels fall back to the face id (known=False)."""
    labels = labels or {}
    if labels.get("identity_label"):
        return str(labels["identity_label"]), True
    if labels.get("synth_params"):
        return f"synth-{json.loads(labels['synth_params'])['identity_id']}", True
    return face_id, False


def faces_from_rows(face_ids: list[str], labels: list[dict | None]) -> tuple[list[Face], list[str]]:
    """Faces for pairing from face-table columns, with warnings about unknown identities."""
    faces, unknown = [], 0
    for fid, lab in zip(face_ids, labels):
        ident, known = identity_of(lab, fid)
        unknown += not known
        faces.append(Face(fid, ident))
    warnings = []
    if unknown:
        warnings.append(
            f"{unknown} of {len(faces)} faces have no identity label: each counts as its own person, so a "
            "pair may show one person twice under different photos; label identities (labels.identity_label) "
            "for a protocol that never pairs an identity with itself"
        )
    return faces, warnings


def _rng(seed: int, task: str, index: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([int(seed) & 0xFFFFFFFF, _TASK_CODE[task], int(index)]))


def _other(rng: np.random.Generator, faces: list[Face], by_person: dict[str, list[int]], person: str) -> int:
    """A uniformly drawn face of anyone but `person`."""
    n_own = len(by_person[person])
    k = int(rng.integers(len(faces) - n_own))
    for idx in by_person[person]:  # by_person lists are sorted: skip over the excluded faces
        if idx <= k:
            k += 1
    return k


def draw_pairs(
    faces: list[Face],
    n: int,
    task: str = "swap",
    seed: int = 0,
    words: tuple[str, ...] | None = None,
    self_reenactment: bool = False,
) -> list[Pair]:
    """`n` pairs for `task`, never pairing a person with themselves (except self_reenactment,
    where the driver is another face of the same person). With `words`, reenact/generate pairs
    take an expression word instead of a driver face."""
    if task not in TASKS:
        raise ValueError(f"task={task!r}: choose one of {TASKS}")
    by_person: dict[str, list[int]] = {}
    for i, f in enumerate(faces):
        by_person.setdefault(f.identity, []).append(i)
    if len(by_person) < 2 and not self_reenactment:
        raise ValueError(
            f"pairing needs faces of at least 2 identities, got {len(by_person)} "
            f"({len(faces)} faces); add faces of other people or check the identity labels"
        )
    if self_reenactment and not any(len(v) > 1 for v in by_person.values()):
        raise ValueError("self_reenactment needs at least one person with two or more faces")
    if words is not None and (task == "swap" or not words):
        raise ValueError("words apply to reenact and generate, and need at least one word")
    pairs = []
    for k in range(int(n)):
        rng = _rng(seed, task, k)
        i = int(rng.integers(len(faces)))
        if self_reenactment:
            while len(by_person[faces[i].identity]) < 2:  # only people with a second face
                i = int(rng.integers(len(faces)))
        person = faces[i].identity
        driver: str | None = None
        word: str | None = None
        if task == "swap":
            background = faces[_other(rng, faces, by_person, person)].face_id
            driver = background
        else:
            if words is not None:
                word = words[int(rng.integers(len(words)))]
            elif self_reenactment:
                own = [j for j in by_person[person] if j != i]
                driver = faces[own[int(rng.integers(len(own)))]].face_id
            else:
                driver = faces[_other(rng, faces, by_person, person)].face_id
            background = faces[i].face_id if task == "reenact" else faces[_other(rng, faces, by_person, person)].face_id
        pair_seed = int(rng.integers(2**31))
        pairs.append(Pair(f"{task}-{seed}-{k:07d}", task, k, faces[i].face_id, background, driver, word, pair_seed))
    return pairs


def paste(face_image: np.ndarray, face_mask: np.ndarray, into: np.ndarray) -> np.ndarray:
    """The pixels of `face_image` where `face_mask` is set, `into` elsewhere: (B, H, W, 3) uint8."""
    m = np.asarray(face_mask).reshape(np.asarray(into).shape[:3]) > 0
    return np.where(m[..., None], face_image, into).astype(np.uint8)


def baseline_outputs(
    task: str, identity: np.ndarray, identity_mask: np.ndarray, background: np.ndarray, driver: np.ndarray | None
) -> dict[str, np.ndarray]:
    """The task's two trivial baselines for a batch of aligned crops (B, H, W, 3) uint8."""
    if task == "swap":
        return {"copy_target": background, "paste_source": paste(identity, identity_mask, background)}
    if task == "reenact":
        if driver is None:
            return {"copy_source": background}  # word-driven: no driver image to copy
        return {"copy_source": background, "copy_driver": driver}
    if task == "generate":
        return {"copy_background": background, "paste_identity": paste(identity, identity_mask, background)}
    raise ValueError(f"task={task!r}: choose one of {TASKS}")
