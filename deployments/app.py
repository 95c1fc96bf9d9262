"""The sfsr Serve application: Ingress -> FaceAnalysis, Generator and Scenes (text-to-image
backgrounds), through DeploymentHandles.

    serve deploy deployments/serve_config.yaml        # what the quickstart and KubeRay use
    serve run deployments.app:app                      # the same application, for development

`app` (below) is bound with the deployment options of deployments/serve_config.yaml, so
`serve run` and tests that call `serve.run(build_app(...))` behave like `serve deploy`; a config
file deployed on top sets the same options again. `build_app` takes per-deployment overrides
(tests point the generator at a small model; the benchmark turns batching off).
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml
from ray.serve import Application

from deployments.analysis import FaceAnalysis
from deployments.generator import GeneratorDeployment
from deployments.ingress import Ingress
from deployments.scenes import Scenes

SERVE_CONFIG = Path(__file__).resolve().with_name("serve_config.yaml")
DEPLOYMENTS = {"Ingress": Ingress, "FaceAnalysis": FaceAnalysis, "Generator": GeneratorDeployment, "Scenes": Scenes}


def config_options(path: Path = SERVE_CONFIG, app_name: str = "sfsr") -> dict[str, dict[str, Any]]:
    """Deployment name -> options (num_replicas, autoscaling_config, user_config, ...) from a Serve
    config file's application `app_name`.

    The application's runtime_env env_vars are copied into each deployment's ray_actor_options,
    because `serve run`/`serve.run` of a bound application never sees the file's application
    level; under `serve deploy` Serve merges the two env_vars mappings (same values)."""
    config = yaml.safe_load(path.read_text())
    apps = [a for a in config.get("applications") or [] if a.get("name") == app_name]
    if not apps:
        raise ValueError(f"{path}: no application named {app_name!r}")
    env_vars = dict((apps[0].get("runtime_env") or {}).get("env_vars") or {})
    out = {}
    for entry in apps[0].get("deployments") or []:
        entry = copy.deepcopy(entry)
        name = entry.pop("name")
        if name not in DEPLOYMENTS:
            raise ValueError(f"{path}: deployment {name!r} is not one of {sorted(DEPLOYMENTS)}")
        if env_vars:
            actor = entry.setdefault("ray_actor_options", {})
            runtime_env = actor.setdefault("runtime_env", {})
            runtime_env["env_vars"] = {**env_vars, **(runtime_env.get("env_vars") or {})}
        out[name] = entry
    return out


def build_app(
    overrides: dict[str, dict[str, Any]] | None = None,
    user_config: dict[str, dict[str, Any]] | None = None,
    config_path: Path = SERVE_CONFIG,
) -> Application:
    """The application with the config file's options, then `overrides` (deployment -> options)
    and `user_config` (deployment -> keys merged into that deployment's user_config)."""
    options = config_options(config_path)
    for name, extra in (overrides or {}).items():
        options.setdefault(name, {}).update(copy.deepcopy(extra))
    for name, extra in (user_config or {}).items():
        merged = dict(options.setdefault(name, {}).get("user_config") or {})
        merged.update(extra)
        options[name]["user_config"] = merged
    for opts in options.values():
        if "num_replicas" in opts and opts["num_replicas"] not in (None, "auto"):
            opts.pop("autoscaling_config", None)  # a fixed count replaces autoscaling
    bound = {name: DEPLOYMENTS[name].options(**options.get(name, {})) for name in DEPLOYMENTS}
    return bound["Ingress"].bind(bound["FaceAnalysis"].bind(), bound["Generator"].bind(), bound["Scenes"].bind())


app = build_app()
