"""A training run: data, model, checkpoints and TensorBoard around `model.fit`.

workdir/
  config.json        the TrainConfig of the run and how many images it trained on
                     (`run.open_run` reads it back for explain, evaluate and export)
  flags.txt          the same as a flagfile: `python train.py --flagfile=workdir/flags.txt`
  checkpoints/       tf.train checkpoints every --checkpoint_every epochs: generator,
                     chains, optimizer, epoch, RNG state, the prior (fitted every
                     --figures_every epochs; ckpt-N.prior_stale marks a checkpoint
                     written between two fits, run.mark_prior_stale)
  tb/train/          scalars: batch_* every --log_every steps, epoch_* (callbacks.TrainScalars)
  tb/images/         image grids and figures, every --figures_every epochs and at the end

With several workers (--strategy=multi_worker) only the chief writes here (distribute.py).
"""

import math
import os

import keras
import tensorflow as tf
from absl import logging

from sparse_gen_tf.training import distribute, run
from sparse_gen_tf.training.callbacks import (Checkpointing, DivergenceGuard,
                                              HParamsSummary, Progress, TrainScalars)
from sparse_gen_tf.training.summaries import (ImageSummaries, explanation_summaries,
                                              grammar_summaries)
from sparse_gen_tf.training.config import (TrainConfig, flag_values, state_settings,
                                           topk_warmup_problem)
from sparse_gen_tf.data import pipeline
from sparse_gen_tf.model import blocks
from sparse_gen_tf.errors import UserError


def check_resumable(config):
    """Raises UserError if workdir holds a run whose state shapes differ from config's."""
    saved = run.read_config(config.workdir)
    if saved is None:
        return
    before, now = flag_values(saved), flag_values(config)
    # A descriptor's fields are compared only when both runs have one.
    changed = [f"--{s.flag} was {before[s.flag]!r}, now {now[s.flag]!r}"
               for s in state_settings()
               if s.flag in before and s.flag in now and before[s.flag] != now[s.flag]]
    if changed:
        raise UserError(f"--workdir={config.workdir} holds a run with other settings "
                        f"({'; '.join(changed)}); use a new --workdir or the old values")


def train(config: TrainConfig):
    """Trains (or resumes) the run described by config; returns the Keras History."""
    check_resumable(config)
    problem = topk_warmup_problem(config.topk_warmup)
    if problem:
        raise UserError(problem)
    # First TensorFlow work of the process: devices and collectives are fixed after it.
    strategy = distribute.make_strategy(config.strategy, config.cpu_devices)
    replicas = strategy.num_replicas_in_sync
    if config.batch_size % replicas:
        raise UserError(f"--batch_size={config.batch_size} does not split evenly over "
                        f"{replicas} replicas; use a multiple of {replicas}")
    distribute.set_precision(config.mixed_precision)
    # Keras' initialisers draw from the global seed: without this the same --seed would
    # start from other weights in every process, and two runs could not be compared.
    keras.utils.set_random_seed(config.seed)
    data = pipeline.load_for(config)
    # Endless, with steps_per_epoch below: one iterator for the whole run.
    dataset = pipeline.train_dataset(data, config.batch_size, seed=config.seed, repeat=True)
    # Every worker runs the same seeded shuffle and keeps its own share of each batch.
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = (
        tf.data.experimental.AutoShardPolicy.DATA)
    dataset = dataset.with_options(options)
    steps_per_epoch = data.num_examples // config.batch_size
    epochs = math.ceil(config.train_steps / steps_per_epoch)

    # Every worker resumes from the chief's latest checkpoint, if there is one.
    latest = run.latest_checkpoint(config.workdir)
    model, checkpoint = run.resume(config, data.num_examples, strategy=strategy, path=latest)
    epoch = checkpoint.epoch
    chief = distribute.is_chief(strategy)
    save_dir = distribute.checkpoint_dir(config.workdir, strategy)
    manager = tf.train.CheckpointManager(checkpoint, save_dir,
                                         max_to_keep=config.keep_checkpoints)
    if latest:
        logging.info("Resumed from %s (epoch %d)", latest, int(epoch))
    else:
        model.generator.initialize_output_bias(
            data.images.mean(axis=(0, 1, 2)) / 127.5 - 1.0)
    initial_epoch = int(epoch)
    # The grammar prior's fit checks its configurations against training images.
    model.prior_images = pipeline.to_model_range(
        data.images[:blocks.MAX_REFERENCE]).numpy()

    # Every worker fits the prior at the same epochs, so that their checkpoints agree.
    saving = dict(every=config.checkpoint_every, figures_every=config.figures_every,
                  stale_prior=run.has_prior_to_fit(config))
    if not chief:  # the other workers save to save_dir only, and log nothing
        callbacks = [DivergenceGuard(), Checkpointing(manager, epoch, **saving)]
    else:
        run.write_config(config, data.num_examples)

        images = ImageSummaries(model, data, os.path.join(config.workdir, "tb", "images"),
                                num_images=config.num_summary_images, seed=config.seed)
        images.extra.append(explanation_summaries(model, seed=config.seed))
        if data.ground_truth is not None:  # parts: score samples against the grammar
            images.extra.append(grammar_summaries(model, data.ground_truth,
                                                  seed=config.seed))
        callbacks = [
            DivergenceGuard(),
            TrainScalars(os.path.join(config.workdir, "tb", "train"), config.log_every),
            Checkpointing(manager, epoch, on_figures=[images], **saving),
            HParamsSummary(config, os.path.join(config.workdir, "tb")),
            Progress(),
        ]
    try:
        if initial_epoch >= epochs:
            logging.info("Already trained for %d epochs; nothing to do", initial_epoch)
            return None
        # verbose=0: `Progress` prints a short line instead of Keras' bar of every
        # metric; shuffle=False: the dataset is shuffled already (pipeline.train_dataset).
        return model.fit(dataset, epochs=epochs, initial_epoch=initial_epoch,
                         steps_per_epoch=steps_per_epoch, callbacks=callbacks, verbose=0,
                         shuffle=False)
    finally:
        distribute.cleanup(save_dir, strategy)


__all__ = ["train", "UserError"]
