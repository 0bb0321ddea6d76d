"""Text on figures: Pillow's font draws each coefficient, legibly and inside its cell."""

import numpy as np

from sparse_gen_tf.explanation import visualize
from sparse_gen_tf.explanation.figures import draw_text, format_number, text_width

BACKGROUND = visualize.PANEL


def ink(canvas):
    """Bool [H, W]: the pixels the text changed on a plain background."""
    return (canvas != BACKGROUND).any(axis=-1)


def drawn(text, shape=(20, 60), y=4, x=3, size=12):
    canvas = np.full(shape + (3,), BACKGROUND, np.uint8)
    return draw_text(canvas, text, y, x, size=size)


def test_format_number_keeps_at_most_four_characters_while_it_can():
    assert [format_number(v) for v in (0.834, 12.44, 153.2, 12345.0)] == [
        "0.83", "12.4", "153", "12345"]


def test_text_inks_dark_pixels_inside_its_box():
    canvas = drawn("0.83")
    rows, columns = np.nonzero(ink(canvas))
    assert len(rows) > 20
    # The top of the letters is at y, the left end at x, and the ink is no wider than
    # text_width says nor taller than one em.
    assert rows.min() >= 4 and rows.max() < 4 + 12
    assert columns.min() >= 3 and columns.max() < 3 + text_width("0.83", 12)
    # Black text: the darkest pixels are near black, whatever the anti-aliasing.
    assert canvas[ink(canvas)].min() < 64


def test_different_numbers_draw_different_pixels_and_the_same_number_the_same():
    assert (drawn("0.83") == drawn("0.83")).all()
    assert (ink(drawn("0.83")) != ink(drawn("0.38"))).any()
    assert ink(drawn("12.4")).sum() != ink(drawn("1")).sum()


def test_text_past_the_edge_is_clipped_not_an_error():
    canvas = drawn("12345", shape=(8, 12), y=2, x=6)
    assert canvas.shape == (8, 12, 3) and ink(canvas)[:, 6:].any()
    assert not ink(canvas)[:, :6].any()


def test_and_panel_prints_each_coefficient_in_its_own_cell():
    crop = np.zeros((8, 8, 3), np.float32)
    thumbs = [np.zeros((8, 8, 3), np.float32)] * 2
    scale, t = 5, 40

    def panel(coefficients):
        return visualize._and_panel(crop, thumbs, coefficients, 100.0, max_or=3, scale=scale)

    first, second = panel([88.8, 0.5]), panel([0.38, 0.5])
    assert first.shape == second.shape  # panels are tiled, so labels never resize them
    cell = max(t, text_width("0000", visualize.LABEL_SIZE)) + 3
    strip = ink(first[t + 2:t + 12])
    for i in (1, 2):  # the OR cells that hold a thumbnail have a label, within the cell
        assert strip[:, i * cell:(i + 1) * cell - 3].any()
    assert not strip[:, 3 * cell:].any()  # the empty third OR cell has none
    # A different coefficient changes its own cell's label and bar, nothing else.
    changed = np.flatnonzero((first != second).any(axis=(0, 2)))
    assert changed.min() >= cell and changed.max() < 2 * cell - 3


def test_and_panel_counts_the_or_nodes_it_does_not_show():
    crop = np.zeros((8, 8, 3), np.float32)
    thumbs = [np.zeros((8, 8, 3), np.float32)] * 5
    shown = visualize._and_panel(crop, thumbs[:1], [0.5], 1.0, max_or=1, scale=5)
    hidden = visualize._and_panel(crop, thumbs, [0.5] * 5, 1.0, max_or=1, scale=5)
    assert shown.shape == hidden.shape
    margin = ink(hidden[:12, -text_width("+00", visualize.NOTE_SIZE) - 2:])
    assert margin.any() and not ink(shown[:12, -text_width("+00", visualize.NOTE_SIZE) - 2:]).any()
