"""One framing (issue 13, item 2): a photo's aligned crop and face mask are the same pixels on the
ingest path (jobs/_ingest_stages, what a model trains on) and the serving path (the FaceAnalysis
deployment, what a model is asked to edit), at the small sizes photo models use."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet  # noqa: F401 - pa.parquet
import pytest

from deployments.analysis import FaceAnalysis
from deployments.settings import AnalysisSettings
from jobs._ingest_stages import DetectAlign, read_and_decode
from sfsr.faces.analyze import ALIGN_SIZE
from tests.fixtures import photos


def test_serving_aligns_at_the_size_ingest_does():
    assert AnalysisSettings().min_align_size == ALIGN_SIZE


@pytest.mark.parametrize("size", [64, 32])
def test_a_photo_is_framed_identically_by_ingest_and_by_serving(size):
    uri = str(photos.photos_dir() / "obama.jpg")
    decoded = read_and_decode(pa.table({"source_uri": [uri]}))
    ingested = DetectAlign("builtin", size, 32)(decoded).to_pylist()
    assert len(ingested) == 1 and ingested[0]["stage"] is None
    row = ingested[0]
    crop = np.frombuffer(row["crop"], np.uint8).reshape(size, size, 3)
    mask = np.frombuffer(row["mask"], np.uint8).reshape(size, size) > 0

    analysis = FaceAnalysis.func_or_class()  # the deployment's class, without Serve
    analysis.reconfigure({})
    d = decoded.to_pylist()[0]
    image = np.frombuffer(d["pixels"], np.uint8).reshape(d["height"], d["width"], 3)
    served = analysis._analyze(image, size)[0]

    assert np.array_equal(served.crop, crop)
    assert np.array_equal(served.mask, mask)
    assert 0.2 < mask.mean() < 0.8  # a face-sized region, not an empty or full mask
    np.testing.assert_allclose(served.align_matrix.reshape(-1), row["align_matrix"], rtol=1e-6)


def test_the_table_and_the_models_trained_on_it_record_the_framing(tmp_path):
    from sfsr.faces.analyze import framing_name
    from sfsr.faces.pack import open_pack
    from sfsr.io.schema import face_table_schema, read_table_info
    from sfsr.model.presets import make_model

    framing = framing_name(open_pack("builtin"))
    assert framing == f"arcface-112[0,1,2,3,4]/align{ALIGN_SIZE}/hull68-or-ellipse"
    schema = face_table_schema(128, 13, crop_size=64, identity_model="a", expression_model="b", framing=framing)
    pa.parquet.write_table(schema.empty_table(), tmp_path / "part-0.parquet")
    assert read_table_info(str(tmp_path)).framing == framing
    model = make_model("photo64", framing=framing)
    model.save_pretrained(tmp_path / "m")
    assert type(model).from_pretrained(str(tmp_path / "m")).config.framing == framing
