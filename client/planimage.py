"""`plan.png`: the LR image with each tile outlined and coloured by its destination."""

from __future__ import annotations

from PIL import Image, ImageDraw

from hybridsr.protocol import Plan

COLOURS = {"edge": (255, 64, 32), "device": (40, 160, 255)}


def draw_plan(lr: Image.Image, plan: Plan, zoom: int = 4) -> Image.Image:
    """Upsized (nearest) so the outlines stay readable on small LR images."""
    canvas = lr.convert("RGB").resize((lr.width * zoom, lr.height * zoom), Image.NEAREST)
    overlay = Image.new("RGBA", canvas.size, (0, 0, 0, 0))
    draw = ImageDraw.Draw(overlay)
    for t in plan.tiles:
        colour = COLOURS[t.destination]
        box = (t.x * zoom, t.y * zoom, (t.x + t.w) * zoom - 1, (t.y + t.h) * zoom - 1)
        draw.rectangle(box, fill=(*colour, 40), outline=(*colour, 255), width=2)
        draw.text((box[0] + 4, box[1] + 3), f"{t.index} {t.score:.2f}", fill=(*colour, 255))
    return Image.alpha_composite(canvas.convert("RGBA"), overlay).convert("RGB")
