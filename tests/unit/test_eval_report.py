"""metrics.json and report.html: self-contained, the numbers in the table, changes against a
previous run, histograms as inline SVG, images as data URIs, warnings and errors shown."""

from __future__ import annotations

import base64
import json
import re

import numpy as np
import pytest

from evaluation.report import Example, changes, flat_scores, histogram_svg, write_report
from evaluation.stats import Bins, merge_scalar, scalar_stats
from sfsr.io.images import decode_png, encode_png


def _metrics(cos_model: float, fd_model: float) -> dict:
    hist = scalar_stats(np.linspace(0.1, 0.9, 11), Bins(-1.0, 1.0, 40)).summary()
    return {
        "task": "swap",
        "pairs": 11,
        "seed": 0,
        "feature_network": {
            "name": "efficientnet-lite0",
            "score_name": "FD (EfficientNet-Lite0 features), not comparable to published FID",
        },
        "methods": {
            "model": {
                "pairs": 11,
                "failed": 1,
                "fd": {"value": fd_model},
                "identity": {"cosine": {**hist, "mean": cos_model}, "retrieval_top1": 0.5},
            },
            "copy_target": {
                "pairs": 11,
                "failed": 0,
                "fd": {"value": 0.0},
                "identity": {"cosine": {**hist, "mean": 0.1}, "retrieval_top1": 0.0},
            },
        },
        "warnings": ["the identity recogniser dlib is the one the model was trained against"],
        "errors": {"count": 1, "items": [{"uri": "out/p7.png", "reason": "missing"}]},
    }


def test_flat_scores_and_changes():
    now, before = _metrics(0.6, 10.0), _metrics(0.5, 12.5)
    assert flat_scores(now)["model"]["identity cosine to source"] == 0.6
    d = changes(now, before)
    assert d["model"]["FD / FID"] == pytest.approx(-2.5) and d["model"]["identity cosine to source"] == pytest.approx(
        0.1
    )
    assert d["copy_target"]["FD / FID"] == 0.0


def test_report_is_self_contained(tmp_path):
    prev = tmp_path / "prev.json"
    prev.write_text(json.dumps(_metrics(0.5, 12.5)))
    img = np.zeros((24, 24, 3), np.uint8)
    img[4:20, 4:20] = (255, 0, 0)
    ex = [
        Example(
            "swap-0-0000000", {"source": encode_png(img), "target": encode_png(img[::-1]), "model": encode_png(img)}
        )
    ]
    m_uri, h_uri = write_report(str(tmp_path / "run"), _metrics(0.6, 10.0), ex, previous_uri=str(prev))
    metrics = json.loads(open(m_uri).read())
    assert metrics["previous"] == str(prev) and metrics["methods"]["model"]["fd"]["value"] == 10.0
    page = open(h_uri).read()
    # no external resources: every src is a data URI, no stylesheet or script links
    srcs = re.findall(r'src="([^"]+)"', page)
    assert len(srcs) == 3 and all(s.startswith("data:image/png;base64,") for s in srcs)
    assert (
        "<link" not in page
        and "<script" not in page
        and "http://" not in page.replace('xmlns="http://www.w3.org/2000/svg"', "")
    )
    back = decode_png(base64.b64decode(srcs[0].split(",", 1)[1]))
    assert back.shape == (24, 24, 3) and tuple(back[10, 10]) == (255, 0, 0)
    # table numbers with their change against the previous run, coloured by direction
    assert '10 <span class="better">(-2.5)</span>' in page
    assert '0.6 <span class="better">(+0.1)</span>' in page
    assert "not comparable to published FID" in page
    assert "trained against" in page and "out/p7.png" in page
    assert page.count("<svg") == 1 and page.count("<polyline") == 2  # cosine histogram, two methods


def test_histogram_svg_heights_follow_counts():
    s = merge_scalar(scalar_stats([0.1, 0.1, 0.1, 0.6], Bins(0.0, 1.0, 2)))
    svg = histogram_svg("t", {"m": s.summary()["histogram"]}, width=108, height=58)
    pts = re.search(r'points="([^"]+)"', svg).group(1).split()
    ys = [float(p.split(",")[1]) for p in pts]
    # plot height 58 - 24 - 18 = 16 px: the fuller bin (3/4) reaches the top, the other a third as high
    assert ys[0] == pytest.approx(18.0) and ys[2] == pytest.approx(18 + 16 - 16 / 3, abs=0.06)


def test_scalar_stats_merge_and_missing():
    v = np.array([0.5, np.nan, 2.5, -3.0, 0.25])
    b = Bins(0.0, 1.0, 4)
    s = scalar_stats(v, b)
    assert (s.n, s.missing, s.minimum, s.maximum) == (4, 1, -3.0, 2.5)
    assert s.counts == (1, 0, 1, 1, 0, 1)  # underflow, 4 bins, overflow
    m = merge_scalar(scalar_stats(v[:2], b), scalar_stats(v[2:], b))
    assert m == s
    with pytest.raises(ValueError, match="bins differ"):
        merge_scalar(s, scalar_stats(v, Bins(0.0, 2.0, 4)))
