"""deployments/generator.py: which user_config changes reload the model, and the version shown."""

from __future__ import annotations

import dataclasses

import pytest

from deployments.generator import needs_reload, weights_version
from deployments.settings import GeneratorSettings, from_dict


@pytest.mark.parametrize(
    "change,reload",
    [
        ({"max_batch_size": 4}, False),
        ({"batch_wait_timeout_s": 0.2}, False),
        ({"model_revision": "abc"}, True),
        ({"model": "s3://b/m"}, True),
        ({"device": "cpu"}, True),
        ({"torch_threads": 2}, True),
    ],
)
def test_a_new_revision_reloads_and_batch_settings_do_not(change, reload) -> None:
    old = from_dict(GeneratorSettings, {"model": "s3://b/model"}, "Generator user_config")
    assert needs_reload(old, dataclasses.replace(old, **change)) is reload


def test_weights_version_is_a_prefix_of_the_loaded_digest() -> None:
    assert weights_version("93a71b3496d4ddab986f31e2") == "sha256:93a71b3496d4"
    assert weights_version("") == "unknown"
