"""Labelled image grids ("XYZ plots"): equal-sized cells in rows and columns, with a label above every
column, a label left of every row and an optional title line, drawn with PIL's default font.

`plan_layout` decides every position from the labels and the cell size, so callers (and tests) can find
each cell in the finished image with `GridLayout.cell_box`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from PIL import Image, ImageDraw, ImageFont

BACKGROUND = (255, 255, 255)
INK = (0, 0, 0)
MIN_ROW_LABEL_WIDTH = 160  # prompts get at least this many pixels per line before wrapping


def default_font(cell_height: int) -> ImageFont.ImageFont:
    """PIL's built-in font, scaled with the cells (10 px for tiny cells, up to 28 px for 512 px ones)."""
    size = max(10, min(28, cell_height // 20))
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1: a fixed-size bitmap font
        return ImageFont.load_default()


def _measure(font: ImageFont.ImageFont, text: str) -> tuple[int, int]:
    left, top, right, bottom = font.getbbox(text or " ")
    return int(right - min(left, 0)), int(bottom - min(top, 0))


def line_height(font: ImageFont.ImageFont) -> int:
    return _measure(font, "Ag|")[1] + 2


def wrap_text(text: str, font: ImageFont.ImageFont, max_width: int) -> list[str]:
    """Greedy word wrap to `max_width` pixels; a word longer than a line is split by characters."""
    lines: list[str] = []
    for paragraph in str(text).splitlines() or [""]:
        current = ""
        for word in paragraph.split(" "):
            candidate = f"{current} {word}" if current else word
            if _measure(font, candidate)[0] <= max_width:
                current = candidate
                continue
            if current:
                lines.append(current)
            current = ""
            for ch in word:  # the word alone is too wide, or starts the next line
                if current and _measure(font, current + ch)[0] > max_width:
                    lines.append(current)
                    current = ""
                current += ch
        lines.append(current)
    return lines


@dataclass(frozen=True)
class GridLayout:
    """Where everything goes: cells of `cell_size` at `left + col * (w + gap)`, `top + row * (h + gap)`."""

    rows: int
    cols: int
    cell_size: tuple[int, int]
    left: int
    top: int
    gap: int
    title_height: int
    col_lines: tuple[tuple[str, ...], ...]
    row_lines: tuple[tuple[str, ...], ...]
    title_lines: tuple[str, ...]
    line_height: int
    pad: int

    @property
    def size(self) -> tuple[int, int]:
        w, h = self.cell_size
        return self.left + self.cols * (w + self.gap), self.top + self.rows * (h + self.gap)

    def cell_box(self, row: int, col: int) -> tuple[int, int, int, int]:
        """(x0, y0, x1, y1) of cell (row, col), as PIL's crop takes it."""
        w, h = self.cell_size
        x0, y0 = self.left + col * (w + self.gap), self.top + row * (h + self.gap)
        return x0, y0, x0 + w, y0 + h


def plan_layout(
    cell_size: tuple[int, int],
    col_labels: Sequence[str],
    row_labels: Sequence[str],
    title: str | None = None,
    font: ImageFont.ImageFont | None = None,
    gap: int = 4,
    pad: int = 6,
) -> GridLayout:
    """Margins sized to the wrapped labels: column labels wrap to the cell width, row labels to
    max(cell width, MIN_ROW_LABEL_WIDTH), the title to the whole grid's width."""
    w, h = cell_size
    if not col_labels or not row_labels:
        raise ValueError("a grid needs at least one row label and one column label")
    font = font or default_font(h)
    lh = line_height(font)
    col_lines = tuple(tuple(wrap_text(t, font, w)) for t in col_labels)
    row_width = max(w, MIN_ROW_LABEL_WIDTH)
    row_lines = tuple(tuple(wrap_text(t, font, row_width)) for t in row_labels)
    label_width = max(_measure(font, line)[0] for lines in row_lines for line in lines)
    left = min(label_width, row_width) + 2 * pad
    grid_width = left + len(col_labels) * (w + gap)
    title_lines = tuple(wrap_text(title, font, grid_width - 2 * pad)) if title else ()
    title_height = len(title_lines) * lh + (pad if title_lines else 0)
    top = title_height + max(len(lines) for lines in col_lines) * lh + 2 * pad
    return GridLayout(
        rows=len(row_labels),
        cols=len(col_labels),
        cell_size=(w, h),
        left=left,
        top=top,
        gap=gap,
        title_height=title_height,
        col_lines=col_lines,
        row_lines=row_lines,
        title_lines=title_lines,
        line_height=lh,
        pad=pad,
    )


def labelled_grid(
    cells: Sequence[Sequence[Image.Image]],
    col_labels: Sequence[str],
    row_labels: Sequence[str],
    title: str | None = None,
    gap: int = 4,
) -> tuple[Image.Image, GridLayout]:
    """cells[row][col] (all one size) on a white sheet with the labels; returns (image, layout)."""
    if len(cells) != len(row_labels) or any(len(row) != len(col_labels) for row in cells):
        raise ValueError(
            f"cells are {len(cells)}x{[len(r) for r in cells]} but there are {len(row_labels)} row "
            f"and {len(col_labels)} column labels"
        )
    size = cells[0][0].size
    if any(c.size != size for row in cells for c in row):
        raise ValueError(f"grid cells differ in size: {sorted({c.size for row in cells for c in row})}")
    font = default_font(size[1])
    layout = plan_layout(size, col_labels, row_labels, title=title, font=font, gap=gap)
    sheet = Image.new("RGB", layout.size, BACKGROUND)
    draw = ImageDraw.Draw(sheet)
    lh, pad = layout.line_height, layout.pad
    for i, line in enumerate(layout.title_lines):
        draw.text((pad, pad + i * lh), line, fill=INK, font=font)
    label_top = layout.title_height + pad
    for c, lines in enumerate(layout.col_lines):
        x0 = layout.cell_box(0, c)[0]
        for i, line in enumerate(lines):  # centred over the column
            x = x0 + max(0, (size[0] - _measure(font, line)[0]) // 2)
            draw.text((x, label_top + i * lh), line, fill=INK, font=font)
    for r, lines in enumerate(layout.row_lines):
        y0 = layout.cell_box(r, 0)[1] + max(0, (size[1] - len(lines) * lh) // 2)
        for i, line in enumerate(lines):  # vertically centred beside the row
            draw.text((pad, y0 + i * lh), line, fill=INK, font=font)
    for r, row in enumerate(cells):
        for c, cell in enumerate(row):
            sheet.paste(cell.convert("RGB"), layout.cell_box(r, c)[:2])
    return sheet, layout
