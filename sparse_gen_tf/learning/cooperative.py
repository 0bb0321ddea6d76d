"""Cooperative learning (§2.4): the descriptor revises the generator's output, the
generator learns from the revision, the descriptor learns by maximum likelihood.

The paper replaces Y_i by Ỹ_i, "sampled from the descriptor", in Eq. (12) and leaves the
rest open. Each `train_step` on a batch (example ids, images Y_obs) does exactly:

  1. Inference (as in ABP): z_i <- L Langevin steps of Eq. (10) on p(z | Y_i; θ) from the
     example's persistent chain; z_i is stored back into the chain.
  2. [--descriptor_fresh_samples] z_f ~ N(0, I), one per example of the batch.
     Let z = [z_i; z_f] (only z_i without the flag), n = its length.
  3. Revision: Ŷ = g(z; θ), then Ỹ = T Langevin steps of the descriptor (Eq. 13) from Ŷ,
     Y <- Y + δ²/2 (∂f/∂Y - Y/s²) + δE, with φ as it is before this step's update.
  4. Descriptor update (its own Adam), maximum likelihood of Eq. (13), whose gradient is
     E_data[∂f/∂φ] - E_φ[∂f/∂φ] with Ỹ as the model's samples: descend
         mean_batch f(Ỹ; φ) - mean_batch f(Y_obs; φ)
     (the negative phase averages over all n revised images, fresh ones included).
  5. Generator update (the model's Adam), Eq. (12) with the target T in place of Y:
     descend
         mean_n ‖T - g(z; θ)‖² / (2σ²),   T held fixed (stop-gradient),
     where T_i = (1 - w) Ỹ_i + w Y_i for the examples (w = --descriptor_data_weight) and
     T = Ỹ for the fresh samples, each regressed on the z it came from (z_i, z_f).
     w = 0 is the paper's "Ỹ_i replaces Y_i"; train.py's default is w = 0.5 (see below).

Steps 4 and 5 only read Ỹ, Y_obs and z, which are fixed by then, so their order does not
matter; both use the parameters from before the step (CoopNets updates D, then G, the same).

Choices the paper leaves open, and why (the measurements behind them are in
docs/descriptor.md):
  - z is inferred from Y_obs, not re-inferred from Ỹ: Ỹ starts at g(z_i) and the
    descriptor's small steps (δ = 0.002) move it a little, so z_i is already a posterior
    sample for Ỹ_i; re-inferring would double the cost for nothing the generator can use.
    The chains thus stay tied to the data, as in ABP.
  - The revision starts from g(z_i), the generator's reconstruction, not from Y_obs:
    starting at the data would teach the generator the data plus a descriptor-made
    perturbation, and the descriptor's negative phase would then sit on the data itself.
  - The data stay in the generator's target (--descriptor_data_weight, default 0.5). With
    w = 0 the generator sees the data only through z_i and the descriptor: g(z_i) is
    pulled towards Ỹ_i, a perturbation of itself, so when the descriptor is still weak
    the generator gets no pull towards the data at all, and the reference term -Y/s²
    shrinks every revision towards grey by the factor (1 - δ²/(2s²))^T. On the parts data
    that run collapses to grey, while w = 0.5 reconstructs about as well as ABP. Since
    ‖T - g‖² = (1 - w)‖Ỹ - g‖² + w‖Y - g‖² - w(1 - w)‖Ỹ - Y‖², a constant in θ, this
    is ABP's Eq. (12) and the paper's revision-driven one, mixed in proportion w.
  - The reference s (--descriptor_reference) defaults to 1, not CoopNets' 0.016: at 0.016
    the term -Y/s² dominates the revision until f has learned to cancel it; at s = 1 it
    is nearly flat at the data's scale and f alone moves Ỹ, which gives sharper samples
    for a slightly lower reconstruction PSNR.
  - Ỹ is not clipped to [-1, 1]: Eq. (13) lives on R^D and tanh keeps g in range anyway.

Stability: as f sharpens its curvature can outgrow δ, and the revision then diverges with
every metric still finite (it did on the parts data with CoopNets' descriptor learning
rate). `fit` therefore adds a `RevisionGuard`, which stops the run with one line and
keeps the last good checkpoint.
"""

import math

import keras
import tensorflow as tf

from sparse_gen_tf.learning.abp import AlternatingBackprop
from sparse_gen_tf.model.descriptor import descriptor_langevin, energy
from sparse_gen_tf.errors import DivergenceError

# The descriptor's Langevin loop as its own XLA computation, for `jit_langevin` (abp.py).
_compiled_descriptor_langevin = tf.function(descriptor_langevin, jit_compile=True)

# Metrics added to ABP's (all means over the step's examples, reset every epoch).
COOPERATIVE_METRICS = (
    "descriptor_loss",   # mean f(Ỹ) - mean f(Y_obs); the descriptor descends it
    "f_observed",        # mean f(Y_obs)
    "f_revised",         # mean f(Ỹ) over every revised image
    "revision",          # ‖Ỹ - g(z)‖ per image (L2 over all pixels)
    "energy_before",     # E(g(z)) = -f + ‖·‖²/(2s²), before the descriptor's Langevin
    "energy_after",      # E(Ỹ), after it
)


class CooperativeLearning(AlternatingBackprop):
    """ABP whose generator learns from descriptor-revised images (§2.4).

    Args:
      generator: a `Generator`.
      descriptor: a `Descriptor`, f(Y; φ) of Eq. (13). Its `DescriptorConfig` also gives
        T, δ and s of the revision (steps, step_size, reference), whether fresh samples
        join (fresh_samples, step 2 of the module doc) and w of step 5 (data_weight; 0
        is the paper's pure replacement of Y_i by Ỹ_i).
      num_examples: size of the training set (one persistent chain per example).
      descriptor_optimizer: the descriptor's own optimizer (the model's `compile`
        optimizer updates the generator); default Adam(the config's learning_rate,
        β1 = 0.5), constant.
      descriptor_noise: False drops the δ·E term of the revision (for tests).
      **kwargs: AlternatingBackprop's (langevin, seed, jit_langevin...).
    Train data: (ids int32 [batch], images float32 [batch, H, W, 3] in [-1, 1]).
    """

    def __init__(self, generator, descriptor, num_examples, *, descriptor_optimizer=None,
                 descriptor_noise=True, **kwargs):
        super().__init__(generator, num_examples, **kwargs)
        self.descriptor = descriptor
        self.descriptor_noise = bool(descriptor_noise)
        self.descriptor_optimizer = descriptor_optimizer or keras.optimizers.Adam(
            descriptor.config.learning_rate, beta_1=0.5)
        # Build the slots now: inside the compiled step they could not be created, and a
        # checkpoint restores only variables that exist.
        self.descriptor_optimizer.build(self.descriptor.trainable_weights)
        for name in COOPERATIVE_METRICS:
            self.trackers[name] = keras.metrics.Mean(name=name)

    def fit(self, *args, callbacks=None, **kwargs):
        """keras.Model.fit, plus a `RevisionGuard` (a diverged revision loses no NaN that
        the usual guards would see, so it needs its own)."""
        return super().fit(*args, callbacks=[*(callbacks or []), RevisionGuard()], **kwargs)

    def next_seed(self):
        """A fresh int32 [2] stateless seed, distinct per replica (as in `infer`)."""
        seed = tf.cast(self.seed_generator.next(), tf.int32)
        replica = tf.distribute.get_replica_context()
        if replica is not None and replica.num_replicas_in_sync > 1:
            seed = tf.random.experimental.stateless_fold_in(
                seed, replica.replica_id_in_sync_group)
        return seed

    def revise(self, images, seed=None):
        """The descriptor's Langevin revision Ỹ of images [batch, H, W, 3] (step 3)."""
        run = _compiled_descriptor_langevin if self.jit_langevin else descriptor_langevin
        return run(
            self.descriptor, tf.stop_gradient(images),
            self.next_seed() if seed is None else seed, steps=self.descriptor.config.steps,
            step_size=self.descriptor.config.step_size,
            reference=self.descriptor.config.reference, noise=self.descriptor_noise)

    def train_step(self, data):
        ids, images, _ = keras.utils.unpack_x_y_sample_weight(data)
        ids = tf.cast(ids, tf.int32)
        batch = tf.shape(ids)[0]
        # 1. Posterior z for the examples, warm-started from and stored into the chains.
        z_examples = self.infer(tf.gather(self.chains.value, ids), images)
        self.update_chains(ids, z_examples)
        self.learn_encoder(images)
        z = z_examples
        settings = self.descriptor.config
        if settings.fresh_samples:
            # 2. Prior draws, as CoopNets' generator proposes.
            z = tf.concat([z, tf.random.stateless_normal(tf.shape(z_examples),
                                                         self.next_seed())], axis=0)
        # 3. The descriptor revises the generator's proposals.
        # Under a mixed policy g computes in 16 bits; the revision and losses stay float32.
        generated = tf.cast(self.generator(z), images.dtype)
        revised = tf.stop_gradient(self.revise(generated))
        # Energies under the φ that did the revision, i.e. before step 4 moves it.
        energy_before = energy(self.descriptor, generated, settings.reference)
        energy_after = energy(self.descriptor, revised, settings.reference)
        replicas = tf.distribute.get_strategy().num_replicas_in_sync

        # 4. Descriptor: maximum likelihood, positive phase on data, negative on Ỹ.
        with tf.GradientTape() as tape:
            f_observed = self.descriptor(images)
            f_revised = self.descriptor(revised)
            descriptor_loss = tf.reduce_mean(f_revised) - tf.reduce_mean(f_observed)
            # Keras sums gradients across replicas, so each replica's share is 1/n.
            scaled_loss = descriptor_loss / replicas
        weights = self.descriptor.trainable_weights
        self.descriptor_optimizer.apply(tape.gradient(scaled_loss, weights), weights)

        # 5. Generator: Eq. (12) with Ỹ for Y, each Ỹ regressed on the z it came from.
        target = revised
        if settings.data_weight:
            # Step 5's T_i = (1 - w) Ỹ_i + w Y_i for the examples; fresh samples have no
            # data and keep Ỹ.
            examples = (1.0 - settings.data_weight) * revised[:batch] + \
                settings.data_weight * images
            target = tf.concat([examples, revised[batch:]], axis=0)
        image, loss, activations = self.generator_step(z, target)

        # ABP's metrics for the examples (g(z_i) as the reconstruction of the data), and
        # the descriptor's.
        self.update_metrics(
            z_examples, images, image[:batch], loss,
            [activation[:batch] for activation in activations],
            descriptor_loss=descriptor_loss, f_observed=f_observed, f_revised=f_revised,
            revision=tf.norm(tf.reshape(revised - generated, [tf.shape(z)[0], -1]),
                             axis=-1),
            energy_before=energy_before, energy_after=energy_after)
        return self.step_logs()  # shaped for Keras' reduction over workers (cross_replica.py)


class RevisionGuard(keras.callbacks.Callback):
    """Stops training with DivergenceError once the descriptor's Langevin diverges.

    As f(Y; φ) sharpens, its curvature can outgrow the fixed step δ; the revision then
    climbs the energy instead of descending it and runs away by orders of magnitude
    while every metric stays finite, and the generator, regressing on Ỹ, is ruined
    within an epoch.
    No sensible revision moves an image in [-1, 1] by more than half that range, so an
    RMS revision per pixel above `max_rms` (running mean of the epoch) is divergence.
    Runs on batch end, before any checkpoint of the epoch is written.
    """

    def __init__(self, max_rms=1.0):
        super().__init__()
        self.max_rms = max_rms

    def on_train_batch_end(self, batch, logs=None):
        if not logs or "revision" not in logs:
            return
        size = self.model.generator.config.image_size
        rms = float(logs["revision"]) / math.sqrt(size * size * 3)
        if not rms <= self.max_rms:  # also catches NaN
            raise DivergenceError(
                f"the descriptor's Langevin diverged (RMS revision {rms:.3g} per pixel, "
                f"energy {float(logs.get('energy_before', math.nan)):.3g} -> "
                f"{float(logs.get('energy_after', math.nan)):.3g}) at step "
                f"{int(self.model.optimizer.iterations.numpy())}; lower "
                "--descriptor_step_size or "
                "--descriptor_learning_rate; the last good checkpoint is kept")


__all__ = ["CooperativeLearning", "COOPERATIVE_METRICS", "RevisionGuard"]
