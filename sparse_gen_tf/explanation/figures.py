"""Image grids for TensorBoard and PNG files."""

import math

import numpy as np
import tensorflow as tf


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
