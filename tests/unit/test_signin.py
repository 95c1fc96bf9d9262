"""sfsr.signin and `sfsr cluster url` / `sfsr cluster token`: the page's sign-in link carries the
API token in the #fragment (which browsers never send), for the port the quickstart deployed."""

from __future__ import annotations

import urllib.parse
from pathlib import Path

import pytest
import yaml

from sfsr import cli, cluster, quickstart, signin


def _cfg(tmp_path: Path) -> cluster.PlatformConfig:
    return cluster.PlatformConfig(home=tmp_path / "local")


def test_the_link_puts_the_token_in_the_fragment_only() -> None:
    url = signin.signin_url("http://127.0.0.1:8000/", "a b&c")
    parts = urllib.parse.urlsplit(url)
    assert (parts.path, parts.query) == ("/", "")  # nothing the server would see
    assert urllib.parse.parse_qs(parts.fragment) == {"token": ["a b&c"]}
    with pytest.raises(ValueError, match="empty token; run `sfsr quickstart`"):
        signin.signin_url("http://127.0.0.1:8000", "")


def test_the_port_is_the_quickstarts_last_deployment_or_8000(tmp_path: Path) -> None:
    cfg = _cfg(tmp_path)
    assert signin.served_port(cfg) == signin.DEFAULT_PORT
    path = signin.deployed_config(cfg)
    path.parent.mkdir(parents=True)
    path.write_text(yaml.safe_dump(quickstart.derived_serve_config(8123, "m", None)))
    assert signin.served_port(cfg) == 8123
    path.write_text("http_options: [")  # broken YAML: the default, not a crash
    assert signin.served_port(cfg) == signin.DEFAULT_PORT


def test_cluster_url_and_token_print_the_quickstarts_token(tmp_path: Path, capsys) -> None:
    assert cli.main(["--home", str(tmp_path), "cluster", "url"]) == 1
    assert "no API token yet; `sfsr quickstart` makes one" in capsys.readouterr().err
    cfg = _cfg(tmp_path)
    token = cluster.ensure_token(signin.api_token_file(cfg))
    assert cli.main(["--home", str(tmp_path), "cluster", "url", "--port", "8125"]) == 0
    assert capsys.readouterr().out.strip() == f"http://127.0.0.1:8125/#token={token}"
    assert cli.main(["--home", str(tmp_path), "cluster", "token"]) == 0
    assert capsys.readouterr().out.strip() == token


def test_the_quickstart_summary_prints_the_sign_in_link(tmp_path: Path) -> None:
    args = cli.build_parser().parse_args(["--home", str(tmp_path), "quickstart", "--port", "8126"])
    plan = quickstart.make_plan(args, cli._platform_config(args))
    assert "no API token in" in quickstart.summary(plan)
    token = cluster.ensure_token(plan.token_file)
    link = f"  sign in       http://127.0.0.1:8126/#token={token} "
    assert any(line.startswith(link) for line in quickstart.summary(plan).splitlines())
