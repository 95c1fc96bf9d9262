"""Typed settings of the three deployments, read from each deployment's `user_config`.

deployments/serve_config.yaml sets them (`applications[0].deployments[*].user_config`), Serve
hands them to `reconfigure`, and `serve deploy` with a changed user_config updates running
replicas without restarting them. Unknown keys are an error naming the key, so a typo in the YAML
fails the deployment instead of being ignored. No Ray imports: unit tests build these directly.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from sfsr import c2pa_sign

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_MODEL = "sfsr/model/pretrained/cpu-demo"
TOKEN_ENV = "SFSR_API_TOKEN"
ALLOW_OPEN_ENV = "SFSR_API_ALLOW_UNAUTHENTICATED"
LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})

T = TypeVar("T")


def from_dict(cls: type[T], config: dict[str, Any] | None, where: str) -> T:
    """Build settings dataclass `cls` from a user_config mapping; unknown keys raise ValueError."""
    config = dict(config or {})
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(config) - names)
    if unknown:
        raise ValueError(
            f"{where}: unknown user_config keys {unknown}; known keys are {sorted(names)} "
            "(fix deployments/serve_config.yaml)"
        )
    obj = cls(**config)
    obj.check()  # type: ignore[attr-defined]
    return obj


def resolve_path(path: str) -> str:
    """A relative local path is relative to the repository root (replicas do not run in the
    directory `serve deploy` was called from); absolute paths and s3:// URIs pass through."""
    if "://" in path or os.path.isabs(path):
        return path
    return str(REPO_ROOT / path)


def torch_device(device: str) -> str:
    """A deployment's `device` setting as torch takes it: "auto" is cuda when this replica was
    given a GPU, else cpu."""
    if device != "auto":
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def open_api_refusal(token: str | None, host: str | None, allow_open: bool) -> str | None:
    """Why the ingress must not start (None: it may): without a token, only a loopback proxy is
    acceptable, unless the operator says a gateway in front authenticates (allow_open)."""
    if token or allow_open or host in LOOPBACK_HOSTS:
        return None
    return (
        f"Ingress: no API token configured and Serve's HTTP proxy binds {host or 'an unknown host'}, so "
        f"anyone who reaches it could use the API. Set {TOKEN_ENV} (or Ingress user_config.api_token_file), "
        f"bind http_options.host to 127.0.0.1, or set {ALLOW_OPEN_ENV}=1 if a gateway in front authenticates"
    )


@dataclass(frozen=True)
class IngressSettings:
    """The FastAPI ingress: request limits, generation bounds, auth."""

    max_request_mb: float = 32.0  # whole request body; larger ones get 413 before being read
    max_image_mb: float = 15.0  # each image, after base64 decoding
    max_image_pixels: int = 16_000_000  # each image, from its header (decompression bombs)
    min_image_side: int = 32
    max_output_side: int = 2048  # larger results are downscaled
    # Defaults for requests that omit them; None: the model's own sampling defaults (its card).
    default_steps: int | None = None
    default_guidance_identity: float | None = None
    default_guidance_expression: float | None = None
    max_steps: int = 100
    max_guidance: float = 15.0
    feather: float = 0.04  # paste-back seam blur (sigma), as a fraction of the face's size
    api_token_file: str | None = None  # a file holding the bearer token; else $SFSR_API_TOKEN
    retry_after_s: int = 2  # Retry-After on 503 answers the ingress gives itself (the least it says)
    # Generation requests predicted to take longer than this are answered 503 at once
    # (deployments/admission.py); null: 2.5 x the measured latency of a request alone.
    max_latency_s: float | None = None
    # C2PA signing chain folder (chain.pem, signer.key, ca.pem; sfsr/c2pa_sign.py). None: a local
    # chain in $SFSR_HOME/local/c2pa, made by `sfsr cluster up` or on first use; trusted by no one
    # else. Set it to your own chain from a CA (e.g. a mounted secret) for outputs others trust.
    c2pa_cert_dir: str | None = None

    def check(self) -> None:
        if not 0 < self.max_image_mb <= self.max_request_mb:
            raise ValueError(
                f"IngressSettings: need 0 < max_image_mb ({self.max_image_mb}) <= "
                f"max_request_mb ({self.max_request_mb})"
            )
        if self.default_steps is not None and not 1 <= self.default_steps <= self.max_steps:
            raise ValueError(
                f"IngressSettings: need 1 <= default_steps ({self.default_steps}) <= max_steps ({self.max_steps})"
            )
        for name in ("default_guidance_identity", "default_guidance_expression"):
            value = getattr(self, name)
            if value is not None and not 0 <= value <= self.max_guidance:
                raise ValueError(f"IngressSettings: {name} must lie in [0, max_guidance={self.max_guidance}]")
        if self.max_latency_s is not None and self.max_latency_s <= 0:
            raise ValueError(f"IngressSettings: max_latency_s must be > 0 seconds or null, got {self.max_latency_s}")
        if self.max_output_side < 256:
            raise ValueError("IngressSettings: max_output_side must be >= 256 (the watermark needs 256 x 256)")
        if self.c2pa_cert_dir is not None:
            self.c2pa_credentials()  # a configured chain must exist now, not at the first request

    def c2pa_credentials(self) -> c2pa_sign.Credentials:
        """The chain every output is signed with: c2pa_cert_dir's (which must hold one), else the
        local chain, created when missing or about to expire."""
        if self.c2pa_cert_dir is None:
            return c2pa_sign.ensure_chain(None)
        try:
            return c2pa_sign.load_credentials(Path(resolve_path(self.c2pa_cert_dir)).expanduser())
        except ValueError as e:
            raise ValueError(f"IngressSettings.c2pa_cert_dir: {e}") from None

    @property
    def max_request_bytes(self) -> int:
        return int(self.max_request_mb * 1024 * 1024)

    @property
    def max_image_bytes(self) -> int:
        return int(self.max_image_mb * 1024 * 1024)

    def defaults(self, model_defaults: dict[str, Any]) -> tuple[int, float, float]:
        """(steps, guidance_identity, guidance_expression) for requests that omit them: these
        settings where set, else the model's sampling defaults, clipped into the allowed ranges."""
        steps = self.default_steps or int(model_defaults.get("steps", 20))
        gi = self.default_guidance_identity
        ge = self.default_guidance_expression
        gi = float(model_defaults.get("guidance_identity", 2.0)) if gi is None else gi
        ge = float(model_defaults.get("guidance_expression", 2.0)) if ge is None else ge
        return (
            min(max(steps, 1), self.max_steps),
            min(max(gi, 0.0), self.max_guidance),
            min(max(ge, 0.0), self.max_guidance),
        )

    def token(self) -> str | None:
        """The bearer token clients must send, or None when auth is off."""
        if self.api_token_file:
            path = Path(resolve_path(self.api_token_file)).expanduser()
            try:
                value = path.read_text().strip()
            except OSError as e:
                raise ValueError(
                    f"IngressSettings.api_token_file {path}: cannot read it ({e}); "
                    "write the token there or unset api_token_file"
                ) from None
            if not value:
                raise ValueError(f"IngressSettings.api_token_file {path} is empty; put the token in it")
            return value
        value = os.environ.get(TOKEN_ENV, "").strip()
        return value or None


@dataclass(frozen=True)
class AnalysisSettings:
    """The face-analysis deployment: which face pack detects and aligns."""

    pack: str = "builtin"  # builtin, a folder or an s3:// prefix (sfsr.faces.open_pack)
    # Faces are aligned at this size or more and then downscaled to the model's crop size with
    # area averaging (sfsr.faces.analyze.ALIGN_SIZE, what ingest uses: keep them equal, or served
    # crops differ from the training table's)
    min_align_size: int = 128
    threads: int = 1  # OpenCV / onnxruntime threads per replica

    def check(self) -> None:
        if self.min_align_size < 16:
            raise ValueError("AnalysisSettings: min_align_size must be >= 16")


@dataclass(frozen=True)
class GeneratorSettings:
    """The generator deployment: which model, on what device, how requests are batched."""

    model: str = DEFAULT_MODEL  # a model folder (relative to the repo root, absolute) or s3://
    device: str = "auto"  # auto: cuda when this replica was given a GPU, else cpu
    max_batch_size: int = 8
    # a request that finds the model idle waits this long for others to batch with (0: starts at once;
    # under load, what queued during a model call forms the next batch anyway)
    batch_wait_timeout_s: float = 0.0
    torch_threads: int = 1  # intra-op threads per replica; replicas x threads <= cores
    # Any text; changing it reloads the model on running replicas. `serve deploy` of an unchanged
    # config changes nothing, so new weights written to the same `model` URI need a new revision
    # (the quickstart writes the weights' sha256 here). New replicas always load what is there now.
    model_revision: str = ""

    def check(self) -> None:
        if self.max_batch_size < 1:
            raise ValueError("GeneratorSettings: max_batch_size must be >= 1 (1 turns batching off)")
        if self.batch_wait_timeout_s < 0:
            raise ValueError("GeneratorSettings: batch_wait_timeout_s must be >= 0")
        if self.device not in ("auto", "cpu") and not self.device.startswith("cuda"):
            raise ValueError(f"GeneratorSettings: device {self.device!r} is not auto, cpu or cuda[:N]")

    @property
    def model_path(self) -> str:
        return resolve_path(self.model)


@dataclass(frozen=True)
class SceneSettings:
    """The text-to-image deployment (backgrounds from background_prompt): which Stable Diffusion
    folder, on what device, at what size and cost. No folder: prompts are refused with a 422."""

    text_to_image: str | None = None  # a Stable Diffusion folder (diffusers layout), local or s3://
    device: str = "auto"  # auto: cuda when this replica was given a GPU, else cpu
    width: int = 512  # background size in pixels (multiples of 8; SD 1.5 was trained at 512)
    height: int = 512
    steps: int = 25
    guidance: float = 7.5  # classifier-free guidance of the text prompt
    torch_threads: int = 1

    def check(self) -> None:
        for name in ("width", "height"):
            value = getattr(self, name)
            if value % 8 or not 64 <= value <= 2048:
                raise ValueError(f"SceneSettings: {name}={value} must be a multiple of 8 in [64, 2048]")
        if not 1 <= self.steps <= 200:
            raise ValueError(f"SceneSettings: steps={self.steps} must lie in [1, 200]")
        if not 0 <= self.guidance <= 30:
            raise ValueError(f"SceneSettings: guidance={self.guidance} must lie in [0, 30]")
        if self.device not in ("auto", "cpu") and not self.device.startswith("cuda"):
            raise ValueError(f"SceneSettings: device {self.device!r} is not auto, cpu or cuda[:N]")

    @property
    def folder(self) -> str | None:
        return resolve_path(self.text_to_image) if self.text_to_image else None
