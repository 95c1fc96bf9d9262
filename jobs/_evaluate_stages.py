"""The stages of the evaluation pipeline, as callables Ray Data maps over pyarrow batches.

    face table rows --explode--> (pair, role, crop) rows --group by bucket--> one row per pair
      --outputs (read a folder, or Generate with a checkpoint)--> --Score--> pickled EvalStats

A pair whose faces or output cannot be read travels on with an `error` and is counted, never
dropped. Nothing here imports Ray: jobs/evaluate.py wires these into a Dataset (and the tests call
them directly). Pickle only carries our own statistics between our own processes.
"""

from __future__ import annotations

import json
import pickle
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from evaluation.protocol import Pair
from evaluation.report import Example
from sfsr.io import storage
from sfsr.io.images import ImageError, decode_image, decode_png, encode_png, resize_square

ROLES = ("identity", "background", "driver")
PAIR_ROW = pa.schema(
    [
        ("pair_id", pa.string()),
        ("index", pa.int64()),
        ("bucket", pa.int64()),
        ("identity_png", pa.binary()),
        ("identity_mask", pa.binary()),
        ("background_png", pa.binary()),
        ("background_mask", pa.binary()),
        ("driver_png", pa.binary()),
        ("output_png", pa.binary()),
        ("error", pa.string()),
    ]
)
EXPLODED = pa.schema(
    [
        ("pair_id", pa.string()),
        ("role", pa.string()),
        ("bucket", pa.int64()),
        ("image", pa.binary()),
        ("mask", pa.binary()),
    ]
)


def role_refs(pairs: list[Pair], buckets: int) -> dict[str, list[tuple[str, str, int]]]:
    """face_id -> [(pair_id, role, bucket)] for every face a pair uses."""
    refs: dict[str, list[tuple[str, str, int]]] = {}
    for p in pairs:
        for role in ROLES:
            fid = getattr(p, role)
            if fid is not None:
                refs.setdefault(fid, []).append((p.pair_id, role, p.index % buckets))
    return refs


def explode_faces(batch: pa.Table, refs: dict) -> pa.Table:
    """Face-table rows (face_id, image, face_mask) -> one row per (pair, role) that uses the face."""
    rows = []
    for fid, image, mask in zip(*(batch.column(c).to_pylist() for c in ("face_id", "image", "face_mask"))):
        for pair_id, role, bucket in refs.get(fid, ()):
            rows.append({"pair_id": pair_id, "role": role, "bucket": bucket, "image": image, "mask": mask})
    return pa.Table.from_pylist(rows, schema=EXPLODED)


def assemble_pairs(group: pa.Table, pairs: dict) -> pa.Table:
    """All (pair, role) rows of one bucket -> one row per pair of that bucket; a pair missing a
    face gets an error (its face is not in the table)."""
    got: dict[str, dict] = {}
    for r in group.to_pylist():
        got.setdefault(r["pair_id"], {})[r["role"]] = (r["image"], r["mask"])
    buckets = set(group.column("bucket").to_pylist())
    out = []
    for pid, p in pairs.items():
        if p["bucket"] not in buckets:
            continue
        roles = got.get(pid, {})
        needed = [r for r in ROLES if p[r] is not None]
        missing = [r for r in needed if r not in roles]
        row = {
            "pair_id": pid,
            "index": p["index"],
            "bucket": p["bucket"],
            "output_png": None,
            "error": f"face not in the table: {', '.join(f'{r} {p[r]}' for r in missing)}" if missing else None,
        }
        for role in ROLES:
            img, mask = roles.get(role, (None, None))
            row[f"{role}_png"] = img
            if role != "driver":
                row[f"{role}_mask"] = mask
        out.append(row)
    return pa.Table.from_pylist(out, schema=PAIR_ROW)


def read_outputs(batch: pa.Table, outputs: dict[str, str], crop_size: int) -> pa.Table:
    """Fill output_png from a folder of images named <pair_id>.<ext> (`outputs`: pair_id -> uri),
    resized to the table's crop size when another method wrote another size. A missing or
    unreadable output becomes the pair's error."""
    pngs, errors = [], []
    for pid, err in zip(batch.column("pair_id").to_pylist(), batch.column("error").to_pylist()):
        png = None
        if err is None:
            uri = outputs.get(pid)
            if uri is None:
                err = "missing output: no <pair_id>.<ext> file for this pair"
            else:
                try:
                    png = encode_png(resize_square(decode_image(storage.read_bytes(uri), source=uri), crop_size))
                except (ImageError, storage.StorageError) as e:
                    err = f"bad output {uri}: {e}"
        pngs.append(png)
        errors.append(err)
    return batch.set_column(
        batch.schema.get_field_index("output_png"), "output_png", pa.array(pngs, pa.binary())
    ).set_column(batch.schema.get_field_index("error"), "error", pa.array(errors, pa.string()))


class Generate:
    """Actor: the model's outputs for a batch of pairs (sfsr.generate.Generator, built here)."""

    def __init__(self, checkpoint: str, task: str, pairs: dict, crop_size: int, device: str = "cpu") -> None:
        from sfsr.generate import Generator

        self.gen = Generator.from_pretrained(checkpoint, device=device)
        self.task, self.pairs, self.crop_size = task, pairs, crop_size

    def __call__(self, batch: pa.Table) -> pa.Table:
        rows = batch.to_pylist()
        ok = [r for r in rows if r["error"] is None]
        if ok:
            ident = np.stack([decode_png(r["identity_png"]) for r in ok])
            back = np.stack([decode_png(r["background_png"]) for r in ok])
            masks = np.stack([decode_png(r["background_mask"]) for r in ok])  # the face region to generate
            seeds = [self.pairs[r["pair_id"]]["seed"] for r in ok]
            words = [self.pairs[r["pair_id"]]["word"] for r in ok]
            driver = None if words[0] is not None else np.stack([decode_png(r["driver_png"]) for r in ok])
            if self.task == "swap":
                out = self.gen.swap(ident, back, masks=masks, seeds=seeds)
            elif self.task == "reenact":
                out = self.gen.reenact(
                    ident, driver_images=driver, words=None if driver is not None else words, masks=masks, seeds=seeds
                )
            else:
                out = self.gen.generate(
                    ident,
                    expression=list(driver) if driver is not None else words,
                    background_images=back,
                    masks=masks,
                    seeds=seeds,
                )
            for r, img in zip(ok, np.asarray(out)):
                r["output_png"] = encode_png(resize_square(np.asarray(img, np.uint8), self.crop_size))
        return pa.Table.from_pylist(rows, schema=PAIR_ROW)


@dataclass(frozen=True)
class ModelSpec:
    """What to build in each actor (picklable; calling it builds evaluation.suite.EvalModels)."""

    features: str = "auto"  # feature network name, or "none"
    fid_weights: str | None = None
    recogniser: str = "builtin"  # a face pack spec, or "judges" for synthetic faces
    pose: bool = True
    kid_capacity: int = 10_000
    gallery: tuple[np.ndarray, np.ndarray] | None = None  # (G, D) vectors, (G,) person labels
    device: str = "cpu"

    def encoders(self):  # noqa: ANN201 - a FacePack or JudgeEncoders
        if self.recogniser == "judges":
            from evaluation.synth import judge_encoders
            from sfsr.synth import load_judges

            return judge_encoders(load_judges(32))
        from sfsr.faces import open_pack

        return open_pack(self.recogniser)

    def __call__(self):  # noqa: ANN204
        from evaluation.features import load_extractor
        from evaluation.identity import make_gallery
        from evaluation.suite import EvalModels

        judges = None
        if self.recogniser == "judges":
            from sfsr.synth import load_judges

            judges = load_judges(32)
        extractor = None if self.features == "none" else load_extractor(self.features, self.fid_weights, self.device)
        gallery = None if self.gallery is None else make_gallery(*self.gallery)
        return EvalModels(
            extractor=extractor,
            pack=self.encoders(),
            judges=judges,
            gallery=gallery,
            pose=self.pose and self.recogniser != "judges",
            kid_capacity=self.kid_capacity,
        )


class EncodeIdentity:
    """Actor: identity vectors of face-table rows (face_id, image) with the evaluation recogniser."""

    def __init__(self, spec: ModelSpec) -> None:
        self.encoders = spec.encoders()

    def __call__(self, batch: pa.Table) -> pa.Table:
        from sfsr.faces.analyze import encode_crops

        crops = np.stack([decode_png(b) for b in batch.column("image").to_pylist()])
        vecs = encode_crops(self.encoders, crops)[0]
        return pa.table({"face_id": batch.column("face_id"), "vector": pa.array(list(vecs), pa.list_(pa.float32()))})


STATS_ROW = pa.schema(
    [("stats", pa.binary()), ("pairs", pa.int64()), ("examples", pa.binary()), ("errors", pa.string())]
)


class Score:
    """Actor: every metric's statistics for a batch of pairs (models built once, in __init__)."""

    def __init__(self, task: str, pairs: dict, models_fn, examples: int = 8) -> None:  # noqa: ANN001
        self.task, self.pairs, self.examples = task, pairs, examples
        self.models = models_fn()  # evaluation.suite.EvalModels, built inside the actor

    def __call__(self, batch: pa.Table) -> pa.Table:
        from evaluation.suite import PairBatch, batch_statistics

        rows = batch.to_pylist()
        errors = [{"pair_id": r["pair_id"], "reason": r["error"]} for r in rows if r["error"]]
        usable = [
            r
            for r in rows
            if r["identity_png"] is not None
            and r["background_png"] is not None
            and (r["driver_png"] is not None or self.pairs[r["pair_id"]]["driver"] is None)
        ]
        stats = None
        if usable:
            meta = [self.pairs[r["pair_id"]] for r in usable]
            ident = np.stack([decode_png(r["identity_png"]) for r in usable])
            back = np.stack([decode_png(r["background_png"]) for r in usable])
            has_out = np.array([r["output_png"] is not None for r in usable])
            outputs = np.stack(
                [
                    decode_png(r["output_png"]) if r["output_png"] is not None else back[i] * 0
                    for i, r in enumerate(usable)
                ]
            )
            drivers = [r["driver_png"] for r in usable]
            pb = PairBatch(
                self.task,
                [r["pair_id"] for r in usable],
                [m["identity_label"] for m in meta],
                ident,
                np.stack([decode_png(r["identity_mask"]) for r in usable]),
                back,
                np.stack([decode_png(r["background_mask"]) for r in usable]),
                None if any(d is None for d in drivers) else np.stack([decode_png(d) for d in drivers]),
                outputs={"model": outputs},
                output_ok={"model": has_out},
                expression_reference=_stack_opt([m.get("expression_reference") for m in meta]),
                synth_identity=_stack_opt([m.get("synth_identity") for m in meta]),
                synth_expression=_stack_opt([m.get("synth_expression") for m in meta]),
                render_plans=meta if all("render_identities" in m for m in meta) else None,
            )
            stats = batch_statistics(pb, self.models)
        shown = [
            self._example(r)
            for r in rows
            if r["index"] < self.examples and r["identity_png"] is not None and r["background_png"] is not None
        ]
        return pa.Table.from_pylist(
            [
                {
                    "stats": pickle.dumps(stats),
                    "pairs": len(rows),
                    "examples": pickle.dumps(shown),
                    "errors": json.dumps(errors),
                }
            ],
            schema=STATS_ROW,
        )

    def _example(self, r: dict) -> Example:
        """Each distinct input face under its task role name, the output, then the baselines."""
        from evaluation.protocol import ROLE_NAMES, baseline_outputs

        p, names = self.pairs[r["pair_id"]], ROLE_NAMES[self.task]
        images: dict[str, bytes] = {names["identity"]: r["identity_png"]}
        if p["background"] != p["identity"]:
            images[names["background"]] = r["background_png"]
        if r["driver_png"] is not None and p["driver"] not in (p["identity"], p["background"]):
            images[names["driver"]] = r["driver_png"]
        if r["output_png"] is not None:
            images["model"] = r["output_png"]
        one = lambda key: decode_png(r[key])[None]  # noqa: E731
        driver = one("driver_png") if r["driver_png"] is not None else None
        base = baseline_outputs(self.task, one("identity_png"), one("identity_mask"), one("background_png"), driver)
        images.update({k: encode_png(v[0]) for k, v in base.items()})
        return Example(r["pair_id"], images)


def _stack_opt(values: list) -> np.ndarray | None:
    return None if any(v is None for v in values) else np.asarray(values, np.float64)
