"""bench/serve.py's --model resolves to a folder the Serve app can load (the bench itself needs a
Ray cluster and minutes; its phases are run by hand, see its docstring)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from sfsr.generate import Generator

BENCH = Path(__file__).resolve().parents[2] / "bench" / "serve.py"


def _bench():
    spec = importlib.util.spec_from_file_location("bench_serve", BENCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_model_tiny_and_the_default_resolve_to_loadable_models() -> None:
    bench = _bench()
    tiny = bench.resolve_model("tiny")
    assert Path(tiny).is_absolute() and Generator.from_pretrained(tiny).info["preset"] == "tiny"
    default = bench.resolve_model("sfsr/model/pretrained/cpu-demo")
    assert Path(default).is_absolute() and Generator.from_pretrained(default).info["preset"] == "cpu-demo"
