"""DiffSFSR: a conditional denoiser with separate identity and expression control (DESIGN.md,
"The model"; Liu et al., CVPR 2024, sec. 3).

    noisy x_t (B, C, h, w) --+
    background (B, C, h, w) -+--concat--> UNet2DConditionModel --> prediction (B, C, h, w)
    mask (B, 1, h, w) -------+                 ^          ^
                                   cross-attn  |          | timestep embedding + scale/shift
    identity (B, Di) --MLP--+-> Ni tokens -----+          |
    expression (B, De) -MLP-+-> Ne tokens -----+          |
                            +-> pooled (B, 2H) -----------+ (class_embed_type="projection")

- Two token groups, each from its own projection, scaled by a learned balance
  g = 2 softmax(stream_logits) (g_id + g_exp = 2, both 1 at init).
- The conditions also enter the timestep embedding, so every ResNet block is modulated by
  them (resnet_time_scale_shift="scale_shift"): at 32 px this is what makes them work early.
- Condition dropout: where `drop_identity` / `drop_expression` is True the vector is replaced by
  a learned null vector, independently per stream, so sampling can guide each stream with its
  own scale (sfsr/diffusion/sampling.py).
- The background (target with the face masked out) and the mask are concatenated to x_t, so
  the model only has to generate the face region: the face mask grown by `mask_dilate` pixels
  (sfsr.model.training.face_region), so the anti-aliased rim is generated too.
- patch_size p > 1 runs the UNet on a space-to-depth view (h/p, w/p, p*p channels): at 32 px
  this removes the costliest full-resolution level while keeping 1-px features as channels.
- Latent presets own an AutoencoderKL (`vae`); C, h, w are then the latent's, and the images
  go through `encode` / `decode`. Pixel presets have vae=None and C = 3.

Saved with `save_pretrained(folder)` (config.json + safetensors) and loaded with
`DiffSFSR.from_pretrained(folder)`; no pickle anywhere.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from diffusers import AutoencoderKL, UNet2DConditionModel
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from torch import nn

from sfsr.diffusion.schedule import Schedule


class _Stream(nn.Module):
    """One condition stream: vector (B, Din) -> tokens (B, N, D) and a pooled feature (B, H)."""

    def __init__(self, in_dim: int, hidden: int, n_tokens: int, token_dim: int) -> None:
        super().__init__()
        self.n_tokens, self.token_dim = n_tokens, token_dim
        self.mlp = nn.Sequential(nn.Linear(in_dim, hidden), nn.SiLU(), nn.Linear(hidden, hidden), nn.SiLU())
        self.to_tokens = nn.Linear(hidden, n_tokens * token_dim)
        self.position = nn.Parameter(torch.randn(n_tokens, token_dim) * 0.02)
        self.null = nn.Parameter(torch.zeros(in_dim))  # learned "no condition" vector

    def forward(self, vec: torch.Tensor, drop: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        if drop is not None:
            vec = torch.where(drop.reshape(-1, 1), self.null.to(vec.dtype).expand_as(vec), vec)
        h = self.mlp(vec)  # (B, H)
        tokens = self.to_tokens(h).reshape(-1, self.n_tokens, self.token_dim) + self.position
        return tokens, h  # (B, N, D), (B, H)


class DiffSFSR(ModelMixin, ConfigMixin):
    config_name = "config.json"

    @register_to_config
    def __init__(
        self,
        unet_config: dict | None = None,
        vae_config: dict | None = None,
        image_size: int = 32,
        identity_dim: int = 128,
        expression_dim: int = 7,
        identity_tokens: int = 4,
        expression_tokens: int = 2,
        cond_hidden: int = 128,
        patch_size: int = 1,
        mask_dilate: int = 1,
        schedule: dict | None = None,
        preset: str = "custom",
        trained_on: str = "",
        identity_encoder: str = "",
        expression_encoder: str = "",
        framing: str = "",  # how its training crops and masks were made (the face table's framing)
    ) -> None:
        super().__init__()
        if unet_config is None:
            raise ValueError("DiffSFSR needs a `unet_config` dict; build one with sfsr.model.make_model(preset)")
        self.unet = UNet2DConditionModel.from_config(dict(unet_config))
        self.vae = AutoencoderKL.from_config(dict(vae_config)) if vae_config else None
        if self.vae is not None:
            self.vae.requires_grad_(False)  # frozen: the denoiser learns in its latent space
        c, p2 = self.latent_channels, patch_size**2
        if self.unet.config.in_channels != (2 * c + 1) * p2 or self.unet.config.out_channels != c * p2:
            raise ValueError(
                f"unet config: in_channels={self.unet.config.in_channels}, out_channels="
                f"{self.unet.config.out_channels}; DiffSFSR needs {(2 * c + 1) * p2} in (noisy + "
                f"background + mask, x patch_size^2) and {c * p2} out for {c}-channel "
                f"{'latents' if vae_config else 'pixels'} with patch_size={patch_size}"
            )
        d = self.unet.config.cross_attention_dim
        self.identity_stream = _Stream(identity_dim, cond_hidden, identity_tokens, d)
        self.expression_stream = _Stream(expression_dim, cond_hidden, expression_tokens, d)
        self.stream_logits = nn.Parameter(torch.zeros(2))  # learned identity/expression balance
        want = self.unet.config.projection_class_embeddings_input_dim
        if self.unet.config.class_embed_type != "projection" or want != 2 * cond_hidden:
            raise ValueError(
                f"unet config: class_embed_type={self.unet.config.class_embed_type!r} with input "
                f"dim {want}; DiffSFSR feeds its conditions there: use 'projection' with "
                f"projection_class_embeddings_input_dim={2 * cond_hidden}"
            )
        # Zero the last layer of the condition -> timestep-embedding path, so a model widened from
        # a pretrained UNet (sd-init) starts out computing exactly what the original did.
        nn.init.zeros_(self.unet.class_embedding.linear_2.weight)
        nn.init.zeros_(self.unet.class_embedding.linear_2.bias)

    # -- geometry ---------------------------------------------------------------------------

    @property
    def latent_channels(self) -> int:
        return int(self.config.vae_config["latent_channels"]) if self.config.vae_config else 3

    @property
    def vae_factor(self) -> int:
        return 2 ** (len(self.config.vae_config["block_out_channels"]) - 1) if self.config.vae_config else 1

    @property
    def latent_size(self) -> int:
        return self.config.image_size // self.vae_factor

    @property
    def schedule(self) -> Schedule:
        return Schedule(**(self.config.schedule or {}))

    # -- pixel <-> model space --------------------------------------------------------------

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """Images (B, 3, S, S) in [-1, 1] -> model space (B, C, h, w) (identity for pixels)."""
        if self.vae is None:
            return images
        z = self.vae.encode(images.to(self.vae.dtype)).latent_dist.mean
        return z * self.vae.config.scaling_factor

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Model space (B, C, h, w) -> images (B, 3, S, S), roughly in [-1, 1]."""
        if self.vae is None:
            return z
        return self.vae.decode(z.to(self.vae.dtype) / self.vae.config.scaling_factor).sample

    def mask_to_model(self, mask: torch.Tensor) -> torch.Tensor:
        """Face mask (B, 1, S, S) in {0, 1} -> (B, 1, h, w): a latent cell is face if any of its
        pixels is, so pasting the latent background never overwrites face pixels."""
        if self.vae_factor == 1:
            return mask
        return F.max_pool2d(mask, self.vae_factor)

    def prepare_background(self, images: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Target images (B, 3, S, S) and face mask (B, 1, S, S) -> (background, mask) in model
        space: the target with its face region zeroed (grey in [-1, 1]), encoded."""
        self._check_images(images, "images")
        masked = images * (1 - mask)
        return self.encode(masked), self.mask_to_model(mask)

    # -- conditions and forward -------------------------------------------------------------

    def conditioning(
        self,
        identity: torch.Tensor,
        expression: torch.Tensor,
        drop_identity: torch.Tensor | None = None,
        drop_expression: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(tokens (B, Ni + Ne, D), pooled (B, 2H)) for the UNet."""
        self._check_vec(identity, self.config.identity_dim, "identity")
        self._check_vec(expression, self.config.expression_dim, "expression")
        dtype = self.unet.dtype
        tid, hid = self.identity_stream(identity.to(dtype), drop_identity)
        tex, hex_ = self.expression_stream(expression.to(dtype), drop_expression)
        g = 2 * torch.softmax(self.stream_logits, dim=0).to(dtype)  # (2,)
        tokens = torch.cat([g[0] * tid, g[1] * tex], dim=1)
        pooled = torch.cat([g[0] * hid, g[1] * hex_], dim=1)
        return tokens, pooled

    def forward(
        self,
        sample: torch.Tensor,
        timestep: torch.Tensor,
        background: torch.Tensor,
        mask: torch.Tensor,
        identity: torch.Tensor,
        expression: torch.Tensor,
        drop_identity: torch.Tensor | None = None,
        drop_expression: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Network output (B, C, h, w) in the schedule's prediction type.

        sample, background (B, C, h, w) and mask (B, 1, h, w) in model space (see
        prepare_background); timestep (B,) or scalar; identity (B, Di); expression (B, De);
        drop_* (B,) bool: replace that condition by its learned null."""
        b = sample.shape[0]
        if background.shape != sample.shape or mask.shape != (b, 1, *sample.shape[2:]):
            raise ValueError(
                f"DiffSFSR.forward: sample {tuple(sample.shape)}, background "
                f"{tuple(background.shape)}, mask {tuple(mask.shape)}; background must match "
                f"sample and mask must be (B, 1, h, w) - build both with prepare_background"
            )
        tokens, pooled = self.conditioning(identity, expression, drop_identity, drop_expression)
        x = torch.cat([sample, background.to(sample.dtype), mask.to(sample.dtype)], dim=1)
        p = self.config.patch_size
        if p > 1:  # space-to-depth: the UNet runs at h/p with p*p times the channels
            x = F.pixel_unshuffle(x, p)  # (B, (2C + 1) p^2, h/p, w/p)
        t = timestep if torch.is_tensor(timestep) else torch.tensor([timestep], device=sample.device)
        t = t.reshape(-1).expand(b) if t.numel() == 1 else t
        out = self.unet(x, t, encoder_hidden_states=tokens, class_labels=pooled).sample
        return F.pixel_shuffle(out, p) if p > 1 else out  # (B, C, h, w)

    # -- checks -----------------------------------------------------------------------------

    def _check_vec(self, vec: torch.Tensor, dim: int, name: str) -> None:
        if vec.ndim != 2 or vec.shape[1] != dim:
            enc = self.config.identity_encoder if name == "identity" else self.config.expression_encoder
            raise ValueError(
                f"{name}: got shape {tuple(vec.shape)}, this model expects (B, {dim}) vectors "
                f"from {enc or 'its ' + name + ' encoder'}; encode with the same encoder it was "
                "trained with (Generator does this for you)"
            )

    def _check_images(self, images: torch.Tensor, name: str) -> None:
        s = self.config.image_size
        if images.ndim != 4 or images.shape[1] != 3 or tuple(images.shape[2:]) != (s, s):
            raise ValueError(
                f"{name}: got shape {tuple(images.shape)}, expected (B, 3, {s}, {s}) in [-1, 1]; "
                "resize to the model's image_size first"
            )

    def describe(self) -> dict[str, Any]:
        """Short summary for cards and Generator.info."""
        n = sum(p.numel() for n_, p in self.named_parameters() if not n_.startswith("vae."))
        return {
            "preset": self.config.preset,
            "image_size": self.config.image_size,
            "latent": self.vae is not None,
            "denoiser_parameters": int(n),
            "identity_encoder": self.config.identity_encoder,
            "expression_encoder": self.config.expression_encoder,
            "trained_on": self.config.trained_on,
            "prediction_type": self.schedule.prediction_type,
        }
