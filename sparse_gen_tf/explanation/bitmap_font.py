"""A 3x5 pixel font for numbers on figures, so that drawing needs numpy only."""

import numpy as np

_GLYPHS = {
    "0": ("111", "101", "101", "101", "111"),
    "1": ("010", "110", "010", "010", "111"),
    "2": ("111", "001", "111", "100", "111"),
    "3": ("111", "001", "011", "001", "111"),
    "4": ("101", "101", "111", "001", "001"),
    "5": ("111", "100", "111", "001", "111"),
    "6": ("111", "100", "111", "101", "111"),
    "7": ("111", "001", "010", "010", "010"),
    "8": ("111", "101", "111", "101", "111"),
    "9": ("111", "101", "111", "001", "111"),
    ".": ("000", "000", "000", "000", "010"),
    "-": ("000", "000", "111", "000", "000"),
    "+": ("000", "010", "111", "010", "000"),
    " ": ("000", "000", "000", "000", "000"),
    "c": ("000", "011", "100", "100", "011"),
    "L": ("100", "100", "100", "100", "111"),
    "K": ("101", "101", "110", "101", "101"),
    "=": ("000", "111", "000", "111", "000"),
}
HEIGHT, WIDTH = 5, 3


def text_mask(text, scale=1):
    """Renders text as a bool array [5 * scale, (4 * len - 1) * scale]; one blank column
    between glyphs. Characters outside the font render blank."""
    if not text:
        return np.zeros((HEIGHT * scale, 0), bool)
    columns = []
    for i, char in enumerate(text):
        glyph = _GLYPHS.get(char, _GLYPHS[" "])
        columns.append(np.array([[c == "1" for c in row] for row in glyph]))
        if i + 1 < len(text):
            columns.append(np.zeros((HEIGHT, 1), bool))
    mask = np.concatenate(columns, axis=1)
    return np.kron(mask, np.ones((scale, scale), bool))


def draw_text(canvas, text, y, x, colour=(0, 0, 0), scale=1):
    """Draws text into canvas [H, W, 3] uint8 in place, top-left at (y, x), clipped."""
    mask = text_mask(text, scale)
    h = max(min(mask.shape[0], canvas.shape[0] - y), 0)
    w = max(min(mask.shape[1], canvas.shape[1] - x), 0)
    region = canvas[y:y + h, x:x + w]
    region[mask[:h, :w]] = colour
    return canvas


def format_number(value, width=4):
    """A short rendering of a coefficient in at most `width` characters: 0.83, 12.4, 153."""
    for digits in (2, 1, 0):
        text = f"{value:.{digits}f}"
        if len(text) <= width:
            return text
    return f"{value:.0f}"
