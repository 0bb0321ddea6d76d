"""Langevin inference of the latent z given an image: Eq. (10)-(11) of §2.3.

The posterior p(z | Y) ∝ p(z) p(Y | z) is sampled by

    z <- z + δ²/2 · ∂/∂z log p(z, Y) + δ·E,   E ~ N(0, I)                      (Eq. 10)
    log p(z, Y) = -‖Y - g(z)‖² / (2σ²) - ‖z‖² / 2 + C                           (Eq. 11)

The loop is a `tf.while_loop`, so activations are not kept across steps (memory grows with
the number of steps only by the pre-drawn noise, L x batch x d floats) and the whole chain
compiles into one XLA computation. What does not depend on z (the deconv kernels'
matmul layout, the images' space_to_depth layout) is computed once, before the loop:
`Generator.squared_error_fn`.
"""

import dataclasses

import tensorflow as tf


@dataclasses.dataclass(frozen=True)
class LangevinConfig:
    """L, δ and σ of Eq. (10)-(11): the inference of z in every train step.

    Field metadata: "help" (what the field is; train.py's flag shows it), the bounds that
    flag checks.
    """
    steps: int = dataclasses.field(default=20, metadata={
        "help": "Langevin steps L per train step (Eq. 10).", "lower_bound": 0})
    step_size: float = dataclasses.field(default=0.3, metadata={
        "help": "Langevin step size δ (Eq. 10).", "lower_bound": 0.0})
    sigma: float = dataclasses.field(default=0.3, metadata={
        "help": "Observation noise σ (Eq. 7, 11)."})


def log_joint(generator, z, images, sigma, observed=None):
    """Eq. (11) per example, split into its two terms.

    Args:
      generator: maps z [batch, d] to images [batch, H, W, 3].
      z: [batch, d].
      images: [batch, H, W, 3] in [-1, 1].
      sigma: observation noise σ of Eq. (7).
      observed: optional [batch, H, W, 1 or 3] 0/1 mask; only observed pixels enter the
        likelihood (inference with occlusions).
    Returns:
      (log_likelihood [batch], log_prior [batch]), without the constant C.
    """
    squared_error = _squared_error(generator, z, tf.convert_to_tensor(images), observed)
    log_likelihood = -squared_error / (2.0 * sigma ** 2)
    log_prior = -0.5 * tf.reduce_sum(tf.square(z), axis=-1)
    return log_likelihood, log_prior


def squared_error_fn(generator, images, observed=None):
    """z -> ‖(Y - g(z)) ⊙ observed‖² [batch]: the generator's own loop-ready version
    (`Generator.squared_error_fn`, which hoists what does not depend on z) when it has
    one, else g(z) computed directly (any callable generator)."""
    if hasattr(generator, "squared_error_fn"):
        return generator.squared_error_fn(images, observed)
    return lambda z: _squared_error(generator, z, images, observed)


def _squared_error(generator, z, images, observed):
    """‖(Y - g(z)) ⊙ observed‖² [batch], g(z) computed directly."""
    # Under a mixed precision policy g(z) is 16-bit; the likelihood and ∂/∂z stay float32.
    residual = images - tf.cast(generator(z), images.dtype)
    if observed is not None:
        residual = residual * tf.cast(observed, residual.dtype)
    return tf.reduce_sum(tf.square(residual), axis=[1, 2, 3])


def langevin(generator, z, images, seed, *, steps, step_size, sigma, noise=True,
             observed=None, sparse_kernels=False, noise_groups=None, momentum=0.0):
    """Runs `steps` Langevin transitions (Eq. 10) on z for fixed generator weights.

    Args:
      generator: callable z -> images.
      z: [batch, d] starting point (a persistent chain or a draw from N(0, I)).
      images: [batch, H, W, 3] observed images in [-1, 1].
      seed: int32 [2] stateless seed of the whole chain's noise, so a chain is
        reproducible and replicas that pass different seeds draw different noise.
      steps, step_size (δ), sigma (σ): Python numbers.
      noise: False gives gradient ascent on log p (no δ·E term).
      momentum: β of heavy-ball gradient ascent, noise-free steps only: a velocity
        v <- β·v + δ²/2 · ∂/∂z log p(z, Y), z <- z + v (v = 0 at the start). β = 0 is the
        plain step; β > 0 crosses the long, flat valleys of Eq. (11) in fewer steps (on a
        parts run 30 steps at β = 0.7 came within 0.03 dB of 60 plain ones).
      observed: optional 0/1 mask of observed pixels, see `log_joint`.
      noise_groups: None, or n (Python int): z's rows are n contiguous groups of equal
        size, and every row of a group gets the same noise, drawn for n rows whatever
        the group size, so that a row's chain does not depend on how many rows there
        are (the served amortized inference, `inference.amortized`).
      sparse_kernels: compute ∂/∂z with the compiled sparse kernels
        (`Generator.langevin_gradient_fn`, the same gradient). They are TensorFlow ops,
        not XLA ones: the caller must not be XLA-compiled.
    Returns:
      z after the last step, [batch, d].
    """
    if steps <= 0:  # an empty noise tensor would not compile under XLA
        return tf.convert_to_tensor(z)
    if momentum and noise:
        raise ValueError("momentum is for noise-free steps (noise=False): Eq. (10) has none")
    images = tf.convert_to_tensor(images)
    seed = tf.cast(seed, tf.int32)
    if sparse_kernels:
        gradient_fn = generator.langevin_gradient_fn(images, sigma, observed)
    else:
        gradient_fn, squared_error = None, squared_error_fn(generator, images, observed)
    if noise:
        # All steps' noise in one draw, [steps, batch, d]: under XLA on CPU a draw inside
        # the loop has a fixed cost per step whatever its size, one draw of all of it is
        # paid once. It is the only memory that grows
        # with L, by 4·L·batch·d bytes.
        if noise_groups is None:
            all_noise = tf.random.stateless_normal(
                tf.concat([[steps], tf.shape(z)], 0), seed, dtype=z.dtype, alg="philox")
        else:
            per_group = tf.random.stateless_normal(
                [steps, noise_groups, 1, z.shape[-1]], seed, dtype=z.dtype, alg="philox")
            all_noise = tf.reshape(
                tf.broadcast_to(per_group, [steps, noise_groups,
                                            tf.shape(z)[0] // noise_groups, z.shape[-1]]),
                tf.concat([[steps], tf.shape(z)], 0))

    def gradient(z):
        if gradient_fn is not None:
            return gradient_fn(z)
        with tf.GradientTape() as tape:
            tape.watch(z)
            # log p(z, Y) of Eq. (11), the same sum as `log_joint`.
            log_p = (-tf.reduce_sum(squared_error(z)) / (2.0 * sigma ** 2)
                     - 0.5 * tf.reduce_sum(tf.square(z)))
        return tape.gradient(log_p, z)

    if momentum:
        def heavy_ball(t, z, velocity):
            velocity = momentum * velocity + 0.5 * step_size ** 2 * gradient(z)
            return t + 1, z + velocity, velocity

        z = tf.convert_to_tensor(z)
        _, z, _ = tf.while_loop(lambda t, z, v: t < steps, heavy_ball,
                                (tf.constant(0), z, tf.zeros_like(z)),
                                maximum_iterations=steps)
        return z

    def step(t, z):
        z = z + 0.5 * step_size ** 2 * gradient(z)
        if noise:
            z = z + step_size * all_noise[t]
        return t + 1, z

    _, z = tf.while_loop(lambda t, z: t < steps, step, (tf.constant(0), z),
                         maximum_iterations=steps)
    return z
