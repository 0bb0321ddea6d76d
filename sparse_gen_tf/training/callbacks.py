"""Keras callbacks of a training run: atomic checkpoints, divergence guard, TensorBoard,
the HParams record that lets TensorBoard compare runs, and the progress line."""

import functools
import math
import os
import re
import sys
import time

import keras
import tensorflow as tf
from tensorboard.plugins.hparams import api as hp

from sparse_gen_tf.errors import DivergenceError
from sparse_gen_tf.training import run


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
                    f"{int(self.model.optimizer.iterations.numpy())}; lower "
                    "--langevin_step_size or --learning_rate, or raise --sigma; the last "
                    "good checkpoint is kept")


class Checkpointing(keras.callbacks.Callback):
    """Saves model, chains, prior and optimizer every `every` epochs and at the last,
    through a CheckpointManager; every `figures_every` epochs and at the last, first fits
    the prior and then calls each of `on_figures` with the step (image grids, figures).

    A checkpoint holds what a resumed run needs: the generator, chains, optimizer, epoch,
    RNG state, and the prior's variables as they are. The prior is fitted to the chains
    (`AlternatingBackprop.fit_prior`, seconds on the host, as long as a few epochs of
    parts) only at the figures' epochs, just before the checkpoint of that epoch, so
    that checkpoint's prior belongs to its generator. A checkpoint written between two
    fits holds the prior of an earlier generator: `run.mark_prior_stale` puts a marker
    beside it first, and `run.open_run` and `run.resume` fit the prior again from its
    chains. With nothing to fit (`stale_prior=False`, the N(0, I) prior) none is written.

    tf.train.CheckpointManager writes the files first and then atomically replaces the
    `checkpoint` index, so a crash mid-save leaves the previous checkpoint the latest.
    """

    def __init__(self, manager, epoch, every, figures_every=None, on_figures=(),
                 stale_prior=True):
        super().__init__()
        self.manager, self.epoch, self.every = manager, epoch, every
        self.figures_every = figures_every
        self.on_figures = list(on_figures)
        self.stale_prior = stale_prior

    def on_epoch_end(self, epoch, logs=None):
        self.epoch.assign(epoch + 1)
        last = epoch + 1 == self.params.get("epochs")
        save = last or (epoch + 1) % self.every == 0
        figures = last or bool(self.figures_every and (epoch + 1) % self.figures_every == 0)
        if not (save or figures):
            return
        if logs and not all(math.isfinite(float(v)) for v in logs.values()):
            raise DivergenceError(f"non-finite metrics at epoch {epoch + 1}: not saving; "
                                  "lower --langevin_step_size or --learning_rate")
        # .numpy(): under a tf.distribute strategy the variable is a MirroredVariable,
        # which int() does not take.
        step = int(self.model.optimizer.iterations.numpy())
        if figures:
            self.model.fit_prior()
        if save:
            # The path manager.save gives checkpoint_number=step. Marked before it is
            # written, so that no kill leaves it unmarked.
            path = os.path.join(self.manager.directory, f"ckpt-{step}")
            run.mark_prior_stale(path, stale=self.stale_prior and not figures)
            self.manager.save(checkpoint_number=step)
            run.remove_stale_marks(self.manager.directory, keep=self.manager.checkpoints)
        if figures:
            for callback in self.on_figures:
                callback(step)


class HParamsSummary(keras.callbacks.Callback):
    """Records the run in TensorBoard's HParams plugin, so that runs (sparse against dense,
    one K against another) line up as rows of its table, with their final metrics.

    At the start of training it writes the experiment's columns and this run's values
    (`hparams_of`); at the end, the last epoch's metrics as scalars "final/<name>" beside
    them, in the same directory (the run's tb/), which the table reads as metric columns.
    """

    METRICS = ("psnr", "mse", "loss", "z_norm")

    def __init__(self, config, logdir):
        super().__init__()
        self.values, self.logdir, self.last = hparams_of(config), logdir, {}
        self.trial = config.workdir
        self.num_layers = len(config.generator.topk)

    def on_train_begin(self, logs=None):
        metrics = [hp.Metric(f"final/{name}", display_name=name)
                   for name in self.METRICS + tuple(
                       f"{kind}_{i}" for kind in ("nonzero", "dead_channels")
                       for i in range(1, self.num_layers + 1))]
        # One writer for the run's record, start and end: one event file in tb/.
        self.writer = tf.summary.create_file_writer(self.logdir)
        with self.writer.as_default():
            hp.hparams_config(hparams=[hp.HParam(name) for name in self.values],
                              metrics=metrics)
            hp.hparams(self.values, trial_id=self.trial)
        self.writer.flush()

    def on_epoch_end(self, epoch, logs=None):
        self.last = dict(logs or {})

    def on_train_end(self, logs=None):
        step = int(self.model.optimizer.iterations.numpy())
        with self.writer.as_default(step=step), tf.summary.record_if(True):
            for name, value in {**self.last, **(logs or {})}.items():
                tf.summary.scalar(f"final/{name}", float(value))
        self.writer.flush()


def hparams_of(config):
    """The hyperparameters of a TrainConfig that tell runs apart, as HParams values (str,
    int, float, bool): K per layer (K_1 = top) and the channels, L and δ of the Langevin
    dynamics (Eq. 10), σ (Eq. 11), the descriptor, the dataset, the prior; "dense" when K
    is every entry of every feature map."""
    generator, langevin = config.generator, config.langevin
    shapes = generator.feature_map_shapes()
    values = {"dataset": config.dataset, "image_size": generator.image_size,
              "num_images": config.num_images, "latent_dim": generator.latent_dim,
              "channels": ",".join(map(str, generator.channels)),
              "topk": ",".join(map(str, generator.topk)),
              "dense": all(k == h * w * c for k, (h, w, c) in zip(generator.topk, shapes)),
              "L (langevin_steps)": langevin.steps,
              "delta (langevin_step_size)": langevin.step_size,
              "sigma": langevin.sigma, "descriptor": config.descriptor is not None,
              "learning_rate": config.learning_rate, "train_steps": config.train_steps,
              "prior": config.prior}
    values.update({f"K_{i}": k for i, k in enumerate(generator.topk, 1)})
    return values


class TrainScalars(keras.callbacks.Callback):
    """Training curves for TensorBoard, under the names Keras' TensorBoard callback uses:
    "batch_<metric>" every `every` optimizer steps and "epoch_<metric>" (with
    "epoch_learning_rate") after each epoch, in logdir (the run's tb/train).

    The x axes are the optimizer's step and the epoch, both restored from the checkpoint,
    so a resumed run continues its curves instead of restarting them at 0; Keras'
    callback counts batches from 0 in every `fit`, and has no public way to start it
    elsewhere.

    The scalars of one write go through one traced function (one per set of names):
    a dozen eager `tf.summary.scalar` calls cost about 3 ms, a third of a millisecond
    per step at --log_every=10.
    """

    def __init__(self, logdir, every):
        super().__init__()
        self.logdir, self.every = logdir, every

    def on_train_begin(self, logs=None):
        self.writer = tf.summary.create_file_writer(self.logdir)
        self.writes = {}  # tags -> their traced write, which holds this writer

    def on_train_batch_end(self, batch, logs=None):
        # .numpy(): under a tf.distribute strategy the variable is a MirroredVariable.
        step = int(self.model.optimizer.iterations.numpy())
        if step % self.every == 0:
            self._write("batch", logs, step)

    def on_epoch_end(self, epoch, logs=None):
        learning_rate = keras.ops.convert_to_numpy(self.model.optimizer.learning_rate)
        self._write("epoch", {**(logs or {}), "learning_rate": learning_rate}, epoch)
        self.writer.flush()

    def on_train_end(self, logs=None):
        self.writer.close()

    def _write(self, prefix, logs, step):
        if not logs:
            return
        tags = tuple(f"{prefix}_{name}" for name in logs)
        if tags not in self.writes:
            self.writes[tags] = tf.function(functools.partial(_write_scalars, tags))
        values = tf.constant([float(value) for value in logs.values()], tf.float32)
        with self.writer.as_default(), tf.summary.record_if(True):
            self.writes[tags](values, tf.constant(step, tf.int64))


def _write_scalars(tags, values, step):
    """tf.summary.scalar(tags[i], values[i], step) for each i; values float32 [len(tags)],
    step int64 []."""
    for i, tag in enumerate(tags):
        tf.summary.scalar(tag, values[i], step=step)


class Progress(keras.callbacks.Callback):
    """The progress line of training, shorter than `WIDTH` characters so that it does not
    wrap: epoch, optimizer step, and the metrics of `SHOWN` that the model logs, with the
    time per step. Keras' own progress bar prints every metric (near 300 characters); all
    of them still go to TensorBoard (`TrainScalars`).

    One line per epoch; on a terminal the line is also rewritten after every step.
    """

    WIDTH = 120
    SHOWN = ("loss", "psnr", "z_norm")
    # The start of each line: epoch/epochs, then the optimizer's step.
    PATTERN = re.compile(r"\r?epoch (\d+)/(\d+)  step (\d+)")

    def __init__(self, stream=None):
        super().__init__()
        self.stream = stream or sys.stdout
        self.live = hasattr(self.stream, "isatty") and self.stream.isatty()

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch, self.started, self.steps = epoch, time.monotonic(), 0

    def on_train_batch_end(self, batch, logs=None):
        self.steps = batch + 1
        if self.live:
            self.stream.write("\r" + self.line(logs).ljust(self.WIDTH - 1)[:self.WIDTH - 1])
            self.stream.flush()

    def on_epoch_end(self, epoch, logs=None):
        self.stream.write(("\r" if self.live else "") + self.line(logs) + "\n")
        self.stream.flush()

    def line(self, logs):
        """"epoch 3/1500  step 6/3000  loss 4632.4  psnr 11.684  z_norm 1.47  2.6 s/step"."""
        epochs, per_epoch = self.params.get("epochs"), self.params.get("steps")
        step = int(self.model.optimizer.iterations.numpy())
        parts = [f"epoch {self.epoch + 1}/{epochs}",
                 f"step {step}" + (f"/{epochs * per_epoch}" if epochs and per_epoch else "")]
        parts += [f"{name} {float(logs[name]):.5g}" for name in self.SHOWN
                  if logs and name in logs]
        if self.steps:
            parts.append(f"{(time.monotonic() - self.started) / self.steps:.2g} s/step")
        return "  ".join(parts)[:self.WIDTH - 1]

    @classmethod
    def parse(cls, line):
        """(epoch, epochs, step) of a line `line` wrote, or None for any other text (the
        benchmarks read train.py's output with it)."""
        found = cls.PATTERN.match(line)
        return tuple(map(int, found.groups())) if found else None
