"""The FastAPI ingress: routes under /v1, the web page at /, OpenAPI at /docs.

Each POST route: read the body (413 before reading when it is too large), validate it
(deployments/validation.py), find the faces (FaceAnalysis deployment, or none for aligned
crops), generate (Generator deployment, batched), paste the result back into the photo,
watermark it and attach provenance (sfsr/watermark.py), answer PNG (or JSON when asked).

Overload: a generation predicted to take longer than the latency budget is answered 503 with
Retry-After at once (deployments/admission.py sizes the queue from the generator's measured
service time); behind that, the model deployments' max_queued_requests make handle calls fail
fast with BackPressureError, also a 503. A generator replica that dies mid-request is retried once
on another replica. Every generation answer carries a Server-Timing header: where its time went.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import hashlib
import logging
import os
import re
import secrets
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np
from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response
from ray import serve
from ray.exceptions import ActorUnavailableError, RayActorError
from ray.serve.exceptions import BackPressureError, DeploymentUnavailableError
from ray.serve.handle import DeploymentHandle
from ray.serve.metrics import Counter, Histogram
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException as StarletteHTTPException

from deployments import compose, expressions, travel, validation
from deployments.admission import Admission, Refusal
from deployments.generator import GenJob, GenResult
from deployments.openapi import PNGResponse, health_responses, png_responses, request_body, responses
from deployments.scenes import Scene, not_configured
from deployments.settings import ALLOW_OPEN_ENV, TOKEN_ENV, IngressSettings, from_dict, open_api_refusal
from deployments.timing import StageTimer
from deployments.travel import TravelRequest
from sfsr import c2pa_sign, watermark
from sfsr.expressions import FAMILIES, words_by_family
from sfsr.io.images import ImageLimits
from sfsr.io.images import encode_png as plain_png
from sfsr.scenes import box_from_fractions, default_head_box, place_head

logger = logging.getLogger("ray.serve")
STATIC = Path(__file__).resolve().parent / "static"
EXAMPLE_IDENTITIES = (3, 11, 27, 42, 58, 71)  # sfsr.synth identities shown as example faces
WARNING_HEADER = "X-Sfsr-Warning"  # on outputs of a model trained on synthetic faces (documented in OpenAPI)
MODEL_INFO_TTL_S = 30.0  # re-read Generator.info this often (a reconfigure may load another model)
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
# Everything the Ingress methods use must be defined above the class: serve.ingress pickles the
# class by value at decoration time, with the module globals that exist at that point.
PARSERS = {
    "swap": validation.parse_swap,
    "reenact": validation.parse_reenact,
    "generate": validation.parse_generate,
    "travel": travel.parse_travel,
}

api = FastAPI(
    title="sfsr",
    version="0.1.0",
    docs_url="/docs",
    openapi_url="/openapi.json",
    description="Personalised face generation with separate identity and expression control: face swap, "
    "reenactment and simultaneous generation. Outputs are synthetic images: PNG with provenance "
    "text and an invisible watermark (`sfsr watermark detect IMAGE`).",
)


@api.exception_handler(validation.ApiError)
async def _api_error(request: Request, exc: validation.ApiError) -> JSONResponse:
    headers = {"Retry-After": str(exc.extra.pop("retry_after"))} if "retry_after" in exc.extra else None
    return JSONResponse(exc.body(getattr(request.state, "request_id", None)), status_code=exc.status, headers=headers)


@api.exception_handler(StarletteHTTPException)
async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
    """Starlette's own refusals (no such path, e.g. a word with a '/'; wrong method) as ApiErrors."""
    code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
    response = await _api_error(
        request, validation.ApiError(exc.status_code, code, f"{exc.detail}: {request.url.path}")
    )
    response.headers.update(exc.headers or {})  # 405's Allow
    return response


@api.middleware("http")
async def _guard_and_measure(request: Request, call_next: Any) -> Response:
    """Request id, bearer token, early 413, and the request metrics, for every route."""
    ingress: Ingress = request.app.state.ingress
    rid = request.headers.get("x-request-id", "")
    rid = rid if _REQUEST_ID.match(rid) else uuid.uuid4().hex
    request.state.request_id = rid
    t0 = time.perf_counter()
    path = request.url.path
    try:
        if ingress.token and path.startswith("/v1/") and path != "/v1/healthz":
            ingress.check_token(request.headers.get("authorization"))
        if request.method == "POST":
            validation.check_content_length(request.headers.get("content-length"), ingress.settings.max_request_bytes)
        response = await call_next(request)
    except validation.ApiError as e:
        response = await _api_error(request, e)
        if e.status == 401:
            response.headers["WWW-Authenticate"] = 'Bearer realm="sfsr"'
    except Exception:  # a bug, not a bad input: log it, answer 500 with the id to find it in the log
        logger.exception("Ingress: request %s %s failed", request.method, path)
        response = JSONResponse(
            {
                "error": {
                    "code": "internal",
                    "request_id": rid,
                    "message": "internal error; the server log has the details",
                }
            },
            500,
        )
    route = request.scope.get("route")
    label = getattr(route, "path", None) or "unmatched"  # route templates only: bounded label values
    ingress.observe(label, request.method, response.status_code, time.perf_counter() - t0)
    return response


def seed_from(request_id: str) -> int:
    """Default seed: a hash of the request id (reproducible by resending the seed we report)."""
    return int.from_bytes(hashlib.sha256(request_id.encode()).digest()[:4], "big") & validation.MAX_SEED


def _replay(body: bytes) -> Any:
    """An ASGI receive callable that yields `body` once (to parse a body already read)."""
    sent = False

    async def receive() -> dict[str, Any]:
        nonlocal sent
        if sent:
            return {"type": "http.disconnect"}
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    return receive


async def _none() -> None:
    """An awaitable for an optional input that is absent (keeps asyncio.gather calls uniform)."""
    return None


def provenance_fields(info: dict[str, Any], rid: str, route: str, seed: int, p: validation.Params) -> dict[str, Any]:
    """What every answer's metadata says of where it came from: request, model, sampling."""
    return {
        "request_id": rid,
        "route": route,
        "model": info["name"],
        "model_version": info["version"],
        "trained_on": info["trained_on"],
        "licence": info.get("licence"),
        "warning": info.get("warning"),
        "seed": seed,
        "steps": p.steps,
        "guidance_identity": p.guidance_identity,
        "guidance_expression": p.guidance_expression,
        "init": p.init,
    }


def _serve_http_host() -> str | None:
    """The host Serve's HTTP proxies bind, from the controller (None if it cannot be read)."""
    try:
        import ray
        from ray.serve.context import _get_global_client

        controller = _get_global_client()._controller
        details = ray.get(controller.get_serve_instance_details.remote(), timeout=10)
        return (details.get("http_options") or {}).get("host")
    except Exception as e:  # best effort: the check below then assumes the worst
        logger.warning("Ingress: could not read Serve's http_options (%s)", e)
        return None


@serve.deployment(name="Ingress")
@serve.ingress(api)
class Ingress:
    def __init__(self, analysis: DeploymentHandle, generator: DeploymentHandle, scenes: DeploymentHandle) -> None:
        self.analysis, self.generator, self.scenes = analysis, generator, scenes
        self.settings = IngressSettings()
        self.token: str | None = None
        self._model: dict[str, Any] | None = None
        self._model_at = 0.0
        self._examples: dict[int, bytes] = {}
        # Decoded uploads are big (16 MP = 48 MB each); at most this many requests decode at once.
        self._decode_slots = asyncio.Semaphore(4)
        self.admission = Admission()
        self.refused = Counter(
            "sfsr_requests_refused", "generation requests answered 503 by the admission", tag_keys=("route",)
        )
        self.page = (STATIC / "index.html").read_text(encoding="utf-8")
        self.requests = Counter(
            "sfsr_requests", "HTTP requests by route, method and status", tag_keys=("route", "method", "status")
        )
        self.latency = Histogram(
            "sfsr_request_seconds",
            "HTTP request latency by route",
            tag_keys=("route",),
            boundaries=[0.01, 0.05, 0.1, 0.25, 0.5, 1, 2, 4, 8, 16, 32, 64],
        )
        self.faces = Histogram(
            "sfsr_faces_found",
            "faces detected per uploaded image",
            tag_keys=("route", "field"),
            boundaries=[0.5, 1.5, 2.5, 3.5, 5.5, 10.5],
        )  # le=0.5 counts "no face"
        api.state.ingress = self

    def reconfigure(self, config: dict[str, Any]) -> None:
        self.settings = from_dict(IngressSettings, config, "Ingress user_config")
        self.admission.max_latency_s = self.settings.max_latency_s
        self.admission.min_retry_after_s = self.settings.retry_after_s
        self.token = self.settings.token()
        if self.token:
            logger.info("Ingress: bearer token required on /v1 routes (except /v1/healthz)")
            return
        host = _serve_http_host()
        refusal = open_api_refusal(self.token, host, os.environ.get(ALLOW_OPEN_ENV) == "1")
        if refusal:
            raise RuntimeError(refusal)
        logger.warning(
            "Ingress: no API token configured (%s or api_token_file); the API is open to local users, "
            "so Serve's HTTP proxy binds %s only",
            TOKEN_ENV,
            host,
        )

    # --- helpers ------------------------------------------------------------------------------

    def check_token(self, header: str | None) -> None:
        scheme, _, given = (header or "").partition(" ")
        if scheme.lower() != "bearer" or not secrets.compare_digest(given.strip().encode(), self.token.encode()):
            raise validation.ApiError(
                401,
                "unauthorized",
                "a valid bearer token is required: send the header "
                "'Authorization: Bearer <token>' with the token the server was configured with",
            )

    def observe(self, route: str, method: str, status: int, seconds: float) -> None:
        self.requests.inc(1, tags={"route": route, "method": method, "status": str(status)})
        self.latency.observe(seconds, tags={"route": route})

    async def model(self, fresh: bool = False) -> dict[str, Any]:
        """Generator.info, read again every MODEL_INFO_TTL_S, or now when `fresh`."""
        if fresh or self._model is None or time.monotonic() - self._model_at > MODEL_INFO_TTL_S:
            self._model = await self._call(self.generator.info)
            self._model_at = time.monotonic()
        return self._model

    async def _made_by(self, info: dict[str, Any], *results: GenResult) -> dict[str, Any]:
        """The model info that names the weights which made `results`: a redeploy with another
        model reaches the generator at once, while the info read before may be up to
        MODEL_INFO_TTL_S old, and an output's provenance must not name the previous model."""
        if any(r.model_version and r.model_version != info["version"] for r in results):
            return await self.model(fresh=True)
        return info

    async def limits(self, info: dict[str, Any] | None = None) -> validation.Limits:
        """Request limits for the model `info` describes (default: the cached reading)."""
        s, info = self.settings, info or await self.model()
        steps, gi, ge = s.defaults(info.get("sampling_defaults") or {})
        return validation.Limits(
            image=ImageLimits(max_bytes=s.max_image_bytes, max_pixels=s.max_image_pixels, min_side=s.min_image_side),
            default_steps=steps,
            max_steps=s.max_steps,
            max_guidance=s.max_guidance,
            default_guidance_identity=gi,
            default_guidance_expression=ge,
            default_init=(info.get("sampling_defaults") or {}).get("init", validation.INITS[0]),
            expression_dim=info.get("expression_dim"),
        )

    async def _call(self, method: Any, *args: Any, retries: int = 1) -> Any:
        """Call a model deployment; overload and dead replicas become 503 with Retry-After."""
        for attempt in range(retries + 1):
            try:
                return await method.remote(*args)
            except BackPressureError as e:
                raise validation.ApiError(
                    503,
                    "overloaded",
                    f"the model deployments are at capacity ({e.message}); retry later",
                    retry_after=self.settings.retry_after_s,
                ) from None
            except DeploymentUnavailableError as e:
                raise validation.ApiError(
                    503,
                    "unavailable",
                    f"a model deployment is not available ({e}); retry later",
                    retry_after=self.settings.retry_after_s,
                ) from None
            except (RayActorError, ActorUnavailableError) as e:
                if attempt == retries:
                    raise validation.ApiError(
                        503,
                        "replica_lost",
                        f"a model replica stopped while serving this request ({type(e).__name__}); retry",
                        retry_after=1,
                    ) from None
                logger.warning("Ingress: model replica lost (%s); retrying once", type(e).__name__)

    async def _fields(self, request: Request) -> dict[str, Any]:
        kind = validation.check_content_type(request.headers.get("content-type"))
        limit = self.settings.max_request_bytes
        body = bytearray()
        async for chunk in request.stream():  # counted, for bodies sent without Content-Length
            body += chunk
            if len(body) > limit:
                raise validation.ApiError(
                    413,
                    "request_too_large",
                    f"the request body exceeds the limit of {limit} "
                    f"bytes ({limit / 2**20:.0f} MiB); send smaller images",
                )
        if kind == "json":
            return validation.json_fields(bytes(body))
        try:
            form = await Request(request.scope, _replay(bytes(body))).form(
                max_files=8, max_fields=32, max_part_size=self.settings.max_image_bytes * 2
            )
        except Exception as e:  # starlette raises several types for malformed multipart
            raise validation.ApiError(400, "invalid_multipart", f"the multipart body cannot be parsed ({e})") from None
        try:
            items = [(k, await v.read() if isinstance(v, UploadFile) else v) for k, v in form.multi_items()]
        finally:
            await form.close()
        return validation.multipart_fields(items)

    async def _face(self, inp: validation.ImageInput, size: int, route: str) -> Any:
        if inp.aligned:
            try:
                return compose.aligned_face(inp.image, size)
            except ValueError as e:
                raise validation.ApiError(422, "not_square", f"{inp.field}: {e}", f"{inp.field}_aligned") from None
        faces = await self._call(self.analysis.analyze, inp.image, size)
        self.faces.observe(len(faces), tags={"route": f"/v1/{route}", "field": inp.field})
        return validation.choose_face(faces, inp)

    async def _scene(self, req: validation.GenerateRequest, seed: int, size: int) -> tuple[Any, Any, Scene]:
        """A background made from req.background_prompt, and the face placed in it: at head_box,
        else where the scene shows a face, else the default portrait placement (sfsr.scenes)."""
        scene_seed = req.background_seed if req.background_seed is not None else seed
        scene: Scene | None = await self._call(self.scenes.background, req.background_prompt, scene_seed)
        if scene is None:
            raise not_configured()
        image = scene.image
        h, w = image.shape[:2]
        inp = validation.ImageInput("background_prompt", image)
        if req.head_box is not None:
            try:
                return inp, place_head(image, box_from_fractions(req.head_box, w, h), size), scene
            except ValueError as e:
                raise validation.ApiError(
                    422, "invalid_head_box", f"head_box in the {w}x{h} scene: {e}", "head_box"
                ) from None
        faces = await self._call(self.analysis.analyze, image, size)
        return inp, faces[0] if faces else place_head(image, default_head_box(w, h), size), scene

    async def _exemplar(
        self, word: str | None, target: validation.ExpressionTarget | None, seed: int
    ) -> expressions.ExemplarChoice | None:
        """The word's exemplar face, when the request asks for one (deployments/expressions.py)."""
        if word is None or target is None or target.kind != "exemplar":
            return None
        return expressions.served(await self._call(self.generator.exemplar_vector, word, target.index, seed))

    # --- the pipeline ---------------------------------------------------------------------------

    async def _run(self, request: Request, route: str) -> Response:
        t0 = time.perf_counter()
        timing = StageTimer()
        rid = request.state.request_id
        fields = await self._fields(request)
        timing.lap("read")
        info = await self.model()
        limits = await self.limits(info)
        async with self._decode_slots:
            req = await asyncio.to_thread(PARSERS[route], fields, limits)
        del fields
        timing.lap("parse")
        work = req.params.steps * (req.frames if route == "travel" else 1)  # denoising steps asked for
        ticket = self.admission.ask(work, time.monotonic())
        if isinstance(ticket, Refusal):
            self.refused.inc(1, tags={"route": f"/v1/{route}"})
            raise validation.ApiError(503, "overloaded", ticket.message(), retry_after=ticket.retry_after_s)
        response: Response | None = None
        try:
            if route == "travel":
                response = await self._travel(request, req, info, rid, timing)
            else:
                response = await self._generate(request, route, req, info, rid, timing)
            return response
        finally:
            result: GenResult | None = getattr(response, "gen", None)
            self.admission.finish(
                ticket,
                time.monotonic(),
                latency_s=time.perf_counter() - t0 if result else None,
                model_s=result.model_s if result else None,
                queue_s=result.queue_s if result else 0.0,
                batch_size=result.batch_size if result else 1,
                replica=result.replica if result else None,
            )

    async def _generate(
        self, request: Request, route: str, req: Any, info: dict[str, Any], rid: str, timing: StageTimer
    ) -> Response:
        """Faces, generation, paste back and encoding of one parsed request -> its Response, which
        carries the generator's GenResult as `.gen` (for the admission's measurements)."""
        t0 = timing.start
        p = req.params
        seed = p.seed if p.seed is not None else seed_from(rid)
        size = info["resolution"]
        scene: Scene | None = None
        common = dict(
            steps=p.steps,
            guidance_identity=p.guidance_identity,
            guidance_expression=p.guidance_expression,
            init=p.init,
            seed=seed,
        )
        word, target = getattr(req, "expression", None), getattr(req, "expression_target", None)
        choice = await self._exemplar(word, target, seed)
        expression = expressions.job_expression(word, getattr(req, "expression_vector", None), choice)
        if route == "swap":
            primary, out = req.identity, req.target
            pf, of = await asyncio.gather(self._face(primary, size, route), self._face(out, size, route))
            job = GenJob("swap", pf.crop, target=of.crop, mask=of.mask, **common)
        elif route == "reenact":
            out = req.source
            of, df = await asyncio.gather(
                self._face(out, size, route), self._face(req.driver, size, route) if req.driver else _none()
            )
            job = GenJob(
                "reenact", of.crop, mask=of.mask, driver=None if df is None else df.crop, **expression, **common
            )
        else:
            primary, out = req.identity, req.background or req.identity
            expr = req.expression_image
            pf, of, ef, made = await asyncio.gather(
                self._face(primary, size, route),
                self._face(out, size, route) if req.background else _none(),
                self._face(expr, size, route) if expr else _none(),
                self._scene(req, seed, size) if req.background_prompt else _none(),
            )
            if made:
                out, of, scene = made
            of = of or pf
            job = GenJob(
                "generate",
                pf.crop,
                target=of.crop,
                mask=of.mask,
                driver=None if ef is None else ef.crop,
                **expression,
                **common,
            )
        timing.lap("detect")
        gen: GenResult = await self._call(self.generator.run, dataclasses.replace(job, submitted=time.time()))
        timing.lap("generate")
        info = await self._made_by(info, gen)
        crop = gen.image
        meta = {
            **provenance_fields(info, rid, route, seed, p),
            "expression": word,
            "expression_source": "target" if route == "swap" else "word" if word else job.expression_kind,
            **expressions.target_metadata(word, target, choice),
            "face": {"field": out.field, "bbox": [round(float(v), 1) for v in of.bbox], "aligned_input": out.aligned},
            "statement": watermark.GENERATED_STATEMENT,
        }
        if scene is not None:
            meta["background"] = {**scene.provenance(), "seconds": scene.seconds}
        png, shape = await asyncio.to_thread(self._finish, out.image, crop, of, meta)
        timing.lap("finish")
        meta.update(
            width=shape[1],
            height=shape[0],
            seconds=round(time.perf_counter() - t0, 3),
            watermark={"method": watermark.METHOD, "payload": watermark.PAYLOAD.hex()},
        )
        headers = {
            "X-Sfsr-Model": f"{info['name']} {info['version']}",
            "Server-Timing": timing.header(
                queue=gen.queue_s,
                model=gen.model_s,
                batch=gen.batch_size,
                **({"scene": scene.seconds} if scene else {}),
            ),
        }
        if meta["warning"]:
            headers[WARNING_HEADER] = meta["warning"]
        response: Response
        if "application/json" in request.headers.get("accept", ""):
            response = JSONResponse(
                {
                    "image": "data:image/png;base64," + base64.b64encode(png).decode(),
                    "metadata": meta,
                    "warning": meta["warning"],
                },
                headers=headers,
            )
        else:
            response = Response(png, media_type="image/png", headers=headers)
        if scene is not None:  # the admission learns overhead from latency - queue - model: not the scene's time
            gen = dataclasses.replace(gen, queue_s=gen.queue_s + scene.seconds)
        response.gen = gen  # type: ignore[attr-defined]
        return response

    async def _travel(
        self, request: Request, req: TravelRequest, info: dict[str, Any], rid: str, timing: StageTimer
    ) -> Response:
        """Expression travel (deployments/travel.py): one generate job per frame, batched together.
        The response carries no `.gen`: a travel's cost per step would mislead the admission."""
        p, size = req.params, info["resolution"]
        seed = p.seed if p.seed is not None else seed_from(rid)
        out = req.background or req.identity
        pf, of, sf, ef = await asyncio.gather(
            self._face(req.identity, size, "travel"),
            self._face(out, size, "travel") if req.background else _none(),
            self._face(req.start.image, size, "travel") if req.start.image else _none(),
            self._face(req.end.image, size, "travel") if req.end.image else _none(),
        )
        of = of or pf
        chosen = [await self._exemplar(e.word, e.target, seed) for e in (req.start, req.end)]
        ends = [
            travel.end_item(e, f.crop if f is not None else None, c.vector if c else None)
            for e, f, c in ((req.start, sf, chosen[0]), (req.end, ef, chosen[1]))
        ]
        vectors = await self._call(self.generator.travel_vectors, *ends, req.frames)
        timing.lap("detect")
        common = dict(
            steps=p.steps, guidance_identity=p.guidance_identity, guidance_expression=p.guidance_expression, init=p.init
        )
        now = time.time()
        jobs = [
            GenJob("generate", pf.crop, target=of.crop, mask=of.mask, vector=vec, seed=seed, submitted=now, **common)
            for vec in vectors
        ]
        results: list[GenResult] = await self._call(self.generator.run_many, jobs)
        timing.lap("generate")
        info = await self._made_by(info, *results)
        meta = {
            **provenance_fields(info, rid, "travel", seed, p),
            "start": req.start.word or ("image" if req.start.image else "vector"),
            "end": req.end.word or ("image" if req.end.image else "vector"),
            **expressions.target_metadata(req.start.word, req.start.target, chosen[0], "start_target"),
            **expressions.target_metadata(req.end.word, req.end.target, chosen[1], "end_target"),
            "frames": req.frames,
            "frame_ms": req.frame_ms,
            "face": {"field": out.field, "bbox": [round(float(x), 1) for x in of.bbox], "aligned_input": out.aligned},
            "statement": watermark.GENERATED_STATEMENT,
        }
        want_json = "application/json" in request.headers.get("accept", "")
        animation, frames = await asyncio.to_thread(
            travel.finish_frames,
            out.image,
            [r.image for r in results],
            of,
            meta,
            req.frame_ms,
            want_json,
            self.settings,
        )
        timing.lap("finish")
        first = results[0]
        headers = {
            "X-Sfsr-Model": f"{info['name']} {info['version']}",
            "Server-Timing": timing.header(queue=first.queue_s, model=first.model_s, batch=first.batch_size),
        }
        if meta["warning"]:
            headers[WARNING_HEADER] = meta["warning"]
        if not want_json:
            return Response(animation, media_type="image/png", headers=headers)
        meta["seconds"] = round(time.perf_counter() - timing.start, 3)
        return JSONResponse(
            {
                "animation": "data:image/png;base64," + base64.b64encode(animation).decode(),
                "frames": ["data:image/png;base64," + base64.b64encode(f).decode() for f in frames],
                "metadata": meta,
                "warning": meta["warning"],
            },
            headers=headers,
        )

    def _finish(self, photo: np.ndarray, crop: np.ndarray, face: Any, meta: dict[str, Any]) -> tuple[bytes, tuple]:
        image = compose.paste_back(photo, crop, face.align_matrix, face.mask, self.settings.feather)
        image = compose.fit_output(image, self.settings.max_output_side)
        text = watermark.provenance(
            meta["model"],
            meta["model_version"],
            meta["request_id"],
            route=meta["route"],
            seed=str(meta["seed"]),
            trained_on=str(meta["trained_on"]),
            licence=str(meta["licence"]),
            **({"warning": meta["warning"]} if meta["warning"] else {}),
            **{k: v for k, v in (meta.get("background") or {}).items() if k != "seconds"},
        )
        marked = watermark.embed(image)
        png = watermark.encode_png(marked, text)
        claim = c2pa_sign.Claim(meta["model"], meta["model_version"], meta["request_id"])
        return c2pa_sign.sign_png(png, claim, self.settings.c2pa_credentials()), marked.shape

    # --- routes ---------------------------------------------------------------------------------

    @api.post(
        "/v1/swap",
        summary="Face swap: the identity of one photo onto the face of another",
        openapi_extra=request_body("swap"),
    )
    async def swap(self, request: Request) -> Response:
        return await self._run(request, "swap")

    @api.post(
        "/v1/reenact",
        summary="Reenactment: a new expression (a word or a driving photo) on a face",
        openapi_extra=request_body("reenact"),
    )
    async def reenact(self, request: Request) -> Response:
        return await self._run(request, "reenact")

    @api.post(
        "/v1/generate",
        summary="Identity from one photo, expression from a word, photo or vector, background from another photo",
        openapi_extra=request_body("generate"),
    )
    async def generate(self, request: Request) -> Response:
        return await self._run(request, "generate")

    @api.post(
        "/v1/travel",
        summary="Expression travel: frames of one face from one expression (word, photo or vector) to another",
        openapi_extra=request_body("travel"),
    )
    async def travel(self, request: Request) -> Response:
        return await self._run(request, "travel")

    @api.get("/v1/expressions", summary="The 135 expression words, by family", responses=responses())
    async def expressions(self) -> dict[str, Any]:
        groups = words_by_family()
        return {
            "count": sum(len(v) for v in groups.values()),
            "families": {
                f: [{"word": w.word, "subcluster": w.subcluster, "intensity": w.intensity} for w in groups[f]]
                for f in FAMILIES
            },
        }

    @api.get(
        "/v1/expressions/{word}",
        summary="One word: family, subcluster, intensity, nuance, its target vector and its exemplar faces",
        responses=responses(404),
    )
    async def expression(self, word: str) -> dict[str, Any]:
        return await self._call(self.generator.expression_entry, expressions.known_word(word).word)

    @api.get(
        "/v1/expressions/{word}/exemplars/{index}.png",
        summary="One of a word's exemplar faces (a crop from the model's expression bank)",
        response_class=PNGResponse,
        responses=png_responses("the exemplar face crop"),
    )
    async def exemplar(self, word: str, index: int) -> Response:
        png = await self._call(self.generator.exemplar_png, expressions.known_word(word).word, index)
        return Response(expressions.served(png), media_type="image/png")

    @api.get(
        "/v1/info",
        summary="The loaded model (name, version, what it was trained on) and request limits",
        responses=responses(),
    )
    async def info(self) -> dict[str, Any]:
        try:
            model = await self.model(fresh=True)  # what is loaded now (a redeploy may have changed it)
        except validation.ApiError:
            if self._model is None:
                raise
            model = self._model  # the generators are at capacity: the last reading, not a 503
        s, lim = self.settings, await self.limits(model)  # no second call to a generator at capacity
        return {
            "model": model,
            "auth_required": bool(self.token),
            "limits": {
                "max_request_bytes": s.max_request_bytes,
                "max_image_bytes": s.max_image_bytes,
                "max_image_pixels": s.max_image_pixels,
                "min_image_side": s.min_image_side,
                "default_steps": lim.default_steps,
                "max_steps": s.max_steps,
                "max_guidance": s.max_guidance,
                "default_guidance_identity": lim.default_guidance_identity,
                "default_guidance_expression": lim.default_guidance_expression,
                "default_init": lim.default_init,
            },
        }

    @api.get(
        "/v1/examples", summary="Example faces (procedural, from sfsr.synth; no real people)", responses=responses()
    )
    async def examples(self) -> dict[str, Any]:
        return {"examples": [{"id": i, "url": f"/v1/examples/{i}.png", "aligned": True} for i in EXAMPLE_IDENTITIES]}

    @api.get(
        "/v1/examples/{identity}.png",
        summary="One example face, 256 px, already aligned",
        response_class=PNGResponse,
        responses=png_responses("the example face"),
    )
    async def example(self, identity: int) -> Response:
        if identity not in EXAMPLE_IDENTITIES:
            raise validation.ApiError(
                404,
                "not_found",
                f"example {identity} does not exist; GET /v1/examples lists them ({list(EXAMPLE_IDENTITIES)})",
            )
        if identity not in self._examples:
            from sfsr.synth import NEUTRAL_EXPRESSION, make_sample, render

            image, _ = render(make_sample(identity, NEUTRAL_EXPRESSION, background_seed=identity), 256)
            self._examples[identity] = plain_png(image, compress_level=6)
        return Response(self._examples[identity], media_type="image/png")

    @api.get("/v1/healthz", summary="Liveness and readiness (no token needed)", responses=health_responses())
    async def healthz(self) -> JSONResponse:
        try:
            info = await self.model()
        except validation.ApiError as e:
            return JSONResponse(
                {"status": "unavailable", "reason": e.message},
                status_code=503,
                headers={"Retry-After": str(self.settings.retry_after_s)},
            )
        return JSONResponse({"status": "ok", "model": info["name"], "auth_required": bool(self.token)})

    @api.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def page(self) -> HTMLResponse:
        return HTMLResponse(self.page)
