"""Static checks that keep the cluster manifests under platform/ from rotting.

Every YAML file and the Dockerfile must parse; whatever they name (job modules, Serve import
paths, files copied into the image, images) must exist in this checkout; bindings to all
interfaces must be explained; Ray versions, token auth and the embedded Serve config must agree
with the rest of the repository. No Ray cluster, Docker or network: YAML, ast and the file tree.
"""

from __future__ import annotations

import ast
import functools
import importlib.util
import re
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
PLATFORM = REPO / "platform"
KUBERAY = PLATFORM / "kuberay"
DOCKERFILE = PLATFORM / "docker" / "Dockerfile"
SERVE_CONFIG = REPO / "deployments" / "serve_config.yaml"
YAML_FILES = sorted(p for p in PLATFORM.rglob("*.y*ml") if p.is_file())
MANIFESTS = YAML_FILES + ([DOCKERFILE] if DOCKERFILE.is_file() else [])
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())
_FIND = PYPROJECT["tool"]["setuptools"]["packages"]["find"]["include"]
FIRST_PARTY = {p.rstrip("*").rstrip(".") for p in _FIND}
# `python -m X` with X outside the repository: only these are expected in manifests.
THIRD_PARTY_MODULES = {"pip", "venv", "ensurepip", "pytest", "ray"}
RAY_KINDS = {"RayCluster", "RayJob", "RayService"}
S3_ENV = {"AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_REGION"}
_PYTHON = r"(?:^|[\s;&|(`'\"])(?:\S*/)?python(?:3(?:\.\d+)?)?(?:\s+-[A-Za-z]+)*\s+"
PY_M = re.compile(_PYTHON + r"-m\s+([A-Za-z_][\w.]*)")
PY_FILE = re.compile(_PYTHON + r"([\w./-]+\.py)\b")
ALL_INTERFACES = re.compile(r"0\.0\.0\.0|host[\s=:]+['\"]?::['\"]?(\s|$)")
FIX_SERVE = "run python platform/kuberay/render_rayservice.py"


def rel(path: Path) -> str:
    return str(path.relative_to(REPO))


def ray_pin() -> str:
    pins = [d.split("==", 1)[1] for d in PYPROJECT["project"]["dependencies"] if re.match(r"ray(\[[^]]*\])?==", d)]
    assert pins, "pyproject.toml: no exact ray pin (ray[...]==X) in dependencies"
    return pins[0].strip()


@functools.cache
def docs(path: Path) -> tuple[Any, ...] | None:
    """Parsed YAML documents, or None when the file does not parse (test_yaml_parses says why)."""
    try:
        return tuple(d for d in yaml.safe_load_all(path.read_text()) if d is not None)
    except yaml.YAMLError:
        return None


def leaves(obj: Any, key: str = "") -> Iterator[tuple[str, Any]]:
    """(key, value) for every scalar in a parsed YAML tree; list items keep their parent's key."""
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from leaves(v, str(k))
    elif isinstance(obj, list):
        for v in obj:
            yield from leaves(v, key)
    else:
        yield key, obj


def dockerfile_instructions(path: Path = DOCKERFILE) -> list[tuple[int, str, str]]:
    """(line number, INSTRUCTION, arguments) with continuation lines joined, comments dropped."""
    result, buffer, start = [], "", 0
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if line.lstrip().startswith("#") or (not buffer and not line.strip()):
            continue
        start = start if buffer else number
        continued = line.rstrip().endswith("\\")
        buffer += line.rstrip()[:-1] + " " if continued else line
        if not continued:
            instruction, _, args = buffer.strip().partition(" ")
            result.append((start, instruction.upper(), args.strip()))
            buffer = ""
    return result


def commands(path: Path) -> list[str]:
    """Strings that may hold shell commands: YAML string values, Dockerfile RUN/CMD/ENTRYPOINT."""
    if path == DOCKERFILE:
        return [a for _, i, a in dockerfile_instructions() if i in {"RUN", "CMD", "ENTRYPOINT"}]
    return [v for d in docs(path) or () for _, v in leaves(d) if isinstance(v, str)]


def module_file(module: str, runnable: bool = False) -> Path | None:
    """The file behind a dotted module; `runnable`: as `python -m` needs it (package: __main__)."""
    base = REPO.joinpath(*module.split("."))
    package = base / ("__main__.py" if runnable else "__init__.py")
    return next((c for c in (base.with_suffix(".py"), package) if c.is_file()), None)


def k8s_objects() -> list[tuple[Path, dict[str, Any]]]:
    return [(p, d) for p in YAML_FILES if p.parent == KUBERAY for d in docs(p) or () if isinstance(d, dict)]


def containers(spec: dict[str, Any]) -> list[dict[str, Any]]:
    groups = [spec["headGroupSpec"], *spec.get("workerGroupSpecs", [])]
    return [c for g in groups for c in g["template"]["spec"]["containers"]]


def source_names(path: Path, seen: set[Path] | None = None) -> set[str]:
    """String constants and identifiers of a module and of the first-party modules it imports."""
    seen = set() if seen is None else seen
    if path in seen:
        return set()
    seen.add(path)
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            names.add(node.value)
        elif isinstance(node, ast.Name | ast.Attribute | ast.arg | ast.keyword):
            names.add(getattr(node, "id", None) or getattr(node, "attr", None) or getattr(node, "arg", None) or "")
        elif isinstance(node, ast.Import | ast.ImportFrom):
            base = getattr(node, "module", None)
            for alias in node.names:
                for mod in [base, f"{base}.{alias.name}"] if base else [alias.name]:
                    target = module_file(mod)
                    if mod.split(".")[0] in FIRST_PARTY and target:
                        names |= source_names(target, seen)
    return names


def top_level_names(path: Path) -> set[str]:
    defined: set[str] = set()
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            defined.add(node.name)
        elif isinstance(node, ast.Assign):
            defined |= {t.id for t in node.targets if isinstance(t, ast.Name)}
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            defined.add(node.target.id)
        elif isinstance(node, ast.Import | ast.ImportFrom):
            defined |= {(a.asname or a.name).split(".")[0] for a in node.names}
    return defined


def load_renderer() -> Any:
    # platform/ is not a package (it would shadow the stdlib module), so load the file by path.
    path = KUBERAY / "render_rayservice.py"
    spec = importlib.util.spec_from_file_location("sfsr_render_rayservice", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# Parametrisation: one case per manifest, entrypoint, import path, job, COPY source, cluster.


def entrypoint_cases() -> list[Any]:
    return [
        pytest.param(path, target, id=f"{rel(path)}::{target}")
        for path in MANIFESTS
        for text in commands(path)
        for target in [*PY_M.findall(text), *PY_FILE.findall(text)]
    ]


def import_path_cases() -> list[Any]:
    configs = [
        (p, yaml.safe_load(o["spec"]["serveConfigV2"]))
        for p, o in k8s_objects()
        if isinstance((o.get("spec") or {}).get("serveConfigV2"), str)
    ]
    if SERVE_CONFIG.is_file():
        configs.append((SERVE_CONFIG, yaml.safe_load(SERVE_CONFIG.read_text())))
    return [
        pytest.param(p, app.get("import_path", ""), id=f"{rel(p)}::{app.get('name')}")
        for p, config in configs
        for app in (config or {}).get("applications") or []
    ]


def rayjob_cases() -> list[Any]:
    """(job, manifest): every module in jobs/ with its rayjob-<job>.yaml, and every RayJob manifest
    with the job it runs; a variant rayjob-<job>-<what>.yaml (e.g. train-photos-gpu) runs jobs.<job>."""
    modules = {p.stem for p in (REPO / "jobs").glob("*.py") if not p.stem.startswith("_")}
    cases = {(m, KUBERAY / f"rayjob-{m}.yaml") for m in modules}
    for path in KUBERAY.glob("rayjob-*.yaml"):
        stem = path.stem.removeprefix("rayjob-")
        job = max((m for m in modules if stem.startswith(f"{m}-")), key=len, default=stem)
        cases.add((stem if stem in modules else job, path))
    return [pytest.param(job, path, id=f"{job}::{path.name}") for job, path in sorted(cases)]


def copy_cases() -> list[Any]:
    cases = []
    for number, instruction, args in dockerfile_instructions() if DOCKERFILE.is_file() else []:
        if instruction in {"COPY", "ADD"} and "--from=" not in args:
            sources = [a for a in args.split() if not a.startswith("--")][:-1]
            cases += [pytest.param(src, id=f"line{number}:{src}") for src in sources]
    return cases


def cluster_spec_cases() -> list[Any]:
    cases = []
    for path, obj in k8s_objects():
        spec = obj.get("spec") or {}
        inner = {
            "RayCluster": spec,
            "RayService": spec.get("rayClusterConfig"),
            "RayJob": spec.get("rayClusterSpec"),
        }.get(obj.get("kind"))
        if inner:
            name = f"{rel(path)}::{obj['kind']}/{obj['metadata']['name']}"
            cases.append(pytest.param(obj["kind"], inner, id=name))
    return cases


# ---------------------------------------------------------------------------------------------


def test_platform_is_not_a_python_package() -> None:
    offenders = [rel(p) for p in PLATFORM.rglob("__init__.py")]
    assert not offenders, f"{offenders}: platform/ must not be a package (shadows stdlib platform)"


@pytest.mark.parametrize("path", YAML_FILES, ids=rel)
def test_yaml_parses(path: Path) -> None:
    try:
        parsed = [d for d in yaml.safe_load_all(path.read_text()) if d is not None]
    except yaml.YAMLError as error:
        pytest.fail(f"{rel(path)} is not valid YAML: {error}")
    assert parsed, f"{rel(path)}: no YAML document in it"
    for i, doc in enumerate(parsed):
        where = f"{rel(path)} document {i}"
        assert isinstance(doc, dict), f"{where}: expected a mapping, got {type(doc).__name__}"
        if path.parent == KUBERAY:
            assert doc.get("apiVersion") and doc.get("kind") and doc.get("metadata", {}).get("name"), (
                f"{where}: a Kubernetes object needs apiVersion, kind, metadata.name"
            )
            if doc["kind"] in RAY_KINDS:
                assert doc["apiVersion"] == "ray.io/v1", f"{where}: {doc['kind']} is ray.io/v1"


def test_dockerfile_parses_and_runs_as_non_root_without_healthcheck() -> None:
    assert DOCKERFILE.is_file(), f"{rel(DOCKERFILE)} is missing"
    steps = dockerfile_instructions()
    known = {
        "FROM",
        "ARG",
        "ENV",
        "RUN",
        "COPY",
        "ADD",
        "USER",
        "WORKDIR",
        "CMD",
        "ENTRYPOINT",
        "LABEL",
        "EXPOSE",
        "SHELL",
        "VOLUME",
        "HEALTHCHECK",
        "STOPSIGNAL",
        "ONBUILD",
    }
    unknown = [(n, i) for n, i, _ in steps if i not in known]
    assert not unknown, f"{rel(DOCKERFILE)}: unknown instructions (line, name): {unknown}"
    first = next(i for _, i, _ in steps if i != "ARG")
    assert first == "FROM", f"{rel(DOCKERFILE)}: first instruction after ARGs is {first}"
    assert "HEALTHCHECK" not in {i for _, i, _ in steps}, "no HEALTHCHECK: Ray manages health"
    users = [a for _, i, a in steps if i == "USER"]
    assert users and users[-1].split(":")[0] not in {"root", "0"}, (
        f"{rel(DOCKERFILE)}: the image must end on a non-root USER, got {users}"
    )


@pytest.mark.parametrize("path,target", entrypoint_cases())
def test_entrypoint_targets_exist(path: Path, target: str) -> None:
    if target.endswith(".py"):
        assert (REPO / target).is_file(), f"{rel(path)} runs {target}, which is not in the repo"
        return
    top = target.split(".")[0]
    if top in FIRST_PARTY:
        stem = target.replace(".", "/")
        assert module_file(target, runnable=True), (
            f"{rel(path)} runs `python -m {target}`, but neither {stem}.py nor "
            f"{stem}/__main__.py exists; write the module or fix the manifest"
        )
    else:
        assert top in THIRD_PARTY_MODULES, (
            f"{rel(path)} runs `python -m {target}`: {top} is neither a package of this project "
            f"({sorted(FIRST_PARTY)}) nor a known tool ({sorted(THIRD_PARTY_MODULES)})"
        )


@pytest.mark.parametrize("path,import_path", import_path_cases())
def test_serve_import_path_resolves(path: Path, import_path: str) -> None:
    module, sep, attr = import_path.partition(":")
    where = f"{rel(path)}: import_path {import_path!r}"
    assert sep and module and attr, f"{where} is not 'module:attribute'"
    file = module_file(module)
    assert file, f"{where}: {module} has no file in the repository"
    assert attr in top_level_names(file), f"{where}: {rel(file)} defines no top-level {attr!r}"


@pytest.mark.parametrize("name,manifest", rayjob_cases())
def test_every_job_has_a_rayjob_and_its_flags_exist(name: str, manifest: Path) -> None:
    module = REPO / "jobs" / f"{name}.py"
    assert manifest.is_file(), (
        f"jobs/{name}.py has no RayJob: write {rel(manifest)}, or, if it "
        f"is a helper rather than an entrypoint, rename it jobs/_{name}.py"
    )
    rayjobs = [d for d in docs(manifest) or () if isinstance(d, dict) and d["kind"] == "RayJob"]
    assert len(rayjobs) == 1, f"{rel(manifest)}: expected one RayJob, found {len(rayjobs)}"
    entrypoint = rayjobs[0]["spec"]["entrypoint"]
    assert f"jobs.{name}" in PY_M.findall(entrypoint), (
        f"{rel(manifest)}: entrypoint {entrypoint!r} does not run python -m jobs.{name}"
    )
    assert module.is_file(), f"{rel(manifest)} runs jobs.{name}; jobs/{name}.py does not exist"
    known = source_names(module)
    unknown = [
        f
        for f in re.findall(r"(?<!\S)(--[\w-]+)", entrypoint)
        if f not in known and f[2:].replace("-", "_") not in known
    ]
    assert not unknown, (
        f"{rel(manifest)}: flags {unknown} appear nowhere in jobs/{name}.py or "
        "what it imports; align the manifest with the job's command line"
    )


@pytest.mark.parametrize("source", copy_cases())
def test_dockerfile_copy_source_exists(source: str) -> None:
    # The build context is the repository root (see the Dockerfile's header).
    assert list(REPO.glob(source)), f"{rel(DOCKERFILE)}: COPY source {source} does not exist"


@pytest.mark.parametrize("path", MANIFESTS, ids=rel)
def test_all_interface_bindings_are_explained(path: Path) -> None:
    lines = path.read_text().splitlines()
    in_pods = path != DOCKERFILE and any(isinstance(d, dict) and d.get("kind") in RAY_KINDS for d in docs(path) or ())
    for number, line in enumerate(lines, start=1):
        code, _, inline = line.partition("#")
        if not ALL_INTERFACES.search(code):
            continue
        above, i = [], number - 2
        while i >= 0 and lines[i].strip().startswith("#"):
            above.insert(0, lines[i].strip().lstrip("#"))
            i -= 1
        why = " ".join([*above, inline])
        assert len(why.split()) >= 6, (
            f"{rel(path)}:{number} binds all interfaces ({line.strip()!r}) and no comment on or "
            "directly above the line says why; bind 127.0.0.1 or explain"
        )
        if in_pods:
            assert "pod" in why.lower(), f"{rel(path)}:{number}: say why the pod IP is the boundary"


def images(path: Path) -> list[str]:
    if path == DOCKERFILE:
        return [a.split()[0] for _, i, a in dockerfile_instructions() if i == "FROM"]
    image_keys = {"image", "head_image", "worker_image"}
    return [v for d in docs(path) or () for k, v in leaves(d) if k in image_keys]


@pytest.mark.parametrize("path", MANIFESTS, ids=rel)
def test_image_tags_are_pinned(path: Path) -> None:
    version = PYPROJECT["project"]["version"]
    for image in images(path):
        name = image.split("@")[0]
        tag = name[name.rfind(":") + 1 :] if name.rfind(":") > name.rfind("/") else ""
        assert "@sha256:" in image or tag not in {"", "latest"}, f"{rel(path)}: image {image!r} has no pinned tag"
        if name.rsplit(":", 1)[0].endswith("/sfsr"):
            assert tag == version, f"{rel(path)}: {image!r} should be tagged {version}"


@pytest.mark.parametrize("kind,spec", cluster_spec_cases())
def test_ray_cluster_spec(kind: str, spec: dict[str, Any]) -> None:
    assert spec.get("rayVersion") == ray_pin(), (
        f"rayVersion {spec.get('rayVersion')} differs from the pyproject.toml pin {ray_pin()}"
    )
    auth = spec.get("authOptions") or {}
    assert auth.get("mode") == "token" and auth.get("secretName"), (
        f"token auth must stay on, with the token in a named Secret; got authOptions {auth}"
    )
    assert spec.get("enableInTreeAutoscaling") is True, "autoscaling off: min/max would be ignored"
    for g in spec.get("workerGroupSpecs", []):
        lo, n, hi = g.get("minReplicas", 0), g.get("replicas", 0), g.get("maxReplicas", 0)
        assert 0 <= lo <= n <= hi and hi > 0, (
            f"worker group {g['groupName']}: need min <= replicas <= max > 0; got {lo} {n} {hi}"
        )
    for container in containers(spec):
        env = {e["name"]: e for e in container.get("env", [])}
        missing = sorted(S3_ENV - env.keys())
        assert not missing, f"container {container['name']}: S3 settings {missing} missing"
        inline = sorted(k for k in S3_ENV | {"RAY_AUTH_TOKEN"} if "value" in env.get(k, {}))
        assert not inline, f"container {container['name']}: {inline} must come from a Secret"
    if kind == "RayCluster":
        groups = spec["workerGroupSpecs"]
        gpu = [
            g
            for g in groups
            if str(g["template"]["spec"]["containers"][0]["resources"].get("limits", {}).get("nvidia.com/gpu", 0))
            != "0"
        ]
        assert gpu and len(gpu) < len(groups), "expected a GPU worker group and a CPU-only one"


def test_rayjobs_select_an_existing_raycluster() -> None:
    clusters = {o["metadata"]["name"] for _, o in k8s_objects() if o["kind"] == "RayCluster"}
    rayjobs = [(p, o) for p, o in k8s_objects() if o["kind"] == "RayJob"]
    assert rayjobs, "no RayJob manifests under platform/kuberay"
    for path, job in rayjobs:
        selected = (job["spec"].get("clusterSelector") or {}).get("ray.io/cluster")
        assert selected in clusters or job["spec"].get("rayClusterSpec"), (
            f"{rel(path)}: clusterSelector names {selected!r}; RayClusters: {sorted(clusters)}"
        )


def test_rayservice_embeds_serve_config() -> None:
    assert SERVE_CONFIG.is_file(), (
        f"{rel(SERVE_CONFIG)} is missing: the RayService embeds it. Write it, then {FIX_SERVE}"
    )
    renderer, manifest = load_renderer(), KUBERAY / "rayservice.yaml"
    service = next(d for d in docs(manifest) or () if d["kind"] == "RayService")
    embedded = yaml.safe_load(service["spec"]["serveConfigV2"])
    expected = renderer.pod_serve_config(yaml.safe_load(SERVE_CONFIG.read_text()))
    assert embedded == expected, f"serveConfigV2 differs from {rel(SERVE_CONFIG)}; {FIX_SERVE}"
    current = manifest.read_text()
    rendered = renderer.render(current, SERVE_CONFIG.read_text(), rel(SERVE_CONFIG))
    assert rendered == current, f"rayservice.yaml is not the renderer's output; {FIX_SERVE}"


def test_rayservice_pods_get_the_api_token_and_serve_routing_settings() -> None:
    """The proxy binds the pod IP, where the ingress refuses to run without a token: every pod
    must get SFSR_API_TOKEN from a Secret (never a literal), and the routers' queue-length
    deadline, which an application's runtime_env does not reach."""
    from deployments.settings import TOKEN_ENV

    service = next(d for d in docs(KUBERAY / "rayservice.yaml") or () if d["kind"] == "RayService")
    cluster_spec = service["spec"]["rayClusterConfig"]
    groups = [cluster_spec["headGroupSpec"], *cluster_spec["workerGroupSpecs"]]
    for group in groups:
        for container in group["template"]["spec"]["containers"]:
            env = {e["name"]: e for e in container["env"]}
            assert "secretKeyRef" in env[TOKEN_ENV]["valueFrom"] and "value" not in env[TOKEN_ENV]
            assert float(env["RAY_SERVE_QUEUE_LENGTH_RESPONSE_DEADLINE_S"]["value"]) <= 2.0
    assert "sfsr-api-token" in (REPO / "platform" / "README.md").read_text()


def test_renderer_overrides_only_the_http_host() -> None:
    renderer = load_renderer()
    config = {
        "http_options": {"host": "127.0.0.1", "port": 8123},
        "applications": [{"name": "a", "import_path": "m:app"}],
    }
    block = renderer.render_block(yaml.safe_dump(config), "test.yaml")
    assert yaml.safe_load(block) == {**config, "http_options": {"host": "0.0.0.0", "port": 8123}}
    assert config["http_options"]["host"] == "127.0.0.1", "the input config must not be mutated"
    with pytest.raises(ValueError, match="applications"):
        renderer.render_block("applications: []\n", "empty.yaml")


def test_cluster_yaml_is_valid_for_ray_up_with_token_auth() -> None:
    from ray.autoscaler._private.util import prepare_config, validate_config

    raw = docs(PLATFORM / "cluster.yaml")[0]
    validate_config(prepare_config(raw))  # raises naming the offending field
    shell = " ".join(
        [
            *raw.get("docker", {}).get("run_options", []),
            *raw.get("initialization_commands", []),
            *raw.get("head_start_ray_commands", []),
        ]
    )
    assert "RAY_AUTH_MODE=token" in shell, "cluster.yaml: token auth is not switched on"
    assert any(r.endswith(".ray/auth_token") for r in raw["file_mounts"]), (
        "cluster.yaml: the token file is not mounted on the nodes"
    )
    types = raw["available_node_types"]
    assert raw["head_node_type"] in types and len(types) >= 3, "need head, CPU and GPU node types"
