"""The web page's sign-in link: the quickstart's API token in the URL fragment.

`http://127.0.0.1:8000/#token=T` opens the page signed in: a browser never sends the part after
`#` to the server, so the token reaches no proxy or server log; the page (deployments/static/
index.html) reads it from location.hash, keeps it in localStorage and removes it from the
address bar. The quickstart prints the link; `sfsr cluster url` prints it again.

No Ray: files of the local platform's state folder only.
"""

from __future__ import annotations

import urllib.parse
from pathlib import Path

import yaml

from sfsr import cluster

DEFAULT_PORT = 8000  # the quickstart's --port default


def api_token_file(cfg: cluster.PlatformConfig) -> Path:
    """Where the quickstart keeps the API token the Ingress checks (not Ray's token)."""
    return cfg.home / "api_token"


def deployed_config(cfg: cluster.PlatformConfig) -> Path:
    """The Serve config the quickstart last deployed (sfsr.quickstart.serve_config writes it)."""
    return cfg.home.parent / "quickstart" / "serve_config.yaml"


def served_port(cfg: cluster.PlatformConfig) -> int:
    """The HTTP port of the quickstart's last deployment, or the default port."""
    path = deployed_config(cfg)
    try:
        return int(yaml.safe_load(path.read_text())["http_options"]["port"])
    except (OSError, KeyError, TypeError, ValueError, yaml.YAMLError):
        return DEFAULT_PORT


def signin_url(base_url: str, token: str) -> str:
    """The page's address with the token in its fragment: `base_url/#token=...`."""
    if not token:
        raise ValueError(f"signin_url({base_url!r}): empty token; run `sfsr quickstart` to make one")
    return base_url.rstrip("/") + "/#token=" + urllib.parse.quote(token, safe="")


def read_api_token(cfg: cluster.PlatformConfig) -> str:
    """The API token, or FileNotFoundError saying how to get one."""
    path = api_token_file(cfg)
    token = path.read_text().strip() if path.is_file() else ""
    if not token:
        raise FileNotFoundError(
            f"{path}: no API token yet; `sfsr quickstart` makes one when it deploys the page "
            "(a server deployed by hand uses the token file named in its serve config's api_token_file)"
        )
    return token
