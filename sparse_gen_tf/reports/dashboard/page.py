"""The dashboard page: the numbers and pictures of each section, rendered by the Jinja2
template templates/index.html.j2 into one offline index.html.

Every picture is inlined as a data URL, and the template inlines the style sheet and
scripts of static/ (read from the package, so they ship in the wheel), so the page opens
from file:// with nothing from the network.
"""

import base64
import functools
import html
import importlib.resources
import json
import os

import jinja2
import numpy as np
import tensorflow as tf
from markupsafe import Markup

from sparse_gen_tf.data import pipeline
from sparse_gen_tf.explanation import basis as basis_lib
from sparse_gen_tf.explanation.figures import image_grid, to_uint8
from sparse_gen_tf.explanation.parse_graph import ParseGraph, image_boxes
from sparse_gen_tf.explanation.visualize import paint
from sparse_gen_tf.reports.dashboard import editor
from sparse_gen_tf.reports.dashboard.statistics import (
    decomposition, layer_statistics, training_parses, unit_basis, without_node)

NUM_EXAMPLES = 3      # top-coefficient training images per unit
NUM_PARTS = 8         # next-layer OR nodes listed in a decomposition
HISTOGRAM_BINS = 16
PNG_LIMIT = 4096      # bytes; a larger picture (photographs) is inlined as JPEG instead
# The static files, in the order the page inlines them: the scripts depend on each other
# in this order (the editor draws with the generator and outlines with `place`).
STYLES = ("dashboard.css",)
SCRIPTS = ("generator.js", "dashboard.js", "editor.js")


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
    return Markup(f'<img class="{cls}" width="{width}" src="{data_url(image)}" '
                  f'alt="{html.escape(title)}" title="{html.escape(title)}">')


def histogram_svg(values, bins=HISTOGRAM_BINS, width=240, height=70):
    """An inline SVG bar chart of the coefficients `values` [m] (all > 0)."""
    counts, edges = np.histogram(values, bins=bins, range=(0.0, float(values.max())))
    bar = width / bins
    rects = "".join(
        f'<rect x="{i * bar:.1f}" y="{height - 12 - (height - 14) * n / counts.max():.1f}" '
        f'width="{bar - 1:.1f}" height="{(height - 14) * n / counts.max():.1f}">'
        f'<title>{edges[i]:.3g}-{edges[i + 1]:.3g}: {n}</title></rect>'
        for i, n in enumerate(counts))
    return Markup(f'<svg class="hist" width="{width}" height="{height}" role="img">{rects}'
                  f'<text x="0" y="{height - 1}">0</text><text x="{width}" '
                  f'y="{height - 1}" text-anchor="end">{edges[-1]:.3g}</text></svg>')


@functools.cache
def environment():
    """The Jinja2 environment of the package's templates, with the static files as
    `static(name)` (their text, inlined) and `json_script(value)` (JSON safe inside a
    <script> element)."""
    env = jinja2.Environment(loader=jinja2.PackageLoader("sparse_gen_tf.reports.dashboard"),
                             autoescape=True, trim_blocks=True, lstrip_blocks=True,
                             undefined=jinja2.StrictUndefined)
    static = importlib.resources.files("sparse_gen_tf.reports.dashboard") / "static"
    env.globals["static"] = lambda name: Markup((static / name).read_text())
    env.globals.update(styles=STYLES, scripts=SCRIPTS)
    # "</" would end the <script> element early; "<\/" is the same JSON string.
    env.filters["json_script"] = lambda value: Markup(json.dumps(value).replace("</", "<\\/"))
    return env


# === The page ===

def write_dashboard(model, config, output_dir, summary, *, max_units=64, max_or_nodes=48,
                    unit_labels=None, editable=True):
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
      editable: embed the generator's weights, so that each parse can be edited and
        re-rendered in the page (editor.py; docs/explanation.md gives the page sizes).
    """
    generator = model.generator
    chains = np.asarray(model.chains.value, np.float32)
    data = pipeline.load(config.dataset, image_size=config.generator.image_size,
                         num_images=len(chains), data_dir=config.data_dir, seed=config.seed,
                         crop=config.crop, parts_geometry=config.parts_geometry)
    images = data.images[:len(chains)]
    activations = training_parses(generator, chains)
    sections, units = [], []
    for layer in range(1, generator.num_layers + 1):
        labels = {channel: found for (at, channel), found in (unit_labels or {}).items()
                  if at == layer}
        section, panels = layer_sections(generator, chains, images, layer,
                                         activations[layer - 1], max_units, labels)
        sections.append(section)
        units.extend(panels)
    records = summary.get("samples", []) + summary.get("images", [])
    parses = [image_panel(generator, record, output_dir, max_or_nodes, editable)
              for record in records]
    page = environment().get_template("index.html.j2").render(
        workdir=str(summary.get("workdir", "")), dataset=config.dataset,
        num_parses=len(chains), topk=config.generator.topk,
        channels=config.generator.channels, sections=sections, units=units,
        parses=parses, model=editor.model_data(generator) if editable else None)
    path = os.path.join(output_dir, "index.html")
    with open(path, "w") as f:
        f.write(page)
    return path


def layer_sections(generator, chains, images, layer, activation, max_units, labels=None):
    """(the layer's row of the model-at-a-glance table, [its unit panels]), as template
    context. labels: {channel: [the attributes it detects]}; those units' panels are
    shown."""
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
        thumbs.append({"channel": channel, "in_use": bool(stats["in_use"][channel]),
                       "picture": img(crop, 28, title)})
    section = {"layer": layer, "bottom": layer == generator.num_layers, "h": h, "w": w,
               "c": c, "k": k, "used": len(used),
               "dead": [int(d) for d in np.flatnonzero(~stats["in_use"])],
               "or_per_parse": float((activation > 0).sum((1, 2, 3)).mean()),
               "thumbs": thumbs, "shown": len(shown),
               "detectors": [(channel, label, bool(stats["in_use"][channel]))
                             for channel in sorted(labels) for label in labels[channel]]}

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
            rows.append({"picture": img(strip, 3 * 96 + 4), "image": int(example[i]),
                         "s": float(s)})
        parts = None
        if layer < generator.num_layers:
            links = decomposition(generator, chains[best[unit]], layer, positions[unit],
                                  unit)
            parts = {"image": int(best[unit]), "total": len(links),
                     "links": links[:NUM_PARTS]}
        values = activation[..., unit][activation[..., unit] > 0]
        panels.append({
            "layer": layer, "unit": int(unit), "coefficient": float(coefficients[unit]),
            "raw": img(paint(generator, coefficients[unit] * basis[unit]), 128, "raw"),
            "normalised": img(normalise(basis[unit:unit + 1])[0], 128, "normalised"),
            "heat": stats["heat"][unit].tolist(), "histogram": histogram_svg(values),
            "num_values": len(values), "fires": float(stats["fires"][unit]),
            "per_parse": float(stats["per_parse"][unit]), "labels": labels.get(unit, []),
            "examples": rows, "parts": parts})
    return section, panels


def image_panel(generator, record, output_dir, max_or_nodes, editable):
    """The template context of one explained parse: its And-Or graph as clickable grids,
    and (editable) what the page's editor starts from (editor.parse_data)."""
    name = os.path.splitext(record["parse_graph"])[0]
    with open(os.path.join(output_dir, record["parse_graph"])) as f:
        graph = ParseGraph.from_dict(json.load(f))
    if graph.latent:
        z = np.asarray(graph.latent, np.float32)[None]
        top = generator.top_feature_map(z)
    else:  # a grammar sample: no z, its top layer's OR nodes determine it
        z, top = None, graph.top_activation()
    parse = generator.parse_from_top(top)
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
            y0, x0, y1, x1 = a.box
            chips = [{"channel": o.channel, "coefficient": o.coefficient,
                      "links": len(o.links), "picture": img(paint(
                          generator, shown[(a.y, a.x, o.channel)][0]
                          * shown[(a.y, a.x, o.channel)][1])[y0:y1, x0:x1], 96, "basis")}
                     for o in a.or_nodes if (a.y, a.x, o.channel) in shown]
            cells.append({"y": a.y, "x": a.x, "box": ",".join(map(str, a.box)),
                          "pixels": list(a.box), "num_or": len(a.or_nodes), "chips": chips,
                          "hidden": len(a.or_nodes) - len(chips)})
        layers.append({"index": layer.index, "k": layer.k, "total": total,
                       "shown": min(total, len(shown)), "width": layer.shape[1],
                       "cells": cells})
    return {"name": name, "picture": img(image, 256, name),
            "side": generator.config.image_size,
            "errors": ", ".join(f"{e:.1e}" for e in record.get("eq5_relative_error", [])),
            "parse_graph": record["parse_graph"], "layers": layers,
            "data": editor.parse_data(generator, name, z, top, parse) if editable else None}
