"""What the dashboard shows of a trained generator, computed with TensorFlow: the
statistics of the training parses, each unit's basis function, a parse with one OR node
removed, and an OR node's decomposition into the next layer (Eq. 2-3, 6)."""

import numpy as np
import tensorflow as tf

from sparse_gen_tf.explanation import basis as basis_lib
from sparse_gen_tf.explanation.parse_graph import footprint


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
