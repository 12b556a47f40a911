"""Render `ReportData` as one self-contained HTML page: inline CSS, JS, SVG and thumbnails.

The page works without JavaScript (charts are SVG made here); the small script
only adds table sorting, the reason filter and thumbnail zoom.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from curate import __version__
from curate.report.collect import Card, Cluster, Histogram, ReportData
from curate.report.composition_html import render_composition
from curate.report.markup import e, table
from curate.report.model_html import render_model
from curate.report.pipeline import Step, user_text
from curate.report.svg import KEPT_COLOR, Segment, fmt, histogram, pattern_defs, stacked_bars

SECTIONS = [("funnel", "Funnel"), ("mix", "Training mix"), ("model", "Model"),
            ("duplicates", "Duplicate clusters"),
            ("histograms", "Histograms"), ("examples", "Examples by reject reason"),
            ("run-facts", "Run facts")]
TEXT_LIMIT = 1200

CSS = """
:root{--fg:#1d2433;--muted:#667085;--line:#e4e7ec;--bg:#f7f8fa;--kept:#2f7d32;--rej:#b42318}
*{box-sizing:border-box}
body{margin:0;font:14px/1.45 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;color:var(--fg);
background:var(--bg)}
header{background:#1d2433;color:#fff;padding:18px 28px}
header h1{margin:0 0 4px;font-size:22px}
header .sub{color:#c8cdd8;display:flex;flex-wrap:wrap;gap:4px 6px;align-items:center}
header .folder{background:#2b3447;border-radius:4px;padding:0 6px;font-size:12px;
white-space:nowrap}
nav{position:sticky;top:0;z-index:5;background:#fff;border-bottom:1px solid var(--line);
padding:8px 28px}
nav a{margin-right:18px;color:#1849a9;text-decoration:none;font-weight:600}
main{padding:8px 28px 40px;max-width:1400px}
section{background:#fff;border:1px solid var(--line);border-radius:8px;padding:16px 20px;
margin:18px 0}
h2{margin:0 0 10px;font-size:19px}
h3{margin:18px 0 8px;font-size:15px}
.muted{color:var(--muted)}
.kpis{display:flex;gap:14px;flex-wrap:wrap;margin:8px 0 4px}
.kpi{background:#2b3447;border-radius:6px;padding:8px 14px}
.kpi b{display:block;font-size:20px}
table{border-collapse:collapse;margin:8px 0;font-size:13px}
th,td{border-bottom:1px solid var(--line);padding:4px 10px;text-align:left;vertical-align:top}
th{background:#f2f4f7}
table.sortable th{cursor:pointer}
td.num,th.num{text-align:right;font-variant-numeric:tabular-nums}
.charts{display:grid;grid-template-columns:repeat(auto-fill,minmax(400px,1fr));gap:14px}
.chart-box{border:1px solid var(--line);border-radius:6px;padding:8px 10px;min-width:0}
.chart-box svg.chart{width:100%;height:auto}
section>svg.chart{max-width:100%;height:auto}
.chart-box h3{margin:2px 0}
svg.chart text{fill:#1d2433}
svg.chart .seg:hover,svg.chart .bin:hover{opacity:.75}
.clusters{display:grid;grid-template-columns:repeat(auto-fill,minmax(300px,1fr));gap:10px;
margin:8px 0}
.cluster{border:1px solid var(--line);border-radius:6px;padding:6px;min-width:0}
.cluster-row{display:flex;gap:6px;flex-wrap:wrap}
.member{flex:1 1 130px;max-width:200px;border:1px solid var(--line);border-radius:6px;
padding:4px;font-size:11px;overflow-wrap:anywhere}
.member .thumbs img{max-width:100%;max-height:110px}
.member.survivor{border:2px solid var(--kept)}
.badge{display:inline-block;border-radius:10px;padding:0 8px;font-size:11px;font-weight:600;
color:#fff;background:var(--rej)}
.badge.kept{background:var(--kept)}
.badge.dist{background:#475467}
.thumbs{display:flex;gap:4px;flex-wrap:wrap;margin:4px 0}
.thumbs figure{margin:0}
.thumbs img{max-width:160px;max-height:160px;border-radius:4px;cursor:zoom-in;display:block}
.thumbs img.zoom{max-width:480px;max-height:480px;width:480px;cursor:zoom-out}
.thumbs figcaption{font-size:11px;color:var(--muted)}
.noimg.never{background:#f2f4f7;border:1px dashed #98a2b3}
.noimg{width:100px;height:70px;background:repeating-linear-gradient(45deg,#eee,#eee 6px,#ddd 6px,
#ddd 12px);display:flex;align-items:center;justify-content:center;font-size:11px;
color:var(--muted);border-radius:4px}
.pair{border:1px solid var(--line);border-radius:6px;padding:10px;margin:10px 0}
.pair .meta{font-size:12px;color:var(--muted)}
.msgs{margin:6px 0}
.msg{white-space:pre-wrap;margin:2px 0}
.msg .role{font-weight:700;color:#475467;margin-right:6px}
.responses{display:grid;grid-template-columns:1fr 1fr;gap:10px}
.resp{white-space:pre-wrap;border-radius:6px;padding:6px 8px;font-size:13px;overflow-wrap:anywhere}
.resp.chosen{background:#ecfdf3}
.resp.rejected{background:#fef3f2}
.resp b{display:block;font-size:11px;text-transform:uppercase;color:var(--muted)}
.detail{font-family:ui-monospace,monospace;font-size:12px;background:#f2f4f7;padding:2px 6px;
border-radius:4px;overflow-wrap:anywhere}
code,pre{font-family:ui-monospace,SFMono-Regular,Menlo,monospace;font-size:12px}
pre{background:#f2f4f7;padding:8px;border-radius:6px;overflow:auto;max-height:420px}
.reason-group{margin-bottom:18px}
.hidden{display:none}
.delta.up{color:var(--kept);font-weight:600}
.delta.down{color:var(--rej);font-weight:600}
.delta.same{color:var(--muted)}
.blocks{display:flex;flex-wrap:wrap;gap:4px 32px;align-items:flex-start}
details.fact{margin:6px 0;border:1px solid var(--line);border-radius:6px;padding:6px 10px}
details.fact summary{cursor:pointer}
h4{margin:10px 0 4px;font-size:13px}
"""

JS = """
(function(){
  'use strict';
  function cellValue(row, i){
    var c = row.children[i]; if(!c){return '';}
    var t = c.getAttribute('data-v') || c.textContent.trim();
    var n = parseFloat(t.replace(/,/g,''));
    return (!isNaN(n) && /^[-+0-9.,eE%]+$/.test(t)) ? n : t.toLowerCase();
  }
  document.querySelectorAll('table.sortable').forEach(function(table){
    table.querySelectorAll('th').forEach(function(th, i){
      th.addEventListener('click', function(){
        var body = table.tBodies[0]; if(!body){return;}
        var asc = th.getAttribute('data-dir') !== 'asc';
        table.querySelectorAll('th').forEach(function(h){h.removeAttribute('data-dir');});
        th.setAttribute('data-dir', asc ? 'asc' : 'desc');
        var rows = Array.prototype.slice.call(body.rows);
        rows.sort(function(a, b){
          var x = cellValue(a, i), y = cellValue(b, i);
          return (x < y ? -1 : x > y ? 1 : 0) * (asc ? 1 : -1);
        });
        rows.forEach(function(r){body.appendChild(r);});
      });
    });
  });
  var filter = document.getElementById('reason-filter');
  if(filter){
    filter.addEventListener('change', function(){
      var v = filter.value;
      document.querySelectorAll('.reason-group').forEach(function(g){
        g.classList.toggle('hidden', v !== '' && g.getAttribute('data-reason') !== v);
      });
    });
  }
  document.querySelectorAll('.thumbs img').forEach(function(img){
    img.addEventListener('click', function(){img.classList.toggle('zoom');});
  });
  document.body.setAttribute('data-ready', 'yes');
})();
"""


_e = e


def _text(value: str | None) -> str:
    if value is None:
        return '<span class="muted">(missing)</span>'
    if not value.strip():
        return '<span class="muted">(empty)</span>'
    if len(value) > TEXT_LIMIT:
        return _e(value[:TEXT_LIMIT]) + f'<span class="muted"> … ({len(value) - TEXT_LIMIT} ' \
            "more characters)</span>"
    return _e(value)


_table = table


def _thumbs(c: Card) -> str:
    if not c.images:
        return ""
    figs = []
    for im in c.images:
        inner = (f'<img src="{im["uri"]}" alt="image of {_e(c.pair_id[:8])}" loading="eager">'
                 if im["uri"] else _placeholder(im.get("missing") or "undecodable"))
        figs.append(f"<figure>{inner}<figcaption>{_e(im['size'])}</figcaption></figure>")
    return f'<div class="thumbs">{"".join(figs)}</div>'


def _placeholder(what: str) -> str:
    cls = "noimg never" if what == "image never read" else "noimg"
    return f'<div class="{cls}">{_e(what)}</div>'


def _messages(c: Card) -> str:
    return '<div class="msgs">' + "".join(
        f'<div class="msg"><span class="role">{_e(m["role"])}</span>{_text(m["content"])}</div>'
        for m in c.prompt) + "</div>"


def _extras(c: Card) -> str:
    if not c.extras:
        return ""
    items = ", ".join(f"{_e(k)}={_e(fmt(v) if isinstance(v, float) else v)}"
                      for k, v in c.extras.items())
    return f'<div class="meta">{items}</div>'


# -- sections ----------------------------------------------------------------------------------
def _funnel(d: ReportData) -> str:
    rows = []
    for f in d.funnel:
        segs = [Segment("kept", f.kept, KEPT_COLOR)] + [
            Segment(r, n, d.reason_colors[r]) for r, n in f.by_reason.items()]
        label = f.stage if len(f.folders) == 1 else f"{f.stage} ({len(f.folders)} folders)"
        rows.append((label, segs))
    chart = stacked_bars(rows, title="rows per stage: kept and rejected by reason")
    table = _table(
        ["stage", "folders", "rows in", "kept", "rejected", "kept %", "rejected by reason"],
        [[_e(f.stage), _e(", ".join(f.folders)), f.rows_in, f.kept, f.rejected,
          f"{100 * f.kept / f.rows_in:.1f}" if f.rows_in else "-",
          _e(", ".join(f"{r}: {n}" for r, n in f.by_reason.items()) or "-")]
         for f in d.funnel], numeric={2, 3, 4, 5})
    src_rows = []
    keys: list[str] = []
    for counts in d.per_source.values():
        keys += [k for k in counts if k != "kept" and k not in keys]
    colors = {k: d.reason_colors.get(k.split(": ", 1)[-1], "#999") for k in keys}
    for src, counts in d.per_source.items():
        src_rows.append((src, [Segment("kept at the end", counts.get("kept", 0), KEPT_COLOR)]
                         + [Segment(k, counts.get(k, 0), colors[k]) for k in keys]))
    src_chart = (stacked_bars(src_rows, title="rows per source: kept at the end and where the "
                              "others were rejected") if src_rows else
                 '<p class="muted">no source column</p>')
    src_table = _table(
        ["source", "rows", "kept at the end", "kept %", "rejected (stage: reason)"],
        [[_e(s), sum(c.values()), c.get("kept", 0),
          f"{100 * c.get('kept', 0) / (sum(c.values()) or 1):.1f}",
          _e(", ".join(f"{k}: {n}" for k, n in c.items() if k != "kept") or "-")]
         for s, c in d.per_source.items()], numeric={1, 2, 3})
    return (f"<h3>Rows per stage</h3>{chart}{table}"
            f"<h3>Per source</h3>{src_chart}{src_table}")


def _member(c: Card, *, survivor: bool) -> str:
    badge = ('<span class="badge kept">survived</span>' if survivor else
             f'<span class="badge" title="{_e(c.reason)}">removed</span>')
    dist = ("" if survivor or c.distance is None else
            f' <span class="badge dist">Hamming {c.distance} bits</span>')
    if not survivor and c.note and not c.note.startswith("distance="):
        dist += f' <span class="badge dist">{_e(c.note)}</span>'

    cls = "member survivor" if survivor else "member"
    return (f'<div class="{cls}" data-pair="{_e(c.pair_id)}">{badge}{dist}{_thumbs(c)}'
            f'<div class="meta">{_e(c.source)} · <code>{_e(c.pair_id)}</code></div>'
            f'<div class="msg">{_text(user_text(c.prompt))}</div></div>')


def _cluster(cl: Cluster) -> str:
    head = (_member(cl.survivor, survivor=True) if cl.survivor else
            f'<div class="member survivor"><span class="badge kept">survived</span>'
            f'<div class="meta"><code>{_e(cl.survivor_id)}</code> not in these folders</div>'
            "</div>")
    return (f'<div class="cluster" data-reason="{_e(cl.reason)}"><div class="meta">'
            f'{_e(cl.stage)} · {_e(cl.reason)} · {len(cl.members)} removed cop'
            f'{"y" if len(cl.members) == 1 else "ies"}</div><div class="cluster-row">{head}'
            + "".join(_member(m, survivor=False) for m in cl.members) + "</div></div>")


def _duplicates(d: ReportData) -> str:
    if not d.cluster_counts:
        return ('<p class="muted">No duplicate rejections in these folders (no dedup or similar '
                "stage among them, or nothing was a duplicate).</p>")
    parts = []
    for (stage, reason), total in d.cluster_counts.items():
        shown = [c for c in d.clusters if c.stage == stage and c.reason == reason]
        parts.append(f"<h3>{_e(stage)}: {_e(reason)}</h3><p class='muted'>{total} cluster"
                     f"{'s' if total != 1 else ''}, {len(shown)} shown; each row: the copy that "
                     "survived (green) and the copies removed in its favour.</p>")
        parts.append('<div class="clusters">' + "".join(_cluster(c) for c in shown) + "</div>")
    return "".join(parts)


def _stats(h: Histogram) -> str:
    rows = []
    for s in h.series:
        v = s.values[np.isfinite(s.values)]
        rows.append([_e(s.label), v.size] + ([fmt(float(x)) for x in (
            v.mean(), np.median(v), v.min(), v.max())] if v.size else ["-"] * 4))
    return _table(["", "n", "mean", "median", "min", "max"], rows, numeric={1, 2, 3, 4, 5},
                  cls="stats")


def _histograms(d: ReportData) -> str:
    if not d.histograms:
        return '<p class="muted">No numeric columns to plot.</p>'
    boxes = [f'<div class="chart-box" data-hist="{_e(h.key)}"><h3>{_e(h.title)}</h3>'
             f'<div class="muted">{_e(h.note)}</div>'
             f"{histogram(h.series, title=h.title, xlabel=h.xlabel, log_x=h.log_x)}"
             f"{_stats(h)}</div>" for h in d.histograms]
    return f'<div class="charts">{"".join(boxes)}</div>'


def pair_html(c: Card) -> str:
    """One pair: ids, detail, thumbnails, prompt, chosen beside rejected."""
    return (f'<div class="pair" data-pair="{_e(c.pair_id)}"><div class="meta">'
            f"<code>{_e(c.pair_id)}</code> · {_e(c.source)}</div>"
            + (f'<div>detail: <span class="detail">{_e(c.detail)}</span></div>' if c.detail
               else "")
            + f"{_thumbs(c)}{_messages(c)}<div class='responses'>"
            f'<div class="resp chosen"><b>chosen</b>{_text(c.chosen)}</div>'
            f'<div class="resp rejected"><b>rejected</b>{_text(c.rejected)}</div></div>'
            f"{_extras(c)}</div>")


def _examples(d: ReportData) -> str:
    if not d.examples:
        return '<p class="muted">Nothing was rejected in these folders.</p>'
    options = "".join(f'<option value="{_e(g.stage)}/{_e(g.reason)}">{_e(g.stage)}: '
                      f"{_e(g.reason)} ({g.count})</option>" for g in d.examples)
    parts = [f'<label>Show <select id="reason-filter"><option value="">every reason</option>'
             f"{options}</select></label>"]
    for g in d.examples:
        parts.append(
            f'<div class="reason-group" data-reason="{_e(g.stage)}/{_e(g.reason)}">'
            f'<h3>{_e(g.stage)}: <span class="badge">{_e(g.reason)}</span> '
            f'<span class="muted">{g.count} row{"s" if g.count != 1 else ""} in '
            f"{_e(g.folder)}, {len(g.cards)} shown</span></h3>"
            + "".join(pair_html(c) for c in g.cards) + "</div>")
    return "".join(parts)


def _json(value: Any) -> str:
    text = json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False, default=str)
    return f"<pre>{_e(text)}</pre>"


def _short(fp: Any) -> str:
    return f"<code>{_e(str(fp or '')[:12])}</code>"


def _known(value: Any) -> Any:
    """A core field as shown: '?' where a format-1 manifest did not record it."""
    return "?" if value is None or value == "" else value


def _fact_row(s: Step, role: str) -> list[Any]:
    m = s.manifest
    steps = ", ".join(f"{k} {v}s" for k, v in m.steps.items()) or "-"
    inputs = "<br>".join(f"{_e(Path(str(i.get('path', ''))).name)} {_short(i.get('fingerprint'))}"
                         for i in m.inputs)
    return [_e(s.name), _e(s.stage), _e(role), _e(_known(m.version)),
            _known(m.rows_in), _known(m.rows_kept), _known(m.rows_rejected),
            _e(_known(m.seconds)), _e(steps),
            _e(" ".join(f"{k}={v}" for k, v in m.engine.items()) or "-"),
            _short(m.fingerprint), inputs or "-"]


def _fact_details(s: Step) -> str:
    m = s.manifest
    extras = m.facts
    files = m.files
    size = sum((s.path / f).stat().st_size for f in files if (s.path / f).is_file())
    inputs = [[_e(i.get("stage", "-")), f"<code>{_e(i.get('path', ''))}</code>",
               f"<code>{_e(i.get('fingerprint', ''))}</code>"] for i in m.get("inputs") or []]
    body = (f"<p>path <code>{_e(s.path)}</code> · fingerprint "
            f"<code>{_e(m.get('fingerprint', ''))}</code> · content fingerprint "
            f"<code>{_e(s.fingerprint)}</code> · {len(files)} files, {size / 1e6:.2f} MB</p>"
            + (_table(["input stage", "path", "fingerprint"], inputs, cls="facts")
               if inputs else "")
            + f"<h4>config</h4>{_json(m.get('config', {}))}"
            + (f"<h4>stage facts</h4>{_json(extras)}" if extras else "")
            + f"<h4>files</h4>{_json(files)}")
    return (f'<details class="fact" data-folder="{_e(s.name)}"><summary><b>{_e(s.name)}</b> '
            f"({_e(s.stage)}): config, inputs, stage facts, file checksums</summary>"
            f"{body}</details>")


def _facts(d: ReportData) -> str:
    steps = [(s, "pipeline") for s in d.run.lineage] + [
        (s, "outside the lineage") for s in d.run.others]
    versions = sorted({str(s.manifest.get("version", "?")) for s, _ in steps})
    total = sum(float(s.manifest.get("seconds") or 0) for s, _ in steps)
    table = _table(["folder", "stage", "role", "version", "rows in", "kept", "rejected",
                    "seconds", "steps", "engine", "fingerprint", "inputs (fingerprint)"],
                   [_fact_row(s, role) for s, role in steps], numeric={4, 5, 6, 7})
    return (f"<p>{len(steps)} folders · curate versions: {_e(', '.join(versions))} · "
            f"{total:.1f} s of stage time in all</p>{table}"
            + "".join(_fact_details(s) for s, _ in steps))


def kpis_html(kpis: list[tuple[str, Any]]) -> str:
    return "".join(f'<div class="kpi"><b>{_e(v)}</b>{_e(k)}</div>' for k, v in kpis)


def page(title: str, sub: list[str], kpis: list[tuple[str, Any]],
         sections: list[tuple[str, str, str]]) -> str:
    """The page shell: header (title, `sub` chips, key numbers), nav and (id, name, html)
    sections, with the inline CSS, hatch patterns and script."""
    chips = "".join(f'<span class="folder">{_e(x)}</span>' for x in sub)
    body = "".join(f'<section id="{sid}"><h2>{_e(name)}</h2>{html}</section>'
                   for sid, name, html in sections)
    nav = "".join(f'<a href="#{sid}">{_e(name)}</a>' for sid, name, _ in sections)
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        '<meta name="viewport" content="width=device-width,initial-scale=1">'
        "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; "
        "img-src data:; style-src 'unsafe-inline'; script-src 'unsafe-inline'\">"
        f"<title>{_e(title)}</title><style>{CSS}</style></head><body>{pattern_defs()}"
        f'<header><h1>{_e(title)}</h1><div class="sub">{chips}<span>made by curate '
        f'{_e(__version__)}</span></div><div class="kpis">{kpis_html(kpis)}</div></header>'
        f"<nav>{nav}</nav><main>{body}</main><script>{JS}</script></body></html>\n"
    )


def render(d: ReportData, title: str = "curate report") -> str:
    """The whole page as one string."""
    first, last = (d.funnel[0], d.funnel[-1]) if d.funnel else (None, None)
    kpis: list[tuple[str, Any]] = []
    if first and last:
        kpis = [("rows in", first.rows_in), ("kept at the end", last.kept),
                ("kept %", f"{100 * last.kept / first.rows_in:.1f}" if first.rows_in else "-"),
                ("stages", len(d.funnel)), ("sources", len(d.per_source))]
    bodies = {"funnel": _funnel(d), "mix": render_composition(d.composition),
              "model": render_model(d.model), "duplicates": _duplicates(d),
              "histograms": _histograms(d), "examples": _examples(d), "run-facts": _facts(d)}
    return page(title, [s.name for s in d.run.lineage], kpis,
                [(sid, name, bodies[sid]) for sid, name in SECTIONS])
