"""The unit dashboard: one offline HTML page that explains a trained generator.

`write_dashboard` writes OUTPUT_DIR/index.html, with every picture inlined as a data URL
and no script or style from the network, so it opens from file:// anywhere. Sections:

  #model           per sparse layer: K, units in use, dead units, and the kernel grid
                   (each unit's basis function, normalised per kernel; a click opens it)
  #unit-<l>-<c>    one panel per unit in use (channel c of sparse layer l, 1 = top): its
                   basis function B_j raw and normalised (Eq. 6), where it fires over the
                   AND-node grid, how often it survives TopK and ReLU, a histogram of its
                   coefficient s_j, the training images where s_j is largest beside the
                   same parse with that one OR node removed, for every layer above the
                   bottom its decomposition into the OR nodes of the next layer (Eq. 2-3),
                   and the attributes it detects, if `evaluate --attributes` dissected
                   this checkpoint (dissection.py: "unit 46 @ (1, 2): Eyeglasses, AUC
                   0.91", the AUC on held-out faces); the layer's row lists them too
  #image-<name>    one panel per explained parse: the And-Or parse graph as clickable
                   grids of AND nodes holding their OR nodes; a click on a node shows its
                   basis function and outlines its region of the image

The statistics come from the parses of the training images by their persistent chains
z_i. Removing an OR node is exact in the parse graph's terms: the parse's TopK and ReLU
masks are frozen (`Generator.parse(z, masks=...)`) and the one entry's ReLU mask is set to
0, so the rest of the graph stays as it was and the image changes by that node's term.

A dense run (K = size) has thousands of OR nodes; the page then shows at most
`max_units` units per layer and `max_or_nodes` OR nodes per layer of a parse, the ones
used most or with the largest coefficients, and says so where it does.
"""

import base64
import html
import json
import os

import numpy as np
import tensorflow as tf

from sparse_gen_tf.explanation import basis as basis_lib
from sparse_gen_tf.reports.dashboard_page import SCRIPT, STYLE
from sparse_gen_tf.data import pipeline
from sparse_gen_tf.explanation.figures import image_grid, to_uint8
from sparse_gen_tf.explanation.parse_graph import ParseGraph, footprint, image_boxes
from sparse_gen_tf.explanation.visualize import paint

NUM_EXAMPLES = 3      # top-coefficient training images per unit
NUM_PARTS = 8         # next-layer OR nodes listed in a decomposition
HISTOGRAM_BINS = 16
PNG_LIMIT = 4096      # bytes; a larger picture (photographs) is inlined as JPEG instead


# === Encoding ===

def data_url(image):
    """uint8 [H, W, 3] (or float in [-1, 1]) as a data: URL; PNG, or JPEG where the PNG
    would exceed PNG_LIMIT bytes (faces compress ~4x better as JPEG)."""
    image = np.asarray(image)
    if image.dtype != np.uint8:
        image = to_uint8(image)
    data, kind = tf.io.encode_png(image).numpy(), "png"
    if len(data) > PNG_LIMIT:
        data, kind = tf.io.encode_jpeg(image, quality=90).numpy(), "jpeg"
    return f"data:image/{kind};base64,{base64.b64encode(data).decode()}"


def normalise(images):
    """Min-max stretch of each image [N, H, W, C] to [-1, 1] (flat images go to 0)."""
    images = np.asarray(images, np.float32)
    axes = tuple(range(1, images.ndim))
    low, high = images.min(axes, keepdims=True), images.max(axes, keepdims=True)
    return 2.0 * (images - low) / np.maximum(high - low, 1e-12) - 1.0


def img(image, width, title="", cls="pic"):
    """An <img> of `image` drawn at `width` CSS pixels, pixelated (never smoothed)."""
    return (f'<img class="{cls}" width="{width}" src="{data_url(image)}" '
            f'alt="{html.escape(title)}" title="{html.escape(title)}">')


# === Statistics of the training parses ===

def training_parses(generator, chains, chunk=256):
    """Activations fm^l_s of each sparse layer over all training latents.

    Args:
      chains: [N, d], the persistent chains z_i (one per training image).
    Returns:
      list over layers (top first) of float32 [N, h, w, c].
    """
    parts = [generator.parse(chains[i:i + chunk])["activations"]
             for i in range(0, len(chains), chunk)]
    return [np.concatenate([np.asarray(p[l], np.float32) for p in parts])
            for l in range(generator.num_layers)]


def layer_statistics(activation):
    """Per-unit statistics of one layer's activations [N, h, w, c].

    Returns dict: "fires" [c] fraction of parses where the unit survives somewhere,
    "per_parse" [c] mean OR nodes of the unit per parse, "heat" [c, h, w] fraction of
    parses with an OR node of the unit at each AND node, "peak" [N, c] the largest
    coefficient of the unit in each parse, "argpeak" [N, c] its flat position y*w + x,
    "in_use" bool [c].
    """
    n, h, w, c = activation.shape
    alive = activation > 0
    flat = activation.reshape(n, h * w, c)
    return {"fires": alive.any((1, 2)).mean(0), "per_parse": alive.sum((1, 2)).mean(0),
            "heat": np.moveaxis(alive.mean(0), -1, 0), "peak": flat.max(1),
            "argpeak": flat.argmax(1), "in_use": alive.any((0, 1, 2))}


def frozen_masks(generator, z):
    """The TopK and ReLU masks of the parses of z [n, d]: [(mask_T, mask_R)] as numpy."""
    parse = generator.parse(z)
    return [(np.asarray(t).copy(), np.asarray(r).copy())
            for t, r in zip(parse["topk_masks"], parse["relu_masks"])]


def unit_basis(generator, z, layer, positions, channels):
    """The basis function B_j (Eq. 6) of one OR node in each of the parses z [U, d]:
    the OR node of channel channels[u] at flat position positions[u] of `layer`.
    Returns [U, H, W, 3], the response of the frozen, bias-free network to a unit
    coefficient."""
    h, w, c = generator.config.feature_map_shapes()[layer - 1]
    masks = frozen_masks(generator, z)
    one_hot = np.zeros((len(z), h * w, c), np.float32)
    one_hot[np.arange(len(z)), positions, channels] = 1.0
    return np.asarray(basis_lib.frozen_downstream(
        generator, tf.constant(one_hot.reshape(-1, h, w, c)), masks, layer,
        include_bias=False))


def without_node(generator, z, layer, positions, channels):
    """g(z) [U, H, W, 3] for each parse z [U, d] with one OR node removed (ReLU mask of
    channel channels[u] at flat position positions[u] of `layer` set to 0) and every
    other mask frozen, so the rest of the parse graph is unchanged."""
    masks = frozen_masks(generator, z)
    relu = masks[layer - 1][1]
    _, h, w, _ = relu.shape
    relu[np.arange(len(z)), positions // w, positions % w, channels] = 0.0
    return np.asarray(generator.parse(z, masks=masks)["image"])


def decomposition(generator, z, layer, position, channel):
    """The links of one OR node of `layer` (not the bottom) in the parse of z [d] to the
    OR nodes of layer + 1 it feeds: [(weight, y', x', c')], largest weight first, with
    w = s_j ker[c, y' - y s + pad, x' - x s + pad, c'] (parse_graph.py), the node's share
    of each lower coefficient through the frozen linear map (Eq. 2-3)."""
    parse = generator.parse(z[None])
    above = np.asarray(parse["activations"][layer - 1])[0]  # [h, w, c]
    s = float(above.reshape(-1, above.shape[-1])[position, channel])
    below = np.asarray(parse["activations"][layer])[0] > 0  # [h', w', c']
    kernel = generator.deconvs[layer - 1].kernel.numpy()[channel]  # [k, k, c']
    k, stride = kernel.shape[0], generator.config.strides[layer - 1]
    y, x = divmod(int(position), above.shape[1])
    ya, yb, y_first = footprint(y, k, stride, below.shape[0])
    xa, xb, x_first = footprint(x, k, stride, below.shape[1])
    links = [(s * float(kernel[yy + ya - y_first, xx + xa - x_first, cc]), yy + ya,
              xx + xa, cc) for yy, xx, cc in np.argwhere(below[ya:yb, xa:xb])]
    return sorted(links, reverse=True)


# === HTML pieces ===

def histogram_svg(values, bins=HISTOGRAM_BINS, width=240, height=70):
    """An inline SVG bar chart of the coefficients `values` [m] (all > 0)."""
    counts, edges = np.histogram(values, bins=bins, range=(0.0, float(values.max())))
    bar = width / bins
    rects = "".join(
        f'<rect x="{i * bar:.1f}" y="{height - 12 - (height - 14) * n / counts.max():.1f}" '
        f'width="{bar - 1:.1f}" height="{(height - 14) * n / counts.max():.1f}">'
        f'<title>{edges[i]:.3g}-{edges[i + 1]:.3g}: {n}</title></rect>'
        for i, n in enumerate(counts))
    return (f'<svg class="hist" width="{width}" height="{height}" role="img">{rects}'
            f'<text x="0" y="{height - 1}">0</text><text x="{width}" y="{height - 1}" '
            f'text-anchor="end">{edges[-1]:.3g}</text></svg>')


def heat_table(heat):
    """The AND-node grid [h, w] as a table, each cell shaded by the fraction of parses
    in which the unit has an OR node there."""
    rows = "".join("<tr>" + "".join(
        f'<td style="background:rgba(200,40,40,{v:.2f})" title="{100 * v:.1f}%">'
        f'{100 * v:.0f}</td>' for v in row) + "</tr>" for row in heat)
    return f'<table class="heat">{rows}</table>'


def unit_id(layer, channel):
    return f"unit-{layer}-{channel}"


def unit_link(layer, channel, inner, in_use=True):
    if not in_use:
        return f'<span class="unit dead" title="L{layer} u{channel}: dead">{inner}</span>'
    return (f'<a class="unit" href="#{unit_id(layer, channel)}" '
            f'data-unit="{unit_id(layer, channel)}" title="L{layer} u{channel}">'
            f'{inner}</a>')


def detects_paragraph(labels):
    """A unit panel's line of the attributes the unit detects (`dissection.unit_labels`)."""
    if not labels:
        return ""
    return ('<p class="detects">Detects, on held-out faces: '
            f'{"; ".join(html.escape(label) for label in labels)}.</p>')


def cap_note(shown, total, what):
    return (f'<p class="cap">Showing {shown} of {total} {what} (capped to stay '
            f'responsive).</p>' if shown < total else "")


# === The page ===

def write_dashboard(model, config, output_dir, summary, *, max_units=64, max_or_nodes=48,
                    unit_labels=None):
    """Writes output_dir/index.html, the dashboard of model; returns its path.

    Args:
      model: the trained AlternatingBackprop (its generator and persistent chains).
      config: the run's TrainConfig (the dataset to load the training images from).
      output_dir: where explain wrote `summary`'s files.
      summary: explain's summary dict; its "samples" and "images" records name the
        parse graph JSON files to draw as image panels.
      max_units: unit panels per layer at most (the most used units first).
      max_or_nodes: OR nodes shown per layer of an image panel (largest first).
      unit_labels: {(layer, channel): [the attributes it detects, as sentences]}
        (`dissection.unit_labels`), or None.
    """
    generator = model.generator
    chains = np.asarray(model.chains.value, np.float32)
    data = pipeline.load(config.dataset, image_size=config.generator.image_size,
                         num_images=len(chains), data_dir=config.data_dir, seed=config.seed,
                         crop=config.crop, parts_geometry=config.parts_geometry)
    images = data.images[:len(chains)]
    activations = training_parses(generator, chains)
    glance, panels = [], []
    for layer in range(1, generator.num_layers + 1):
        labels = {channel: found for (at, channel), found in (unit_labels or {}).items()
                  if at == layer}
        section, unit_panels = layer_sections(generator, chains, images, layer,
                                              activations[layer - 1], max_units, labels)
        glance.append(section)
        panels.extend(unit_panels)
    records = summary.get("samples", []) + summary.get("images", [])
    pages = [image_panel(generator, record, output_dir, max_or_nodes) for record in records]
    nav = "".join(f'<a href="#image-{name}" class="imagelink">{name}</a>'
                  for name, _ in pages)
    body = (f'<h1>Unit dashboard: {html.escape(str(summary.get("workdir", "")))}</h1>'
            f'<p>{html.escape(config.dataset)} data, {len(chains)} training parses, '
            f'K = {", ".join(map(str, config.generator.topk))}, channels = '
            f'{", ".join(map(str, config.generator.channels))}. Parses: {nav}</p>'
            f'<section id="model"><h2>Model at a glance</h2>{"".join(glance)}</section>'
            f'<div id="panels"><p class="hint">Click a unit or a parse.</p>'
            f'{"".join(panels)}{"".join(p for _, p in pages)}</div>')
    path = os.path.join(output_dir, "index.html")
    with open(path, "w") as f:
        f.write(f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
                f'<title>Unit dashboard</title><style>{STYLE}</style></head><body>{body}'
                f'<script>{SCRIPT}</script></body></html>')
    return path


def layer_sections(generator, chains, images, layer, activation, max_units, labels=None):
    """(the layer's row of the model-at-a-glance table, [its unit panels]).
    labels: {channel: [the attributes it detects]}; those units' panels are shown."""
    labels = labels or {}
    stats = layer_statistics(activation)
    n, h, w, c = activation.shape
    k = generator.topks[layer - 1].k
    used = np.flatnonzero(stats["in_use"])
    shown = used[np.argsort(-stats["fires"][used], kind="stable")][:max_units]
    # An attribute detector's panel is shown even when it is not among the most used.
    shown = np.concatenate([shown, [u for u in sorted(labels) if u in used and u not in shown]
                            ]).astype(int)
    # Each unit at its largest coefficient over the training parses.
    best = stats["peak"].argmax(0)  # [c], the training parse where s_j is largest
    positions = stats["argpeak"][best, np.arange(c)]
    coefficients = stats["peak"][best, np.arange(c)]
    basis = unit_basis(generator, chains[best], layer, positions, np.arange(c))
    boxes = image_boxes(generator.config)[layer - 1].reshape(-1, 4)
    thumbs = []
    for channel in range(c):
        y0, x0, y1, x1 = boxes[positions[channel]]
        crop = normalise(basis[channel:channel + 1, y0:y1, x0:x1])[0]
        if not stats["in_use"][channel]:
            crop = np.zeros_like(crop)  # a dead unit has no parse to draw it from
        title = "; ".join([f"L{layer} u{channel}", *labels.get(channel, [])])
        thumbs.append(unit_link(layer, channel, img(crop, 28, title),
                                stats["in_use"][channel]))
    dead = np.flatnonzero(~stats["in_use"])
    detects = "; ".join(unit_link(layer, channel, html.escape(label), stats["in_use"][channel])
                        for channel in sorted(labels) for label in labels[channel])
    detects = (f'<p class="detects">Attribute detectors (evaluate --attributes, AUC on '
               f'held-out faces): {detects}</p>' if detects else "")
    section = (f'<div class="layer"><h3>Layer {layer} ({"top" if layer == 1 else ""}'
               f'{"bottom" if layer == generator.num_layers else ""}): AND grid {h}x{w}, '
               f'{c} units, K = {k}</h3><p>{len(used)} units in use, {len(dead)} dead'
               f'{": " + ", ".join(map(str, dead)) if len(dead) else ""}; '
               f'{(activation > 0).sum((1, 2, 3)).mean():.1f} OR nodes per parse.</p>'
               f'<div class="kernels">{"".join(thumbs)}</div>{detects}'
               f'{cap_note(len(shown), len(used), f"unit panels of layer {layer}")}</div>')

    # The training parses where each shown unit's coefficient is largest.
    order = np.argsort(-stats["peak"][:, shown], axis=0, kind="stable")[:NUM_EXAMPLES]
    example = order.T.reshape(-1)  # [units * NUM_EXAMPLES] training image ids
    channel = np.repeat(shown, NUM_EXAMPLES)
    position = stats["argpeak"][example, channel]
    removed = np.concatenate([without_node(generator, chains[example[i:i + 256]], layer,
                                           position[i:i + 256], channel[i:i + 256])
                              for i in range(0, len(example), 256)]) if len(example) else []
    recon = np.concatenate([np.asarray(generator(chains[example[i:i + 256]]))
                            for i in range(0, len(example), 256)]) if len(example) else []
    panels = []
    for u, unit in enumerate(shown):
        rows = []
        for e in range(NUM_EXAMPLES):
            i = u * NUM_EXAMPLES + e
            s = stats["peak"][example[i], unit]
            if s <= 0:
                continue
            strip = image_grid(np.stack([images[example[i]], to_uint8(recon[i]),
                                         to_uint8(removed[i])]), columns=3, pad=2)
            rows.append(f'<figure>{img(strip, 3 * 96 + 4, "")}<figcaption>image '
                        f'{example[i]}, s = {s:.3g}: data, g(z), g(z) without this OR '
                        f'node</figcaption></figure>')
        parts = ""
        if layer < generator.num_layers:
            links = decomposition(generator, chains[best[unit]], layer, positions[unit],
                                  unit)
            parts = "".join(
                f'<li>{unit_link(layer + 1, cc, f"L{layer + 1} u{cc}")} at ({yy}, {xx}): '
                f'w = {weight:.3g}</li>' for weight, yy, xx, cc in links[:NUM_PARTS])
            parts = (f'<h4>Decomposition into layer {layer + 1}</h4><p>In image '
                     f'{best[unit]}, the OR nodes it feeds, by link weight (of '
                     f'{len(links)}):</p><ol>{parts}</ol>')
        values = activation[..., unit][activation[..., unit] > 0]
        raw = paint(generator, coefficients[unit] * basis[unit])
        panels.append(
            f'<section class="panel unitpanel" id="{unit_id(layer, unit)}" hidden>'
            f'<h2>Layer {layer}, unit {unit}</h2><div class="row"><figure>'
            f'{img(raw, 128, "raw")}<figcaption>raw: tanh(b + s B_j), s = '
            f'{coefficients[unit]:.3g}</figcaption></figure><figure>'
            f'{img(normalise(basis[unit:unit + 1])[0], 128, "normalised")}<figcaption>'
            f'B_j normalised</figcaption></figure><figure>{heat_table(stats["heat"][unit])}'
            f'<figcaption>where it fires (% of parses per AND node)</figcaption></figure>'
            f'<figure>{histogram_svg(values)}<figcaption>coefficient s_j over '
            f'{len(values)} OR nodes</figcaption></figure></div>'
            f'<p>Survives TopK and ReLU in {100 * stats["fires"][unit]:.1f}% of the '
            f'training parses, {stats["per_parse"][unit]:.2f} OR nodes per parse.</p>'
            f'{detects_paragraph(labels.get(unit, []))}'
            f'<h4>Largest coefficients</h4><div class="row">{"".join(rows)}</div>{parts}'
            f'</section>')
    return section, panels


def image_panel(generator, record, output_dir, max_or_nodes):
    """(name, the panel of one explained parse): its And-Or graph as clickable grids."""
    name = os.path.splitext(record["parse_graph"])[0]
    with open(os.path.join(output_dir, record["parse_graph"])) as f:
        graph = ParseGraph.from_dict(json.load(f))
    if graph.latent:
        parse = generator.parse(np.asarray(graph.latent, np.float32)[None])
    else:  # a grammar sample: no z, its top layer's OR nodes determine it
        parse = generator.parse_from_top(graph.top_activation())
    image = np.asarray(parse["image"], np.float32)[0]
    layers = []
    for layer in graph.layers:
        found = basis_lib.basis_functions(generator, parse, layer.index,
                                          slots=max(1, min(max_or_nodes, layer.k)))
        valid = np.asarray(found["valid"])[0]
        shown = {tuple(int(v) for v in p): (float(s), b) for p, s, b, ok in zip(
            np.asarray(found["position"])[0], np.asarray(found["coefficient"])[0],
            np.asarray(found["basis"])[0], valid) if ok}
        total = sum(len(a.or_nodes) for a in layer.and_nodes)
        cells = []
        for a in layer.and_nodes:
            box = ",".join(map(str, a.box))
            chips = []
            for o in a.or_nodes:
                if (a.y, a.x, o.channel) not in shown:
                    continue
                s, b = shown[(a.y, a.x, o.channel)]
                y0, x0, y1, x1 = a.box
                view = (f'{img(paint(generator, s * b)[y0:y1, x0:x1], 96, "basis")}'
                        f'<p>Layer {layer.index}, AND ({a.y}, {a.x}), OR node: unit '
                        f'{o.channel}, s = {o.coefficient:.4g}, {len(o.links)} links down. '
                        f'Drawn: tanh(b + s B_j) over its region.</p>'
                        f'{unit_link(layer.index, o.channel, "unit panel")}')
                chips.append(f'<button class="or" data-box="{box}" data-unit="'
                             f'{o.channel}">u{o.channel} {o.coefficient:.3g}<template>'
                             f'{view}</template></button>')
            hidden = len(a.or_nodes) - len(chips)
            more = f'<span class="more">+{hidden}</span>' if hidden else ""
            cells.append(f'<div class="and"><button class="andnode" data-box="{box}">'
                         f'AND ({a.y}, {a.x})<template><p>Layer {layer.index}, AND node '
                         f'({a.y}, {a.x}): {len(a.or_nodes)} OR nodes, pixels {a.box}.</p>'
                         f'</template></button>{"".join(chips)}{more}</div>')
        layers.append(
            f'<h3>Layer {layer.index}: K = {layer.k}, {total} OR nodes</h3>'
            f'{cap_note(min(total, len(shown)), total, "OR nodes (the largest)")}'
            f'<div class="andgrid" style="grid-template-columns:repeat({layer.shape[1]},'
            f' auto)">{"".join(cells)}</div>')
    errors = ", ".join(f"{e:.1e}" for e in record.get("eq5_relative_error", []))
    panel = (f'<section class="panel imagepanel" id="image-{name}" hidden><h2>Parse '
             f'{name}</h2><div class="row"><div class="canvas">{img(image, 256, name)}'
             f'<div class="highlight"></div></div><div class="nodeview"><p>Click an AND '
             f'or OR node.</p></div></div><p>Eq. (5) relative error per layer: {errors}. '
             f'All nodes: {html.escape(record["parse_graph"])}.</p>{"".join(layers)}'
             f'</section>')
    return name, panel
