"""Langevin inference of the latent z given an image: Eq. (10)-(11) of §2.3.

The posterior p(z | Y) ∝ p(z) p(Y | z) is sampled by

    z <- z + δ²/2 · ∂/∂z log p(z, Y) + δ·E,   E ~ N(0, I)                      (Eq. 10)
    log p(z, Y) = -‖Y - g(z)‖² / (2σ²) - ‖z‖² / 2 + C                           (Eq. 11)

The loop is a `tf.while_loop`, so memory does not grow with the number of steps and the
whole chain compiles into one XLA computation.
"""

import tensorflow as tf


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
    images = tf.convert_to_tensor(images)
    # Under a mixed precision policy g(z) is 16-bit; the likelihood and ∂/∂z stay float32.
    residual = images - tf.cast(generator(z), images.dtype)
    if observed is not None:
        residual = residual * tf.cast(observed, residual.dtype)
    log_likelihood = -tf.reduce_sum(tf.square(residual), axis=[1, 2, 3]) / (2.0 * sigma ** 2)
    log_prior = -0.5 * tf.reduce_sum(tf.square(z), axis=-1)
    return log_likelihood, log_prior


def langevin(generator, z, images, seed, *, steps, step_size, sigma, noise=True,
             observed=None):
    """Runs `steps` Langevin transitions (Eq. 10) on z for fixed generator weights.

    Args:
      generator: callable z -> images.
      z: [batch, d] starting point (a persistent chain or a draw from N(0, I)).
      images: [batch, H, W, 3] observed images in [-1, 1].
      seed: int32 [2] stateless seed; each step folds in its index, so a chain is
        reproducible and replicas that pass different seeds draw different noise.
      steps, step_size (δ), sigma (σ): Python numbers.
      noise: False gives gradient ascent on log p (no δ·E term).
      observed: optional 0/1 mask of observed pixels, see `log_joint`.
    Returns:
      z after the last step, [batch, d].
    """
    images = tf.convert_to_tensor(images)
    seed = tf.cast(seed, tf.int32)

    def step(t, z):
        with tf.GradientTape() as tape:
            tape.watch(z)
            log_likelihood, log_prior = log_joint(generator, z, images, sigma, observed)
            log_p = tf.reduce_sum(log_likelihood + log_prior)
        grad = tape.gradient(log_p, z)
        z = z + 0.5 * step_size ** 2 * grad
        if noise:
            e = tf.random.stateless_normal(
                tf.shape(z), tf.random.experimental.stateless_fold_in(seed, t), dtype=z.dtype)
            z = z + step_size * e
        return t + 1, z

    _, z = tf.while_loop(lambda t, z: t < steps, step, (tf.constant(0), z),
                         maximum_iterations=steps)
    return z
