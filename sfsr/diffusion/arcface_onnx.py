"""insightface's ArcFace ONNX recognisers (w600k_r50.onnx, glintr100.onnx) -> an IResNet state dict.

The graph is read, not assumed: exporters differ in how they store each layer, so every piece is
found by following tensor names from the input to the output.

    input [N, 3, 112, 112] -> Conv [BN] PRelu                                   stem
      -> per block:  x -> [BN] Conv [BN] PRelu Conv [BN] -> Add <- x | Conv [BN] (shortcut)
      -> [BN] Flatten|Reshape  Gemm | MatMul [Add]  [BN]  -> output [N, E]       bn2, fc, features

A BatchNormalization folded into the Conv before it leaves a Conv with a bias; it becomes that
conv's weights plus the following IResNet BN set to identity scale with the bias as beta (gamma 1,
beta bias, mean 0, var 1 - eps). A Conv bias before a kept BN moves into the BN's mean. A BN the
graph does not have (e.g. `features` folded into the Gemm) is the identity. BN epsilons other
than IResNet's 1e-5 move into the variance, so every mapping is exact. The shortcut may come
before or after the main branch in node order: the branch holding the PRelu is the main one.
Blocks per stage are counted from the graph (their widths 64, 128, 256, 512 mark the stages).
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import torch
from onnx import numpy_helper

from sfsr.diffusion.arcface import INPUT_SIZE, IResNet

EPS = 1e-5  # every BatchNorm of sfsr.diffusion.arcface.IResNet
WIDTHS = (64, 128, 256, 512)
PASS_THROUGH = ("Identity", "Dropout")  # inference no-ops some exporters keep


class _NotArcFace(Exception):
    """What the graph holds where an IResNet part was expected; the caller names the file."""


@dataclass(frozen=True)
class Converted:
    """The result of `convert_arcface_onnx`: where it wrote, and the architecture it found."""

    path: Path
    layers: tuple[int, int, int, int]
    embedding: int


Params = dict[str, np.ndarray]


class _Graph:
    """Tensor-name lookups over one ONNX graph: constants, producers, consumers."""

    def __init__(self, graph: onnx.GraphProto) -> None:
        self.consts: dict[str, np.ndarray] = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
        self.producer = {o: n for n in graph.node for o in n.output}
        self.consumers: dict[str, list[onnx.NodeProto]] = {}
        for n in graph.node:
            for i in dict.fromkeys(n.input):  # a node reading one tensor twice counts once
                self.consumers.setdefault(i, []).append(n)

    def const(self, name: str, what: str) -> np.ndarray:
        """The value of a constant tensor: an initializer, a Constant node, or a reshape of one."""
        if name in self.consts:
            return self.consts[name]
        node = self.producer.get(name)
        if node is not None and node.op_type == "Constant":
            value = onnx.helper.get_attribute_value(node.attribute[0])  # value, value_float(s), ...
            return numpy_helper.to_array(value) if isinstance(value, onnx.TensorProto) else np.asarray(value)
        if node is not None and node.op_type in ("Unsqueeze", "Squeeze", "Reshape", "Identity", "Cast"):
            x = self.const(node.input[0], what)
            if node.op_type == "Reshape":
                shape = [int(d) or x.shape[i] for i, d in enumerate(self.const(node.input[1], what))]  # 0: keep
                return x.reshape(shape)
            if node.op_type in ("Unsqueeze", "Squeeze"):
                axes = _attr(node, "axes")  # an attribute before opset 13, an input since
                if axes is None and len(node.input) > 1 and node.input[1]:
                    axes = self.const(node.input[1], what)
                if node.op_type == "Squeeze":
                    return np.squeeze(x, axis=None if axes is None else tuple(int(a) for a in axes))
                return np.expand_dims(x, tuple(int(a) for a in axes))
            return x.astype(np.float32) if node.op_type == "Cast" else x
        raise _NotArcFace(f"{what} {name!r} is computed by the graph, expected a constant")

    def next_node(self, tensor: str) -> onnx.NodeProto | None:
        """The single node reading `tensor`, past Identity/Dropout; None at a graph output."""
        users = self.consumers.get(tensor, [])
        if not users:
            return None
        if len(users) > 1:
            ops = [n.op_type for n in users]
            raise _NotArcFace(f"tensor {tensor!r} feeds {len(users)} nodes ({', '.join(ops)}), expected one")
        node = users[0]
        return self.next_node(node.output[0]) if node.op_type in PASS_THROUGH else node

    def past_no_ops(self, node: onnx.NodeProto) -> onnx.NodeProto | None:
        """`node`, or the node after it if it is an Identity/Dropout."""
        return self.next_node(node.output[0]) if node.op_type in PASS_THROUGH else node

    def end(self, tensor: str) -> str:
        """The tensor that Identity/Dropout nodes after `tensor` finally write."""
        users = self.consumers.get(tensor, [])
        if len(users) == 1 and users[0].op_type in PASS_THROUGH:
            return self.end(users[0].output[0])
        return tensor


def _attr(node: onnx.NodeProto, name: str, default=None):
    for a in node.attribute:
        if a.name == name:
            return onnx.helper.get_attribute_value(a)
    return default


def _expect(node: onnx.NodeProto | None, ops: tuple[str, ...], where: str) -> onnx.NodeProto:
    if node is None or node.op_type not in ops:
        found = "the graph output" if node is None else f"{node.op_type} node {node.name!r}"
        raise _NotArcFace(f"{where}: found {found}, expected {' or '.join(ops)}")
    return node


# ---- layers -------------------------------------------------------------------------------------


def _bn(g: _Graph, node: onnx.NodeProto | None, channels: int, bias: np.ndarray | None = None) -> Params:
    """IResNet BN parameters (eps 1e-5) equal to an ONNX BatchNormalization, a bias, or the identity.

    y = gamma (x + bias - mean) / sqrt(var + eps) + beta: a conv bias before the BN moves into mean.
    """
    b = np.zeros(channels, np.float32) if bias is None else bias.astype(np.float32).reshape(-1)
    if node is None:  # no BN in the graph: scale 1 (var + 1e-5 = 1), shift by the conv's bias
        one = np.ones(channels, np.float32)
        return {"weight": one, "bias": b, "running_mean": np.zeros_like(one), "running_var": one - EPS}
    if _attr(node, "training_mode", 0) or len(node.output) > 1:
        raise _NotArcFace(f"BatchNormalization {node.name!r} is in training mode")
    gamma, beta, mean, var = (g.const(t, f"BatchNormalization {node.name!r} input") for t in node.input[1:5])
    if gamma.shape != (channels,):
        raise _NotArcFace(f"BatchNormalization {node.name!r} has {gamma.shape} scales, expected ({channels},)")
    var = var.astype(np.float64) + float(_attr(node, "epsilon", 1e-5)) - EPS  # exact for any epsilon
    return {"weight": gamma, "bias": beta, "running_mean": mean - b, "running_var": var}


def _bn_after(g: _Graph, node: onnx.NodeProto) -> onnx.NodeProto | None:
    """The BatchNormalization reading `node`'s output, if that is what reads it."""
    nxt = g.next_node(node.output[0])
    return nxt if nxt is not None and nxt.op_type == "BatchNormalization" else None


def _after_bn(g: _Graph, node: onnx.NodeProto) -> onnx.NodeProto | None:
    """The node after `node`, past the BatchNormalization reading it if there is one."""
    bn = _bn_after(g, node)
    return g.next_node((bn or node).output[0])


def _conv(g: _Graph, node: onnx.NodeProto, shape: tuple[int, int, int], stride: int) -> tuple[np.ndarray, Params]:
    """(weight, the BN after it) of a Conv of `shape` (cout, cin, k), its BN kept or folded in."""
    cout, cin, k = shape
    w = g.const(node.input[1], f"Conv {node.name!r} weight")
    got = (
        tuple(w.shape),
        list(_attr(node, "strides", [1, 1])),
        list(_attr(node, "pads", [0] * 4)),
        _attr(node, "group", 1),
        list(_attr(node, "dilations", [1, 1])),
        _attr(node, "auto_pad", b"NOTSET"),
    )
    want = ((cout, cin, k, k), [stride] * 2, [k // 2] * 4, 1, [1, 1], b"NOTSET")
    if got != want:
        raise _NotArcFace(
            f"Conv {node.name!r}: weight {got[0]}, strides {got[1]}, pads {got[2]}, group {got[3]}, dilations "
            f"{got[4]}, auto_pad {got[5]!r}; expected weight {want[0]}, strides {want[1]}, pads {want[2]}, "
            "group 1, dilations [1, 1], no auto_pad"
        )
    bias = g.const(node.input[2], f"Conv {node.name!r} bias") if len(node.input) > 2 and node.input[2] else None
    return w, _bn(g, _bn_after(g, node), cout, bias)


def _prelu(g: _Graph, node: onnx.NodeProto, channels: int) -> np.ndarray:
    """PRelu slopes as (C,), stored as (C,), (C, 1, 1) or (1, C, 1, 1)."""
    a = g.const(node.input[1], f"PRelu {node.name!r} slope")
    if a.shape not in ((channels,), (channels, 1, 1), (1, channels, 1, 1)):
        raise _NotArcFace(f"PRelu {node.name!r} slope has shape {a.shape}, expected ({channels}, 1, 1)")
    return a.reshape(channels)


def _prefixed(prefix: str, params: Params) -> Params:
    return {f"{prefix}.{k}": v for k, v in params.items()}


def _block(g: _Graph, x: str, cin: int) -> tuple[Params, str, int, bool]:
    """The IBasicBlock reading tensor `x`: (parameters by name in the block, output tensor, width,
    whether it has a projected shortcut, i.e. is a stage's first block with stride 2)."""
    branches = []
    for start in g.consumers.get(x, []):
        chain, node = [], g.past_no_ops(start)
        while node is not None and node.op_type != "Add":
            chain.append(node)
            node = g.next_node(node.output[0])
        if node is None:
            raise _NotArcFace(f"a branch from tensor {x!r} ({start.op_type} {start.name!r}) never reaches an Add")
        branches.append((chain, node))
    with_prelu = [any(n.op_type == "PRelu" for n in chain) for chain, _ in branches]
    if len(branches) != 2 or branches[0][1] is not branches[1][1] or sum(with_prelu) != 1:
        raise _NotArcFace(
            f"tensor {x!r} feeds {len(branches)} branches; a block has a main branch with a PRelu "
            "and a shortcut, joined by one Add"
        )
    # follow names, not node order: the branch with the PRelu is the main one
    (main, add), (short, _) = branches if with_prelu[0] else branches[::-1]
    stride, p = (2 if short else 1), {}
    node = main[0]
    bn1 = node if node.op_type == "BatchNormalization" else None
    p |= _prefixed("bn1", _bn(g, bn1, cin))
    node = _expect(g.next_node(node.output[0]) if bn1 else node, ("Conv",), f"block at {x!r}: conv1")
    width = g.const(node.input[1], f"Conv {node.name!r} weight").shape[0]
    p["conv1.weight"], bn = _conv(g, node, (width, cin, 3), 1)
    p |= _prefixed("bn2", bn)
    node = _expect(_after_bn(g, node), ("PRelu",), f"block at {x!r}: prelu")
    p["prelu.weight"] = _prelu(g, node, width)
    node = _expect(g.next_node(node.output[0]), ("Conv",), f"block at {x!r}: conv2")
    p["conv2.weight"], bn = _conv(g, node, (width, width, 3), stride)
    p |= _prefixed("bn3", bn)
    if _after_bn(g, node) is not add:
        raise _NotArcFace(f"block at {x!r}: more nodes after conv2 than a BatchNormalization")
    if short:
        conv = _expect(short[0], ("Conv",), f"block at {x!r}: shortcut")
        p["downsample.0.weight"], bn = _conv(g, conv, (width, cin, 1), stride)
        p |= _prefixed("downsample.1", bn)
        if _after_bn(g, conv) is not add:
            raise _NotArcFace(f"block at {x!r}: more nodes in the shortcut than Conv and BatchNormalization")
    elif width != cin:
        raise _NotArcFace(f"block at {x!r}: {cin} -> {width} channels without a projected shortcut")
    return p, add.output[0], width, bool(short)


def _fc(g: _Graph, node: onnx.NodeProto) -> tuple[np.ndarray, np.ndarray, str]:
    """(weight (E, D), bias (E,), output tensor) of a Gemm, or of a MatMul with an optional Add."""
    if node.op_type == "Gemm":
        b = g.const(node.input[1], f"Gemm {node.name!r} weight")
        if _attr(node, "transA", 0) or b.ndim != 2:
            raise _NotArcFace(f"Gemm {node.name!r} transposes its input or has a {b.ndim}-d weight")
        w = (b if _attr(node, "transB", 0) else b.T) * _attr(node, "alpha", 1.0)  # (E, D)
        c = g.const(node.input[2], "Gemm bias") if len(node.input) > 2 and node.input[2] else np.zeros(len(w))
        return w, np.broadcast_to(c, (1, len(w))).reshape(-1) * _attr(node, "beta", 1.0), node.output[0]
    b = g.const(node.input[1], f"MatMul {node.name!r} weight")
    if b.ndim != 2:
        raise _NotArcFace(f"MatMul {node.name!r} has a {b.ndim}-d weight")
    w, out = b.T, node.output[0]
    nxt, bias = g.next_node(out), np.zeros(len(w), np.float32)
    if nxt is not None and nxt.op_type == "Add":
        (other,) = [t for t in nxt.input if t != out] or [out]
        bias = np.broadcast_to(g.const(other, f"Add {nxt.name!r} bias"), (1, len(w))).reshape(-1)
        out = nxt.output[0]
    return w, bias, out


def _check_io(graph: onnx.GraphProto) -> str:
    """The input's name, if the graph has one input [N, 3, 112, 112] and one output."""
    consts = {t.name for t in graph.initializer}  # IR < 4 lists initializers as inputs too
    inputs = [i for i in graph.input if i.name not in consts]
    dims = [[d.dim_value if d.HasField("dim_value") else "?" for d in i.type.tensor_type.shape.dim] for i in inputs]
    if len(inputs) != 1 or dims[0][1:] != [3, INPUT_SIZE, INPUT_SIZE] or len(graph.output) != 1:
        shapes = ", ".join(f"{i.name!r} [{', '.join(map(str, d))}]" for i, d in zip(inputs, dims))
        raise _NotArcFace(
            f"inputs {shapes or 'none'} and {len(graph.output)} outputs; an ArcFace IResNet has one input "
            f"[N, 3, {INPUT_SIZE}, {INPUT_SIZE}] and one output [N, E]"
        )
    return inputs[0].name


def _read(model: onnx.ModelProto) -> tuple[Params, tuple[int, int, int, int], int]:
    g = _Graph(model.graph)
    node = _expect(g.next_node(_check_io(model.graph)), ("Conv",), "the stem (input -> Conv)")
    state: Params = {}
    state["conv1.weight"], bn = _conv(g, node, (64, 3, 3), 1)
    state |= _prefixed("bn1", bn)
    node = _expect(_after_bn(g, node), ("PRelu",), "the stem's PRelu")
    state["prelu.weight"] = _prelu(g, node, 64)
    x, cin, counts = g.end(node.output[0]), 64, [0, 0, 0, 0]
    while len(g.consumers.get(x, [])) == 2:  # a block: main branch and shortcut
        params, out, width, first = _block(g, x, cin)
        x = g.end(out)
        stage = WIDTHS.index(width) if width in WIDTHS else -1
        now = max((k for k, c in enumerate(counts) if c), default=-1)
        # a stage opens with a projected stride-2 block; the rest of it keep width and resolution
        if not ((first and stage == now + 1) or (not first and stage == now >= 0)):
            raise _NotArcFace(
                f"a block {cin} -> {width} channels ({'with' if first else 'without'} projected shortcut) after "
                f"{counts} blocks per stage; IResNet stages are {WIDTHS} wide and only their first block projects"
            )
        state |= _prefixed(f"layer{stage + 1}.{counts[stage]}", params)
        counts[stage], cin = counts[stage] + 1, width
    if min(counts) == 0:
        raise _NotArcFace(f"blocks per stage {counts}; an IResNet has at least one in each of its 4 stages")
    node = g.next_node(x)
    bn2 = node if node is not None and node.op_type == "BatchNormalization" else None
    state |= _prefixed("bn2", _bn(g, bn2, 512))
    node = _expect(g.next_node(bn2.output[0]) if bn2 else node, ("Flatten", "Reshape"), "before fc")
    if node.op_type == "Flatten" and _attr(node, "axis", 1) != 1:
        raise _NotArcFace(f"Flatten {node.name!r} has axis {_attr(node, 'axis')}, expected 1")
    # a Reshape is the flatten when fc reads 512 * 7 * 7 values per row (checked below)
    w, bias, out = _fc(g, _expect(g.next_node(node.output[0]), ("Gemm", "MatMul"), "fc"))
    if w.shape[1] != 512 * 7 * 7:
        raise _NotArcFace(f"fc weight has shape {w.shape} (out, in), expected (E, {512 * 7 * 7})")
    state["fc.weight"], state["fc.bias"] = w, bias
    feats = g.next_node(out)
    if feats is not None and feats.op_type == "BatchNormalization":
        out = feats.output[0]
    else:
        feats = None
    state |= _prefixed("features", _bn(g, feats, len(w)))
    out = g.end(out)
    if g.consumers.get(out) or out != model.graph.output[0].name:
        found = ", ".join(n.op_type for n in g.consumers.get(out, [])) or f"tensor {out!r}"
        raise _NotArcFace(f"after fc and features: {found}; expected the graph output")
    return state, tuple(counts), len(w)  # type: ignore[return-value]


# ---- conversion ---------------------------------------------------------------------------------


def convert_arcface_onnx(src: str | Path, dest: str | Path) -> Converted:
    """Reads an insightface ArcFace ONNX file and writes the IResNet state dict to `dest`
    (.safetensors), which `sfsr.diffusion.arcface.load_arcface` loads. Written atomically: a
    refused or failed conversion leaves no file at `dest`."""
    src, dest = Path(src), Path(dest)
    if dest.suffix != ".safetensors":
        raise ValueError(f"{dest}: the converted weights are written as .safetensors; give a name ending in it")
    if not src.is_file():
        raise FileNotFoundError(f"{src}: no such ONNX file")
    try:
        model = onnx.load(str(src))
    except Exception as e:  # protobuf's errors are not one type
        raise ValueError(f"{src}: not a readable ONNX file ({type(e).__name__}: {e}); nothing written") from None
    try:
        state, layers, embedding = _read(model)
    except _NotArcFace as e:
        raise ValueError(
            f"{src}: not an ArcFace IResNet (insightface's w600k_r50 / glintr100, arcface_torch layout): {e}; "
            f"nothing written to {dest}"
        ) from None
    net = IResNet(layers, embedding=embedding)
    tensors = {k: torch.from_numpy(np.asarray(v, np.float32).copy()) for k, v in state.items()}
    missing, unexpected = net.load_state_dict(tensors, strict=False)
    missing = [k for k in missing if not k.endswith("num_batches_tracked")]
    if missing or unexpected:  # a converter bug, not a user error
        raise RuntimeError(
            f"{src}: converted keys do not fit IResNet{layers}: missing {missing[:5]}, extra {unexpected[:5]}"
        )
    _save_atomically({k: v for k, v in net.state_dict().items() if not k.endswith("num_batches_tracked")}, dest)
    return Converted(dest, layers, embedding)


def _save_atomically(state: dict[str, torch.Tensor], dest: Path) -> None:
    from safetensors.torch import save_file

    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent)
    os.close(fd)
    try:
        save_file({k: v.contiguous() for k, v in state.items()}, tmp, metadata={"format": "pt", "source": "onnx"})
        os.replace(tmp, dest)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
