"""Judge networks: shipped weights meet the bars on fresh held-out faces, differentiable,
safetensors-only loading, training script smoke test."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors import safe_open

from sfsr.synth.dataset import render_batch
from sfsr.synth.factors import EXPRESSION_FACTORS, NEUTRAL_EXPRESSION, make_sample
from sfsr.synth.judges import load_judges, uint8_to_tensor, weights_paths
from sfsr.synth.render import render
from sfsr.synth.train_judges import EXPRESSION_BAR, IDENTITY_BAR, main

SIZE = 32


@pytest.fixture(scope="module")
def judges():
    torch.set_num_threads(1)
    return load_judges(SIZE)


@pytest.fixture(scope="module")
def held_out():
    # seed 777 was used by neither the shipped training run (seed 0) nor its test set (seed 1)
    n_ids = load_judges(SIZE).cfg.n_identities
    images, _, ids, exprs = render_batch(240, seed=777, n_identities=n_ids, size=SIZE, split="test")
    return images, ids, exprs


def test_shipped_weights_are_small_safetensors_with_a_card():
    weights, card_path = weights_paths(SIZE)
    assert weights.stat().st_size < 2_000_000
    with safe_open(str(weights), framework="pt") as f:
        keys = list(f.keys())
    assert any(k.startswith("identity.") for k in keys)
    assert any(k.startswith("expression.") for k in keys)
    card = json.loads(card_path.read_text())
    for field in ("command", "seed", "git_commit", "duration_s", "held_out_metrics", "config"):
        assert field in card, field
    assert card["expression_factors"] == list(EXPRESSION_FACTORS)
    assert card["config"]["size"] == SIZE


def test_identity_bar_on_fresh_held_out_batch(judges, held_out):
    images, ids, _ = held_out
    pred = judges.predict_identity_np(images)
    top1 = float((pred == ids).mean())
    assert top1 >= IDENTITY_BAR, f"held-out identity top-1 {top1:.3f} < {IDENTITY_BAR}"


def test_expression_error_well_under_spread(judges, held_out):
    images, _, exprs = held_out
    pred = judges.expression_np(images)
    assert pred.shape == exprs.shape == (len(images), len(EXPRESSION_FACTORS))
    ratio = np.abs(pred - exprs).mean(0) / exprs.std(0)  # (F,) MAE / spread
    assert ratio.mean() < EXPRESSION_BAR, dict(zip(EXPRESSION_FACTORS, ratio.round(3)))
    assert ratio.max() < 0.5, dict(zip(EXPRESSION_FACTORS, ratio.round(3)))


def test_embedding_separates_identities(judges, held_out):
    images, ids, _ = held_out
    emb = judges.identity_embedding_np(images)
    assert np.allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-4)
    sim = emb @ emb.T
    same = (ids[:, None] == ids[None, :]) & ~np.eye(len(ids), dtype=bool)
    diff = ids[:, None] != ids[None, :]
    assert sim[same].mean() - sim[diff].mean() > 0.5


def test_forward_is_differentiable_wrt_input(judges):
    img, _ = render(make_sample(3, NEUTRAL_EXPRESSION, None, 5), SIZE)
    x = uint8_to_tensor(img).requires_grad_(True)  # (1, 3, S, S)
    target = torch.tensor([3])
    loss = torch.nn.functional.cross_entropy(judges.identity(x), target)
    loss = loss + judges.expression(x).square().sum() + judges.identity_embedding(x).sum()
    loss.backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    assert all(p.grad is None for p in judges.parameters())  # judges stay frozen


def test_input_validation_and_resizing(judges):
    with pytest.raises(ValueError, match="expected"):
        judges.identity(torch.zeros(2, 3, 64, 64))
    with pytest.raises(ValueError, match="uint8"):
        judges.expression_np(np.zeros((2, 32, 32, 3), np.float32))
    big, _ = render(make_sample(9, NEUTRAL_EXPRESSION, None, 5), 64)
    small, _ = render(make_sample(9, NEUTRAL_EXPRESSION, None, 5), SIZE)
    e_big = judges.identity_embedding_np(big[None])  # resized to 32 px inside
    e_small = judges.identity_embedding_np(small[None])
    assert float((e_big * e_small).sum()) > 0.9


def test_missing_size_names_the_fix(tmp_path):
    with pytest.raises(FileNotFoundError, match="train_judges --size 48"):
        load_judges(48)
    with pytest.raises(FileNotFoundError, match="none"):
        load_judges(SIZE, folder=tmp_path)


def test_training_smoke_test_writes_loadable_weights(tmp_path):
    card = main(["--smoke-test", "--out", str(tmp_path)])
    metrics = card["held_out_metrics"]
    # 20 identities: chance is 0.05; four seconds of training read 0.70 (December 2026)
    assert metrics["n_test"] == 200 and metrics["identity_top1"] >= 0.3
    assert metrics["embedding_cos_same"] > metrics["embedding_cos_different"] + 0.2
    assert card["train_config"]["identities"] == 20
    reloaded = load_judges(SIZE, folder=tmp_path)
    assert reloaded.cfg.n_identities == 20
    x = torch.zeros(1, 3, SIZE, SIZE)
    assert reloaded.identity(x).shape == (1, 20)
    assert reloaded.expression(x).shape == (1, len(EXPRESSION_FACTORS))
