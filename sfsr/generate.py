"""The generation API: face swap, reenactment and simultaneous identity + expression control.

    gen = Generator.from_pretrained("sfsr/model/pretrained/cpu-demo")       # or s3://...
    out = gen.swap(source_faces, target_faces, seeds=[1, 2])                  # (B, S, S, 3) uint8
    out = gen.reenact(faces, words=["joy", "fury"])
    out = gen.reenact(faces, driver_images=drivers)
    out = gen.generate(identity_faces, expression=["awe", driver, vector], background_images=bgs)

Inputs are aligned face crops, uint8 RGB, (B, H, W, 3) arrays or lists of (H, W, 3); any size is
resized to the model's resolution, and outputs come back at the model's resolution. A batch of
one broadcasts against the others. Condition vectors come from the encoders the model was
trained with (named in its config; the synth judges for cpu-demo), words from sfsr.expressions.

Face masks (what gets regenerated; the rest of the target is kept exactly): pass `masks=` for the
target / background images when you have them (face-table face_mask, the synth renderer's mask);
otherwise the fixed template ellipse of sfsr.faces (`face_mask(None, size)`) is used, which suits
aligned real crops. The model regenerates the mask grown by its `mask_dilate` pixels.

Seeds: seeds[i] seeds sample i alone; by default it is derived from the bytes of sample i's
inputs and the call's settings, so the same request gives the same image in any batch.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from sfsr import conditions
from sfsr.conditions import SYNTH_IDENTITY_ENCODER, ConditionEncoders  # ConditionEncoders re-exported
from sfsr.diffusion.sampling import generators_for, invert, sample
from sfsr.expressions.bank import BANK_FILE, ExpressionBank
from sfsr.expressions.targets import interpolate
from sfsr.expressions.vocabulary import lookup
from sfsr.io.cache import files_digest, local_folder
from sfsr.io.images import resize_square_batch
from sfsr.model.diffsfsr import DiffSFSR
from sfsr.model.training import face_region
from sfsr.model_card import CARD_NAME, DEFAULT_SAMPLING, INITS, read_card, sampling_defaults  # noqa: F401 - CARD_NAME re-exported

MAX_TRAVEL_FRAMES = 32


def synthetic_warning(identity_encoder: str) -> str | None:
    """What every output of a model conditioned on the synthetic judges must say, or None: such a
    model only knows 32 px procedural faces, so a photo comes back as a cartoon face."""
    if identity_encoder != SYNTH_IDENTITY_ENCODER:
        return None
    return (
        "this model was trained on synthetic 32 px faces (sfsr.synth): on photos it paints a procedural "
        "face, not a photo-real one. For photos, ingest real faces with a face pack (jobs.ingest --input) "
        "and train on them (jobs.train --table), then serve that model."
    )


def encoders_for(model: DiffSFSR) -> ConditionEncoders:
    """The encoders named in the model's config, built by their provider (sfsr.conditions)."""
    return conditions.encoders_for(model.config.identity_encoder, model.config.expression_encoder)


def _as_batch(images: Any, name: str) -> np.ndarray:
    """uint8 (B, H, W, 3) from an array or a list of (H, W, 3) of one size."""
    if isinstance(images, np.ndarray):
        arr = images[None] if images.ndim == 3 else images
    else:
        items = [np.asarray(x) for x in images]
        if not items:
            raise ValueError(f"{name}: empty list; give at least one (H, W, 3) uint8 image")
        shapes = {x.shape for x in items}
        if len(shapes) > 1:
            raise ValueError(f"{name}: images of different shapes {sorted(shapes)}; crop them to one size")
        arr = np.stack(items)
    arr = np.ascontiguousarray(arr)  # reversed / strided views cannot become tensors
    if arr.dtype != np.uint8 or arr.ndim != 4 or arr.shape[-1] != 3 or arr.shape[1] != arr.shape[2]:
        raise ValueError(
            f"{name}: got {arr.dtype} array of shape {arr.shape}; expected square uint8 RGB crops "
            "(B, S, S, 3) or a list of (S, S, 3)"
        )
    return arr


def _broadcast(n: int, **arrays: Any) -> None:
    for name, a in arrays.items():
        if len(a) not in (1, n):
            raise ValueError(f"{name}: {len(a)} items but the batch has {n}; give {n} or 1 (broadcast)")


def _rep(a: Any, n: int) -> Any:
    return (np.repeat(a, n, axis=0) if isinstance(a, np.ndarray) else list(a) * n) if len(a) == 1 and n > 1 else a


class Generator:
    """A DiffSFSR model with its condition encoders, behind swap / reenact / generate."""

    def __init__(
        self,
        model: DiffSFSR,
        encoders: ConditionEncoders,
        *,
        device: str = "cpu",
        name: str = "",
        card: dict | None = None,
    ) -> None:
        self.model = model.to(device).eval()
        self.encoders = encoders
        self.device = torch.device(device)
        self.name = name or model.config.preset
        self.card = card or {}
        self.sampling = sampling_defaults(self.card)
        self.weights_digest = ""  # sha256 of config + weights when loaded from a folder (sfsr.io.cache)
        self.bank: ExpressionBank | None = None  # the folder's expression bank: words' exemplar faces

    @classmethod
    def from_pretrained(
        cls, path: str, device: str = "cpu", *, encoders: ConditionEncoders | None = None, cache_dir: str | None = None
    ) -> Generator:
        """Load a model folder (local, or s3://bucket/prefix copied into a cache keyed by its
        content, so a new model written to the same prefix is fetched again: sfsr.io.cache)."""
        local = local_folder(str(path), cache_dir)
        if not (local / "config.json").is_file():
            raise FileNotFoundError(
                f"{path}: no config.json; expected a DiffSFSR folder written by save_pretrained "
                "(config.json + diffusion_pytorch_model.safetensors)"
            )
        model = DiffSFSR.from_pretrained(str(local), use_safetensors=True)
        card = read_card(local)
        gen = cls(model, encoders or encoders_for(model), device=device, name=card.get("name", local.name), card=card)
        gen.weights_digest = files_digest(local)  # what was loaded, whatever the folder is called
        if (local / BANK_FILE).is_file():
            import pyarrow.parquet as pq

            gen.bank = ExpressionBank(pq.read_table(local / BANK_FILE), model.config.expression_dim, unknown="skip")
        return gen

    def exemplar_target(self, word: str, index: int | None = None, seed: int = 0) -> tuple[np.ndarray, int]:
        """(expression vector, index) of one of the word's exemplar faces in the model's bank:
        `index`, or the one `seed` picks. The paper's retrieval; words otherwise resolve to their
        prototype target (self.encoders.targets)."""
        if self.bank is None:
            raise ValueError(
                f"model {self.name!r} has no expression bank ({BANK_FILE}): ask for the word's prototype target"
            )
        key = lookup(word).word  # UnknownExpressionError, naming the nearest words
        k = int(seed) % max(len(self.bank.exemplars.get(key, [])), 1) if index is None else int(index)
        return self.bank.exemplar(key, k).vector.copy(), k

    @property
    def resolution(self) -> int:
        return int(self.model.config.image_size)

    @property
    def info(self) -> dict[str, Any]:
        d = self.model.describe()
        return {
            "model": self.name,
            "preset": d["preset"],
            "resolution": self.resolution,
            # the card (sfsr.release.publish) is the published word; the config is what training wrote
            "trained_on": self.card.get("trained_on") or d["trained_on"] or "",
            "licence": self.card.get("licence") or "",
            "warning": synthetic_warning(self.encoders.identity_name),
            "latent": d["latent"],
            "parameters": d["denoiser_parameters"],
            "conditioning": {
                "identity": self.encoders.identity_name,
                "expression": self.encoders.expression_name,
                "identity_dim": self.model.config.identity_dim,
                "expression_dim": self.model.config.expression_dim,
            },
            "sampling_defaults": dict(self.sampling),
            "metrics": self.card.get("metrics", {}),
        }

    # -- conditions -------------------------------------------------------------------------

    def identity_vectors(self, images: Any) -> np.ndarray:
        """(B, Di) identity condition of face crops (the encoder resizes to its own input)."""
        return np.asarray(self.encoders.identity(_as_batch(images, "identity_images")), np.float32)

    def expression_vectors(self, items: Sequence[Any]) -> np.ndarray:
        """(B, De) from a list whose items are words (str), face crops (H, W, 3) uint8 or vectors."""
        out = []
        for i, item in enumerate(items):
            if isinstance(item, str):
                out.append(self.encoders.targets.target(item))  # UnknownExpressionError passes through
                continue
            arr = np.asarray(item)
            if arr.ndim == 3:
                out.append(np.asarray(self.encoders.expression(_as_batch(arr, f"expression[{i}]")))[0])
            elif arr.ndim == 1 and arr.shape[0] == self.model.config.expression_dim:
                out.append(arr.astype(np.float32))
            else:
                raise ValueError(
                    f"expression[{i}]: shape {arr.shape}; give a word, an (H, W, 3) uint8 face or a "
                    f"vector of {self.model.config.expression_dim} values ({self.encoders.expression_name})"
                )
        return np.stack(out).astype(np.float32)

    # -- the three operations ---------------------------------------------------------------

    def swap(
        self,
        identity_images: Any,
        target_images: Any,
        *,
        masks: Any = None,
        seeds: Sequence[int] | None = None,
        **sampling: Any,
    ) -> np.ndarray:
        """Identity of identity_images[i] onto target_images[i] (its expression and background)."""
        tgt = _as_batch(target_images, "target_images")
        expr = self.expression_vectors(list(tgt))
        return self._run(identity_images, expr, tgt, masks, seeds, "swap", sampling)

    def reenact(
        self,
        source_images: Any,
        *,
        driver_images: Any = None,
        words: Sequence[str] | None = None,
        masks: Any = None,
        seeds: Sequence[int] | None = None,
        **sampling: Any,
    ) -> np.ndarray:
        """source_images[i] with the expression of driver_images[i] or of words[i]."""
        if (driver_images is None) == (words is None):
            raise ValueError("reenact: give exactly one of driver_images= or words=")
        if isinstance(words, str):
            raise ValueError(f"reenact: words={words!r} is a string; pass a list, e.g. words=[{words!r}]")
        src = _as_batch(source_images, "source_images")
        items = list(words) if words is not None else list(_as_batch(driver_images, "driver_images"))
        return self._run(src, self.expression_vectors(items), src, masks, seeds, "reenact", sampling)

    def generate(
        self,
        identity_images: Any,
        *,
        expression: Any,
        background_images: Any,
        masks: Any = None,
        seeds: Sequence[int] | None = None,
        **sampling: Any,
    ) -> np.ndarray:
        """Identity from identity_images, expression (list of word | face | vector, or one of
        them), background (and head placement) from background_images."""
        # a list/tuple is one item per sample; anything else (a word, one face, one numpy vector)
        # is a single item that broadcasts
        items = list(expression) if isinstance(expression, (list, tuple)) else [expression]
        bg = _as_batch(background_images, "background_images")
        return self._run(identity_images, self.expression_vectors(items), bg, masks, seeds, "generate", sampling)

    def travel_vectors(self, start: Any, end: Any, frames: int) -> np.ndarray:
        """(frames, De) expression vectors from `start` to `end` inclusive, evenly spaced; each
        end is a word, an (H, W, 3) uint8 face or a vector (as in `expression_vectors`)."""
        if not 2 <= int(frames) <= MAX_TRAVEL_FRAMES:
            raise ValueError(f"travel: frames={frames}; give 2 to {MAX_TRAVEL_FRAMES} (both ends included)")
        a, b = self.expression_vectors([start, end])
        return np.stack([interpolate(a, b, float(t)) for t in np.linspace(0.0, 1.0, int(frames))])

    def travel(
        self,
        identity_image: Any,
        *,
        start: Any,
        end: Any,
        frames: int = 8,
        background_image: Any = None,
        mask: Any = None,
        seed: int = 0,
        **sampling: Any,
    ) -> np.ndarray:
        """Expression travel: (frames, S, S, 3), one identity, background and seed, the expression
        moving from `start` to `end` (words, faces or vectors). The same seed in every frame keeps
        the noise fixed, so only the expression changes from frame to frame."""
        vectors = self.travel_vectors(start, end, frames)
        background = identity_image if background_image is None else background_image
        bg = _as_batch(background, "background_image")
        if len(bg) != 1:
            raise ValueError(f"travel: one background image, got {len(bg)}")
        masks = None if mask is None else np.asarray(mask)[None]
        return self._run(identity_image, vectors, bg, masks, [int(seed)] * len(vectors), "travel", sampling)

    def from_vectors(
        self,
        identity: np.ndarray,
        expression: np.ndarray,
        background_images: Any,
        *,
        masks: Any = None,
        seeds: Sequence[int],
        **sampling: Any,
    ) -> np.ndarray:
        """Generate from condition vectors directly: identity (B, Di), expression (B, De) in the
        model's encoder spaces (for example a face table's own columns, as training previews do)."""
        unknown = set(sampling) - set(DEFAULT_SAMPLING)
        if unknown:
            raise TypeError(
                f"from_vectors: unknown argument(s) {sorted(unknown)}; sampling options are {sorted(DEFAULT_SAMPLING)}"
            )
        bg_raw = _as_batch(background_images, "background_images")
        ident, expr = np.asarray(identity, np.float32), np.asarray(expression, np.float32)
        if not len(ident) == len(expr) == len(bg_raw) == len(seeds):
            raise ValueError(
                f"from_vectors: {len(ident)} identities, {len(expr)} expressions, {len(bg_raw)} backgrounds "
                f"and {len(seeds)} seeds; give one of each per sample"
            )
        m = self._masks(masks, len(bg_raw), bg_raw.shape[1])
        bg = resize_square_batch(bg_raw, self.resolution)
        return self._sample(ident, expr, bg, m, list(seeds), {**self.sampling, **sampling})

    # -- shared path ------------------------------------------------------------------------

    def _run(
        self,
        identity_images: Any,
        expr: np.ndarray,
        background: np.ndarray,
        masks: Any,
        seeds: Sequence[int] | None,
        kind: str,
        sampling: dict[str, Any],
    ) -> np.ndarray:
        unknown = set(sampling) - set(DEFAULT_SAMPLING)
        if unknown:
            raise TypeError(
                f"{kind}: unknown argument(s) {sorted(unknown)}; sampling options are {sorted(DEFAULT_SAMPLING)}"
            )
        opts = {**self.sampling, **sampling}
        ids_img = _as_batch(identity_images, "identity_images")
        n = max(len(ids_img), len(expr), len(background))
        _broadcast(n, identity_images=ids_img, expression=expr, background_images=background)
        ident = _rep(self.identity_vectors(ids_img), n)
        expr, bg_raw = _rep(expr, n), _rep(background, n)
        s = self.resolution
        bg = resize_square_batch(bg_raw, s)
        m = self._masks(masks, len(bg_raw), bg_raw.shape[1])
        m = _rep(m, n)
        if seeds is None:
            seeds = [_default_seed(kind, ids_img[min(i, len(ids_img) - 1)], bg[i], expr[i], opts) for i in range(n)]
        if len(seeds) != n:
            raise ValueError(f"seeds: {len(seeds)} given for a batch of {n}")
        # a reenactment's identity was read from its background face already: an inversion need
        # not encode it again (a swap's expression was read one image at a time, which differs
        # from the inversion's batched reading by float round-off, so it is read again)
        return self._sample(ident, expr, bg, m, list(seeds), opts, ident if kind == "reenact" else None)

    def _masks(self, masks: Any, n: int, size: int) -> np.ndarray:
        """(n, S, S) float {0, 1} masks at the model's resolution."""
        s = self.resolution
        if masks is None:
            from sfsr.faces.analyze import face_mask

            return np.repeat(face_mask(None, s)[None].astype(np.float32), n, axis=0)
        arr = np.asarray(masks)
        arr = arr[None] if arr.ndim == 2 else arr
        if arr.dtype == bool:
            arr = arr.astype(np.uint8)
        if arr.ndim != 3 or len(arr) not in (1, n) or arr.shape[1] != arr.shape[2]:
            raise ValueError(
                f"masks: shape {arr.shape}; expected (B, S, S) bool/uint8 face masks, one per target/background"
            )
        m = (arr > (127 if arr.dtype == np.uint8 and arr.max() > 1 else 0)).astype(np.uint8) * 255
        m = resize_square_batch(m, s) >= 128  # (B, S, S) at the model's resolution
        return np.repeat(m, n, axis=0) if len(m) == 1 and n > 1 else m

    @torch.no_grad()
    def _sample(
        self,
        ident: np.ndarray,
        expr: np.ndarray,
        bg: np.ndarray,
        masks: np.ndarray,
        seeds: list[int],
        opts: dict[str, Any],
        own_identity: np.ndarray | None = None,
    ) -> np.ndarray:
        model, dev = self.model, self.device
        img = torch.from_numpy(bg).permute(0, 3, 1, 2).float().to(dev) / 127.5 - 1.0  # (B, 3, S, S)
        mask = torch.from_numpy(np.ascontiguousarray(masks, np.float32))[:, None].to(dev)  # (B, 1, S, S)
        region = face_region(mask, model.config.mask_dilate)
        background, mregion = model.prepare_background(img, region)
        id_t = torch.from_numpy(ident).to(dev)
        ex_t = torch.from_numpy(expr).to(dev)

        def net(x, t, drop_id, drop_ex):
            k = x.shape[0] // id_t.shape[0]
            return model(
                x,
                t,
                background.repeat(k, 1, 1, 1),
                mregion.repeat(k, 1, 1, 1),
                id_t.repeat(k, 1),
                ex_t.repeat(k, 1),
                drop_id,
                drop_ex,
            )

        shape = (model.latent_channels, model.latent_size, model.latent_size)
        latent = model.vae is not None
        if opts["init"] not in INITS:
            raise ValueError(f"init={opts['init']!r} is not one of {list(INITS)}")
        if opts["init"] == "inversion" and opts["sampler"] != "ddim":
            raise ValueError(f"init='inversion' runs DDIM backwards; it needs sampler='ddim', not {opts['sampler']!r}")
        start = None
        if opts["init"] == "inversion":
            clip = None if latent else 1.0
            start = self._inverted(img, bg, background, mregion, int(opts["steps"]), clip, own_identity)
        z = sample(
            net,
            model.schedule,
            shape,
            generators_for(seeds),
            background=background,
            mask=mregion,
            steps=int(opts["steps"]),
            guidance_identity=float(opts["guidance_identity"]),
            guidance_expression=float(opts["guidance_expression"]),
            guidance_mode=opts["guidance_mode"],
            sampler=opts["sampler"],
            clip=None if latent else 1.0,
            device=dev,
            start=start,
        )
        x = model.decode(z).clamp(-1, 1)
        x = region * x + (1 - region) * img  # pixel-exact background (latent models too)
        out = ((x + 1) * 127.5).round().clamp(0, 255).to(torch.uint8)
        return out.permute(0, 2, 3, 1).cpu().numpy()

    def _inverted(
        self,
        img: torch.Tensor,
        bg: np.ndarray,
        background: torch.Tensor,
        mregion: torch.Tensor,
        steps: int,
        clip: float | None,
        own_identity: np.ndarray | None,
    ) -> torch.Tensor:
        """The background images (img (B, 3, S, S) in [-1, 1]; bg the same as uint8) DDIM-inverted
        under their own face's identity and expression as the encoders read them (own_identity:
        the identity when the caller has already read it from these images)."""
        model, dev = self.model, self.device
        own_id = self.identity_vectors(bg) if own_identity is None else own_identity
        own_ex = np.asarray(self.encoders.expression(bg), np.float32)
        own_id, own_ex = torch.from_numpy(own_id).to(dev), torch.from_numpy(own_ex).to(dev)
        keep = torch.zeros(len(bg), dtype=torch.bool, device=dev)

        def net(x, t):
            return model(x, t, background, mregion, own_id, own_ex, keep, keep)

        return invert(
            net,
            model.schedule,
            model.encode(img),
            background=background,
            mask=mregion,
            steps=steps,
            clip=clip,
            device=dev,
        )


def _default_seed(kind: str, ident: np.ndarray, bg: np.ndarray, expr: np.ndarray, opts: dict) -> int:
    h = hashlib.sha256(kind.encode())
    for part in (ident, bg, np.asarray(expr, np.float32)):
        h.update(np.ascontiguousarray(part).tobytes())
    # init="noise" is left out so default seeds stay what they were before `init` existed
    h.update(json.dumps({k: v for k, v in opts.items() if (k, v) != ("init", "noise")}, sort_keys=True).encode())
    return int.from_bytes(h.digest()[:6], "little")
