"""The results page: one self-contained HTML file that shows a job to a person.

Before/after (a slider), the most salient tile up close, the tile plan, a waterfall of where
the time went and the report's numbers. Images are inlined as data: URIs and the few lines of
script are inline too: the file opens offline, from anywhere, with nothing to fetch.
"""

from __future__ import annotations

import base64
import html
import io
import json
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from hybridsr.client.planimage import COLOURS, draw_plan
from hybridsr.sdk.result import HybridResult

KINDS = {  # (destination, method) → what the page calls it
    ("edge", "diffusion"): "edge heavy SR",
    ("edge", "light"): "edge light SR",
    ("device", "light"): "device light SR",
    ("device", "copy"): "copied (no SR)",
}


@dataclass(frozen=True)
class Bar:
    """One row of the waterfall: seconds after the request was sent."""

    label: str
    lane: str  # "edge" | "link" | "device"
    start: float
    end: float


def write_page(result: HybridResult, path: str | Path, *, title: str = "hybridsr job",
               notes: tuple[str, ...] = (), reference: Image.Image | None = None) -> Path:
    """Write the page for `result` to `path` (folders made as needed); returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render_page(result, title=title, notes=notes, reference=reference),
                    encoding="utf-8")
    return path


def render_page(result: HybridResult, *, title: str = "hybridsr job",
                notes: tuple[str, ...] = (), reference: Image.Image | None = None) -> str:
    """The page as a string. `reference`: the ground truth, when the job had one."""
    sections = [
        _header(result, title, notes),
        _compare(result, reference),
        _detail(result, reference),
        _plan(result),
        _waterfall(result),
        _numbers(result),
    ]
    return _TEMPLATE.format(title=html.escape(title), css=_CSS, script=_SCRIPT,
                            body="\n".join(s for s in sections if s))


# --- pictures -----------------------------------------------------------------------------


def data_uri(image: Image.Image) -> str:
    """PNG up to 1.5 MP (every pixel as it is); JPEG q92 above, so the page stays openable."""
    buf = io.BytesIO()
    rgb = image.convert("RGB")
    if rgb.width * rgb.height <= 1_500_000:
        rgb.save(buf, format="PNG", optimize=False, compress_level=6)
        mime = "image/png"
    else:
        rgb.save(buf, format="JPEG", quality=92)
        mime = "image/jpeg"
    return f"data:{mime};base64,{base64.b64encode(buf.getvalue()).decode('ascii')}"


def _img(image: Image.Image, alt: str, cls: str = "") -> str:
    return (f'<img src="{data_uri(image)}" alt="{html.escape(alt)}" width="{image.width}" '
            f'height="{image.height}"{f" class={chr(34)}{cls}{chr(34)}" if cls else ""}>')


def _bicubic(result: HybridResult) -> Image.Image:
    return result.lr_image.convert("RGB").resize(result.image.size, Image.Resampling.BICUBIC)


def _compare(result: HybridResult, reference: Image.Image | None) -> str:
    before = _bicubic(result)
    w, h = result.image.size
    scale = result.plan.scale
    truth, choice = "", ""
    if reference is not None:
        truth = _img(reference.convert("RGB"), "ground truth", "before truth")
        choice = ('<p class="choice">Left side: <label><input type="radio" name="left" '
                  f'value="bicubic" checked> input, bicubic ×{scale}</label> <label><input '
                  'type="radio" name="left" value="truth"> ground truth</label></p>')
    return f"""
<section class="card">
  <h2>Before and after</h2>
  <p class="hint">Drag across the picture: left of the line the input enlarged ×{scale} with
  bicubic interpolation, right of it the hybrid result ({w}×{h}).</p>
  {choice}
  <div class="compare" style="aspect-ratio: {w} / {h}; max-width: {_shown_width(w, h)}px">
    {_img(before, "input, bicubic", "before bicubic")}{truth}
    <div class="after">{_img(result.image, "result", "")}</div>
    <div class="divider"></div>
    <span class="tag left">before · <span class="which">bicubic ×{scale}</span></span>
    <span class="tag right">after · hybridsr</span>
    <input type="range" min="0" max="100" value="50" aria-label="before/after position">
  </div>
</section>"""


def _shown_width(w: int, h: int) -> int:
    """Small results are enlarged to fill the card (up to 640 px tall); big ones shrink."""
    return max(w, min(912, round(w * 640 / h)))


def _detail(result: HybridResult, reference: Image.Image | None) -> str:
    """The most salient tile up close: where the heavy SR was spent."""
    tiles = result.plan.tiles
    if not tiles:
        return ""
    t = max(tiles, key=lambda x: x.score)
    s = result.plan.scale
    box = (t.x * s, t.y * s, (t.x + t.w) * s, (t.y + t.h) * s)
    shown = 212 if reference is not None else 280  # CSS px per panel: a row of 3 or 4
    zoom = shown / (box[2] - box[0])

    def crop(image: Image.Image) -> Image.Image:
        return image.convert("RGB").crop(box)

    panels = [("input pixels",
               result.lr_image.convert("RGB").crop((t.x, t.y, t.x + t.w, t.y + t.h))),
              ("bicubic", crop(_bicubic(result))),
              (f"result ({KINDS.get((t.destination, t.method), t.method)})", crop(result.image))]
    if reference is not None:
        panels.append(("ground truth", crop(reference)))
    figures = "".join(f'<figure style="width: {shown}px"><figcaption>{html.escape(name)}'
                      f"</figcaption>{_img(im, name, 'pixelated zoomed')}</figure>"
                      for name, im in panels)
    return f"""
<section class="card">
  <h2>Up close: the most salient tile</h2>
  <p class="hint">Tile {t.index} (saliency {t.score:.2f}), enlarged ×{zoom:.1f} with square
  pixels.</p>
  <div class="row">{figures}</div>
</section>"""


def _plan(result: HybridResult) -> str:
    plan = result.plan
    counts: dict[tuple[str, str], int] = {}
    for t in plan.tiles:
        counts[(t.destination, t.method)] = counts.get((t.destination, t.method), 0) + 1
    heavy = result.edge.get("sr", "heavy SR")
    legend = "".join(
        f'<li><span class="swatch" style="background: rgb{COLOURS[key]}"></span>'
        f"{html.escape(KINDS[key])}: <b>{counts.get(key, 0)}</b>"
        f'{html.escape(f" — {heavy}") if key == ("edge", "diffusion") else ""}</li>'
        for key in KINDS if counts.get(key) or key != ("device", "copy"))
    zoom = max(1, min(8, 560 // max(result.lr_image.width, result.lr_image.height, 1)))
    moved = sorted(i for i, where in result.destinations.items()
                   if plan.tiles[i].destination != where)
    moved_note = (f'<p class="warn">Tiles done elsewhere than planned: {moved}</p>'
                  if moved else "")
    return f"""
<section class="card">
  <h2>The plan: which tile went where</h2>
  <p class="hint">{len(plan.tiles)} tiles of {plan.tile} LR px (overlap {plan.overlap}) on the
  {plan.lr_width}×{plan.lr_height} input; the number in each tile is its saliency score,
  tiles scoring ≥ {plan.threshold:.2f} are foreground. Policy <b>{html.escape(plan.policy)}</b>.
  </p>
  <div class="row"><figure>{_img(draw_plan(result.lr_image, plan, zoom), "tile plan", "")}
  </figure><ul class="legend">{legend}</ul></div>
  {moved_note}
</section>"""


# --- time -----------------------------------------------------------------------------------


def waterfall_bars(result: HybridResult) -> list[Bar]:
    """The job's stages on the device's clock.

    Edge stages come from the edge's `done` timings; they are placed so that the plan left
    the edge when it reached the device (the link's share of that moment is not known).
    """
    m, e = result.marks, result.edge_timings
    total = result.timings.total
    bars: list[Bar] = []
    plan_at = m.get("plan")
    if plan_at is not None and e:
        t2i, planning = e.get("t2i", 0.0), e.get("plan", 0.0)
        start = max(0.0, plan_at - t2i - planning)
        if start > 0.001:
            bars.append(Bar("request and upload", "link", 0.0, start))
        if t2i > 0:
            bars.append(Bar("text-to-image", "edge", start, start + t2i))
        bars.append(Bar("saliency and plan", "edge", start + t2i, plan_at))
        kinds = {(t.destination, t.method) for t in result.plan.tiles}
        for key, label, kind in (("edge_sr", "heavy SR", ("edge", "diffusion")),
                                 ("edge_light", "light SR", ("edge", "light"))):
            if kind in kinds and key in e:
                bars.append(Bar(label, "edge", plan_at, plan_at + e[key]))
    if "edge_tile_first" in m:
        bars.append(Bar("edge tiles arrive", "link", m["edge_tile_first"], m["edge_tile_last"]))
    if "device_first" in m:
        bars.append(Bar("light SR", "device", m["device_first"], m["device_last"]))
    if "stitched" in m:
        last = max([m.get(k, 0.0) for k in ("done", "device_last", "edge_tile_last")])
        bars.append(Bar("finish the stitch", "device", min(last, m["stitched"]), m["stitched"]))
    return [b for b in bars if b.end >= b.start and b.start <= max(total, b.start)]


LANE_COLOURS = {"edge": "#e4572e", "link": "#8a8fa3", "device": "#2f8fdd"}


def _duration(bar: Bar, end_x: float, y: float, width: int) -> str:
    """The bar's length beside its end, or inside it near the right edge of the chart."""
    inside = end_x + 60 > width
    x, anchor, cls = (end_x - 5, "end", "dur in") if inside else (end_x + 4, "start", "dur")
    return (f'<text x="{x:.1f}" y="{y}" text-anchor="{anchor}" class="{cls}">'
            f"{bar.end - bar.start:.2f} s</text>")


def _waterfall(result: HybridResult) -> str:
    bars = waterfall_bars(result)
    if not bars:
        return ""
    total = max(result.timings.total, max(b.end for b in bars), 1e-3)
    row_h, label_w, width = 26, 190, 900
    plot_w = width - label_w - 40
    height = row_h * len(bars) + 40

    def x(t: float) -> float:
        return label_w + plot_w * t / total

    parts = []
    for i, bar in enumerate(bars):
        y = 10 + i * row_h
        w = max(x(bar.end) - x(bar.start), 2.0)
        parts.append(
            f'<text x="{label_w - 8}" y="{y + 16}" text-anchor="end">'
            f'<tspan class="lane">{bar.lane}</tspan> {html.escape(bar.label)}</text>'
            f'<rect x="{x(bar.start):.1f}" y="{y + 3}" width="{w:.1f}" height="{row_h - 8}" '
            f'rx="3" fill="{LANE_COLOURS[bar.lane]}"><title>{html.escape(bar.label)}: '
            f"{bar.start:.3f}–{bar.end:.3f} s</title></rect>"
            + _duration(bar, x(bar.end), y + 16, width))
    ticks = []
    for k in range(6):
        t = total * k / 5
        ticks.append(f'<line x1="{x(t):.1f}" x2="{x(t):.1f}" y1="6" y2="{height - 24}" '
                     f'class="grid"/><text x="{x(t):.1f}" y="{height - 8}" '
                     f'text-anchor="middle" class="tick">{t:.2f} s</text>')
    return f"""
<section class="card">
  <h2>Where the time went</h2>
  <p class="hint">Seconds after the request was sent, {total:.2f} s in all. Edge stages come
  from the edge's own timings, placed so the plan left the edge when it reached the device.
  Edge heavy SR and edge light SR run side by side, the device's light SR beside both.</p>
  <svg viewBox="0 0 {width} {height}" class="waterfall" role="img"
       aria-label="timing waterfall">{''.join(ticks)}{''.join(parts)}</svg>
</section>"""


# --- numbers --------------------------------------------------------------------------------


def _numbers(result: HybridResult) -> str:
    report = result.report()
    t = report["timings"]
    rows = [
        ("size", f"{report['lr_size'][0]}×{report['lr_size'][1]} → "
                 f"{report['size'][0]}×{report['size'][1]} (×{report['scale']})"),
        ("edge models", f"T2I: {result.edge.get('t2i', '?')}; heavy SR: "
                        f"{result.edge.get('sr', '?')} on {result.edge.get('device', '?')}"),
        ("preset", str(result.edge.get("preset", "?"))),
        ("total", f"{t['total']:.3f} s"),
        ("edge", f"T2I {t['t2i']:.3f} s, heavy SR {t['edge_sr']:.3f} s, whole edge job "
                 f"{t['edge_total']:.3f} s"),
        ("device", f"light SR {t['device_sr']:.3f} s, stitch and colour fix {t['stitch']:.3f} s"),
        ("link", f"waiting on the network {t['transfer']:.3f} s; "
                 f"{report['bytes_received'] / 1024:.0f} kB down, "
                 f"{report['bytes_sent'] / 1024:.0f} kB up"),
        ("planner's promise", _promise(result)),
        ("degraded", html.escape(result.degraded_reason or "no")),
    ]
    cells = "".join(f"<tr><th>{k}</th><td>{v}</td></tr>" for k, v in rows)
    raw = html.escape(json.dumps(report, indent=2))
    return f"""
<section class="card">
  <h2>The numbers</h2>
  <table class="numbers">{cells}</table>
  <details><summary>the whole report (JSON)</summary><pre>{raw}</pre></details>
</section>"""


def _promise(result: HybridResult) -> str:
    p = result.plan.predicted_s
    if p is None:
        return "none"
    return f"edge work done {p:.3f} s after the request arrived (it took " \
           f"{result.timings.edge_total:.3f} s)"


def _header(result: HybridResult, title: str, notes: tuple[str, ...]) -> str:
    t, plan = result.timings, result.plan
    n_heavy = sum(1 for x in plan.tiles if x.method == "diffusion")
    summary = (f"{result.lr_image.width}×{result.lr_image.height} → {result.image.width}×"
               f"{result.image.height} · {len(plan.tiles)} tiles, {n_heavy} with heavy SR · "
               f"{t.total:.2f} s · preset {result.edge.get('preset', '?')}")
    banners = []
    if result.random_weights:
        banners.append("This edge runs RANDOM weights: the picture is noise-like. It shows "
                       "the pipeline (plan, tiles, timings), not image quality.")
    if result.degraded:
        banners.append(f"Degraded: {result.degraded_reason}")
    notes_html = "".join(f"<p>{html.escape(n)}</p>" for n in notes)
    banner_html = "".join(f'<p class="warn">{html.escape(b)}</p>' for b in banners)
    return f"""
<header>
  <h1>{html.escape(title)}</h1>
  <p class="summary">{html.escape(summary)}</p>
  {notes_html}{banner_html}
</header>"""


_TEMPLATE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}</title>
<style>{css}</style>
</head>
<body>
{body}
<footer>Made by hybridsr. Self-contained: every picture is inside this file.</footer>
<script>{script}</script>
</body>
</html>
"""

_CSS = """
:root { color-scheme: light; --ink: #1d2330; --muted: #5d6475; --line: #e3e6ee; }
* { box-sizing: border-box; }
body { margin: 0; background: #f4f5f9; color: var(--ink);
  font: 15px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; }
header { background: linear-gradient(120deg, #1d2330, #2d3a5a); color: #fff;
  padding: 28px max(24px, calc(50% - 480px)); }
header h1 { margin: 0 0 4px; font-size: 26px; font-weight: 650; }
header p { margin: 4px 0; color: #cfd5e6; }
header .summary { color: #fff; font-size: 16px; }
.card { background: #fff; margin: 20px auto; max-width: 960px; padding: 18px 24px 22px;
  border-radius: 12px; box-shadow: 0 1px 3px rgba(20, 30, 60, .08); }
.card h2 { margin: 0 0 6px; font-size: 19px; }
.hint { color: var(--muted); margin: 0 0 14px; }
.warn { background: #fff4d6; color: #6b4b00; padding: 8px 12px; border-radius: 8px; }
header .warn { color: #6b4b00; }
.compare { position: relative; width: 100%; margin: 0 auto; overflow: hidden;
  border-radius: 8px; background: #000; user-select: none; }
.compare img { position: absolute; inset: 0; width: 100%; height: 100%; display: block; }
.compare img.before { image-rendering: auto; }
.compare .after { position: absolute; inset: 0; clip-path: inset(0 0 0 50%); }
.compare .divider { position: absolute; top: 0; bottom: 0; left: 50%; width: 2px;
  background: #fff; box-shadow: 0 0 6px rgba(0, 0, 0, .6); pointer-events: none; }
.compare .tag { position: absolute; top: 10px; padding: 2px 8px; border-radius: 6px;
  background: rgba(0, 0, 0, .55); color: #fff; font-size: 13px; pointer-events: none; }
.compare .left { left: 10px; } .compare .right { right: 10px; }
.compare input { position: absolute; inset: 0; width: 100%; height: 100%; margin: 0;
  opacity: 0; cursor: ew-resize; }
.row { display: flex; flex-wrap: wrap; gap: 16px; align-items: flex-start; }
figure { margin: 0; }
figcaption { color: var(--muted); font-size: 13px; margin-bottom: 4px; }
.row img { max-width: 100%; height: auto; border-radius: 6px; display: block; }
img.pixelated { image-rendering: pixelated; }
.row img.zoomed { width: 100%; }
.choice { margin: 0 0 10px; } .choice label { margin-right: 14px; cursor: pointer; }
.compare img.truth { visibility: hidden; }
.compare.show-truth img.truth { visibility: visible; }
img.full { max-width: 100%; height: auto; }
.legend { list-style: none; padding: 0; margin: 0; }
.legend li { margin: 6px 0; }
.swatch { display: inline-block; width: 14px; height: 14px; border-radius: 3px;
  margin-right: 8px; vertical-align: -2px; }
.waterfall { width: 100%; height: auto; font-size: 13px; }
.waterfall .lane { fill: var(--muted); font-size: 11px; text-transform: uppercase; }
.waterfall .dur, .waterfall .tick { fill: var(--muted); font-size: 12px; }
.waterfall .grid { stroke: var(--line); }
.waterfall .dur.in { fill: #fff; font-weight: 600; }
table.numbers { border-collapse: collapse; width: 100%; }
.numbers th { text-align: left; width: 170px; color: var(--muted); font-weight: 500; }
.numbers th, .numbers td { padding: 6px 8px; border-top: 1px solid var(--line);
  vertical-align: top; }
details { margin-top: 12px; } pre { overflow: auto; max-height: 360px; background: #f7f8fb;
  padding: 10px; border-radius: 8px; font-size: 12px; }
footer { text-align: center; color: var(--muted); padding: 10px 0 30px; font-size: 13px; }
"""

# The slider, and a note in the DOM of every picture's decoded width (headless checks read it).
_SCRIPT = """
for (const box of document.querySelectorAll('.compare')) {
  const range = box.querySelector('input');
  const move = () => {
    box.querySelector('.after').style.clipPath = `inset(0 0 0 ${range.value}%)`;
    box.querySelector('.divider').style.left = `${range.value}%`;
  };
  range.addEventListener('input', move);
  move();
  for (const radio of document.querySelectorAll('input[name=left]')) {
    radio.addEventListener('change', () => {
      const truth = radio.value === 'truth' && radio.checked;
      box.classList.toggle('show-truth', truth);
      box.querySelector('.which').textContent = truth ? 'ground truth' : radio.parentNode
        .textContent.replace('input, ', '').trim();
    });
  }
}
window.addEventListener('load', () => {
  document.body.dataset.imageWidths =
    Array.from(document.images, (im) => im.complete ? im.naturalWidth : 0).join(',');
});
"""
