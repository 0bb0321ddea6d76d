"""The descriptor of §2.4: an energy-based model of images, and Langevin sampling from it.

    P(Y; φ) = exp[f(Y; φ)] q(Y) / Z(φ),   q = N(0, s² I) Gaussian white noise     (Eq. 13)

f(Y; φ) is a bottom-up ConvNet (the CoopNets descriptor: conv 5x5/2 with 64 channels,
3x3/2 with 128, 3x3/1 with 256, leaky ReLU, then a dense layer to one number). Up to log
Z(φ), -log P(Y; φ) is the energy

    E(Y) = -f(Y; φ) + ‖Y‖² / (2 s²),

and Langevin dynamics samples P(Y; φ) by descending it with noise:

    Y <- Y + δ²/2 · (∂f/∂Y - Y / s²) + δ·E,   E ~ N(0, I).

Like `langevin.py` the loop is a `tf.while_loop` with stateless noise, so the chain runs
inside the XLA-compiled train step.
"""

import dataclasses

import keras
import tensorflow as tf


@dataclasses.dataclass(frozen=True)
class DescriptorConfig:
    """The descriptor of cooperative learning: f(Y; φ), its Langevin revision, its training.

    channels[i], kernel_sizes[i], strides[i]: the i-th convolution of f, bottom (image
    side) first ("same" padding), each followed by a leaky ReLU of slope `leaky_slope`;
    a dense layer maps the last feature map to the scalar f. `Descriptor` reads these.
    steps, step_size, reference: T, δ and s of the revision's Langevin dynamics (Eq. 13);
    learning_rate, fresh_samples, data_weight: how `CooperativeLearning` trains with it.

    The defaults are train.py's. Kernels, strides, T and δ are the CoopNets descriptor's;
    its channels (64, 128, 256) are cut to a quarter so that the 15 revision steps do not
    dominate a CPU train step on the 32x32 parts data. s, w and the learning rate differ
    from CoopNets' where a measurement on parts said so (docs/descriptor.md). Field
    metadata as in `GeneratorConfig`.
    """
    channels: tuple = dataclasses.field(default=(16, 32, 64), metadata={
        "help": "Channels of each descriptor conv, image side first (CoopNets: "
                "64,128,256).", "state": True})
    kernel_sizes: tuple = dataclasses.field(default=(5, 3, 3), metadata={
        "help": "Kernel size of each descriptor conv.", "state": True})
    strides: tuple = dataclasses.field(default=(2, 2, 1), metadata={
        "help": "Stride of each descriptor conv.", "state": True})
    leaky_slope: float = 0.2
    steps: int = dataclasses.field(default=15, metadata={
        "help": "Descriptor Langevin steps per train step (revision of g(z)).",
        "lower_bound": 1})
    step_size: float = dataclasses.field(default=0.002, metadata={
        "help": "Descriptor Langevin step size δ."})
    # CoopNets' s = 0.016 pulls every revision towards grey until f learns to cancel it.
    reference: float = dataclasses.field(default=1.0, metadata={
        "help": "Standard deviation s of the descriptor's Gaussian reference q (Eq. 13)."})
    # CoopNets' 0.007 made the revision diverge on parts (docs/descriptor.md).
    learning_rate: float = dataclasses.field(default=1e-3, metadata={
        "help": "The descriptor's Adam learning rate (constant, β1 = 0.5)."})
    fresh_samples: bool = dataclasses.field(default=False, metadata={
        "help": "Also revise g(z) for fresh z ~ N(0, I) (CoopNets); they join the "
                "descriptor's negative phase and the generator's regression."})
    # The paper's w = 0 leaves the generator no pull towards the data while f is weak.
    data_weight: float = dataclasses.field(default=0.5, metadata={
        "help": "w in [0, 1]: the generator regresses on (1 - w) * revision + w * data "
                "(0: the paper's pure replacement of Y_i by the revision).",
        "lower_bound": 0.0, "upper_bound": 1.0})

    def __post_init__(self):
        for name in ("channels", "kernel_sizes", "strides"):
            object.__setattr__(self, name, tuple(int(v) for v in getattr(self, name)))
        problem = self.problem()
        if problem:
            raise ValueError(problem)

    def problem(self):
        """Returns a one-line description of what is inconsistent, or None."""
        n = len(self.channels)
        if n < 1:
            return "descriptor_channels must list at least one convolution"
        if len(self.kernel_sizes) != n or len(self.strides) != n:
            return (f"descriptor_kernel_sizes and descriptor_strides need {n} entries each "
                    f"(one per entry of descriptor_channels), got {len(self.kernel_sizes)} "
                    f"and {len(self.strides)}")
        if any(v <= 0 for v in self.channels + self.kernel_sizes + self.strides):
            return "descriptor channels, kernel sizes and strides must all be positive"
        if not 0.0 <= self.leaky_slope < 1.0:
            return f"leaky_slope is {self.leaky_slope}; use a slope in [0, 1)"
        return None


@keras.saving.register_keras_serializable(package="sparse_gen_tf")
class Descriptor(keras.Model):
    """f(Y; φ) of Eq. (13): images [batch, H, W, 3] in [-1, 1] -> scores [batch].

    Always float32, whatever Keras' global dtype policy: with s = 0.016 the energies are
    of order ‖Y‖²/(2s²) ~ 10⁶-10⁷ and f must match them, far beyond float16's 65504.
    """

    def __init__(self, config=None, image_size=32, **kwargs):
        if isinstance(config, dict):
            config = DescriptorConfig(**config)
        kwargs["dtype"] = "float32"
        super().__init__(**kwargs)
        self.config = config or DescriptorConfig()
        self.image_size = int(image_size)
        cfg = self.config
        self.convs = [
            keras.layers.Conv2D(c, k, s, padding="same", dtype="float32", name=f"conv_{i}")
            for i, (c, k, s) in enumerate(zip(cfg.channels, cfg.kernel_sizes, cfg.strides), 1)]
        self.flatten = keras.layers.Flatten(dtype="float32")
        self.score = keras.layers.Dense(1, dtype="float32", name="score")
        self.build((None, self.image_size, self.image_size, 3))

    def build(self, input_shape):
        shape = tuple(input_shape)
        for conv in self.convs:
            conv.build(shape)
            shape = conv.compute_output_shape(shape)
        self.score.build((None, shape[1] * shape[2] * shape[3]))
        self.built = True

    def call(self, images):
        x = images
        for conv in self.convs:
            x = tf.nn.leaky_relu(conv(x), alpha=self.config.leaky_slope)
        return self.score(self.flatten(x))[:, 0]

    def get_config(self):
        return {**super().get_config(), "config": dataclasses.asdict(self.config),
                "image_size": self.image_size}

    @classmethod
    def from_config(cls, config):
        return cls(**config)


def energy(descriptor, images, reference):
    """E(Y) = -f(Y; φ) + ‖Y‖² / (2s²) [batch]: -log P(Y; φ) of Eq. (13) up to log Z(φ).

    images: [batch, H, W, 3]; reference: s, the standard deviation of q.
    """
    squared_norm = tf.reduce_sum(tf.square(images), axis=[1, 2, 3])
    return -descriptor(images) + squared_norm / (2.0 * reference ** 2)


def descriptor_langevin(descriptor, images, seed, *, steps, step_size, reference,
                        noise=True):
    """Runs `steps` Langevin transitions on images for the fixed descriptor (Eq. 13).

    Y <- Y + δ²/2 · (∂f/∂Y - Y / s²) + δ·E, i.e. Y - δ²/2 · ∂E/∂Y + δ·E.

    Args:
      descriptor: callable images [batch, H, W, 3] -> f [batch].
      images: [batch, H, W, 3] starting points (the generator's output g(z)).
      seed: int32 [2] stateless seed; step t folds in t, as in `langevin.langevin`.
      steps, step_size (δ), reference (s): Python numbers.
      noise: False drops δ·E (gradient descent on the energy, for tests).
    Returns:
      the revised images Ỹ, [batch, H, W, 3]. Not clipped: the chain lives in R^D,
      where Eq. (13) is defined.
    """
    images = tf.cast(images, tf.float32)  # the descriptor's dtype under any policy
    seed = tf.cast(seed, tf.int32)

    def step(t, y):
        with tf.GradientTape() as tape:
            tape.watch(y)
            total = tf.reduce_sum(descriptor(y))
        grad = tape.gradient(total, y)
        y = y + 0.5 * step_size ** 2 * (grad - y / reference ** 2)
        if noise:
            # Philox explicitly: XLA's CPU auto_select generator is far slower on
            # image-sized draws like these.
            e = tf.random.stateless_normal(
                tf.shape(y), tf.random.experimental.stateless_fold_in(seed, t), dtype=y.dtype,
                alg="philox")
            y = y + step_size * e
        return t + 1, y

    _, images = tf.while_loop(lambda t, y: t < steps, step, (tf.constant(0), images),
                              maximum_iterations=steps)
    return images
