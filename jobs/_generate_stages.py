"""The actor of jobs/generate.py: requests in, marked PNGs written, one result row per request out.

    request rows --read + detect/align (face pack, cached per URI)--> aligned crops and masks
      (a background_prompt row: --text-to-image scene, cached per prompt and seed, and the head
       placed in it: at head_box, else on the scene's face, else the portrait default; sfsr.scenes)
      --Generator.generate, one batched call per step count--> generated crops
      --paste back into the background photo, fit, watermark + provenance text--> <output>/images/<id>.png

Faces are framed the way the Serve API frames them (sfsr.faces.analyze_image at the model's crop
size, or sfsr.faces.compose.aligned_face for rows marked aligned), and outputs are composed and
marked the way it marks them (sfsr.faces.compose.paste_back + fit_output, sfsr.watermark). A
photo with several faces uses the most confident one. The text-to-image pipeline is loaded at the
first prompt row; a folder that fails to load makes each prompt row an error row naming it. A
request that fails at any step becomes an error row naming the step, the URI and the remedy; the
others in its batch go on. Nothing here imports Ray (jobs/generate.py wires it into a Dataset;
the tests can call it directly).
"""

from __future__ import annotations

import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa

from jobs._generate_requests import RESULTS, SceneSettings, error_row
from sfsr.io import storage
from sfsr.io.images import ImageError, decode_image

IMAGE_CACHE = 32  # decoded photos (with their faces) and scenes kept per actor (rows often share them)


class RowError(ValueError):
    """What went wrong with one request, ready to be its error text."""


@dataclass(frozen=True)
class Prepared:
    row: dict
    identity: np.ndarray  # (S, S, 3) uint8 aligned crop
    photo: np.ndarray  # (H, W, 3) uint8: the image the output is pasted into
    face: Any  # sfsr.faces.FaceRecord of the photo's face (crop, mask, align_matrix)
    expression: Any  # a word, a (S, S, 3) driver crop, a (D,) vector, or the photo's crop (keep its expression)
    seconds: float
    exemplar: int | None = None  # the bank exemplar whose vector `expression` is (expression_target=exemplar)


def image_uri(output: str, rid: str) -> str:
    return storage.join(output, "images", f"{rid}.png")


class GenerateRequests:
    """Actor: builds the Generator and face pack once, then serves batches of request rows."""

    def __init__(
        self,
        model: str,
        pack: str,
        output: str,
        device: str = "cpu",
        threads: int = 1,
        max_output_side: int = 2048,
        feather: float = 0.04,
        scenes: SceneSettings | None = None,
    ) -> None:
        import torch

        from sfsr.generate import Generator

        torch.set_num_threads(max(1, threads))
        self.gen = Generator.from_pretrained(model, device=device)
        info = self.gen.info
        self.size = self.gen.resolution
        self.model = str(info["model"])
        self.version = "sha256:" + self.gen.weights_digest
        self.info = info
        self.pack_spec, self.pack = pack, None  # opened on the first photo that needs detection
        self.output, self.max_output_side, self.feather = output, max_output_side, feather
        self.device = device
        self.scene_settings = scenes
        self._text_to_image: Any = None  # sfsr.scenes.TextToImage, or the RowError of its loading
        self._cache: OrderedDict[tuple, Any] = OrderedDict()  # key -> what load() gave, or its RowError

    # -- faces ------------------------------------------------------------------------------

    def _cached(self, key: tuple, load: Any) -> Any:
        """load(), or a RowError it raised, kept for the last IMAGE_CACHE keys; raises the error."""
        if key not in self._cache:
            try:
                self._cache[key] = load()
            except RowError as e:
                self._cache[key] = e
            while len(self._cache) > IMAGE_CACHE:
                self._cache.popitem(last=False)
        self._cache.move_to_end(key)
        found = self._cache[key]
        if isinstance(found, RowError):
            raise RowError(str(found))
        return found

    def _pack(self) -> Any:
        from sfsr.faces import open_pack

        if self.pack is None:
            self.pack = open_pack(self.pack_spec)  # opened on the first photo that needs detection
        return self.pack

    def _load_face(self, uri: str, aligned: bool, role: str) -> tuple[np.ndarray, Any]:
        from sfsr.faces import analyze_image
        from sfsr.faces.compose import aligned_face

        try:
            image = decode_image(storage.read_bytes(uri), source=uri)
        except storage.StorageNotFoundError:
            raise RowError(f"{role}: no file at {uri}; check the URI") from None
        except storage.StorageError as e:
            raise RowError(f"{role}: cannot read {uri} ({e})") from None
        except ImageError as e:
            raise RowError(f"{role}: unreadable image at {uri} ({e}); give a JPEG, PNG or WebP photo") from None
        if aligned:
            try:
                return image, aligned_face(image, self.size)
            except ValueError as e:
                raise RowError(f"{role}: {uri}: {e}") from None
        faces = analyze_image(self._pack(), image, self.size)
        if not faces:
            h, w = image.shape[:2]
            raise RowError(
                f"{role}: no face found in {uri} ({w}x{h}); use a photo with one clearly visible, roughly "
                "frontal face at least 80 px wide, or set aligned=true for an aligned face crop"
            )
        return image, faces[0]  # the most confident face

    def face(self, uri: str, aligned: bool, role: str) -> tuple[np.ndarray, Any]:
        """(photo, FaceRecord) of an image URI, cached; raises RowError naming role and URI."""
        try:
            return self._cached(("photo", uri, aligned), lambda: self._load_face(uri, aligned, role))
        except RowError as e:  # the cached text names the role it was first loaded as; say this one
            raise RowError(role + ":" + str(e).split(":", 1)[1]) from None

    # -- backgrounds made from prompts ----------------------------------------------------------

    def text_to_image(self) -> Any:
        """The --text-to-image pipeline, loaded at the first prompt row; a folder that cannot be
        loaded raises its RowError for this and every later prompt row."""
        s = self.scene_settings
        if self._text_to_image is None:
            if s is None:  # parse_request refuses such rows; never expected here
                self._text_to_image = RowError("background_prompt: no text-to-image folder configured")
            else:
                from sfsr.scenes import TextToImage

                try:
                    self._text_to_image = TextToImage.from_pretrained(s.folder, device=self.device)
                except Exception as e:  # noqa: BLE001 - any failure becomes the prompt rows' error
                    self._text_to_image = RowError(
                        f"background_prompt: cannot load --text-to-image {s.folder} ({type(e).__name__}: {e}); "
                        "give a Stable Diffusion folder in the diffusers layout (local or s3://)"
                    )
        if isinstance(self._text_to_image, RowError):
            raise RowError(str(self._text_to_image))
        return self._text_to_image

    def _render(self, prompt: str, seed: int) -> np.ndarray:
        s, model = self.scene_settings, self.text_to_image()
        try:
            return model.background(
                prompt, seed=seed, width=s.width, height=s.height, steps=s.steps, guidance=s.guidance
            )
        except Exception as e:  # noqa: BLE001 - any failure becomes the request's error row
            raise RowError(f"background_prompt: text-to-image failed ({type(e).__name__}: {e})") from None

    def scene(self, row: dict) -> tuple[np.ndarray, Any]:
        """(scene, FaceRecord where the person goes) of a background_prompt row, the way the
        Serve API places them: at head_box, else on the scene's most confident face, else the
        default portrait placement (sfsr.scenes)."""
        from sfsr.faces import analyze_image
        from sfsr.scenes import box_from_fractions, default_head_box, place_head

        prompt, seed = row["background_prompt"], int(row["background_seed"])
        image = self._cached(("scene", prompt, seed), lambda: self._render(prompt, seed))
        h, w = image.shape[:2]
        if row["head_box"]:
            try:
                return image, place_head(image, box_from_fractions(tuple(row["head_box"]), w, h), self.size)
            except ValueError as e:
                raise RowError(f"head_box in the {w}x{h} scene: {e}") from None
        faces = analyze_image(self._pack(), image, self.size)
        return image, faces[0] if faces else place_head(image, default_head_box(w, h), self.size)

    def prepare(self, row: dict) -> Prepared:
        t0 = time.perf_counter()
        aligned = bool(row["aligned"])
        ident_photo, ident_face = self.face(row["identity"], aligned, "identity")
        photo, face = (ident_photo, ident_face)
        if row["background_prompt"]:
            photo, face = self.scene(row)
        elif row["background"]:
            photo, face = self.face(row["background"], aligned, "background")
        expression: Any
        exemplar = None
        if row["expression"] and row.get("expression_target") == "exemplar":
            expression, exemplar = self.exemplar(row)
        elif row["expression"]:
            expression = row["expression"]
        elif row["driver"]:
            expression = self.face(row["driver"], aligned, "driver")[1].crop
        elif row["expression_vector"]:
            expression = np.asarray(row["expression_vector"], np.float32)
        elif row["background_prompt"]:
            expression = ident_face.crop  # no expression asked, no face of the scene's own: the person's
        else:
            expression = face.crop  # no expression asked: keep the background face's own (a swap)
        return Prepared(row, ident_face.crop, photo, face, expression, time.perf_counter() - t0, exemplar)

    def exemplar(self, row: dict) -> tuple[np.ndarray, int]:
        """(vector, index) of the exemplar face the row asks for: its expression_exemplar, else the
        one its seed picks (Generator.exemplar_target, as the API picks)."""
        try:
            return self.gen.exemplar_target(row["expression"], row["expression_exemplar"], seed=int(row["seed"]))
        except ValueError as e:  # no bank, no exemplars of the word, or an index past them
            raise RowError(f"expression_target exemplar: {e}") from None

    # -- generate and finish -----------------------------------------------------------------

    def finish(self, p: Prepared, crop: np.ndarray) -> bytes:
        """Paste the generated crop back into its photo, fit it, watermark it, add provenance."""
        from sfsr import scenes, watermark
        from sfsr.faces.compose import fit_output, paste_back

        image = paste_back(p.photo, crop, p.face.align_matrix, p.face.mask, self.feather)
        image = fit_output(image, self.max_output_side)
        row = p.row
        scene = {}
        if row["background_prompt"] and self.scene_settings is not None:  # the API's keys (Scene.provenance)
            scene = scenes.provenance(row["background_prompt"], row["background_seed"], self.scene_settings.name)
        text = watermark.provenance(
            self.model,
            self.version,
            row["id"],
            route="generate",
            job="jobs.generate",
            seed=str(row["seed"]),
            steps=str(row["steps"]),
            init=self.init(p),
            trained_on=str(self.info.get("trained_on")),
            licence=str(self.info.get("licence")),
            **({"warning": self.info["warning"]} if self.info.get("warning") else {}),
            **scene,
            **({} if p.exemplar is None else {"expression_target": "exemplar", "expression_exemplar": str(p.exemplar)}),
        )
        return watermark.mark_and_encode(image, text)

    def _error(self, row: dict, reason: str) -> dict:
        return error_row(
            row["id"], f"row {row['id']}: {reason}", row["digest"], row["seed"], row["steps"], self.model, self.version
        )

    def __call__(self, batch: pa.Table) -> pa.Table:
        results: list[dict] = []
        prepared: list[Prepared] = []
        for row in batch.to_pylist():
            try:
                prepared.append(self.prepare(row))
            except RowError as e:
                results.append(self._error(row, str(e)))
        groups: dict[tuple[int, str], list[Prepared]] = {}
        for p in prepared:
            groups.setdefault((int(p.row["steps"]), self.init(p)), []).append(p)
        for (steps, init), group in groups.items():
            results += self.run_group(group, steps, init)
        return pa.Table.from_pylist(results, schema=RESULTS)

    def init(self, p: Prepared) -> str:
        """What sampling starts from: the model's default, except that a scene made from text has
        no face to invert, so it starts from noise (as the Serve API does)."""
        return "noise" if p.row["background_prompt"] else self.gen.sampling["init"]

    def run_group(self, group: list[Prepared], steps: int, init: str) -> list[dict]:
        """One batched model call for requests with the same step count and start, then finish
        each. A failed call is retried one request at a time, so one bad request cannot lose the rest."""
        t0 = time.perf_counter()
        try:
            out = self.gen.generate(
                np.stack([p.identity for p in group]),
                expression=[p.expression for p in group],
                background_images=np.stack([p.face.crop for p in group]),
                masks=np.stack([p.face.mask for p in group]),
                seeds=[int(p.row["seed"]) for p in group],
                steps=steps,
                init=init,
            )
        except Exception as e:  # noqa: BLE001 - any failure becomes the request's error row
            if len(group) > 1:
                return [r for p in group for r in self.run_group([p], steps, init)]
            return [self._error(group[0].row, f"generation failed ({type(e).__name__}: {e})")]
        share = (time.perf_counter() - t0) / len(group)
        results = []
        for p, crop in zip(group, np.asarray(out)):
            t1 = time.perf_counter()
            uri = image_uri(self.output, p.row["id"])
            try:
                storage.write_bytes(uri, self.finish(p, crop))
            except storage.StorageError as e:
                results.append(self._error(p.row, f"output: cannot write {uri} ({e})"))
                continue
            results.append(
                {
                    "id": p.row["id"],
                    "status": "ok",
                    "output_uri": uri,
                    "error": None,
                    "model": self.model,
                    "model_version": self.version,
                    "seed": p.row["seed"],
                    "steps": steps,
                    "seconds": round(p.seconds + share + time.perf_counter() - t1, 3),
                    "request_digest": p.row["digest"],
                }
            )
        return results
