"""Alternating back-propagation (§2.3): Langevin inference of z, then a step on θ.

Each `train_step` on a batch (example ids, images Y):
  1. Inferential back-propagation: start from the example's persistent chain z_i and run
     L Langevin steps on p(z | Y_i; θ) (Eq. 10-11).
  2. Store z_i back into the chain, indexed by example id, so the next epoch warm-starts.
  3. Learning back-propagation: one optimizer step along the Monte Carlo gradient
     of Eq. (12), (1/σ²)(Y_i - g(z_i)) ∂g(z_i)/∂θ, i.e. descend ‖Y - g(z)‖² / (2σ²).
  4. With an inference network q(z | Y) (train.py --encoder): one step of it towards
     the posterior modes under the new θ (learning/amortized.py).

Everything runs inside Keras' compiled train function (XLA when `jit_compile`), so
`fit`, callbacks, the progress bar and `tf.distribute` work as usual.
"""


import keras
import tensorflow as tf
from absl import logging

from sparse_gen_tf.learning import amortized, cross_replica, gradient_path
from sparse_gen_tf.learning.langevin import LangevinConfig, langevin
from sparse_gen_tf.model import prior as prior_lib


def psnr(mse):
    """PSNR in dB of images in [-1, 1] (peak-to-peak range 2) for a mean squared error."""
    return 10.0 * tf.math.log(4.0 / tf.maximum(mse, 1e-12)) / tf.math.log(10.0)


class DeadChannels(keras.metrics.Metric):
    """Number of channels of a sparse layer that no example selected since the last reset.

    Keras resets metrics at the start of every epoch, so this counts channels never
    selected in an epoch. update_state takes the layer's activation mask [batch, h, w, c].
    """

    def __init__(self, num_channels, name="dead_channels", **kwargs):
        super().__init__(name=name, **kwargs)
        self.num_channels = num_channels
        self.selected = self.add_variable(shape=(num_channels,), initializer="zeros",
                                          name="selected")

    def update_state(self, mask):
        self.selected.assign_add(tf.reduce_sum(tf.cast(mask, "float32"), axis=[0, 1, 2]))

    def result(self):
        return tf.reduce_sum(tf.cast(tf.equal(self.selected, 0.0), "float32"))

    def get_config(self):
        return {**super().get_config(), "num_channels": self.num_channels}


def topk_schedule(k, start, step, warmup_steps):
    """The K in force at an optimizer step (int or int64 tensor) of a warm-up: start at
    step 0, down in a straight line to k (Eq. 1's K) at warmup_steps and after it
    (rounded towards k). An int32 scalar tensor.

    k-sparse autoencoders (Makhzani & Frey, 2014) anneal their k the same way: with K
    units from the first step, the kernels that no example selects get no gradient and
    stay as they started, and the few selected ones must explain everything at once.
    """
    step = tf.minimum(tf.cast(step, tf.int64), warmup_steps)
    return tf.cast(k + (start - k) * (warmup_steps - step) // warmup_steps, tf.int32)


# The Langevin loop as its own XLA computation (AlternatingBackprop(jit_langevin=True)).
_compiled_langevin = tf.function(langevin, jit_compile=True)


class AlternatingBackprop(keras.Model):
    """The sparse generator together with its learning algorithm and persistent chains.

    Args:
      generator: a `Generator`.
      num_examples: size of the training set; one chain z_i per example id.
      langevin: a `LangevinConfig`, L, δ and σ of Eq. (10)-(11); default train.py's.
      langevin_noise: False drops the δ·E term (deterministic inference, for tests).
      seed: seeds the chains' initial draw and the Langevin noise.
      prior: where samples come from (`model.prior`: one of `prior.PRIORS`); a grammar
        prior's state is fitted from the chains by `fit_prior`, every --figures_every epochs.
      jit_langevin: compile the Langevin loop alone with XLA, for when the whole train step
        cannot be (several replicas; `distribute.compile_options`).
      sparse_kernels: whether the Langevin gradient may come from the compiled sparse
        kernels (`Generator.langevin_gradient_fn`): None where they pay, True wherever
        they run, False never; `compile` decides (`gradient_path.choose`).
      encoder: an `Encoder`, the inference network q(z | Y), trained in every step on the
        batch's images (`learn_encoder`, with its own Adam); None trains none.
        `encoder` may also hold a network fitted after training (run.open_run sets it),
        which is then used, not trained.
      topk_warmup_steps, topk_warmup_start: for the first topk_warmup_steps optimizer
        steps each TopK keeps `topk_schedule` units, from topk_warmup_start (ints, top
        first; default each whole map) down to its K; 0 keeps K from the start. The K
        in force follows `optimizer.iterations`, so Langevin, the θ step, the chains and
        the prior's fits all see the same K, and a resumed run continues the schedule.
    Train data: (ids int32 [batch], images float32 [batch, H, W, 3] in [-1, 1]).
    """

    def __init__(self, generator, num_examples, *, langevin=None, langevin_noise=True,
                 seed=0, jit_langevin=False, prior=prior_lib.DEFAULT_PRIOR,
                 sparse_kernels=None, encoder=None, topk_warmup_steps=0,
                 topk_warmup_start=None, **kwargs):
        super().__init__(**kwargs)
        if int(topk_warmup_steps) < 0:
            raise ValueError(f"topk_warmup_steps must be >= 0, got {topk_warmup_steps}")
        self.topk_warmup_steps = int(topk_warmup_steps)
        self.topk_warmup_start = topk_warmup_start
        self.jit_langevin = bool(jit_langevin)
        self.sparse_kernels = None if sparse_kernels is None else bool(sparse_kernels)
        self.gradient_path = gradient_path.PLAIN  # compile chooses
        self.generator = generator
        self.num_examples = int(num_examples)
        self.langevin = langevin or LangevinConfig()
        self.langevin_noise = bool(langevin_noise)
        latent_dim = generator.config.latent_dim
        # Chains start from the prior, as a fresh Langevin chain would.
        self.chains = self.add_weight(
            name="chains", shape=(self.num_examples, latent_dim), trainable=False,
            initializer=keras.initializers.RandomNormal(seed=seed))
        self.seed_generator = keras.random.SeedGenerator(seed, name="langevin_seed")
        self.seed = int(seed)
        self.prior = prior_lib.make(prior, generator.config)
        # The first training images in [-1, 1], in the chains' order, for the grammar
        # prior's check of its configurations (`fit_prior`); set by the trainer.
        self.prior_images = None
        self.trackers = {name: keras.metrics.Mean(name=name) for name in (
            "loss", "mse", "psnr", "log_likelihood", "log_prior", "z_norm")}
        for i, c in enumerate(generator.config.channels, 1):
            self.trackers[f"nonzero_{i}"] = keras.metrics.Mean(name=f"nonzero_{i}")
            self.trackers[f"dead_channels_{i}"] = DeadChannels(c, name=f"dead_channels_{i}")
        self.encoder, self.encoder_optimizer = encoder, None
        if encoder is not None:
            self.encoder_optimizer = keras.optimizers.Adam(encoder.config.learning_rate)
            # Slots now: the compiled step cannot create them, and a checkpoint restores
            # only variables that exist.
            self.encoder_optimizer.build(encoder.trainable_weights)
            self.trackers["encoder_loss"] = keras.metrics.Mean(name="encoder_loss")
        # All state exists now. Under a tf.distribute strategy Keras would otherwise "build"
        # the model before fit by calling it on the ids of a batch, which are not a z.
        self.built = True

    @property
    def metrics(self):
        return list(self.trackers.values())

    def compile(self, *args, **kwargs):
        """keras.Model.compile; also sets the Langevin loop's gradient path for this
        host (`gradient_path.choose`, kept as `gradient_path`): the compiled sparse
        kernels or the dense step, and how TopK finds its thresholds."""
        super().compile(*args, **kwargs)
        dense_only = (None if type(self).train_step is AlternatingBackprop.train_step
                      else f"{type(self).__name__} keeps the dense XLA step")
        self.gradient_path = gradient_path.choose(
            self.generator, xla=self.jit_compile is True or self.jit_langevin,
            sparse_kernels=self.sparse_kernels, dense_only=dense_only)
        self.gradient_path.apply(self.generator)
        self._schedule_topk()
        log = (logging.warning if self.sparse_kernels and not self.uses_sparse_kernels
               else logging.info)
        log("Langevin gradient: %s.", self.gradient_path.reason)
        if not self.uses_sparse_kernels:
            return
        # The kernels are TensorFlow ops, which XLA cannot compile: the step runs as a
        # graph, its Langevin loop calls small XLA functions between the kernels, and its
        # θ step with the metrics is one XLA function (`_learn`).
        self.jit_compile = False
        # Its variables must exist before the XLA function that updates them is traced.
        self.optimizer.build(self.generator.trainable_weights)
        self._compiled_learn = tf.function(self._learn, jit_compile=True)

    def _schedule_topk(self):
        """Puts each TopK under `topk_schedule` of the optimizer's step, when warming up.
        The K in force is read in the traced step, so the step is traced once."""
        if self.topk_warmup_steps <= 0:
            return
        shapes = self.generator.config.feature_map_shapes()
        for i, (topk, (h, w, c)) in enumerate(zip(self.generator.topks, shapes)):
            start = (h * w * c if self.topk_warmup_start is None
                     else min(h * w * c, self.topk_warmup_start[i]))
            topk.set_schedule(
                lambda k=topk.k, start=start: topk_schedule(
                    k, start, self.optimizer.iterations, self.topk_warmup_steps), start)

    @property
    def uses_sparse_kernels(self):
        """Whether the Langevin gradient runs through the compiled sparse kernels."""
        return self.gradient_path.sparse_kernels

    def call(self, z):
        return self.generator(z)

    def fit_prior(self):
        """Fits the prior's state to the persistent chains (`Prior.fit`): the distribution
        samples come from, ex post, for the generator as it is now. The checkpoint
        callback calls it every --figures_every epochs, just before that epoch's
        checkpoint, so that checkpoint's prior matches its generator; it runs on the
        host, a few seconds for thousands of chains."""
        # The grammar prior also checks its configurations against the training images.
        self.prior.fit(self.generator, self.chains.numpy(), seed=self.seed,
                       images=self.prior_images)

    def infer(self, z, images, observed=None):
        """Langevin posterior sampling (Eq. 10) from z [batch, d] for images; returns z."""
        seed = self.seed_generator.next()
        replica = tf.distribute.get_replica_context()
        if replica is not None and replica.num_replicas_in_sync > 1:
            # Replicas see the same seed state; fold in the replica id so that each
            # replica's chains get independent noise.
            seed = tf.random.experimental.stateless_fold_in(
                tf.cast(seed, tf.int32), replica.replica_id_in_sync_group)
        if self.uses_sparse_kernels:  # TensorFlow ops: the loop itself stays out of XLA
            run, kernels = langevin, dict(sparse_kernels=True)
        else:
            run, kernels = (_compiled_langevin if self.jit_langevin else langevin), {}
        return run(self.generator, z, images, seed, steps=self.langevin.steps,
                   step_size=self.langevin.step_size, sigma=self.langevin.sigma,
                   noise=self.langevin_noise, observed=observed, **kernels)

    def update_chains(self, ids, z):
        """Stores the inferred z [batch, d] as the persistent chains of examples ids [batch].

        Under a multi-replica strategy every replica holds a copy of all chains but infers
        only its share of the batch; each writes the whole global batch, gathered from all
        replicas, so that the copies stay identical.
        """
        replica = tf.distribute.get_replica_context()
        if replica is not None and replica.num_replicas_in_sync > 1:
            ids, z = cross_replica.all_gather(ids), cross_replica.all_gather(z)
        # A MirroredVariable has scatter_update, not scatter_nd_update; with aggregation
        # "none" (the chains') it writes this replica's copy only.
        self.chains.value.scatter_update(tf.IndexedSlices(z, ids))

    def learn_encoder(self, images):
        """One Adam step of the inference network on images [batch, H, W, 3]: down
        -log p(E(Y), Y) of Eq. (11) under the generator as it is now
        (`amortized.negative_log_joint`); nothing when no network is trained."""
        if self.encoder_optimizer is None:
            return
        replicas = tf.distribute.get_strategy().num_replicas_in_sync
        weights = self.encoder.trainable_weights
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(amortized.negative_log_joint(
                self.generator, self.encoder(images), images, self.langevin.sigma))
            # Keras sums gradients across replicas, so each replica's share is 1/n.
            scaled_loss = loss / replicas
        self.encoder_optimizer.apply(tape.gradient(scaled_loss, weights), weights)
        self.trackers["encoder_loss"].update_state(loss)

    def train_step(self, data):
        ids, images, _ = keras.utils.unpack_x_y_sample_weight(data)
        ids = tf.cast(ids, tf.int32)
        z = self.infer(tf.gather(self.chains.value, ids), images)
        self.update_chains(ids, z)

        if self.uses_sparse_kernels and tf.distribute.get_strategy().num_replicas_in_sync == 1:
            self._compiled_learn(z, images)
        else:  # the whole step is XLA already, or runs under a multi-replica strategy
            self._learn(z, images)
        return self.step_logs()

    def _learn(self, z, images):
        """The θ step and the metrics at the inferred z: `generator_step`, the inference
        network's step, `update_metrics`. With the sparse kernels on one device it is one
        XLA function (`_compiled_learn`), as the rest of the dense step is."""
        reconstruction, loss, activations = self.generator_step(z, images)
        self.learn_encoder(images)
        self.update_metrics(z, images, reconstruction, loss, activations)

    def generator_step(self, z, target):
        """Learning back-propagation (Eq. 12): one optimizer step of θ down
        mean ‖T - g(z)‖² / (2σ²) for z [n, d] and the target T [n, H, W, 3] (the images
        Y in ABP; cooperative learning's revised images).

        Returns:
          (g(z) [n, H, W, 3] in T's dtype, as it was before the step; the loss; each
          sparse layer's activations fm^i_s [n, h, w, c], top first).
        """
        with tf.GradientTape() as tape:
            parse = self.generator.parse(z)
            # Under a mixed policy g computes in 16 bits; the loss is summed in float32.
            image = tf.cast(parse["image"], target.dtype)
            squared_error = tf.reduce_sum(tf.square(target - image), axis=[1, 2, 3])
            loss = tf.reduce_mean(squared_error) / (2.0 * self.langevin.sigma ** 2)
            # Keras sums gradients across replicas, so each replica's share is 1/n.
            replicas = tf.distribute.get_strategy().num_replicas_in_sync
            # scale_loss is the identity except under mixed_float16's LossScaleOptimizer.
            scaled_loss = self.optimizer.scale_loss(loss / replicas)
        weights = self.generator.trainable_weights
        self.optimizer.apply(tape.gradient(scaled_loss, weights), weights)
        return image, loss, parse["activations"]

    def update_metrics(self, z, images, reconstruction, loss, activations, **more):
        """Updates the trackers for the batch's examples: z [batch, d], their images and
        their reconstructions g(z) [batch, H, W, 3], the loss, and each sparse layer's
        activations [batch, h, w, c]. `more` gives {tracker name: value} of the trackers
        a subclass adds."""
        squared_error = tf.reduce_sum(tf.square(images - reconstruction), axis=[1, 2, 3])
        mse = tf.reduce_mean(tf.square(images - reconstruction))
        values = {"loss": loss, "mse": mse, "psnr": psnr(mse),
                  "log_likelihood": -squared_error / (2.0 * self.langevin.sigma ** 2),
                  "log_prior": -0.5 * tf.reduce_sum(tf.square(z), axis=-1),
                  "z_norm": tf.norm(z, axis=-1), **more}
        for i, activation in enumerate(activations, 1):
            active = tf.cast(activation != 0, "float32")
            values[f"nonzero_{i}"] = tf.reduce_mean(active)
            values[f"dead_channels_{i}"] = active
        for name, value in values.items():
            self.trackers[name].update_state(value)

    def step_logs(self):
        """The trackers' results: what a train step returns to Keras."""
        return cross_replica.step_logs(
            {name: tracker.result() for name, tracker in self.trackers.items()})

    def _maybe_symbolic_build(self, *args, **kwargs):
        # The one private Keras method overridden here, for want of a public way: under a
        # strategy, fit first averages a batch over the replicas (strategy.reduce(MEAN,
        # axis=None)) to build the model on it, and under MultiWorkerMirroredStrategy that
        # eager reduce fails for every Keras 3.15 model, built or not (keras-team/keras
        # #20585). All state here is made in __init__, so there is nothing to build.
        # Delete this when Keras fixes it; test_distribute fails if Keras renames it.
        del args, kwargs


__all__ = ["AlternatingBackprop", "DeadChannels", "psnr", "topk_schedule"]
