"""The side-by-side figure: one row per model (real images first), one column per sampling size, each cell
labelled with its scores."""

from __future__ import annotations

import torch
from PIL import Image, ImageDraw, ImageFont

from ledit.files import atomic_path

BACKGROUND = (255, 255, 255)
TEXT = (20, 20, 20)
GAP = 6


def _font(size: int):
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1 has only the fixed bitmap font
        return ImageFont.load_default()


def _strip(images: torch.Tensor, zoom: int) -> Image.Image:
    """uint8 (N, C, H, W), C = 1 or 3 -> one PIL image with the N images side by side, each enlarged ``zoom``
    times."""
    images = images.expand(-1, 3, -1, -1)
    n, _, h, w = images.shape
    row = images.permute(2, 0, 3, 1).reshape(h, n * w, 3)
    strip = Image.fromarray(row.contiguous().numpy(), mode="RGB")
    strip = strip.resize((n * w * zoom, h * zoom), Image.NEAREST)
    # A thin white line between neighbouring images.
    draw = ImageDraw.Draw(strip)
    for index in range(1, n):
        draw.line([(index * w * zoom, 0), (index * w * zoom, h * zoom)], fill=BACKGROUND, width=2)
    return strip


def save_figure(
    path: str,
    rows: list[tuple[str, dict[str, torch.Tensor]]],
    column_titles: dict[str, str],
    captions: list[dict[str, str]] | None = None,
    zoom: int = 2,
) -> None:
    """Write a PNG grid. ``rows`` = [(row label, {size name: uint8 images (N, 3, H, W)})]; ``column_titles``
    maps each size name to its header, in column order; ``captions`` (one {size name: text} per row, optional)
    are printed under each cell, e.g. its scores. Written atomically."""
    font, small = _font(14), _font(12)
    captions = captions or [{} for _ in rows]
    strips = [[_strip(images[name], zoom) for name in column_titles] for _, images in rows]
    measure = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    label_width = max(int(measure.textlength(label, font=font)) for label, _ in rows) + 2 * GAP
    column_widths = [
        max(
            max(row[c].width for row in strips),
            int(measure.textlength(title, font=font)),
            max(int(measure.textlength(texts.get(name, ""), font=small)) for texts in captions),
        )
        for c, (name, title) in enumerate(column_titles.items())
    ]
    caption_height = 12 + GAP // 2 if any(captions) else 0
    row_heights = [max(strip.height for strip in row) + caption_height for row in strips]
    header = 14 + 2 * GAP
    width = label_width + sum(column_widths) + GAP * (len(column_widths) + 1)
    height = header + sum(row_heights) + GAP * (len(row_heights) + 1)

    canvas = Image.new("RGB", (width, height), BACKGROUND)
    draw = ImageDraw.Draw(canvas)
    x = label_width + GAP
    for column_width, title in zip(column_widths, column_titles.values()):
        draw.text((x, GAP), title, fill=TEXT, font=font)
        x += column_width + GAP
    y = header + GAP
    for (label, _), row, texts, row_height in zip(rows, strips, captions, row_heights):
        draw.text((GAP, y + (row_height - caption_height) // 2 - 7), label, fill=TEXT, font=font)
        x = label_width + GAP
        for column_width, strip, name in zip(column_widths, row, column_titles):
            canvas.paste(strip, (x, y))
            if name in texts:
                draw.text((x, y + strip.height + GAP // 2), texts[name], fill=TEXT, font=small)
            x += column_width + GAP
        y += row_height + GAP

    with atomic_path(path) as temporary:
        canvas.save(temporary, format="PNG")
