"""Face-table rows (sfsr/io/schema.py) -> the tensor batch `train_step` takes.

Accepts what Ray Data hands a train loop: a pyarrow Table / RecordBatch, a pandas DataFrame, or
a dict of columns (lists or numpy arrays, Ray's "numpy" batch format). Only the columns image,
face_mask, identity and expression are read (plus labels.identity_label when identity means are
given).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import cv2
import numpy as np
import torch

from sfsr.io.images import decode_png, resize_square

NEEDED = ("image", "face_mask", "identity", "expression")


def _columns(batch: Any) -> dict[str, list]:
    """Column name -> python/numpy values, whatever container the batch came in."""
    if hasattr(batch, "to_pydict") and hasattr(batch, "schema"):  # pyarrow Table / RecordBatch
        names = batch.schema.names
        return {n: batch.column(n).to_pylist() for n in names if n in NEEDED or n == "labels"}
    if hasattr(batch, "to_dict") and hasattr(batch, "columns"):  # pandas DataFrame
        return {n: list(batch[n]) for n in batch.columns if n in NEEDED or n == "labels"}
    if isinstance(batch, Mapping):
        return {n: list(v) for n, v in batch.items() if n in NEEDED or n == "labels"}
    raise TypeError(
        f"batch_from_table_rows: got {type(batch).__name__}; pass a pyarrow Table/RecordBatch, a "
        "pandas DataFrame or a dict of columns"
    )


def _label(labels: Any) -> str | None:
    if isinstance(labels, Mapping):
        return labels.get("identity_label")
    return None


def batch_from_table_rows(
    batch: Any,
    size: int,
    *,
    identity_means: Mapping[str, np.ndarray] | None = None,
    device: str | torch.device = "cpu",
) -> dict[str, torch.Tensor]:
    """Decode a face-table batch into {image (B, 3, S, S) float in [-1, 1], mask (B, 1, S, S)
    float in {0, 1}, identity (B, Di) float32, expression (B, De) float32}.

    Crops of another size are resized to `size` (INTER_AREA; masks thresholded at half).
    identity_means: identity_label -> mean identity vector (see identity_label_means). Rows whose
    label has a mean are conditioned on it instead of their own vector, so the identity
    condition carries who the person is and not this photo's expression."""
    cols = _columns(batch)
    missing = [c for c in NEEDED if c not in cols]
    if missing:
        raise ValueError(
            f"face-table batch: missing column(s) {missing}; a face table written by jobs.ingest has {NEEDED}"
        )
    n = len(cols["image"])
    if n == 0:
        raise ValueError("face-table batch: no rows; drop empty batches before train_step")
    images, masks = [], []
    for i in range(n):
        img = decode_png(cols["image"][i], source=f"face-table row {i} column image")
        if img.ndim != 3:
            raise ValueError(f"face-table row {i}: image is greyscale {img.shape}; crops are RGB")
        m = decode_png(cols["face_mask"][i], source=f"face-table row {i} column face_mask")
        m = m if m.ndim == 2 else m[..., 0]
        images.append(resize_square(img, size, enlarge=cv2.INTER_AREA))
        masks.append(resize_square(m, size, enlarge=cv2.INTER_AREA))
    ident = np.asarray([np.asarray(v, np.float32) for v in cols["identity"]], np.float32)  # (B, Di)
    expr = np.asarray([np.asarray(v, np.float32) for v in cols["expression"]], np.float32)  # (B, De)
    if identity_means and "labels" in cols:
        for i, lab in enumerate(cols["labels"]):
            key = _label(lab)
            if key is not None and key in identity_means:
                ident[i] = identity_means[key]
    img_t = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float() / 127.5 - 1.0
    mask_t = (torch.from_numpy(np.stack(masks)).float() >= 128).float()[:, None]
    return {
        "image": img_t.to(device),
        "mask": mask_t.to(device),
        "identity": torch.from_numpy(ident).to(device),
        "expression": torch.from_numpy(expr).to(device),
    }


def identity_label_means(table: Any) -> dict[str, np.ndarray]:
    """identity_label -> mean identity vector (renormalised to unit length, as encoder
    embeddings are) over the rows of a face table (pyarrow Table or pandas DataFrame)."""
    cols = _columns(table)
    if "labels" not in cols or "identity" not in cols:
        raise ValueError("identity_label_means: the table needs the columns labels and identity")
    sums: dict[str, np.ndarray] = {}
    for lab, vec in zip(cols["labels"], cols["identity"]):
        key = _label(lab)
        if key is None:
            continue
        v = np.asarray(vec, np.float64)
        sums[key] = sums.get(key, 0.0) + v
    return {k: (v / max(np.linalg.norm(v), 1e-12)).astype(np.float32) for k, v in sums.items()}
