"""`plan.png`: the LR image with each tile outlined and coloured by its destination."""

from __future__ import annotations

from PIL import Image, ImageDraw

from hybridsr.protocol import Plan

# red: edge diffusion SR; orange: edge light SR; blue: device light SR; grey: no SR
COLOURS = {
    ("edge", "diffusion"): (255, 48, 32),
    ("edge", "light"): (255, 170, 0),
    ("device", "light"): (40, 160, 255),
    ("device", "copy"): (160, 160, 160),
}


def draw_plan(lr: Image.Image, plan: Plan, zoom: int = 4) -> Image.Image:
    """Upsized (nearest) so the outlines stay readable on small LR images."""
    canvas = lr.convert("RGB").resize((lr.width * zoom, lr.height * zoom), Image.NEAREST)
    overlay = Image.new("RGBA", canvas.size, (0, 0, 0, 0))
    draw = ImageDraw.Draw(overlay)
    for t in plan.tiles:
        colour = COLOURS.get((t.destination, t.method), (255, 255, 255))
        box = (t.x * zoom, t.y * zoom, (t.x + t.w) * zoom - 1, (t.y + t.h) * zoom - 1)
        draw.rectangle(box, fill=(*colour, 40), outline=(*colour, 255), width=2)
        draw.text((box[0] + 4, box[1] + 3), f"{t.index} {t.score:.2f}", fill=(*colour, 255))
    return Image.alpha_composite(canvas.convert("RGBA"), overlay).convert("RGB")
