"""metrics.json and a self-contained report.html for one evaluation.

metrics.json holds everything the HTML shows except the example images: the task, the feature
network (and whether its FD is comparable to published FID), every method's scores (the model and
the baselines), warnings, and the bad or missing images. report.html needs no other file: images
are base64 PNG data URIs, histograms are inline SVG, styles are inline. Given a previous
metrics.json it shows the change of every number against it.
"""

from __future__ import annotations

import base64
import html
import json
import math
from dataclasses import dataclass, field

from sfsr.io import storage

# (row label, path into a method's scores, higher is better)
ROWS: tuple[tuple[str, tuple[str, ...], bool], ...] = (
    ("FD / FID", ("fd", "value"), False),
    ("KID (mean)", ("kid", "mean"), False),
    ("identity cosine to source", ("identity", "cosine", "mean"), True),
    ("identity retrieval top-1", ("identity", "retrieval_top1"), True),
    ("identity retrieval top-5", ("identity", "retrieval_top5"), True),
    ("expression L2 to reference", ("expression", "l2", "mean"), False),
    ("pose L2 (degrees)", ("pose", "l2_degrees", "mean"), False),
    ("judge identity accuracy", ("synth", "identity_accuracy"), True),
    ("render identity accuracy (no network)", ("render", "identity_accuracy"), True),
    ("render expression accuracy (no network)", ("render", "expression_accuracy"), True),
    ("judge expression MAE", ("synth", "expression_mae", "mean"), False),
    ("background PSNR (dB)", ("synth", "background_psnr_db", "mean"), True),
    ("failed outputs", ("failed",), False),
)
HISTOGRAMS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("identity cosine to source", ("identity", "cosine")),
    ("expression L2 to reference", ("expression", "l2")),
    ("pose L2 (degrees)", ("pose", "l2_degrees")),
    ("judge expression MAE", ("synth", "expression_mae")),
    ("background PSNR (dB)", ("synth", "background_psnr_db")),
)
COLOURS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b")


@dataclass(frozen=True)
class Example:
    """One pair shown in the report's grid: PNG bytes per column (role or method name)."""

    pair_id: str
    images: dict[str, bytes] = field(default_factory=dict)


def _get(d: dict, path: tuple[str, ...]):  # noqa: ANN202
    for key in path:
        if not isinstance(d, dict) or key not in d:
            return None
        d = d[key]
    return d


def method_order(names) -> list[str]:  # noqa: ANN001
    """The model first, then the baselines in name order."""
    return sorted(names, key=lambda n: (n != "model", n))


def flat_scores(metrics: dict) -> dict[str, dict[str, float]]:
    """method -> row label -> value, for every number of the metric table that is present."""
    out: dict[str, dict[str, float]] = {}
    methods = metrics.get("methods", {})
    for method in method_order(methods):
        scores = methods[method]
        row = {}
        for label, path, _ in ROWS:
            v = _get(scores, path)
            if isinstance(v, (int, float)) and not (isinstance(v, float) and math.isnan(v)):
                row[label] = float(v)
        out[method] = row
    return out


def changes(metrics: dict, previous: dict) -> dict[str, dict[str, float]]:
    """method -> row label -> (value - previous value), where both runs have the number."""
    now, before = flat_scores(metrics), flat_scores(previous)
    return {m: {k: v - before[m][k] for k, v in rows.items() if k in before.get(m, {})} for m, rows in now.items()}


def finite(x):  # noqa: ANN001, ANN201
    """JSON has no NaN or infinity: such numbers are written as null."""
    if isinstance(x, dict):
        return {k: finite(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [finite(v) for v in x]
    if isinstance(x, float) and not math.isfinite(x):
        return None
    return x


def write_metrics(uri: str, metrics: dict) -> None:
    storage.write_bytes(uri, (json.dumps(finite(metrics), indent=2, sort_keys=True, allow_nan=False) + "\n").encode())


def _fmt(v: float) -> str:
    if v == 0:
        return "0"
    a = abs(v)
    return f"{v:.4g}" if 1e-3 <= a < 1e5 else f"{v:.3e}"


def _table(metrics: dict, previous: dict | None) -> str:
    flat = flat_scores(metrics)
    delta = changes(metrics, previous) if previous else {}
    methods = list(flat)
    head = "".join(f"<th>{html.escape(m)}</th>" for m in methods)
    rows = []
    for label, _, higher in ROWS:
        if not any(label in flat[m] for m in methods):
            continue
        cells = []
        for m in methods:
            if label not in flat[m]:
                cells.append("<td>-</td>")
                continue
            text = _fmt(flat[m][label])
            d = delta.get(m, {}).get(label)
            if d is not None:
                better = (d > 0) == higher if d != 0 else None
                cls = "same" if better is None else ("better" if better else "worse")
                text += f' <span class="{cls}">({"+" if d >= 0 else ""}{_fmt(d)})</span>'
            cells.append(f"<td>{text}</td>")
        arrow = "higher is better" if higher else "lower is better"
        rows.append(
            f'<tr><th title="{arrow}">{html.escape(label)} {"&uarr;" if higher else "&darr;"}</th>{"".join(cells)}</tr>'
        )
    return f'<table class="metrics"><tr><th>metric</th>{head}</tr>{"".join(rows)}</table>'


def histogram_svg(title: str, series: dict[str, dict], width: int = 360, height: int = 160) -> str:
    """Inline SVG of fixed-bin histograms (one step line per method), normalised to fractions."""
    pad_l, pad_b, pad_t = 34, 24, 18
    w, h = width - pad_l - 8, height - pad_b - pad_t
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" role="img" '
        f'aria-label="{html.escape(title)}"><text x="{pad_l}" y="12" font-size="11">{html.escape(title)}</text>'
    ]
    fracs, lo, hi = {}, None, None
    for name, hist in series.items():
        counts = hist["counts"][1:-1]  # drop under/overflow bins from the drawing (counted in n)
        total = sum(hist["counts"])
        if total:
            fracs[name] = [c / total for c in counts]
            lo, hi = hist["lo"], hist["hi"]
    top = max((max(f) for f in fracs.values() if f), default=0) or 1.0
    parts.append(f'<line x1="{pad_l}" y1="{pad_t + h}" x2="{pad_l + w}" y2="{pad_t + h}" stroke="#888"/>')
    for i, (name, f) in enumerate(fracs.items()):
        step = w / len(f)
        pts = []
        for j, v in enumerate(f):
            y = pad_t + h - v / top * h
            pts += [f"{pad_l + j * step:.1f},{y:.1f}", f"{pad_l + (j + 1) * step:.1f},{y:.1f}"]
        colour = COLOURS[i % len(COLOURS)]
        parts.append(f'<polyline fill="none" stroke="{colour}" stroke-width="1.5" points="{" ".join(pts)}"/>')
        parts.append(
            f'<text x="{pad_l + w - 4}" y="{pad_t + 10 + 11 * i}" font-size="10" text-anchor="end" '
            f'fill="{colour}">{html.escape(name)}</text>'
        )
    if lo is not None:
        parts.append(f'<text x="{pad_l}" y="{height - 8}" font-size="10">{_fmt(lo)}</text>')
        parts.append(f'<text x="{pad_l + w}" y="{height - 8}" font-size="10" text-anchor="end">{_fmt(hi)}</text>')
        parts.append(f'<text x="2" y="{pad_t + 8}" font-size="10">{top:.2f}</text>')
    parts.append("</svg>")
    return "".join(parts)


def _histograms(metrics: dict) -> str:
    out = []
    for title, path in HISTOGRAMS:
        series = {}
        methods = metrics.get("methods", {})
        for method in method_order(methods):
            hist = _get(methods[method], path + ("histogram",))
            if hist and sum(hist["counts"]):
                series[method] = hist
        if series:
            out.append(histogram_svg(title, series))
    return "".join(out)


def _img(data: bytes) -> str:
    return f'<img alt="" src="data:image/png;base64,{base64.b64encode(data).decode()}">'


def _grid(examples: list[Example], methods: list[str]) -> str:
    if not examples:
        return "<p>No examples.</p>"
    cols: list[str] = []
    for e in examples:
        cols += [c for c in e.images if c not in cols and c not in methods]
    cols += [m for m in methods if any(m in e.images for e in examples)]  # inputs, then the outputs
    head = "".join(f"<th>{html.escape(c)}</th>" for c in cols)
    rows = []
    for e in examples:
        cells = "".join(f"<td>{_img(e.images[c]) if c in e.images else '-'}</td>" for c in cols)
        rows.append(f"<tr><th>{html.escape(e.pair_id)}</th>{cells}</tr>")
    return f'<table class="grid"><tr><th>pair</th>{head}</tr>{"".join(rows)}</table>'


def _errors(metrics: dict) -> str:
    errs = metrics.get("errors", {})
    items = errs.get("items", [])
    if not errs.get("count"):
        return "<p>No bad or missing images.</p>"
    lis = "".join(
        f"<li><code>{html.escape(str(i.get('uri', '')))}</code>: {html.escape(str(i.get('reason', '')))}</li>"
        for i in items
    )
    more = errs["count"] - len(items)
    return f"<p>{errs['count']} bad or missing images (listed in metrics.json).</p><ul>{lis}</ul>" + (
        f"<p>... and {more} more</p>" if more > 0 else ""
    )


_CSS = """body{font-family:sans-serif;margin:1.5em;color:#222}table{border-collapse:collapse;margin:.5em 0}
td,th{border:1px solid #ccc;padding:3px 7px;text-align:right}th{background:#f4f4f4}
.grid td{padding:2px}.grid img{width:96px;height:96px;image-rendering:pixelated}
.warn{background:#fff3cd;border:1px solid #e0c36b;padding:6px 10px;margin:4px 0}
.better{color:#1a7f37}.worse{color:#c62828}.same{color:#666}svg{margin:4px;border:1px solid #eee}"""


def render_html(metrics: dict, examples: list[Example] = (), previous: dict | None = None) -> str:  # type: ignore[assignment]
    title = f"sfsr evaluation: {metrics.get('task', '?')}"
    fe = metrics.get("feature_network") or {}  # None with --features none
    warn = "".join(f'<div class="warn">{html.escape(w)}</div>' for w in metrics.get("warnings", []))
    info = (
        f"<p>{metrics.get('pairs', '?')} pairs, seed {metrics.get('seed', '?')}; FD features: "
        f"<b>{html.escape(str(fe.get('score_name', 'none')))}</b> ({html.escape(str(fe.get('name', '-')))})</p>"
    )
    prev = "<p>Changes in brackets are against the previous report.</p>" if previous else ""
    return (
        f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
        f"<style>{_CSS}</style></head><body><h1>{html.escape(title)}</h1>{warn}{info}"
        f"<h2>Metrics</h2>{prev}{_table(metrics, previous)}<h2>Per-pair scores</h2>{_histograms(metrics)}"
        f"<h2>Examples</h2>{_grid(list(examples), method_order(metrics.get('methods', {})))}"
        f"<h2>Bad or missing images</h2>{_errors(metrics)}"
        "</body></html>"
    )


def write_report(
    out_dir: str,
    metrics: dict,
    examples: list[Example] = (),  # type: ignore[assignment]
    previous_uri: str | None = None,
) -> tuple[str, str]:
    """Write metrics.json and report.html into `out_dir` (local or s3://); returns their URIs."""
    previous = json.loads(storage.read_bytes(previous_uri)) if previous_uri else None
    if previous is not None:
        metrics = {**metrics, "previous": previous_uri}
    m_uri, h_uri = storage.join(out_dir, "metrics.json"), storage.join(out_dir, "report.html")
    write_metrics(m_uri, metrics)
    storage.write_bytes(h_uri, render_html(metrics, list(examples), previous).encode())
    return m_uri, h_uri
