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

VERDICT_MARK = {"HOLDS": "✅ HOLDS", "DOES NOT HOLD": "❌ DOES NOT HOLD", "PARTLY": "◐ PARTLY", "SKIPPED": "— SKIPPED"}


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

    return json.dumps(config_dict(r.config), sort_keys=True)


def render_markdown(results, out: Path, seconds: float | None = None) -> str:
    import jax

    import ttscale

    lines = ["# ttscale reproduction report", ""]
    stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    size = results[0].size if results else "?"
    lines.append(f"Generated {stamp} by `ttscale reproduce --{size}` (ttscale {ttscale.__version__}, jax {jax.__version__}, "
                 f"devices: {', '.join(str(d) for d in jax.devices())}, Python {platform.python_version()}).")
    if seconds is not None:
        lines.append(f"Wall time: {seconds:.1f} s.")
    counts = summary_counts(results)
    lines.append("Verdicts: " + ", ".join(f"{k}: {v}" for k, v in sorted(counts.items())) + ".")
    lines += ["", "Every measurement below is computed from the data this run produced (cached `.nc` files under `data/`). "
              "HOLDS / PARTLY / DOES NOT HOLD follow the criterion stated with each claim; "
              "where our simulation disagrees with a summary of the paper, the row says so and shows the evidence.", ""]
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
        status = "loaded from cache" if r.cached else "computed"
        lines.append(f"Data: `{r.path.relative_to(out) if r.path else '-'}` ({status}, {r.seconds:.1f} s).")
        for f in r.figures:
            if f.suffix == ".png":
                lines += ["", f"![{r.name}]({f.relative_to(out)})"]
        lines += ["", "| claim | paper's statement | our measurement | verdict |", "|---|---|---|---|"]
        for c in r.claims:
            meas = c.measurement + (f" — {c.evidence}" if c.evidence else "")
            lines.append(f"| {_md_cell(c.name)} | {_md_cell(c.statement)} | {_md_cell(meas)} | **{c.verdict}** |")
        lines += ["", "<details><summary>config</summary>", "", "```json", _config_json(r), "```", "", "</details>"]
    return "\n".join(lines) + "\n"


def render_html(results, out: Path, seconds: float | None = None) -> str:
    css = ("body{font-family:sans-serif;max-width:1100px;margin:2em auto;line-height:1.4}"
           "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:4px 8px;vertical-align:top;font-size:13px}"
           ".HOLDS{background:#dfd}.DOES{background:#fdd}.PARTLY{background:#ffd}.SKIPPED{background:#eee}img{max-width:100%}"
           "pre{background:#f6f6f6;padding:6px;white-space:pre-wrap;font-size:11px}")
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>ttscale reproduction</title><style>{css}</style></head><body>",
             "<h1>ttscale reproduction report</h1>"]
    if seconds is not None:
        parts.append(f"<p>Wall time {seconds:.1f} s; size <code>{html.escape(results[0].size if results else '?')}</code>.</p>")
    counts = summary_counts(results)
    parts.append("<p>" + ", ".join(f"{html.escape(k)}: {v}" for k, v in sorted(counts.items())) + "</p>")
    for r in results:
        parts.append(f"<h2>{html.escape(r.title)} (<code>{r.name}</code>)</h2>")
        if r.skipped:
            parts.append(f"<p>Skipped: {html.escape(r.skipped)}</p>")
            continue
        for f in r.figures:
            if f.suffix == ".png" and f.exists():
                b64 = base64.b64encode(f.read_bytes()).decode()
                parts.append(f"<img alt='{r.name}' src='data:image/png;base64,{b64}'>")
        parts.append("<table><tr><th>claim</th><th>paper's statement</th><th>our measurement</th><th>verdict</th></tr>")
        for c in r.claims:
            cls = c.verdict.split()[0]
            meas = html.escape(c.measurement) + (f"<br><small>{html.escape(c.evidence)}</small>" if c.evidence else "")
            parts.append(f"<tr class='{cls}'><td>{html.escape(c.name)}</td><td>{html.escape(c.statement)}</td><td>{meas}</td><td><b>{html.escape(c.verdict)}</b></td></tr>")
        parts.append("</table>")
        parts.append(f"<details><summary>config</summary><pre>{html.escape(_config_json(r))}</pre></details>")
    parts.append("</body></html>")
    return "\n".join(parts)


def write_report(results, out, seconds: float | None = None) -> tuple[Path, Path]:
    """Write ``out/report.md``, ``out/report.html`` and ``out/claims.json``; return the two report paths."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    md = out / "report.md"
    md.write_text(render_markdown(results, out, seconds), encoding="utf-8")
    page = out / "report.html"
    page.write_text(render_html(results, out, seconds), encoding="utf-8")
    claims = [c.to_dict() for r in results for c in r.claims]
    (out / "claims.json").write_text(json.dumps(claims, indent=1, default=str, allow_nan=True), encoding="utf-8")
    return md, page
