"""Figures of the explanation: kernels (Fig. 2) and parses (Fig. 3), drawn with numpy, text
with Pillow.

Every basis function is drawn as the image it paints on its own: tanh(bias_n + s_j B_j),
bias_n being the image layer's bias, i.e. the picture of an empty parse. That is how a
unit looks in the generated image, and it is the same rule for every layer, so the top
layer's pictures are directly the combinations of the bottom layer's. Where a unit adds
nothing the picture shows the bare bias, which on the parts data is grey, not black: every
cell always holds a part, so the bottom kernels learn to paint their cell's black
background themselves.

On real images that rule hides the kernels: on faces a bottom kernel is small (std about
0.05) beside the bias, so every kernel paints a nearly flat skin-coloured square. Each
figure therefore also comes normalised per unit, the usual way to show a dictionary:
the unit's own pre-tanh contribution (ker_c, or s_j B_j) min-max stretched to the full
range, so that its shape shows whatever its scale.
"""

import numpy as np
import tensorflow as tf

from sparse_gen_tf.explanation import basis as basis_lib
from sparse_gen_tf.explanation.figures import (draw_text, format_number, image_grid,
                                               text_width, to_uint8)
from sparse_gen_tf.explanation.parse_graph import image_boxes

WHITE, PANEL, BAR, GRID_LINE = 255, 225, (200, 40, 40), (255, 255, 0)
# Font sizes in pixels per em: coefficients and layer titles, whose digits are 9 pixels
# high and fit the 10-row strip under a thumbnail; the smaller '+N' of hidden OR nodes.
LABEL_SIZE, NOTE_SIZE = 12, 10


def upscale(image, scale):
    """Nearest-neighbour upscaling of [H, W, C] by an integer factor."""
    return np.repeat(np.repeat(image, scale, axis=0), scale, axis=1)


def normalise_each(images):
    """Min-max stretch of each image [N, ...] to [-1, 1], colours together (so the hue of a
    kernel is kept); a flat image goes to 0 (mid-grey)."""
    images = np.asarray(images, np.float32)
    axes = tuple(range(1, images.ndim))
    low, high = images.min(axes, keepdims=True), images.max(axes, keepdims=True)
    return np.where(high > low, 2.0 * (images - low) / np.maximum(high - low, 1e-12) - 1.0,
                    0.0)


def paint(generator, terms):
    """tanh(bias_n + terms) for pre-tanh contributions terms [..., H, W, 3]; in [-1, 1]."""
    return np.tanh(generator.deconvs[-1].bias.numpy() + np.asarray(terms))


def sample_latents(generator, num, seed=0):
    """num draws of z ~ N(0, I), [num, d], from a stateless seed."""
    return tf.random.stateless_normal([num, generator.config.latent_dim], [seed, 7]).numpy()


def bottom_kernels(generator, z, normalised=False):
    """Bottom kernels as patches [c, k, k, 3] in [-1, 1] (Fig. 2a): tanh(bias_n + s̄_c ker_c),
    s̄_c the channel's mean coefficient over the parses of z; normalised=True draws ker_c
    itself, min-max stretched per kernel (`normalise_each`). Channels no parse of z uses
    are drawn at the mean coefficient of all channels and dimmed to a third."""
    count, mean = basis_lib.mean_coefficients(generator, z, generator.num_layers)
    used = count > 0
    if normalised:
        patches = normalise_each(generator.deconvs[-1].kernel.numpy())
    else:
        scale = np.where(used, mean, mean[used].mean() if used.any() else 1.0)
        patches = basis_lib.painted_kernels(generator, scale)
    return np.where(used[:, None, None, None], patches, (patches + 1.0) / 3.0 - 1.0)


def unit_images(generator, z, layer, chunk=16, normalised=False):
    """Each channel of a layer seen in image space (Fig. 2b): [c, H, W, 3] in [-1, 1].

    For channel c, the OR node of that channel with the largest coefficient among the
    parses of z, drawn through the frozen layers below as tanh(bias_n + s_j B_j) (Eq. 6),
    or with normalised=True as s_j B_j min-max stretched per unit. Channels no parse uses
    are mid-grey. z is parsed in chunks, which bounds the memory of the one-hot pass when
    the layer is dense.
    """
    best, terms = strongest_terms(generator, z, layer, chunk)
    drawn = normalise_each(terms) if normalised else paint(generator, terms)
    return np.where((best > 0)[:, None, None, None], drawn, 0.0)


def strongest_terms(generator, z, layer, chunk=16):
    """(best [c], terms [c, H, W, 3]): for each channel of a layer its largest coefficient
    s_j over the parses of z [n, d] and that OR node's pre-tanh term s_j B_j (Eq. 6);
    zeros for channels no parse uses."""
    c = generator.config.channels[layer - 1]
    size = generator.config.image_size
    best = np.zeros(c, np.float32)
    terms = np.zeros((c, size, size, 3), np.float32)
    for start in range(0, len(z), chunk):
        found = basis_lib.basis_functions(generator, generator.parse(z[start:start + chunk]),
                                          layer)
        channel = np.asarray(found["position"])[..., 2].reshape(-1)
        coefficient = np.asarray(found["coefficient"]).reshape(-1)
        basis = np.asarray(found["basis"])
        basis = basis.reshape((-1,) + basis.shape[2:])
        for j in np.flatnonzero(coefficient > 0):
            if coefficient[j] > best[channel[j]]:
                best[channel[j]] = coefficient[j]
                terms[channel[j]] = coefficient[j] * basis[j]
    return best, terms


def top_units_alone(generator, z, num=32):
    """The whole pattern each top unit paints (Fig. 2b): (channels [m], cells [m, 2],
    coefficients [m], images [m, H, W, 3] in [-1, 1]) for the m <= num top channels most
    used by the parses of z [n, d], most used first.

    Channel c is switched on alone, at its most used cell of the top map and at its median
    coefficient there, and rendered by the real network below it (`parse_from_top`: TopK
    and ReLU run again at every lower layer). `strongest_terms` instead draws the unit
    through the masks of one parse, which keep only the bottom units that parse shares
    with the other top units, so on faces it shows a fragment of what the unit paints.
    """
    activations = generator.parse(z)["activations"][0].numpy()  # [n, s, s, c]
    n, s, _, c = activations.shape
    flat = activations.reshape(n, s * s, c)
    uses = (flat > 0).sum(axis=0)  # [cells, c]
    order = [ch for ch in np.argsort(-uses.sum(axis=0), kind="stable")[:num]
             if uses[:, ch].sum() > 0]
    cells, coefficients = [], []
    top = np.zeros((len(order), s, s, c), np.float32)
    for i, ch in enumerate(order):
        cell = int(np.argmax(uses[:, ch]))
        values = flat[:, cell, ch]
        coefficients.append(float(np.median(values[values > 0])))
        cells.append(divmod(cell, s))
        top[i, cell // s, cell % s, ch] = coefficients[-1]
    images = (generator.parse_from_top(tf.constant(top))["image"].numpy() if order
              else np.zeros((0,) + (generator.config.image_size,) * 2 + (3,), np.float32))
    return (np.array(order, np.int64), np.array(cells, np.int64).reshape(-1, 2),
            np.array(coefficients, np.float32), images)


def kernel_figures(generator, z, columns=16):
    """uint8 grids (Fig. 2a, 2b): "bottom", the bottom kernels as they paint; "top", the top
    units in image space; and "bottom_normalised", "top_normalised", the same units each
    stretched to its own range (`normalise_each`)."""
    best, terms = strongest_terms(generator, z, 1)
    used = (best > 0)[:, None, None, None]
    grids = {}
    for suffix, normalised in (("", False), ("_normalised", True)):
        bottom = bottom_kernels(generator, z, normalised=normalised)
        bottom = np.stack([upscale(p, max(1, 32 // p.shape[0])) for p in bottom])
        top = np.where(used, normalise_each(terms) if normalised else paint(generator, terms),
                       0.0)
        top = np.stack([upscale(p, max(1, 64 // p.shape[0])) for p in top])
        grids["bottom" + suffix] = image_grid(bottom, columns=min(columns, len(bottom)), pad=2)
        grids["top" + suffix] = image_grid(top, columns=min(columns // 2, len(top)), pad=2)
    return grids


def _and_panel(crop, thumbs, coefficients, max_coefficient, max_or, scale):
    """One AND node: the image crop, then up to max_or OR-node thumbnails, each with its
    coefficient in digits and as a bar; '+N' when more OR nodes survive."""
    t = crop.shape[0] * scale
    # Every panel has the same shape (they are tiled into one grid), so the cells are
    # sized for the widest label, four digits, not for the labels of this panel.
    cell_w = max(t, text_width("0000", LABEL_SIZE))
    height = t + 2 + 10 + 2 + 3
    width = (1 + max_or) * (cell_w + 3) + text_width("+00", NOTE_SIZE) + 2
    panel = np.full((height, width, 3), PANEL, np.uint8)
    panel[:t, :t] = upscale(to_uint8(crop), scale)
    for i, (thumb, s) in enumerate(zip(thumbs[:max_or], coefficients[:max_or])):
        x = (1 + i) * (cell_w + 3)
        panel[:t, x:x + t] = upscale(to_uint8(thumb), scale)
        draw_text(panel, format_number(s), t + 2, x, size=LABEL_SIZE)
        bar = int(round(t * s / max(max_coefficient, 1e-12)))
        panel[t + 14:t + 17, x:x + max(bar, 1)] = BAR
    if len(thumbs) > max_or:
        more = f"+{len(thumbs) - max_or}"
        draw_text(panel, more, 2, width - text_width(more, NOTE_SIZE) - 1, size=NOTE_SIZE)
    return panel


def parse_figure(generator, z, max_or=3, thumb=40, normalised=False, parse=None):
    """The parse of one latent z [d] as a picture (Fig. 3): uint8 [H', W', 3].

    parse: instead of z (None), a parse of one example (`Generator.parse` of batch 1), e.g.
    a sample of the grammar prior, which has no z.

    One block per sparse layer, bottom first. Left: the generated image with the layer's
    AND cells outlined; right: one panel per AND node, holding the crop of the image its
    units can paint and its OR nodes, largest coefficient first, each drawn as
    tanh(bias_n + s_j B_j) with s_j printed and shown as a bar (full width = the largest
    s_j of the layer). normalised=True draws each OR node as its own s_j B_j over the
    crop, min-max stretched (`normalise_each`), which shows its shape on images whose
    units are faint beside the bias.
    """
    if parse is None:
        parse = generator.parse(np.asarray(z, np.float32)[None])
    # float32: under a mixed precision policy the parse is 16-bit (bfloat16 has no round).
    image = np.asarray(parse["image"], np.float32)[0]
    size = image.shape[0]
    blocks = []
    for layer in range(generator.num_layers, 0, -1):
        found = basis_lib.basis_functions(generator, parse, layer)
        valid = np.asarray(found["valid"])[0]
        position = np.asarray(found["position"])[0][valid]
        coefficient = np.asarray(found["coefficient"], np.float32)[0][valid]
        terms = (coefficient[:, None, None, None]
                 * np.asarray(found["basis"], np.float32)[0][valid])
        boxes = image_boxes(generator.config)[layer - 1]
        h, w = boxes.shape[:2]
        box_size = max(int(b[2] - b[0]) for b in boxes.reshape(-1, 4))
        scale = max(1, round(thumb / box_size))
        top = coefficient.max() if len(coefficient) else 1.0
        panels = []
        for y in range(h):
            for x in range(w):
                y0, x0, y1, x1 = boxes[y, x]
                here = np.flatnonzero((position[:, 0] == y) & (position[:, 1] == x))
                drawn = (normalise_each(terms[here, y0:y1, x0:x1]) if normalised
                         else paint(generator, terms[here])[:, y0:y1, x0:x1])
                thumbs = [_pad_to(thumb_j, box_size) for thumb_j in drawn]
                panels.append(_and_panel(_pad_to(image[y0:y1, x0:x1], box_size), thumbs,
                                         coefficient[here], top, max_or, scale))
        grid = image_grid(np.stack(panels), columns=w, pad=4)
        outlined = _outline(image, h, max(1, grid.shape[0] // size))
        title = np.full((12, outlined.shape[1] + 6 + grid.shape[1], 3), WHITE, np.uint8)
        draw_text(title, f"L{layer} K={generator.topks[layer - 1].k}", 1, 1,
                  size=LABEL_SIZE)
        body = np.full((max(outlined.shape[0], grid.shape[0]), title.shape[1], 3), WHITE,
                       np.uint8)
        body[:outlined.shape[0], :outlined.shape[1]] = outlined
        body[:grid.shape[0], outlined.shape[1] + 6:] = grid
        blocks.append(np.concatenate([title, body]))
    width = max(b.shape[1] for b in blocks)
    blocks = [np.pad(b, [(0, 8), (0, width - b.shape[1]), (0, 0)], constant_values=WHITE)
              for b in blocks]
    return np.concatenate(blocks)


def _pad_to(image, size):
    """Pads [h, w, 3] at the bottom right with mid-grey to [size, size, 3]."""
    return np.pad(image, [(0, size - image.shape[0]), (0, size - image.shape[1]), (0, 0)])


def _outline(image, cells, scale):
    """The image upscaled, with yellow lines between its cells x cells AND cells."""
    big = upscale(to_uint8(image), scale)
    step = big.shape[0] / cells
    for i in range(1, cells):
        edge = int(round(i * step))
        big[edge, :] = GRID_LINE
        big[:, edge] = GRID_LINE
    return big


__all__ = ["bottom_kernels", "kernel_figures", "normalise_each",
           "parse_figure", "strongest_terms", "top_units_alone", "unit_images"]
