"""Image grids and their text labels, for TensorBoard and PNG files."""

import functools
import math

import numpy as np
import tensorflow as tf
from PIL import Image, ImageDraw, ImageFont


def write_png(path, image):
    """Writes a uint8 image [H, W, 3] as a PNG file (any file system tf.io can write)."""
    tf.io.write_file(path, tf.io.encode_png(np.asarray(image, np.uint8)))


def to_uint8(images):
    """float [..., 3] in [-1, 1] -> uint8 [0, 255]."""
    return np.clip(np.round((np.asarray(images) + 1.0) * 127.5), 0, 255).astype(np.uint8)


def image_grid(images, columns=None, pad=1):
    """Tiles images [N, H, W, C] (uint8 or float in [-1, 1]) into one [rows*(H+pad)-pad,
    cols*(W+pad)-pad, C] uint8 picture, row-major, with white separators."""
    images = np.asarray(images)
    if images.dtype != np.uint8:
        images = to_uint8(images)
    n, h, w, c = images.shape
    columns = columns or math.ceil(math.sqrt(n))
    rows = math.ceil(n / columns)
    grid = np.full((rows * (h + pad) - pad, columns * (w + pad) - pad, c), 255, np.uint8)
    for i, image in enumerate(images):
        r, q = divmod(i, columns)
        grid[r * (h + pad):r * (h + pad) + h, q * (w + pad):q * (w + pad) + w] = image
    return grid


@functools.lru_cache(maxsize=None)
def _font(size):
    # Pillow's built-in font (no file to ship or find); load it once per size.
    return ImageFont.load_default(size=size)


def text_width(text, size):
    """Width in pixels of text drawn by `draw_text` at `size` pixels per em."""
    return math.ceil(_font(size).getlength(text))


def draw_text(canvas, text, y, x, size=12, colour=(0, 0, 0)):
    """Writes text into canvas [H, W, 3] uint8 in place with Pillow's default font, `size`
    pixels per em, the top of its letters at row y and its left end at column x; what
    falls outside the canvas is clipped. Edges are anti-aliased into the background."""
    image = Image.fromarray(canvas)
    ImageDraw.Draw(image).text((x, y), text, fill=tuple(colour), font=_font(size),
                               anchor="lt")
    canvas[...] = np.asarray(image)
    return canvas


def format_number(value, width=4):
    """A short rendering of a coefficient in at most `width` characters: 0.83, 12.4, 153."""
    for digits in (2, 1, 0):
        text = f"{value:.{digits}f}"
        if len(text) <= width:
            return text
    return f"{value:.0f}"
