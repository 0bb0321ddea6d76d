"""What the page's parse editor needs, and the TensorFlow render it must agree with.

The page runs the generator's forward pass itself (static/generator.js): FC -> reshape ->
[TopK -> ReLU -> transposed conv] per sparse layer -> tanh, the same function as
`Generator.parse_from_top`. `model_data` embeds the weights (float32, little-endian,
base64) and `parse_data` one parse: its z (or, for a grammar sample, its top activation
fm^1_s) and the OR nodes of each layer (the flat indices where mask_T * mask_R = 1).

An edit multiplies single OR nodes' coefficients (0 switches a node off) and may replace
the OR nodes of top AND nodes by another parse's ("swap"). Two modes (`edited_parse`):

  frozen   every layer keeps the parse's TopK and ReLU masks: the image changes by the
           edited terms of Eq. (5), the rest of the graph stays as it was.
  rerun    layers below the topmost edited one run TopK and ReLU again on what the edited
           layer paints, as generating from the edited parse would.
"""

import base64

import numpy as np
import tensorflow as tf

from sparse_gen_tf.explanation.parse_graph import image_boxes


def encode(array):
    """A float32 array as base64 of its little-endian bytes (row-major)."""
    return base64.b64encode(np.ascontiguousarray(array, "<f4").tobytes()).decode()


def model_data(generator):
    """The generator's configuration and weights, as the page's JSON.

    FC kernel [d, s*s*c_1] and bias; each transposed conv's kernel [c_in, k, k, c_out]
    (row j = unit j's basis patch) and bias [c_out]; the pixel box of each AND node
    (parse_graph.image_boxes), for outlines."""
    cfg = generator.config
    return {
        "image_size": cfg.image_size, "latent_dim": cfg.latent_dim,
        "top_size": cfg.top_size, "shapes": [list(s) for s in cfg.feature_map_shapes()],
        "topk": list(cfg.topk), "kernel_sizes": list(cfg.kernel_sizes),
        "strides": list(cfg.strides),
        "fc": {"kernel": encode(generator.fc.kernel.numpy()),
               "bias": encode(generator.fc.bias.numpy())},
        "deconvs": [{"kernel": encode(d.kernel.numpy()), "bias": encode(d.bias.numpy())}
                    for d in generator.deconvs],
        "boxes": [b.reshape(-1, 4).tolist() for b in image_boxes(cfg)]}


def or_node_indices(parse):
    """Per layer, the flat indices (y, x, c row-major) of its OR nodes in `parse` (one
    example): where mask_T * mask_R = 1."""
    return [np.flatnonzero(np.asarray(t)[0] * np.asarray(r)[0]).tolist()
            for t, r in zip(parse["topk_masks"], parse["relu_masks"])]


def parse_data(generator, name, z, top, parse):
    """One parse for the page's editor: z [1, d] (None for a grammar sample), else its top
    activation `top` [1, s, s, c_1]; `parse` = parse_from_top of it."""
    return {"name": name,
            "z": None if z is None else encode(np.asarray(z)[0]),
            "top": None if z is not None else encode(np.asarray(top)[0]),
            "or_nodes": or_node_indices(parse)}


def edited_parse(generator, top, masks, scales=None, swaps=None, rerun=False):
    """The parse of an edited parse graph, computed by the generator's own layers: the
    reference of the page's renderer.

    Args:
      top: fm^1 [1, s, s, c_1] before TopK_1 (`generator.top_feature_map(z)`).
      masks: the unedited parse's [(mask_T, mask_R)] per layer, [1, h, w, c].
      scales: {(layer, y, x, c): factor}, layer 1-based; the OR node's coefficient is
        multiplied by factor (0 switches it off).
      swaps: {(y, x): [c_1] coefficients}: the top AND node (y, x) holds these OR nodes
        (another parse's fm^1_s at (y, x)) instead of its own.
      rerun: layers below the topmost edited one compute their TopK and ReLU masks
        afresh (Eq. 1); otherwise every layer keeps `masks` (Eq. 2, 5).
    Returns:
      the dict of `Generator.parse` ("image" [1, H, W, 3], "activations", masks).
    """
    scales, swaps = scales or {}, swaps or {}
    edited = [layer for layer, *_ in scales] + ([1] if swaps else [])
    first = min(edited) if edited else None
    fm = tf.convert_to_tensor(top, tf.float32)
    record = {"topk_masks": [], "relu_masks": [], "activations": []}
    for i, (topk, deconv) in enumerate(zip(generator.topks, generator.deconvs)):
        layer = i + 1
        if rerun and first is not None and layer > first:
            kept, mask_t = topk(fm, return_mask=True)
            mask_r = tf.cast(kept > 0, fm.dtype)
        else:
            mask_t, mask_r = (tf.cast(m, fm.dtype) for m in masks[i])
        activation = (fm * mask_t * mask_r).numpy()
        if layer == 1:
            for (y, x), coefficients in swaps.items():
                activation[0, y, x] = coefficients
        for (at, y, x, c), factor in scales.items():
            if at == layer:
                activation[0, y, x, c] *= factor
        for key, value in zip(record, (mask_t, mask_r, activation)):
            record[key].append(value)
        fm = deconv(tf.constant(activation))
    record["logits"] = fm
    record["image"] = tf.tanh(fm)
    return record
