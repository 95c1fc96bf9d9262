"""bench/train_gpu.py: its FLOP counter counts what the formulas say, and --smoke runs the
latent256 step (tiny VAE and UNet) on the CPU, printing the table and the ratio last."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

BENCH = Path(__file__).resolve().parents[2] / "bench" / "train_gpu.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_train_gpu", BENCH)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclass looks its module up while being defined
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        sys.modules.pop(spec.name, None)


def test_a_linear_layer_forward_and_backward_counts_6_in_out_batch(bench) -> None:
    batch, d_in, d_out = 8, 64, 48
    layer = torch.nn.Linear(d_in, d_out)
    x = torch.randn(batch, d_in, requires_grad=True)  # backward: grad of the input and of the weight

    def step() -> None:
        layer(x).sum().backward()

    assert bench.count_flops(step) == 6 * d_in * d_out * batch
    with torch.no_grad():
        assert bench.count_flops(lambda: layer(x)) == 2 * d_in * d_out * batch  # forward alone


def test_cpu_attention_is_counted_not_zero(bench) -> None:
    """torch's counter has no formula for the CPU flash-attention kernel; the bench adds one."""
    b, h, q_len, kv_len, d = 2, 4, 16, 24, 8
    q = torch.randn(b, h, q_len, d)
    k, v = torch.randn(b, h, kv_len, d), torch.randn(b, h, kv_len, d)
    # QK^T and (softmax) V: two matmuls of 2 * L * S * D FLOPs per head
    assert bench.count_flops(lambda: F.scaled_dot_product_attention(q, k, v)) == 4 * b * h * q_len * kv_len * d


def test_peak_flops_table_and_override(bench) -> None:
    cpu = torch.device("cpu")
    assert bench.peak_flops(cpu, None) is None  # MFU n/a on a CPU
    assert bench.peak_flops(cpu, 2.5) == 2.5e12
    assert bench.PEAK_BF16["H100"] == bench.PEAK_BF16["H200"] == 989e12


def test_smoke_prints_the_table_and_the_ratio_last(bench, tmp_path, capsys) -> None:
    report = bench.main(["--smoke", "--out", str(tmp_path)])
    out = capsys.readouterr().out.strip().splitlines()
    base, candidate = report["results"]
    assert (base["variant"], candidate["variant"]) == ("denoise", "recovery")
    for r in (base, candidate):
        assert r["samples_per_s"] > 0 and r["peak_memory_mib"] > 0 and r["mfu"] is None
    assert base["flops_per_step"] > 0
    # the recovery losses add UNet passes, a VAE decode and the FER reader to the same step
    assert candidate["flops_per_step"] > base["flops_per_step"]
    assert out[0].startswith("device: cpu") and "MFU n/a" in out[0]
    assert any(line.startswith("denoise ") for line in out) and any(line.startswith("recovery ") for line in out)
    ratio = report["ratio_recovery_over_denoise"]
    assert out[-1] == f"ratio recovery / denoise step time: {ratio:.2f}x"
    saved = json.loads((tmp_path / "train_gpu-smoke.json").read_text())
    assert saved["results"][0]["flops_per_step"] == base["flops_per_step"]
    assert (tmp_path / "train_gpu-smoke.txt").read_text().strip().splitlines() == out
