"""The sparse-coding view of a parse (§2.2): basis functions and Eq. (5) as an identity.

Once a parse has fixed every TopK mask and ReLU mask, the generator below any sparse layer
i is an affine map of that layer's activations a^i (Eq. 2):

    logits = L_i(a^i) + c_i,

L_i linear (the deconvolutions with their biases left out, the frozen masks in between)
and c_i the output of the frozen network when layer i is silent: the biases of deconv_i
.. deconv_n, carried through the frozen masks. With a^i = Σ_j s_j e_j over the K'_i
surviving activations (value s_j at one position and channel), the basis function of
activation j is B_j = L_i(e_j) [H, W, 3], its response to a unit coefficient, and

    logits = Σ_j s_j B_j + c_i                                                (Eq. 5, 6)
           = Σ_j (s_j B_j + c_i / K'_i)                                       (Eq. 3)

The second line shares the bias out equally, as Eq. (3) does with its 1/K: term j is
"activation j's part of the pre-tanh image". We divide by K'_i, the number of activations
that actually survive (TopK and ReLU, at most K_i), so that the identity is exact even
when ReLU switches off some of the K kept entries; with no survivor there is nothing to
share c_i with and logits = c_i. For the bottom layer c_n is the last bias, so the terms
are exactly Eq. (3): fm_sj ⊗ ker + bias / K'. `identity_error` checks all of it to float32
precision.
"""

import numpy as np
import tensorflow as tf


def frozen_downstream(generator, activation, masks, layer, include_bias=True):
    """The frozen generator below sparse layer `layer` (1 = top): Eq. (2) applied repeatedly.

    Args:
      generator: a `Generator`.
      activation: [batch, h_i, w_i, c_i], activations of sparse layer `layer`.
      masks: list over all sparse layers of (mask_T, mask_R), each [batch, h, w, c]; only
        the layers below `layer` are used.
      layer: 1-based index of the sparse layer that `activation` belongs to.
      include_bias: False leaves out every bias, which gives the linear part L_i.
    Returns:
      logits [batch, H, W, 3] (before tanh).
    """
    x = activation
    deconvs = generator.deconvs
    for i in range(layer - 1, len(deconvs)):
        x = deconvs[i](x, include_bias=include_bias)
        if i + 1 < len(deconvs):
            mask_t, mask_r = masks[i + 1]
            x = x * tf.cast(mask_t, x.dtype) * tf.cast(mask_r, x.dtype)
    return x


def surviving(activation, slots):
    """The surviving activations of one layer, largest first.

    Args:
      activation: [batch, h, w, c], the layer's fm_s (zero where TopK or ReLU cut).
      slots: how many to return; K_i is always enough, since at most K_i survive.
    Returns:
      dict: "index" int32 [batch, slots] flat index into h*w*c, "position" int32
      [batch, slots, 3] as (y, x, channel), "coefficient" [batch, slots] s_j, "valid"
      bool [batch, slots] (False on padding slots, whose coefficient is 0).
    """
    _, h, w, c = activation.shape
    flat = tf.reshape(activation, [-1, h * w * c])
    coefficient, index = tf.math.top_k(flat, k=slots, sorted=True)
    valid = coefficient > 0
    coefficient = tf.where(valid, coefficient, tf.zeros_like(coefficient))
    position = tf.stack([index // (w * c), (index // c) % w, index % c], axis=-1)
    return {"index": index, "position": position, "coefficient": coefficient,
            "valid": valid}


def basis_functions(generator, parse, layer, slots=None):
    """The basis functions B_j of every surviving activation of one layer (Eq. 2-6).

    Computed in one batched pass: each surviving activation becomes a one-hot feature map
    with value 1, and all of them go through the frozen, bias-free network at once.

    Args:
      generator: the `Generator` that produced `parse`.
      parse: the dict of `generator.parse(z)` for a batch of z.
      layer: 1-based sparse layer index (1 = top, n = bottom).
      slots: surviving activations to return per example; default K_layer.
    Returns:
      dict with the keys of `surviving` plus
        "basis": [batch, slots, H, W, 3], B_j (zero on padding slots);
        "offset": [batch, H, W, 3], c_i, the frozen network's output with layer i silent;
        "num_active": int32 [batch], K'_i;
        "terms": [batch, slots, H, W, 3], s_j B_j + c_i / K'_i, the summands of Eq. (5);
          they add up to the logits whenever K'_i > 0.
    """
    activation = parse["activations"][layer - 1]
    masks = list(zip(parse["topk_masks"], parse["relu_masks"]))
    _, h, w, c = activation.shape
    slots = slots or min(generator.topks[layer - 1].k, h * w * c)
    found = surviving(activation, slots)
    batch = tf.shape(activation)[0]

    one_hot = tf.one_hot(found["index"], h * w * c, dtype=activation.dtype)
    one_hot *= tf.cast(found["valid"], activation.dtype)[..., None]
    one_hot = tf.reshape(one_hot, [-1, h, w, c])  # [batch * slots, h, w, c]
    # Every one-hot map of an example goes through that example's frozen masks.
    tiled = [(tf.repeat(m_t, slots, axis=0), tf.repeat(m_r, slots, axis=0))
             for m_t, m_r in masks]
    basis = frozen_downstream(generator, one_hot, tiled, layer, include_bias=False)
    basis = tf.reshape(basis, tf.concat([[batch, slots], tf.shape(basis)[1:]], 0))
    offset = frozen_downstream(generator, tf.zeros_like(activation), masks, layer)

    num_active = tf.reduce_sum(tf.cast(found["valid"], tf.int32), axis=1)
    share = offset / tf.cast(tf.maximum(num_active, 1), offset.dtype)[:, None, None, None]
    terms = (found["coefficient"][:, :, None, None, None] * basis
             + tf.cast(found["valid"], basis.dtype)[:, :, None, None, None] * share[:, None])
    return {**found, "basis": basis, "offset": offset, "num_active": num_active,
            "terms": terms}


def synthesize(basis):
    """Eq. (5) before the tanh: Σ_j s_j B_j + c_i, [batch, H, W, 3], from `basis_functions`."""
    weighted = basis["coefficient"][:, :, None, None, None] * basis["basis"]
    return tf.reduce_sum(weighted, axis=1) + basis["offset"]


def identity_error(generator, parse, layer):
    """Relative error of Eq. (5) for one layer: ‖Σ_j terms_j - logits‖ / ‖logits‖ [batch].

    Examples with no surviving activation are compared through the offset alone (the
    terms are empty and logits = c_i).
    """
    basis = basis_functions(generator, parse, layer)
    logits = parse["logits"]
    by_terms = tf.reduce_sum(basis["terms"], axis=1)
    silent = (basis["num_active"] == 0)[:, None, None, None]
    by_terms = tf.where(silent, basis["offset"], by_terms)
    by_basis = synthesize(basis)
    def norm(x):
        return tf.sqrt(tf.reduce_sum(tf.square(x), axis=[1, 2, 3]))

    return tf.maximum(norm(by_terms - logits), norm(by_basis - logits)) / tf.maximum(
        norm(logits), 1e-12)


def mean_coefficients(generator, z, layer):
    """(count [c], mean coefficient [c]) of each channel of a 1-based layer over the parses
    of z [n, d]; the mean is 0 for channels that never survive."""
    activation = np.asarray(generator.parse(z)["activations"][layer - 1])
    count = (activation > 0).sum(axis=(0, 1, 2))
    return count, activation.sum(axis=(0, 1, 2)) / np.maximum(count, 1)


def painted_kernels(generator, coefficients):
    """The bottom basis functions as the patches they paint: [c, k, k, 3] in [-1, 1].

    A bottom unit with coefficient s adds s * ker_c to the logits (Eq. 3), on top of the
    image layer's bias; alone on an otherwise empty parse it paints tanh(bias_n + s ker_c).
    coefficients: [c], the s to paint each channel with (e.g. its mean coefficient).
    """
    deconv = generator.deconvs[-1]
    kernels = deconv.kernel.numpy()
    scale = np.asarray(coefficients, np.float32)[:, None, None, None]
    return np.tanh(deconv.bias.numpy() + scale * kernels)
