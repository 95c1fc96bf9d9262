"""Reading feature-network weights from a file, a folder or s3://, and loading them strictly.

Nothing is unpickled: .pth files go through `torch.load(weights_only=True)`, .safetensors through
safetensors. A file with the wrong keys or shapes is a `WeightsError` that names the file and
lists the missing keys, the unexpected keys and the shape mismatches, so a user who pointed at the
wrong checkpoint sees at once which one it is.
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence

import torch
from torch import nn

from sfsr.io import storage

# BatchNorm's step counter: some converted checkpoints carry it, some do not; it never affects
# inference, so its presence or absence is not an error.
_OPTIONAL_SUFFIXES = ("num_batches_tracked",)
_SHOW = 8  # keys listed per kind of problem before "... and N more"


class WeightsError(ValueError):
    """A weights file that does not fit the network (or cannot be found or read)."""


def _listing(kind: str, items: Sequence[str]) -> str:
    shown = ", ".join(items[:_SHOW])
    more = f" ... and {len(items) - _SHOW} more" if len(items) > _SHOW else ""
    return f"{len(items)} {kind}: {shown}{more}"


def load_state_dict_strict(net: nn.Module, state: Mapping[str, torch.Tensor], source: str) -> None:
    """Copy `state` into `net`, or raise WeightsError naming every key and shape problem."""
    if not isinstance(state, Mapping) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise WeightsError(
            f"{source}: not a state dict of tensors (got {type(state).__name__}); point at the "
            "weights file itself (a flat name -> tensor mapping), not a training checkpoint"
        )
    own = net.state_dict()
    optional = {k for k in own if k.endswith(_OPTIONAL_SUFFIXES)}
    missing = sorted(k for k in own if k not in state and k not in optional)
    unexpected = sorted(k for k in state if k not in own)
    shapes = sorted(
        f"{k} (file {tuple(state[k].shape)}, network {tuple(own[k].shape)})"
        for k in own
        if k in state and tuple(state[k].shape) != tuple(own[k].shape)
    )
    if missing or unexpected or shapes:
        problems = [
            _listing(kind, items)
            for kind, items in (
                ("missing keys", missing),
                ("unexpected keys", unexpected),
                ("shape mismatches", shapes),
            )
            if items
        ]
        raise WeightsError(
            f"{source}: does not fit {type(net).__name__}: "
            + "; ".join(problems)
            + ". Check that this is the right weights file for this network"
        )
    merged = {k: (state[k] if k in state else own[k]) for k in own}
    net.load_state_dict({k: v.to(own[k].dtype) for k, v in merged.items()}, strict=True)


def _parse(data: bytes, source: str) -> dict[str, torch.Tensor]:
    if source.endswith(".safetensors"):
        from safetensors.torch import load as load_safetensors

        try:
            return load_safetensors(data)
        except Exception as e:  # safetensors raises its own SafetensorError
            raise WeightsError(f"{source}: not a readable safetensors file ({e})") from e
    try:
        state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as e:  # pickle errors, zip errors, "Weights only load failed"
        raise WeightsError(
            f"{source}: cannot be read with torch.load(weights_only=True) ({type(e).__name__}: "
            f"{str(e).splitlines()[0] if str(e) else ''}); give a .pth state dict or a .safetensors file"
        ) from e
    if isinstance(state, Mapping) and "state_dict" in state and isinstance(state["state_dict"], Mapping):
        state = state["state_dict"]  # a common wrapper around the state dict
    return dict(state) if isinstance(state, Mapping) else state  # type: ignore[return-value]


def read_state_dict(uri: str, file_names: Sequence[str]) -> tuple[dict[str, torch.Tensor], str]:
    """The state dict at `uri`: a .pth/.safetensors file, or a folder (local or s3:// prefix)
    holding one of `file_names`. Returns (state dict, the file it came from)."""
    if uri.endswith((".pth", ".pt", ".safetensors")):
        candidates = [uri]
    else:
        candidates = [storage.join(uri, name) for name in file_names]
    for candidate in candidates:
        try:
            data = storage.read_bytes(candidate)
        except storage.StorageNotFoundError:
            continue
        except storage.StorageError as e:
            raise WeightsError(f"{candidate}: cannot be read ({e})") from e
        return _parse(data, candidate), candidate
    raise WeightsError(
        f"{uri}: no weights file found (looked for {', '.join(candidates)}); put "
        f"{file_names[0]} there or pass the file's own path"
    )
