"""A latent-space energy-based prior learned jointly with the generator (Pang et al., 2020).

    python benchmarks/latent_ebm.py --workdir=runs/parts_ebm [--train_steps=3008]

The model of "Learning Latent Space Energy-Based Prior Model" (Pang, Han, Nijkamp, Zhu,
Wu, NeurIPS 2020) on the sparse generator, trained by alternating back-propagation with
the default parts settings:

    p(z) = exp(f(z)) N(z; 0, I) / Z,   f an MLP d -> 200 -> 200 -> 1 (LeakyReLU 0.2)

Each train step (1) runs the persistent chains' posterior Langevin (Eq. 10) with log p(z)
= f(z) - ‖z‖²/2 in place of the paper's -‖z‖²/2, (2) takes the generator step of Eq. (12)
as `AlternatingBackprop` does, and (3) takes one step on f along
E_posterior[∇f(z)] - E_prior[∇f(z)], the prior samples drawn by short-run Langevin
(--prior_steps of --prior_step_size) from N(0, I). Not part of the package: it scores what
the joint prior gives against the grammar (benchmarks/sampling.py's rows) and prints a
markdown table: samples of the learned prior, N(0, I) through the same generator, the
grammar prior fitted to its chains, and the chains.
"""

import os
import sys

import keras
import numpy as np
import tensorflow as tf
from absl import app, flags

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from sparse_gen_tf.data import pipeline
from sparse_gen_tf.explanation import parts_scores
from sparse_gen_tf.learning.abp import AlternatingBackprop
from sparse_gen_tf.model import prior as prior_lib
from sparse_gen_tf.model.generator import Generator
from sparse_gen_tf.training.config import TrainConfig

flags.DEFINE_string("workdir", "runs/parts_ebm", "Where the trained weights go.")
flags.DEFINE_integer("train_steps", TrainConfig.train_steps, "Generator steps.")
flags.DEFINE_integer("prior_steps", 60, "Short-run Langevin steps of a prior sample.")
flags.DEFINE_float("prior_step_size", 0.4, "Their step size s (z += s²/2 ∇ + s ε).")
flags.DEFINE_float("energy_learning_rate", 2e-5, "Adam (β1 = 0.5) on f, as Pang et al.")
flags.DEFINE_integer("num_samples", 512, "Samples per row of the table.")
FLAGS = flags.FLAGS


def energy_mlp(d):
    return keras.Sequential([keras.Input((d,)), keras.layers.Dense(200),
                             keras.layers.LeakyReLU(0.2), keras.layers.Dense(200),
                             keras.layers.LeakyReLU(0.2), keras.layers.Dense(1)],
                            name="energy")


class LatentEBMBackprop(AlternatingBackprop):
    """`AlternatingBackprop` with the learned prior exp(f(z)) N(0, I) (module doc)."""

    def __init__(self, generator, num_examples, *, prior_steps, prior_step_size,
                 energy_learning_rate, **kwargs):
        super().__init__(generator, num_examples, prior="normal", **kwargs)
        d = generator.config.latent_dim
        self.energy = energy_mlp(d)
        self.prior_steps, self.prior_step_size = int(prior_steps), float(prior_step_size)
        self.energy_optimizer = keras.optimizers.Adam(energy_learning_rate, beta_1=0.5)
        self.energy_optimizer.build(self.energy.trainable_weights)
        self.trackers["energy_gap"] = keras.metrics.Mean(name="energy_gap")

    def log_prior_grad(self, z):
        with tf.GradientTape() as tape:
            tape.watch(z)
            log_p = tf.reduce_sum(self.energy(z)) - 0.5 * tf.reduce_sum(tf.square(z))
        return tape.gradient(log_p, z)

    def sample_prior(self, n, seed):
        """Short-run Langevin from N(0, I) on the learned prior: z [n, d]."""
        d = self.generator.config.latent_dim
        noise = tf.random.stateless_normal([self.prior_steps + 1, n, d], seed)
        z, s = noise[0], self.prior_step_size
        for t in range(self.prior_steps):
            z = z + 0.5 * s ** 2 * self.log_prior_grad(z) + s * noise[t + 1]
        return z

    def infer(self, z, images, observed=None):
        """Posterior Langevin (Eq. 10) with log p(z) = f(z) - ‖z‖²/2."""
        seed = tf.cast(self.seed_generator.next(), tf.int32)
        squared_error = self.generator.squared_error_fn(images)
        noise = tf.random.stateless_normal(
            tf.concat([[self.langevin.steps], tf.shape(z)], 0), seed)
        delta, sigma = self.langevin.step_size, self.langevin.sigma
        for t in range(self.langevin.steps):
            with tf.GradientTape() as tape:
                tape.watch(z)
                log_likelihood = -tf.reduce_sum(squared_error(z)) / (2.0 * sigma ** 2)
            grad = tape.gradient(log_likelihood, z) + self.log_prior_grad(z)
            z = z + 0.5 * delta ** 2 * grad + delta * noise[t]
        return z

    def train_step(self, data):
        logs = super().train_step(data)  # posterior (with f), chains, generator step
        ids, images, _ = keras.utils.unpack_x_y_sample_weight(data)
        positive = tf.gather(self.chains.value, tf.cast(ids, tf.int32))
        seed = tf.cast(self.seed_generator.next(), tf.int32)
        negative = tf.stop_gradient(self.sample_prior(tf.shape(positive)[0], seed))
        with tf.GradientTape() as tape:
            gap = tf.reduce_mean(self.energy(negative)) - tf.reduce_mean(self.energy(positive))
        self.energy_optimizer.apply(tape.gradient(gap, self.energy.trainable_weights),
                                    self.energy.trainable_weights)
        self.trackers["energy_gap"].update_state(gap)
        return {**logs, "energy_gap": self.trackers["energy_gap"].result()}


def main(argv):
    del argv
    config = TrainConfig(workdir=FLAGS.workdir, train_steps=FLAGS.train_steps)
    keras.utils.set_random_seed(config.seed)
    data = pipeline.load_for(config)
    model = LatentEBMBackprop(
        Generator(config.generator), data.num_examples, langevin=config.langevin,
        seed=config.seed, prior_steps=FLAGS.prior_steps,
        prior_step_size=FLAGS.prior_step_size,
        energy_learning_rate=FLAGS.energy_learning_rate)
    model.generator.initialize_output_bias(data.images.mean(axis=(0, 1, 2)) / 127.5 - 1.0)
    model.compile(optimizer=keras.optimizers.Adam(keras.optimizers.schedules.CosineDecay(
        config.learning_rate, decay_steps=config.train_steps, alpha=0.1)), jit_compile=True)
    steps_per_epoch = data.num_examples // config.batch_size
    model.fit(pipeline.train_dataset(data, config.batch_size, seed=config.seed),
              epochs=-(-config.train_steps // steps_per_epoch), verbose=2)
    os.makedirs(FLAGS.workdir, exist_ok=True)
    model.save_weights(os.path.join(FLAGS.workdir, "latent_ebm.weights.h5"))

    generator, n = model.generator, FLAGS.num_samples
    chains = model.chains.numpy()
    grammar = prior_lib.GrammarPrior(generator.config)
    grammar.fit(generator, chains, seed=config.seed)
    seeds = prior_lib.sample_seeds(n, 0)
    z = np.concatenate([model.sample_prior(128, tf.constant([0, i], tf.int32)).numpy()
                        for i in range(-(-n // 128))])[:n]
    rows = [("learned prior exp(f(z)) N(0, I), short-run samples", generator(z)),
            ("N(0, I), same generator", prior_lib.NormalPrior(
                generator.config).sample(generator, seeds)["image"]),
            ("grammar prior fitted to its chains", grammar.sample(generator, seeds)["image"]),
            ("its persistent chains (ceiling)", generator(chains[:n]))]
    print(f"Latent EBM prior learned jointly, {int(model.optimizer.iterations.numpy())} "
          f"steps; ‖z‖ of its prior samples {np.linalg.norm(z, axis=1).mean():.1f}, of the "
          f"chains {np.linalg.norm(chains, axis=1).mean():.1f}; {n} images per row.\n")
    print("| samples from | legal quadrants | clean cells |\n|---|---|---|")
    for label, images in rows:
        validity, clean = parts_scores.grammar_validity(np.asarray(images), data.ground_truth)
        print(f"| {label} | {validity:.3f} | {clean:.3f} |", flush=True)


if __name__ == "__main__":
    app.run(main)
