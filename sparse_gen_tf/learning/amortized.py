"""Training the inference network q(z | Y) (model/encoder.py): amortized MAP inference.

The network E is trained to put its guess where the log joint of Eq. (11) is high:

    minimise  -log p(E(Y), Y) = ‖Y - g(E(Y))‖² / (2σ²) + ‖E(Y)‖² / 2        (Eq. 11)

over the training images, with the generator g fixed: up to a constant, the ELBO of a
Gaussian q of fixed, vanishing variance around E(Y). The Langevin refinements that follow the
guess (`inference.amortized`) climb the same log joint. It learns this either

  * during training (train.py --encoder): `AlternatingBackprop.learn_encoder` takes one
    step per train step on the batch, against the generator of that step, or
  * after training (`python -m sparse_gen_tf.commands.fit_encoder`): `fit`, Keras' own fit with
    `NegativeLogJoint` as the loss.

On a parts run this gave better held-out reconstructions after the same refinement than
regressing the persistent chains (‖E(Y_i) - z_i‖²), than the ELBO of a Gaussian q, and
than both of those together (docs/experiments.md). The chains are posterior
samples, noisy in the directions the image does not determine, and a regression onto
them averages those directions instead of finding a mode.
"""

import keras
import tensorflow as tf


def negative_log_joint(generator, z, images, sigma):
    """-log p(z, Y) of Eq. (11) per example, without its constant: [batch]. z [batch, d],
    images [batch, H, W, 3] in [-1, 1]; the likelihood in float32 whatever g computes in."""
    z = tf.cast(z, tf.float32)
    images = tf.cast(images, tf.float32)
    squared_error = tf.reduce_sum(tf.square(images - tf.cast(generator(z), tf.float32)),
                                  axis=[1, 2, 3])
    return squared_error / (2.0 * sigma ** 2) + 0.5 * tf.reduce_sum(tf.square(z), axis=-1)


class NegativeLogJoint(keras.losses.Loss):
    """The loss of the inference network as a Keras loss: y_true the images [batch, H, W,
    3], y_pred the network's z [batch, d]; `negative_log_joint` under the generator g
    (whose weights the encoder's optimizer does not touch) and σ."""

    def __init__(self, generator, sigma, name="negative_log_joint", **kwargs):
        super().__init__(name=name, **kwargs)
        self.generator, self.sigma = generator, float(sigma)

    def call(self, y_true, y_pred):
        return negative_log_joint(self.generator, y_pred, y_true, self.sigma)


def fit(encoder, generator, images, *, sigma, steps, batch_size=64, learning_rate=1e-3,
        seed=0, verbose=0):
    """Fits encoder to generator on images by `keras.Model.fit` with `NegativeLogJoint`:
    steps Adam steps on shuffled batches, learning_rate cosine-decayed to a tenth.

    images: [N, H, W, 3] float in [-1, 1]; sigma: σ of Eq. (11), the run's. Returns the
    Keras History (its "loss" is the mean -log p(E(Y), Y) per image, per epoch).
    """
    images = tf.convert_to_tensor(images, tf.float32)
    num = int(images.shape[0])
    batch_size = min(int(batch_size), num)
    steps_per_epoch = max(num // batch_size, 1)
    epochs = -(-int(steps) // steps_per_epoch)
    dataset = (tf.data.Dataset.from_tensor_slices((images, images))
               .shuffle(num, seed=seed, reshuffle_each_iteration=True)
               .batch(batch_size, drop_remainder=True).repeat()
               .prefetch(tf.data.AUTOTUNE))
    schedule = keras.optimizers.schedules.CosineDecay(
        learning_rate, epochs * steps_per_epoch, alpha=0.1)
    encoder.compile(optimizer=keras.optimizers.Adam(schedule),
                    loss=NegativeLogJoint(generator, sigma))
    # The dataset shuffles itself; Keras' own shuffle is for arrays.
    return encoder.fit(dataset, epochs=epochs, steps_per_epoch=steps_per_epoch,
                       shuffle=False, verbose=verbose)
