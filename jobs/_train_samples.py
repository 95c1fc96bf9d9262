"""Training previews: a grid from a fixed handful of face-table rows, saved with each checkpoint.

Columns: the target crop, its reconstruction (own identity, expression and background), a swap
(identity of the next row), a reenactment (expression of the next row), and both at once
(identity of the row after next, expression of the next). Condition vectors come straight from
the table, so a preview needs no encoders and works for any face table.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from sfsr.io.images import decode_png


def preview_rows(table_rows: list[dict]) -> dict:
    """Plain lists for the train loop's config (they travel to every worker)."""
    return {
        "images": [r["image"] for r in table_rows],
        "masks": [r["face_mask"] for r in table_rows],
        "identity": [list(r["identity"]) for r in table_rows],
        "expression": [list(r["expression"]) for r in table_rows],
    }


def save_sample_grid(model, rows: dict, path: Path, steps: int = 20) -> None:
    from sfsr.generate import Generator

    gen = Generator(model, encoders=None, device=str(next(model.parameters()).device))
    crops = np.stack([decode_png(b) for b in rows["images"]])  # (n, S, S, 3)
    masks = np.stack([decode_png(b) for b in rows["masks"]])  # (n, S, S)
    ident = np.asarray(rows["identity"], np.float32)
    expr = np.asarray(rows["expression"], np.float32)
    n = len(crops)
    nxt, nxt2 = np.roll(np.arange(n), -1), np.roll(np.arange(n), -2)
    seeds = list(range(n))
    was_training = model.training
    model.eval()
    cols = [crops]
    for id_idx, ex_idx in ((np.arange(n), np.arange(n)), (nxt, np.arange(n)), (np.arange(n), nxt), (nxt2, nxt)):
        cols.append(gen.from_vectors(ident[id_idx], expr[ex_idx], crops, masks=masks, seeds=seeds, steps=steps))
    model.train(was_training)
    s = cols[1].shape[1]
    cols[0] = np.stack([np.asarray(Image.fromarray(c).resize((s, s))) for c in crops])
    grid = np.concatenate([np.concatenate(list(c), axis=0) for c in cols], axis=1)  # rows = samples
    Image.fromarray(grid).resize(
        (grid.shape[1] * max(1, 96 // s), grid.shape[0] * max(1, 96 // s)), Image.NEAREST
    ).save(path)
