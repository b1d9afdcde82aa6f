"""The claims report of ``ttscale reproduce``: ``report.md`` and a self-contained ``report.html``.

Every row comes from a :class:`ttscale.experiments.Claim` computed from the run's Dataset;
nothing here types in a number. The HTML embeds the figures as base64 PNG.
"""

from __future__ import annotations

import base64
import datetime as _dt
import html
import json
import platform
from pathlib import Path

VERDICT_MARK = {"HOLDS": "✅ HOLDS", "DOES NOT HOLD": "❌ DOES NOT HOLD", "PARTLY": "◐ PARTLY", "NOT RESOLVED": "❔ NOT RESOLVED",
                "SKIPPED": "— SKIPPED"}


def _md_cell(text) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def summary_counts(results) -> dict:
    counts: dict = {}
    for r in results:
        for c in r.claims:
            counts[c.verdict] = counts.get(c.verdict, 0) + 1
    return counts


def _config_json(r) -> str:
    from ttscale.experiments import config_dict

    return json.dumps(strict_json(config_dict(r.config), nonfinite=lambda x: f"{x:g}"), sort_keys=True, allow_nan=False)


def strict_json(value, nonfinite=None):
    """``value`` with every non-finite float (NaN, ±Infinity) replaced by ``None`` (or by
    ``nonfinite(x)``, e.g. the string ``"inf"``), recursively through dicts, lists and tuples (NumPy
    scalars become Python numbers), so that ``json.dumps(..., allow_nan=False)`` succeeds and any
    JSON parser (``JSON.parse``) reads the result."""
    import math

    import numpy as np

    if isinstance(value, dict):
        return {str(k): strict_json(v, nonfinite) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [strict_json(v, nonfinite) for v in value]
    if isinstance(value, np.ndarray):
        return strict_json(value.tolist(), nonfinite)
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        if math.isfinite(value):
            return float(value)
        return None if nonfinite is None else nonfinite(float(value))
    return value


def _run_info(results, seconds):
    """What both reports say first: when, which command, versions, devices, wall time, verdict counts."""
    import jax

    import ttscale

    return {
        "stamp": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "command": f"ttscale reproduce --{results[0].size if results else '?'}",
        "ttscale": ttscale.__version__, "jax": jax.__version__,
        "devices": ", ".join(str(d) for d in jax.devices()), "python": platform.python_version(),
        "seconds": seconds, "counts": summary_counts(results),
    }


INTRO = ("Every measurement below is computed from the data this run produced (cached `.nc` files under `data/`). "
         "HOLDS / PARTLY / DOES NOT HOLD follow the criterion stated with each claim, counting a difference only beyond about "
         "2 standard errors; NOT RESOLVED means the differences are within noise; "
         "where our simulation disagrees with a summary of the paper, the row says so and shows the evidence.")


def _data_line(r, out) -> str:
    """``Data: `data/x.nc` (computed, 1.2 s).`` (markdown)."""
    status = "loaded from cache" if r.cached else "computed"
    return f"Data: `{r.path.relative_to(out) if r.path else '-'}` ({status}, {r.seconds:.1f} s)."


def render_markdown(results, out: Path, seconds: float | None = None) -> str:
    info = _run_info(results, seconds)
    lines = ["# ttscale reproduction report", ""]
    lines.append(f"Generated {info['stamp']} by `{info['command']}` (ttscale {info['ttscale']}, jax {info['jax']}, "
                 f"devices: {info['devices']}, Python {info['python']}).")
    if seconds is not None:
        lines.append(f"Wall time: {seconds:.1f} s.")
    lines.append("Verdicts: " + ", ".join(f"{k}: {v}" for k, v in sorted(info["counts"].items())) + ".")
    lines += ["", INTRO, ""]
    lines += ["| preset | claim | verdict |", "|---|---|---|"]
    for r in results:
        if r.skipped:
            lines.append(f"| {r.name} | — | SKIPPED: {_md_cell(r.skipped)} |")
        for c in r.claims:
            lines.append(f"| {r.name} | {_md_cell(c.name)} | {VERDICT_MARK.get(c.verdict, c.verdict)} |")
    for r in results:
        lines += ["", f"## {r.title} (`{r.name}`)", ""]
        if r.skipped:
            lines += [f"Skipped: {r.skipped}", ""]
            continue
        lines.append(_data_line(r, out))
        for f in r.figures:
            if f.suffix == ".png":
                lines += ["", f"![{r.name}]({f.relative_to(out)})"]
        lines += ["", "| claim | paper's statement | our measurement | verdict |", "|---|---|---|---|"]
        for c in r.claims:
            meas = c.measurement + (f" — {c.evidence}" if c.evidence else "")
            lines.append(f"| {_md_cell(c.name)} | {_md_cell(c.statement)} | {_md_cell(meas)} | **{c.verdict}** |")
        lines += ["", "<details><summary>config</summary>", "", "```json", _config_json(r), "```", "", "</details>"]
    return "\n".join(lines) + "\n"


def inline_html(text) -> str:
    """Escape ``text`` for HTML and render its inline markdown: ```code``` → ``<code>``, ``**bold**`` → ``<b>``."""
    import re

    out = html.escape(str(text), quote=False)
    out = re.sub(r"`([^`]+)`", r"<code>\1</code>", out)
    return re.sub(r"\*\*([^*]+)\*\*", r"<b>\1</b>", out)


def _verdict_class(verdict: str) -> str:
    return verdict.split()[0] if verdict else ""


def render_html(results, out: Path, seconds: float | None = None) -> str:
    """The same content as :func:`render_markdown` (run line, verdict counts, summary table, data files, figures,
    claims, configs) as one self-contained page: figures embedded as base64 PNG at the page's width."""
    info = _run_info(results, seconds)
    css = ("body{font-family:sans-serif;max-width:1200px;margin:2em auto;padding:0 1em;line-height:1.4}"
           "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:4px 8px;vertical-align:top;font-size:13px}"
           ".HOLDS{background:#dfd}.DOES{background:#fdd}.PARTLY{background:#ffd}.NOT{background:#e8eeff}.SKIPPED{background:#eee}"
           "figure{margin:1em 0}figure img{display:block;max-width:100%;height:auto}figcaption{font-size:12px;color:#555}"
           "code{background:#f3f3f3;padding:0 3px;border-radius:3px}"
           "pre{background:#f6f6f6;padding:6px;white-space:pre-wrap;font-size:11px}")
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><meta name='viewport' content='width=device-width'>"
             f"<title>ttscale reproduction</title><style>{css}</style></head><body>",
             "<h1>ttscale reproduction report</h1>"]
    parts.append(f"<p>Generated {html.escape(info['stamp'])} by <code>{html.escape(info['command'])}</code> "
                 f"(ttscale {html.escape(str(info['ttscale']))}, jax {html.escape(info['jax'])}, devices: "
                 f"{html.escape(info['devices'])}, Python {html.escape(info['python'])}).")
    if seconds is not None:
        parts.append(f"<br>Wall time: {seconds:.1f} s.")
    parts.append("<br>Verdicts: " + ", ".join(f"{html.escape(k)}: {v}" for k, v in sorted(info["counts"].items())) + ".</p>")
    parts.append(f"<p>{inline_html(INTRO)}</p>")
    parts.append("<table><tr><th>preset</th><th>claim</th><th>verdict</th></tr>")
    for r in results:
        if r.skipped:
            parts.append(f"<tr class='SKIPPED'><td>{html.escape(r.name)}</td><td>—</td><td>SKIPPED: {inline_html(r.skipped)}</td></tr>")
        for c in r.claims:
            parts.append(f"<tr class='{_verdict_class(c.verdict)}'><td><a href='#{html.escape(r.name)}'>{html.escape(r.name)}</a></td>"
                         f"<td>{html.escape(c.name)}</td><td>{html.escape(VERDICT_MARK.get(c.verdict, c.verdict))}</td></tr>")
    parts.append("</table>")
    for r in results:
        parts.append(f"<h2 id='{html.escape(r.name)}'>{html.escape(r.title)} (<code>{html.escape(r.name)}</code>)</h2>")
        if r.skipped:
            parts.append(f"<p>Skipped: {inline_html(r.skipped)}</p>")
            continue
        parts.append(f"<p>{inline_html(_data_line(r, out))}</p>")
        for f in r.figures:
            if f.suffix == ".png" and f.exists():
                b64 = base64.b64encode(f.read_bytes()).decode()
                rel = html.escape(str(f.relative_to(out)) if f.is_relative_to(out) else f.name)
                parts.append(f"<figure><img alt='{html.escape(r.name)}' src='data:image/png;base64,{b64}'>"
                             f"<figcaption><code>{rel}</code></figcaption></figure>")
        parts.append("<table><tr><th>claim</th><th>paper's statement</th><th>our measurement</th><th>verdict</th></tr>")
        for c in r.claims:
            meas = inline_html(c.measurement) + (f"<br><small>{inline_html(c.evidence)}</small>" if c.evidence else "")
            parts.append(f"<tr class='{_verdict_class(c.verdict)}'><td>{html.escape(c.name)}</td><td>{inline_html(c.statement)}</td>"
                         f"<td>{meas}</td><td><b>{html.escape(c.verdict)}</b></td></tr>")
        parts.append("</table>")
        parts.append(f"<details><summary>config</summary><pre>{html.escape(_config_json(r))}</pre></details>")
    parts.append("</body></html>")
    return "\n".join(parts)


def claims_json(results) -> str:
    """``claims.json``: every claim as a dict, strict JSON (non-finite numbers are ``null``)."""
    claims = [dict(strict_json(c.to_dict()), preset=getattr(c, "preset", "") or r.name) for r in results for c in r.claims]
    return json.dumps(claims, indent=1, default=str, allow_nan=False)


def write_report(results, out, seconds: float | None = None) -> tuple[Path, Path]:
    """Write ``out/report.md``, ``out/report.html`` and ``out/claims.json`` (strict JSON); return the two report paths."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    md = out / "report.md"
    md.write_text(render_markdown(results, out, seconds), encoding="utf-8")
    page = out / "report.html"
    page.write_text(render_html(results, out, seconds), encoding="utf-8")
    (out / "claims.json").write_text(claims_json(results), encoding="utf-8")
    return md, page


# ============================================================================ task selection (moved from ttscale.selection)
def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    """A GitHub markdown table of ``rows`` under ``header``."""
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(out)


def selection_summary(study, tab, cmp, command: str) -> str:
    """The markdown summary of a task-selection run: mean selected probability per type (``study`` from
    ``selection_study``, ``tab`` its ``selection_table``), the trained mixtures' errors (``cmp`` from
    ``mixture_comparison``) and, per criterion and baseline, where the criterion is better beyond 2 s.e.
    ``command`` is the regeneration command printed at the top."""
    import json

    from ttscale.selection import PAPER_RANKING

    types = list(study["type"].values)
    rows = []
    for mname in study["mixture"].values:
        r = [str(mname)] + [f"{tab['mean_type_mass'].sel(mixture=mname, type=t).item():.3f}" for t in types]
        r += [f"{tab['hard_mass'].sel(mixture=mname).item():.3f}",
              f"{tab['hard_mass_at_least_half'].sel(mixture=mname).item():.2f}",
              f"{study['exact_error'].sel(mixture=mname).isel(k=-1).median('trial').item():.3g}",
              str(tab['ranking'].sel(mixture=mname).item())]
        rows.append(r)
    kk = int(study.attrs["k"])
    t1 = markdown_table(["mixture"] + types + ["hard mass", "P(hard ≥ ½)", f"median exact err k={kk}", "ranking"], rows)
    ks = [1, 2, 5, 10, int(cmp["k"].values[-1])]
    ks = sorted({k for k in ks if k <= int(cmp["k"].values[-1])})
    rows2 = []
    for mname in cmp["mixture"].values:
        sub = cmp.sel(mixture=mname)
        probs = ", ".join(f"{p:.2f}" for p in sub["probs"].values)
        r = [str(mname), probs] + [f"{sub['mean'].sel(k=k).item():.3g} ± {sub['stderr'].sel(k=k).item():.1g}"
                                   f" [{sub['exact_mc_mean'].sel(k=k).item():.3g}]"
                                   f" ({sub['limit_error'].sel(k=k).item():.3g})" for k in ks]
        r += [f"{sub['preconditioner_error'].item():.3f}"]
        rows2.append(r)
    t2 = markdown_table(["mixture", "π (" + ", ".join(cmp["type_name"].values) + ")"] + [f"k={k}" for k in ks]
                         + ["‖P̂−P(π)‖/‖P(π)‖"], rows2)
    # honest verdicts
    verdicts = []
    criteria = study.attrs["criteria"]
    for c in (json.loads(criteria) if isinstance(criteria, str) else criteria):
        if c not in cmp["mixture"].values:
            continue
        for base in ("uniform", "easy-only"):
            if base not in cmp["mixture"].values:
                continue
            a, b = cmp["mean"].sel(mixture=c), cmp["mean"].sel(mixture=base)
            sa, sb = cmp["stderr"].sel(mixture=c), cmp["stderr"].sel(mixture=base)
            better = [int(k) for k in cmp["k"].values[1:] if a.sel(k=k) + 2 * sa.sel(k=k) < b.sel(k=k) - 2 * sb.sel(k=k)]
            worse = [int(k) for k in cmp["k"].values[1:] if a.sel(k=k) - 2 * sa.sel(k=k) > b.sel(k=k) + 2 * sb.sel(k=k)]
            verdicts.append(f"- `{c}` vs `{base}`: lower error (beyond 2 s.e.) at k = {better or 'none'}; "
                            f"higher at k = {worse or 'none'}.")
    summary = f"""# Task selection (docs/science.md §7, Proposition 4.3)

Regenerate: `{command}`.

Our reading of the pool (`paper_pool`): α = power-law exponent of the task spectrum (tr Λ = d = {study.attrs['d']}),
B = training prompt length n, α jittered by ±0.05, bases rotated ≈ 0.2 rad from the axes; targets Σ:
power law with α ~ U(0.6, 1.0), rotated ≈ 0.2 rad (`hard_target`). Exact criterion: Σ_{{j=1..{kk}}} of the
m → ∞ error of P(π) = Λ̄Q⁻¹. Hard tasks = σ_min below the pool median (= the α = 0.8 tasks).

## Mean selected probability per task type ({study.sizes['trial']} random pools and targets)
Paper: {' > '.join(PAPER_RANKING)}.

{t1}

## LSAs trained on each mixture, test-time CoT on a hard target (α = 0.8)
{cmp.attrs['steps']} SGD steps × {cmp.attrs['batch']} prompts per mixture; test: {cmp.attrs['prompts']} prompts of length
m = {cmp.attrs['m']}. Cells: trained-LSA mean error ± s.e. [pseudo-Newton with the exact P(π), same prompts]
(m → ∞ limit of the exact P(π)). Last column: relative distance of the learned preconditioner from P(π).
Data beside this file: `comparison.csv` (all k) and `table.csv` (the study); figure: `../figures/task_selection.png`.

{t2}

{chr(10).join(verdicts)}
"""
    return summary
