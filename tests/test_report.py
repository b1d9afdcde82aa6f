"""The claims report: strict ``claims.json``; ``report.html`` carries what ``report.md`` has; miss lists are complete."""

from __future__ import annotations

import json
import math
import re

import numpy as np
import pytest
import xarray as xr

from ttscale import experiments as ex
from ttscale import report


def _refuse(constant):
    raise ValueError(f"non-standard JSON constant {constant}")


@pytest.fixture()
def results(tmp_path):
    """Two fake preset results: one with a figure, data file and non-finite claim numbers; one skipped."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig_dir, data_dir = tmp_path / "figures", tmp_path / "data"
    fig_dir.mkdir()
    data_dir.mkdir()
    png = fig_dir / "alpha.png"
    fig, ax = plt.subplots(figsize=(8, 3))
    ax.plot([1, 2, 3])
    fig.savefig(png, dpi=100)
    plt.close(fig)
    nc = data_dir / "alpha-0123456789ab.nc"
    nc.write_bytes(b"")
    claims = [
        ex.Claim("finite_claim", "The paper says `x` is **small**.", "x = 0.1", "HOLDS", value=0.1, uncertainty=0.01,
                 evidence="see `data/alpha.nc`", preset="alpha"),
        ex.Claim("nan_claim", "Something with no number.", "n/a", "PARTLY", value=math.nan, uncertainty=math.inf, preset="alpha"),
        ex.Claim("neg_inf_claim", "Diverges.", "−inf", "DOES NOT HOLD", value=-math.inf, preset="alpha"),
    ]
    ok = ex.PresetResult("alpha", "Alpha figure", "quick", {"ms": [40.0, math.inf], "d": 3}, figures=[png], claims=claims,
                         seconds=1.5, path=nc)
    skipped = ex.PresetResult("beta", "Beta", "quick", {}, skipped="run `ttscale reproduce beta --quick` to smoke-test it")
    return tmp_path, [ok, skipped]


def test_claims_json_is_strict_json_with_null_for_non_finite(results):
    out, res = results
    report.write_report(res, out, seconds=2.0)
    text = (out / "claims.json").read_text(encoding="utf-8")
    assert "NaN" not in text and "Infinity" not in text
    rows = json.loads(text, parse_constant=_refuse)  # raises on NaN / Infinity literals
    by_name = {r["name"]: r for r in rows}
    assert by_name["finite_claim"]["value"] == pytest.approx(0.1) and by_name["finite_claim"]["uncertainty"] == pytest.approx(0.01)
    assert by_name["nan_claim"]["value"] is None and by_name["nan_claim"]["uncertainty"] is None
    assert by_name["neg_inf_claim"]["value"] is None
    assert {r["preset"] for r in rows} == {"alpha"}


def test_strict_json_recurses_and_converts_numpy():
    value = {"a": [np.float32(1.5), np.nan, (np.inf, np.int64(3))], "b": np.array([1.0, -np.inf]), "c": np.bool_(True)}
    got = report.strict_json(value)
    assert got == {"a": [1.5, None, [None, 3]], "b": [1.0, None], "c": True}
    assert json.loads(json.dumps(got, allow_nan=False), parse_constant=_refuse) == got
    assert report.strict_json([math.inf], nonfinite=lambda x: f"{x:g}") == ["inf"]


def test_report_html_has_what_markdown_has(results):
    out, res = results
    md_path, html_path = report.write_report(res, out, seconds=2.0)
    md, page = md_path.read_text(encoding="utf-8"), html_path.read_text(encoding="utf-8")
    # the run line (date, command, versions, devices) of report.md is in report.html too
    stamp = re.search(r"Generated (\d{4}-\d\d-\d\d \d\d:\d\d UTC)", md).group(1)
    assert stamp in page and "<code>ttscale reproduce --quick</code>" in page
    for word in ("ttscale ", "jax ", "devices: ", "Python ", "Wall time: 2.0 s", "Verdicts: "):
        assert word in md and word in page, word
    # the summary table: one row per claim with its preset, and the skipped preset
    summary = page[page.index("<th>preset</th>"):page.index("</table>")]
    for name in ("finite_claim", "nan_claim", "neg_inf_claim"):
        assert re.search(rf"<td><a href='#alpha'>alpha</a></td><td>{name}</td>", summary), name
    assert "SKIPPED" in summary and "beta" in summary
    # data file names and figure names
    assert "<code>data/alpha-0123456789ab.nc</code>" in page and "data/alpha-0123456789ab.nc" in md
    assert "<code>figures/alpha.png</code>" in page
    # markdown backticks / bold are rendered, never shown literally
    assert "`" not in page and "**" not in page
    assert "<code>x</code> is <b>small</b>" in page
    assert "<code>ttscale reproduce beta --quick</code>" in page


def test_report_html_figures_are_embedded_at_page_width(results):
    out, res = results
    _, html_path = report.write_report(res, out)
    page = html_path.read_text(encoding="utf-8")
    imgs = re.findall(r"<img [^>]*>", page)
    assert len(imgs) == 1 and "data:image/png;base64," in imgs[0]
    assert not re.search(r"\b(width|height)\s*=", imgs[0]), "no fixed (thumbnail) size on the image"
    css = re.search(r"<style>(.*?)</style>", page, re.S).group(1)
    rule = re.search(r"img\{([^}]*)\}", css).group(1)
    assert "max-width:100%" in rule and "height:auto" in rule
    body = re.search(r"body\{([^}]*)\}", css).group(1)
    assert int(re.search(r"max-width:(\d+)px", body).group(1)) >= 1000  # the page (and so a figure) is ≥ 1000 px wide


def _best_k_dataset(n_spectra=4, ns=(10.0, 20.0, 30.0), kmax=12):
    """Every cell's mean is minimal at k = 3 while the predicted best k is 10: every cell is a miss."""
    k = np.arange(kmax + 1)
    mean = np.broadcast_to(1.0 + (k - 3.0) ** 2, (n_spectra, len(ns), 2, kmax + 1)).copy()
    dims4 = ("spectrum", "n", "m", "k")
    return xr.Dataset(
        {"mean": (dims4, mean), "stderr": (dims4, np.full_like(mean, 1e-3)), "median": (dims4, mean),
         "limit_error": (("spectrum", "n", "k"), mean[:, :, 0]), "overthinking_term": (("spectrum", "n", "k"), mean[:, :, 0]),
         "best_k": (("spectrum", "n"), np.full((n_spectra, len(ns)), 10))},
        coords={"spectrum": np.arange(n_spectra), "scale": ("spectrum", 1.5 + 0.1 * np.arange(n_spectra)),
                "n": np.asarray(ns), "m": [400.0, math.inf], "k": k},
    )


def test_best_k_claim_lists_every_miss_or_says_how_many_more():
    claims = ex.REGISTRY["best_k"].resolve("claims")(_best_k_dataset())
    for c in claims:
        if not c.name.startswith("best_k_m"):
            continue
        text = c.measurement + " " + c.evidence
        assert "0/12 cells" in text
        listed = len(re.findall(r"predicted 10, measured 3", text))
        more = re.search(r"and (\d+) more", text)
        assert listed + (int(more.group(1)) if more else 0) == 12, text
