"""Keras callbacks of a training run: atomic checkpoints, divergence guard, image summaries."""

import math

import keras
import numpy as np
import tensorflow as tf

from sparse_gen_tf.errors import DivergenceError
from sparse_gen_tf.figures import image_grid


class DivergenceGuard(keras.callbacks.Callback):
    """Stops training with DivergenceError as soon as a step's metrics are NaN or inf.

    It runs before any checkpoint of the epoch is written, so a divergence never
    overwrites the last good checkpoint.
    """

    def on_train_batch_end(self, batch, logs=None):
        for name in ("loss", "z_norm"):
            if logs and name in logs and not math.isfinite(float(logs[name])):
                raise DivergenceError(
                    f"Langevin dynamics diverged ({name} is {float(logs[name])}) at step "
                    f"{int(self.model.optimizer.iterations.numpy())}; lower --langevin_step_size or "
                    "--learning_rate, or raise --sigma; the last good checkpoint is kept")


class Checkpointing(keras.callbacks.Callback):
    """Saves model, chains and optimizer every `every` epochs through a CheckpointManager.

    tf.train.CheckpointManager writes the files first and then atomically replaces the
    `checkpoint` index, so a crash mid-save leaves the previous checkpoint the latest.
    """

    def __init__(self, manager, epoch, every, on_save=()):
        super().__init__()
        self.manager, self.epoch, self.every = manager, epoch, every
        self.on_save = list(on_save)

    def on_epoch_end(self, epoch, logs=None):
        self.epoch.assign(epoch + 1)
        last = epoch + 1 == self.params.get("epochs")
        if (epoch + 1) % self.every and not last:
            return
        if logs and not all(math.isfinite(float(v)) for v in logs.values()):
            raise DivergenceError(f"non-finite metrics at epoch {epoch + 1}: not saving; "
                                  "lower --langevin_step_size or --learning_rate")
        # .numpy(): under a tf.distribute strategy the variable is a MirroredVariable,
        # which int() does not take.
        step = int(self.model.optimizer.iterations.numpy())
        self.manager.save(checkpoint_number=step)
        for callback in self.on_save:
            callback(step)


class ImageSummaries:
    """Writes image grids to TensorBoard: samples g(z), z ~ N(0, I), and training images
    beside their reconstructions g(z_i) from the persistent chains. For cooperative
    learning also "data_reconstructions_revisions": each training image, g(z_i) and the
    descriptor's revision Ỹ_i of it, i.e. what the generator is taught (cooperative.py)."""

    def __init__(self, model, data, logdir, num_images=16, seed=0):
        self.model, self.writer = model, tf.summary.create_file_writer(logdir)
        n = min(num_images, data.num_examples)
        self.ids = np.arange(n)
        self.images = data.images[:n]
        self.z = tf.random.stateless_normal([n, model.generator.config.latent_dim],
                                            [seed, 1])
        self.extra = []  # callables (writer, step) adding more summaries

    def __call__(self, step):
        samples = self.model.generator(self.z).numpy()
        recon = self.model.generator(tf.gather(self.model.chains.value, self.ids)).numpy()
        pairs = np.stack([self.images.astype(np.float32) / 127.5 - 1.0, recon], 1)
        pairs = pairs.reshape((-1,) + recon.shape[1:])
        # record_if(True): Keras' TensorBoard callback gates all summaries during fit on
        # step % --log_every == 0, which would drop checkpoints at other steps.
        with self.writer.as_default(step=step), tf.summary.record_if(True):
            tf.summary.image("samples", image_grid(samples)[None], max_outputs=1)
            tf.summary.image("data_and_reconstructions",
                             image_grid(pairs, columns=8)[None], max_outputs=1)
            if hasattr(self.model, "revise"):
                # A fixed seed, so that grids at different steps differ by the model only.
                revised = self.model.revise(recon, seed=tf.constant([0, 9])).numpy()
                triples = np.stack([pairs[0::2], recon, np.clip(revised, -1, 1)], 1)
                tf.summary.image("data_reconstructions_revisions", image_grid(
                    triples.reshape((-1,) + recon.shape[1:]), columns=6)[None],
                    max_outputs=1)
            for extra in self.extra:
                extra(step)
        self.writer.flush()
