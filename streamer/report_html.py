"""The report's index.html: one self-contained page (inline CSS and JS, no network, no CDN).

Cards are rendered here, as static HTML, so the page shows its faces even with scripts off; the
small inline script only filters the cards (camera, time) and opens a track's every kept shot.
Every enhanced image sits in a frame with a visible "ENHANCED" label; originals never have one.
"""

from __future__ import annotations

import html
import json
import time
from typing import Any

ENHANCED_LABEL = "ENHANCED"
VIEW_PX = 160  # both images of a card are shown this wide

STYLE = """
:root { font-family: system-ui, sans-serif; color: #1b1f24; background: #f4f5f7; }
body { margin: 0; }
header { background: #1b1f24; color: #fff; padding: 12px 20px; }
header h1 { margin: 0 0 4px 0; font-size: 20px; }
header .status { margin: 0; font-size: 13px; color: #c9d1d9; }
.warning { background: #b91c1c; color: #fff; padding: 6px 20px; font-weight: 600; }
.filters { display: flex; gap: 14px; align-items: center; padding: 10px 20px; background: #e6e8eb; font-size: 14px; }
.filters input { width: 6em; }
.filters label { white-space: nowrap; }
#cards { display: grid; grid-template-columns: repeat(auto-fill, minmax(360px, 1fr)); gap: 14px; padding: 16px 20px; }
.card { background: #fff; border-radius: 8px; box-shadow: 0 1px 3px rgba(0,0,0,.15); padding: 10px 12px;
        cursor: pointer; }
.card:focus, .card:hover { outline: 2px solid #2563eb; }
.card h2 { font-size: 15px; margin: 8px 0 2px 0; }
.card p { font-size: 12.5px; margin: 2px 0; color: #444; }
.pair { display: flex; gap: 10px; }
figure { margin: 0; }
figure img { width: 160px; height: 160px; display: block; background: #ccc; }
figure.original img { image-rendering: pixelated; }
figcaption { font-size: 11.5px; color: #555; margin-top: 3px; }
.framed { position: relative; width: 160px; height: 160px; outline: 3px solid #d97706; }
.enhanced-label { position: absolute; left: 0; top: 0; background: #d97706; color: #fff; font-weight: 700;
                  font-size: 11px; letter-spacing: .06em; padding: 2px 6px; }
.none { width: 160px; height: 160px; display: flex; align-items: center; justify-content: center;
        text-align: center; font-size: 12px; color: #555; background: #eceef1; }
dialog { max-width: 92vw; border: none; border-radius: 8px; padding: 16px; }
dialog::backdrop { background: rgba(0,0,0,.55); }
.shot { display: flex; gap: 12px; align-items: flex-start; margin: 8px 0; }
.shot table { font-size: 12px; border-collapse: collapse; }
.shot td { padding: 1px 8px 1px 0; }
section.record { padding: 8px 20px 40px 20px; font-size: 13px; }
section.record table { border-collapse: collapse; }
section.record td { padding: 2px 12px 2px 0; vertical-align: top; font-family: ui-monospace, monospace; }
section.record td:first-child { font-family: system-ui, sans-serif; color: #555; }
pre { background: #fff; padding: 10px; overflow: auto; max-height: 400px; font-size: 12px; }
"""

SCRIPT = """
(function () {
  var cards = Array.prototype.slice.call(document.querySelectorAll('.card'));
  var camera = document.getElementById('camera'), from = document.getElementById('from'),
      to = document.getElementById('to'), shown = document.getElementById('shown');
  function filter() {
    var cam = camera.value, count = 0;
    // Live reports filter on the wall clock (datetime-local inputs), files on seconds into the footage.
    var lo = from.type === 'number' ? parseFloat(from.value) : Date.parse(from.value) / 1000;
    var hi = to.type === 'number' ? parseFloat(to.value) : Date.parse(to.value) / 1000;
    cards.forEach(function (card) {
      var first = parseFloat(card.dataset.first), last = parseFloat(card.dataset.last);
      var ok = (!cam || card.dataset.camera === cam) && (isNaN(lo) || isNaN(last) || last >= lo) &&
               (isNaN(hi) || isNaN(first) || first <= hi);
      card.hidden = !ok;
      if (ok) count++;
    });
    shown.textContent = count + ' of ' + cards.length + ' tracks shown';
  }
  [camera, from, to].forEach(function (el) { el.addEventListener('input', filter); });
  var dialog = document.getElementById('shots'), body = document.getElementById('shots-body');
  function open(card) {
    body.innerHTML = '';
    body.appendChild(card.querySelector('template.shots').content.cloneNode(true));
    document.getElementById('shots-title').textContent = card.querySelector('h2').textContent;
    if (dialog.showModal) { dialog.showModal(); } else { dialog.setAttribute('open', ''); }
  }
  cards.forEach(function (card) {
    card.addEventListener('click', function () { open(card); });
    card.addEventListener('keydown', function (e) { if (e.key === 'Enter') { open(card); } });
  });
  document.getElementById('close').addEventListener('click', function () { dialog.close(); });
  filter();
})();
"""


def render_index(record: dict[str, Any], tracks: list[dict[str, Any]]) -> str:
    cameras = sorted({track["camera"] for track in tracks})
    ordered = sorted(tracks, key=lambda t: (t["camera"], t["first_frame"], t["track_id"], t["segment"]))
    status = record["status"]
    warning = (
        ""
        if status == "complete"
        else (
            f'<div class="warning">Report {_e(status)}: '
            + (
                "tracks are added as they end; this page refreshes itself."
                if status == "running"
                else "the run did not finish; the tracks below are those seen before it stopped."
            )
            + "</div>"
        )
    )
    refresh = '<meta http-equiv="refresh" content="10">' if status == "running" else ""
    options = "".join(f'<option value="{_e(c)}">{_e(c)}</option>' for c in cameras)
    faces = sum(len(t["shots"]) for t in tracks)
    live = any(t["first_wall_clock"] is not None for t in tracks)
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">{refresh}
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Face report</title><style>{STYLE}</style></head>
<body>
<header><h1>Faces found: {len(tracks)} tracks</h1>
<p class="status">{_e(_summary_line(record, faces))}</p></header>
{warning}
<div class="filters">
<label>Camera <select id="camera"><option value="">all</option>{options}</select></label>
{_time_filter(live)}
<span id="shown"></span>
<span>Click a card for every kept shot. Images labelled {ENHANCED_LABEL} were produced by a neural network and
are not what the camera recorded; each is shown beside its original.</span>
</div>
<main id="cards">
{"".join(_card(track) for track in ordered) or "<p>No faces were tracked.</p>"}
</main>
<dialog id="shots"><h2 id="shots-title"></h2><div id="shots-body"></div>
<button id="close" type="button">Close</button></dialog>
{_record_section(record)}
<script>{SCRIPT}</script>
</body></html>
"""


def _card(track: dict[str, Any]) -> str:
    best = track["shots"][0] if track["shots"] else None
    first, last = track["first_time_s"], track["last_time_s"]
    title = f"{track['camera']} · track {track['track_id']}" + (
        f" ({track['segment']})" if track["segment"] > 1 else ""
    )
    seen = (
        f"first seen {_when(first, track['first_wall_clock'])} (frame {track['first_frame']}), "
        f"last {_when(last, track['last_wall_clock'])} (frame {track['last_frame']})"
    )
    pair = _pair(best) if best else '<div class="none">no shot kept</div>'
    if track["first_wall_clock"] is not None:  # live: the filter works on the wall clock
        first, last = track["first_wall_clock"], track["last_wall_clock"]
    return f"""<article class="card" tabindex="0" data-camera="{_e(track["camera"])}" data-first="{_num(first)}"
 data-last="{_num(last)}" data-track="{track["track_id"]}">
<div class="pair">{pair}</div>
<h2>{_e(title)}</h2>
<p>{_e(seen)}</p>
<p>{track["frames"]} frames · best score {_num(track["best_score"])} · {_e(track["input"])}</p>
<template class="shots">{"".join(_shot(shot) for shot in track["shots"])}</template>
</article>
"""


def _pair(shot: dict[str, Any]) -> str:
    original = (
        f'<figure class="original"><img src="{_e(shot["original_enlarged"])}" alt="original crop">'
        f"<figcaption>original, frame {shot['frame_index']}</figcaption></figure>"
    )
    if not shot["enhanced"]:
        enhanced = '<div class="none">not enhanced<br>(face large enough, or restoration off)</div>'
    else:
        enhanced = (
            f'<figure class="enhanced"><div class="framed"><img src="{_e(shot["enhanced"])}" '
            f'alt="enhanced by a neural network"><span class="enhanced-label">{ENHANCED_LABEL}</span></div>'
            f"<figcaption>model output (enhanced)</figcaption></figure>"
        )
    return original + enhanced


def _shot(shot: dict[str, Any]) -> str:
    score = shot["score"]
    rows = "".join(f"<tr><td>{_e(name)}</td><td>{value:.3f}</td></tr>" for name, value in score.items())
    when = _when(shot["time_s"], shot["wall_clock"])
    box = shot["box"]
    return f"""<div class="shot">{_pair(shot)}<table>
<tr><td>rank</td><td>{shot["rank"]}</td></tr><tr><td>frame</td><td>{shot["frame_index"]}</td></tr>
<tr><td>time</td><td>{_e(when)}</td></tr>
<tr><td>box</td><td>{box["x"]:.0f}, {box["y"]:.0f}, {box["w"]:.0f} x {box["h"]:.0f}</td></tr>{rows}
<tr><td>files</td><td><a href="{_e(shot["original"])}">original</a> ·
<a href="{_e(shot["sidecar"])}">sidecar</a></td></tr></table></div>"""


def _time_filter(live: bool) -> str:
    if live:
        return (
            '<label>Seen from <input id="from" type="datetime-local" step="1"></label>'
            '<label>to <input id="to" type="datetime-local" step="1"></label>'
        )
    return (
        '<label>Seen from <input id="from" type="number" step="any" min="0"> s</label>'
        '<label>to <input id="to" type="number" step="any" min="0"> s</label>'
    )


def _record_section(record: dict[str, Any]) -> str:
    software = record["software"]
    model = record["model"]
    rows = [
        ("status", record["status"]),
        ("started (UTC)", record["started_utc"]),
        ("finished (UTC)", record["finished_utc"] or "-"),
        (
            "git commit",
            f"{software.get('git_commit') or 'unknown'}"
            + (" (uncommitted changes)" if software.get("git_dirty") else ""),
        ),
        ("software", ", ".join(f"{k} {v}" for k, v in software.items() if k not in ("git_commit", "git_dirty"))),
        ("model", f"{model['file'] or 'none'} sha256 {model['sha256'] or '-'}"),
        ("settings sha256", record["settings_sha256"]),
    ]
    for source in record["inputs"]:
        rows.append((f"input {source['camera']}", f"{source['input']} sha256 {source.get('sha256') or '-'}"))
    rows.append(("counts", ", ".join(f"{k} {v}" for k, v in record["counts"].items())))
    rows.append(("errors", "; ".join(record["errors"]) or "none"))
    table = "".join(f"<tr><td>{_e(k)}</td><td>{_e(str(v))}</td></tr>" for k, v in rows)
    config = json.dumps(record["config"], indent=2, sort_keys=True)
    restorer = json.dumps(model["restorer"], indent=2, sort_keys=True)
    return f"""<section class="record"><h2>Processing record</h2><table>{table}</table>
<details><summary>Full effective config</summary><pre>{_e(config)}</pre></details>
<details><summary>Restorer (restorer.json summary)</summary><pre>{_e(restorer)}</pre></details>
<p>The same record as JSON: <a href="run.json">run.json</a>; one line per track: <a href="tracks.jsonl">tracks.jsonl</a>.</p>
</section>"""


def _summary_line(record: dict[str, Any], faces: int) -> str:
    counts = record["counts"]
    parts = [f"{len(record['inputs'])} input(s)", f"{faces} shots kept"]
    if "frames_out" in counts:
        parts.append(f"{counts['frames_out']} frames, {counts.get('faces', 0)} faces")
    parts.append(f"started {record['started_utc']}")
    return " · ".join(parts)


def _when(seconds: float | None, wall_clock: float | None) -> str:
    text = "?" if seconds is None else f"{seconds:.2f} s"
    if wall_clock is not None:
        text += " (" + time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(wall_clock)) + ")"
    return text


def _num(value: float | None) -> str:
    return "" if value is None else f"{value:.3f}"


def _e(text: str) -> str:
    return html.escape(str(text), quote=True)
