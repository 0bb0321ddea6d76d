"""A training run: data, model, checkpoints and TensorBoard around `model.fit`.

workdir/
  config.json        the TrainConfig of the run (read back by explain, evaluate, export)
  flags.txt          the same as a flagfile: `python train.py --flagfile=workdir/flags.txt`
  checkpoints/       tf.train checkpoints: generator, chains, optimizer, epoch, RNG state
  tb/train/          Keras TensorBoard scalars (batch_* every --log_every steps, epoch_*)
  tb/images/         image grids written at each checkpoint

With several workers (--strategy=multi_worker) only the chief writes here (distribute.py).
"""

import dataclasses
import json
import math
import os
import sys

import keras
import tensorflow as tf
from absl import logging

from sparse_gen_tf.abp import AlternatingBackprop
from sparse_gen_tf.callbacks import (Checkpointing, DivergenceGuard, HParamsSummary,
                                     ImageSummaries)
from sparse_gen_tf.config import TrainConfig
from sparse_gen_tf.cooperative import CooperativeLearning
from sparse_gen_tf.data import pipeline
from sparse_gen_tf import distribute
from sparse_gen_tf.descriptor import Descriptor
from sparse_gen_tf.errors import UserError
from sparse_gen_tf.generator import Generator
from sparse_gen_tf.visualize import explanation_summaries


def write_atomically(path, text):
    """Writes text to path through a temporary file and a rename."""
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def read_config(workdir):
    """The TrainConfig saved in workdir, or None when there is none."""
    path = os.path.join(workdir, "config.json")
    if not os.path.exists(path):
        return None
    with open(path) as f:
        values = json.load(f)
    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    values = {k: tuple(v) if isinstance(v, list) else v
              for k, v in values.items() if k in fields}
    return TrainConfig(**values)


def check_resumable(config):
    """Raises UserError if workdir holds a run whose state shapes differ from config's."""
    saved = read_config(config.workdir)
    if saved is None:
        return
    changed = [f"--{name} was {getattr(saved, name)!r}, now {getattr(config, name)!r}"
               for name in TrainConfig.STATE_FIELDS
               if getattr(saved, name) != getattr(config, name)]
    if changed:
        raise UserError(f"--workdir={config.workdir} holds a run with other settings "
                        f"({'; '.join(changed)}); use a new --workdir or the old values")


def build_model(config, num_examples):
    """The AlternatingBackprop model for config (CooperativeLearning with --descriptor),
    compiled with Adam, for the strategy in scope."""
    jit_step, jit_langevin = distribute.compile_options(tf.distribute.get_strategy(),
                                                        config.jit_compile)
    abp = dict(langevin_steps=config.langevin_steps,
               langevin_step_size=config.langevin_step_size, sigma=config.sigma,
               seed=config.seed, jit_langevin=jit_langevin)
    if config.descriptor:
        # CooperativeLearning builds its descriptor optimizer's slots itself, so that a
        # checkpoint restores them eagerly like the generator's below.
        model = CooperativeLearning(
            Generator(config.generator_config()),
            Descriptor(config.descriptor_config(), image_size=config.image_size),
            num_examples, descriptor_optimizer=keras.optimizers.Adam(
                config.descriptor_learning_rate, beta_1=0.5),
            descriptor_steps=config.descriptor_steps,
            descriptor_step_size=config.descriptor_step_size,
            descriptor_reference=config.descriptor_reference,
            fresh_samples=config.descriptor_fresh_samples,
            data_weight=config.descriptor_data_weight, **abp)
    else:
        model = AlternatingBackprop(Generator(config.generator_config()), num_examples, **abp)
    # Cosine decay to a tenth: fast early progress, then a small rate to settle the kernels.
    # It is a function of the optimizer's step, so a resumed run continues the schedule.
    learning_rate = keras.optimizers.schedules.CosineDecay(
        config.learning_rate, decay_steps=config.train_steps, alpha=0.1)
    optimizer = keras.optimizers.Adam(learning_rate)
    if keras.mixed_precision.global_policy().name == "mixed_float16":
        # The loss sums ‖Y - g(z)‖² / 2σ² over pixels, so its gradients are large, not
        # small: Keras' default loss scale 2^15 overflows float16 and skips the first
        # dozen steps. Start unscaled; dynamic scaling still raises it when it can.
        optimizer = keras.optimizers.LossScaleOptimizer(optimizer, initial_scale=1.0)
    model.compile(optimizer=optimizer, jit_compile=jit_step)
    # Build the optimizer's slots now, so that a checkpoint restores them eagerly.
    model.optimizer.build(model.generator.trainable_weights)
    return model


def checkpoint_for(model):
    """The tf.train.Checkpoint that holds everything a resumed run needs."""
    epoch = tf.Variable(0, dtype=tf.int64, trainable=False, name="epoch")
    return tf.train.Checkpoint(model=model, optimizer=model.optimizer, epoch=epoch), epoch


def restore(config, num_examples=None):
    """Rebuilds the model of `config.workdir` from its latest checkpoint.

    Returns (model, checkpoint path). Raises UserError if there is none.
    """
    manager_dir = os.path.join(config.workdir, "checkpoints")
    path = tf.train.latest_checkpoint(manager_dir)
    if path is None:
        raise UserError(f"no checkpoint in {manager_dir}; train first with "
                        f"python train.py --workdir={config.workdir}")
    model = build_model(config, num_examples or config.num_images)
    checkpoint, _ = checkpoint_for(model)
    checkpoint.restore(path).expect_partial()
    return model, path


def write_flags(config):
    """Writes workdir/config.json and workdir/flags.txt, a flagfile that reproduces config."""
    os.makedirs(config.workdir, exist_ok=True)
    write_atomically(os.path.join(config.workdir, "config.json"),
                     json.dumps(dataclasses.asdict(config), indent=2))
    write_atomically(os.path.join(config.workdir, "flags.txt"), "".join(
        f"--{k}={','.join(map(str, v)) if isinstance(v, tuple) else v}\n"
        for k, v in dataclasses.asdict(config).items() if v is not None))


def train(config: TrainConfig):
    """Trains (or resumes) the run described by config; returns the Keras History."""
    check_resumable(config)
    # First TensorFlow work of the process: devices and collectives are fixed after it.
    strategy = distribute.make_strategy(config.strategy, config.cpu_devices)
    replicas = strategy.num_replicas_in_sync
    if config.batch_size % replicas:
        raise UserError(f"--batch_size={config.batch_size} does not split evenly over "
                        f"{replicas} replicas; use a multiple of {replicas}")
    distribute.set_precision(config.mixed_precision)
    data = pipeline.load(config.dataset, image_size=config.image_size,
                         num_images=config.num_images, data_dir=config.data_dir,
                         seed=config.seed)
    dataset = pipeline.train_dataset(data, config.batch_size, seed=config.seed)
    # Every worker runs the same seeded shuffle and keeps its own share of each batch.
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = (
        tf.data.experimental.AutoShardPolicy.DATA)
    dataset = dataset.with_options(options)
    steps_per_epoch = data.num_examples // config.batch_size
    epochs = math.ceil(config.train_steps / steps_per_epoch)

    with strategy.scope():
        model = build_model(config, data.num_examples)
    # Outside the scope: the epoch counter is host-side state, read as a Python int.
    checkpoint, epoch = checkpoint_for(model)
    chief = distribute.is_chief(strategy)
    save_dir = distribute.checkpoint_dir(config.workdir, strategy)
    manager = tf.train.CheckpointManager(checkpoint, save_dir,
                                         max_to_keep=config.keep_checkpoints)
    # Every worker resumes from the chief's checkpoints.
    latest = tf.train.latest_checkpoint(os.path.join(config.workdir, "checkpoints"))
    if latest:
        checkpoint.restore(latest).assert_existing_objects_matched()
        logging.info("Resumed from %s (epoch %d)", latest, int(epoch))
    else:
        model.generator.initialize_output_bias(
            data.images.mean(axis=(0, 1, 2)) / 127.5 - 1.0)
    initial_epoch = int(epoch)

    if not chief:  # the other workers save to save_dir only, and log nothing
        callbacks = [DivergenceGuard(), Checkpointing(manager, epoch, config.checkpoint_every)]
    else:
        write_flags(config)

        images = ImageSummaries(model, data, os.path.join(config.workdir, "tb", "images"),
                                num_images=config.num_summary_images, seed=config.seed)
        images.extra.append(explanation_summaries(model, seed=config.seed))
        callbacks = [
            DivergenceGuard(),
            ResumableTensorBoard(int(model.optimizer.iterations.numpy()),
                                 log_dir=os.path.join(config.workdir, "tb"),
                                 update_freq=config.log_every, write_graph=False),
            Checkpointing(manager, epoch, config.checkpoint_every, on_save=[images]),
            HParamsSummary(config, os.path.join(config.workdir, "tb")),
        ]
    try:
        if initial_epoch >= epochs:
            logging.info("Already trained for %d epochs; nothing to do", initial_epoch)
            return None
        return model.fit(dataset, epochs=epochs, initial_epoch=initial_epoch,
                         callbacks=callbacks, verbose=1 if sys.stdout.isatty() else 2)
    finally:
        distribute.cleanup(save_dir, strategy)


class ResumableTensorBoard(keras.callbacks.TensorBoard):
    """Keras' TensorBoard callback, counting batches from the restored optimizer step so a
    resumed run continues its curves instead of restarting them at 0."""

    def __init__(self, initial_step, **kwargs):
        super().__init__(**kwargs)
        self.initial_step = initial_step

    def on_train_begin(self, logs=None):
        super().on_train_begin(logs)
        self._global_train_batch = self.initial_step


__all__ = ["train", "restore", "build_model", "read_config", "UserError"]
