"""sfsr.diffusion.arcface_onnx: insightface ArcFace ONNX graphs -> IResNet weights `load_arcface` reads.

The graphs are random small IResNets written by hand (tests/fixtures/arcface_onnx.py) in the ways
exporters store them; the converted torch net must compute what onnxruntime computes on the file.
"""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import helper

from sfsr.cli import main
from sfsr.diffusion.arcface import load_arcface
from sfsr.diffusion.arcface_onnx import convert_arcface_onnx
from tests.fixtures import onnx_standins as standins
from tests.fixtures.arcface_onnx import Export, iresnet_onnx, random_iresnet

VARIANTS = {
    # BatchNormalization nodes kept everywhere, Gemm, features BN kept, slopes (C, 1, 1)
    "bn-kept": ((1, 2, 1, 1), 64, Export()),
    # BNs after convs folded into conv biases, features BN folded into the Gemm, slopes (C,) + Unsqueeze
    "bn-folded": ((2, 1, 1, 1), 512, Export(fold_bn=True, prelu="c")),
    # projected shortcuts listed before the main branch; MatMul + Add; Reshape; BN epsilon 2e-5
    "shortcut-first": ((1, 2, 1, 1), 64, Export(shortcut_first=True, fc="matmul", flatten="reshape", eps=2e-5)),
}


def _write(path, model: onnx.ModelProto):
    path.write_bytes(model.SerializeToString())
    return path


def _run_onnx(path, x: np.ndarray) -> np.ndarray:
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return sess.run(None, {sess.get_inputs()[0].name: x})[0]


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_converted_net_matches_onnxruntime(tmp_path, variant):
    layers, embedding, export = VARIANTS[variant]
    net = random_iresnet(layers, embedding, seed=len(variant))
    src = _write(tmp_path / "w600k_r50.onnx", iresnet_onnx(net, export))

    done = convert_arcface_onnx(src, tmp_path / "arcface.safetensors")
    assert (done.layers, done.embedding) == (layers, embedding)

    x = np.random.default_rng(0).uniform(-1, 1, (3, 3, 112, 112)).astype(np.float32)
    expected = _run_onnx(src, x)  # (3, E)
    with torch.no_grad():
        got = load_arcface(done.path).net(torch.from_numpy(x)).numpy()
        original = net(torch.from_numpy(x)).numpy()
    diff = float(np.abs(got - expected).max())
    scale = float(np.abs(expected).max())
    print(f"{variant}: max |torch - onnxruntime| = {diff:.3g} (outputs up to {scale:.3g})")
    assert scale > 0.1 and np.std(expected[:, 0]) > 1e-3  # a real signal, different per input
    assert diff <= 1e-4 * max(1.0, scale), f"{variant}: max abs difference {diff:.3g} (outputs up to {scale:.3g})"
    # the fixture wrote the net's own function, so the conversion recovers it too
    assert np.abs(original - expected).max() <= 1e-4 * max(1.0, scale)


def test_identity_scale_bn_stands_for_folded_bn(tmp_path):
    src = _write(tmp_path / "r.onnx", iresnet_onnx(random_iresnet((1, 1, 1, 1), 64), Export(fold_bn=True)))
    net = load_arcface(convert_arcface_onnx(src, tmp_path / "r.safetensors").path).net
    bn = net.layer1[0].bn2  # folded into layer1.0.conv1: gamma 1, mean 0, var 1 - eps, beta the bias
    assert torch.equal(bn.weight, torch.ones(64)) and torch.equal(bn.running_mean, torch.zeros(64))
    assert torch.allclose(bn.running_var + bn.eps, torch.ones(64))
    assert bn.bias.abs().max() > 0.05  # the conv bias lives here


def _refused(tmp_path, model: onnx.ModelProto, name: str) -> str:
    src = _write(tmp_path / name, model)
    dest = tmp_path / "out" / "arcface.safetensors"
    with pytest.raises(ValueError) as e:
        convert_arcface_onnx(src, dest)
    assert str(src) in str(e.value)
    assert not dest.exists() and not list(tmp_path.rglob("*.safetensors*"))  # no partial file either
    return str(e.value)


def test_detector_is_refused_naming_file_and_input(tmp_path):
    msg = _refused(tmp_path, standins.detector_model(), "det_10g.onnx")
    assert "'input.1' [1, 3, ?, ?]" in msg and "[N, 3, 112, 112]" in msg


def test_recogniser_of_another_family_is_refused_naming_the_op(tmp_path):
    # right input and output shapes, but pooling and a projection, not an IResNet
    msg = _refused(tmp_path, standins.identity_model(), "glintr100.onnx")
    assert "AveragePool" in msg and "expected Conv" in msg


def test_graph_that_goes_on_after_features_is_refused(tmp_path):
    model = iresnet_onnx(random_iresnet((1, 1, 1, 1), 64), Export(), output="feat")
    model.graph.node.append(helper.make_node("LpNormalization", ["feat"], ["683"], name="norm", axis=1))
    model.graph.output[0].name = "683"
    msg = _refused(tmp_path, model, "normalised.onnx")
    assert "LpNormalization" in msg


def test_cli_converts_and_reports(tmp_path, capsys):
    src = _write(tmp_path / "w600k_r50.onnx", iresnet_onnx(random_iresnet((1, 2, 1, 1), 64), Export(fold_bn=True)))
    dest = tmp_path / "arcface_r.safetensors"
    assert main(["packs", "arcface", str(src), str(dest)]) == 0
    out = capsys.readouterr().out
    assert "layers (1, 2, 1, 1)" in out and "embedding 64" in out and str(dest) in out
    assert load_arcface(dest).identity_embedding(torch.zeros(1, 3, 112, 112)).shape == (1, 64)


def test_cli_refusal_exits_1_and_writes_nothing(tmp_path, capsys):
    src = _write(tmp_path / "det_10g.onnx", standins.detector_model())
    dest = tmp_path / "arcface.safetensors"
    assert main(["packs", "arcface", str(src), str(dest)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("FAILED: ") and str(src) in err and "nothing written" in err
    assert not dest.exists()


def test_weights_that_do_not_fit_an_iresnet_are_refused_naming_the_file(tmp_path):
    from safetensors.torch import save_file

    from tests.fixtures.arcface_onnx import random_iresnet

    state = {k: v.contiguous() for k, v in random_iresnet((1, 1, 1, 1), 64).state_dict().items()}
    del state["layer2.0.conv1.weight"]  # a truncated or foreign file
    path = tmp_path / "broken.safetensors"
    save_file(state, str(path))
    with pytest.raises(ValueError, match=r"broken.safetensors.*missing.*layer2.0.conv1.weight"):
        load_arcface(path)
    not_iresnet = tmp_path / "unet.safetensors"
    save_file({"conv_in.weight": torch.zeros(4, 3, 3, 3)}, str(not_iresnet))
    with pytest.raises(ValueError, match="unet.safetensors"):
        load_arcface(not_iresnet)
