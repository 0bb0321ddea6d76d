"""The inference network q(z | Y): a small bottom-up ConvNet that guesses the latent z of
an image in one pass, the starting point of a few Langevin refinements (Eq. 10-11).

    Y [batch, H, W, 3] -> [Conv 4x4/2 -> ReLU] x n -> flatten -> Dense -> z [batch, d]

Alternating back-propagation infers z by Langevin dynamics alone; the network amortizes
that search: trained to maximise the log joint of Eq. (11) at its own output
(`learning/amortized.py`), it puts the chain near a mode in one pass, as the inference
model of the divergence triangle (Han et al., CVPR 2019) is trained alongside the
generator.

What it holds: its convolution and dense weights, nothing else: no chains, no codes, no
images. It is a function from an image to a code; a training image's code comes out
only when that image goes in.
"""

import dataclasses

import keras
import tensorflow as tf

from sparse_gen_tf.model.layers import matmul


@dataclasses.dataclass(frozen=True)
class EncoderConfig:
    """The inference network and how it is trained beside the generator.

    channels[i]: channels of the i-th 4x4 convolution of stride 2 (image side first);
      a dense layer maps the last feature map to z.
    learning_rate: its Adam learning rate, constant.
    Field metadata as in `GeneratorConfig` (train.py's flags --encoder_*).
    """
    channels: tuple = dataclasses.field(default=(32, 64, 128), metadata={
        "help": "Channels of each inference-network conv (4x4, stride 2), image side "
                "first.", "state": True})
    learning_rate: float = dataclasses.field(default=1e-3, metadata={
        "help": "The inference network's Adam learning rate (constant)."})

    def __post_init__(self):
        object.__setattr__(self, "channels", tuple(int(v) for v in self.channels))
        if not self.channels or min(self.channels) < 1:
            raise ValueError("encoder_channels must list at least one positive channel "
                             "count")
        if self.learning_rate <= 0:
            raise ValueError(f"encoder_learning_rate must be > 0, got {self.learning_rate}")


KERNEL_SIZE, STRIDES = 4, 2


def batch_invariant_conv(conv, x):
    """`conv(x)` of a 'same' keras Conv2D with every output pixel its own product
    (`layers.matmul(batch_invariant=True)` on the image patches), so that an example's
    result is the same bits in any batch. x [batch, h, w, c_in] -> [batch, h', w',
    filters]; the same function as conv(x), summed in another order."""
    k, s = conv.kernel_size[0], conv.strides[0]
    patches = tf.image.extract_patches(x, [1, k, k, 1], [1, s, s, 1], [1, 1, 1, 1],
                                       "SAME")  # [batch, h', w', k*k*c_in], (row, col, c)
    shape = tf.shape(patches)
    rows = tf.reshape(patches, [-1, patches.shape[-1]])
    kernel = tf.reshape(conv.kernel, [-1, conv.filters])
    out = matmul(rows, kernel, batch_invariant=True) + conv.bias
    out = tf.reshape(out, tf.concat([shape[:3], [conv.filters]], 0))
    return conv.activation(out)


@keras.saving.register_keras_serializable(package="sparse_gen_tf")
class Encoder(keras.Model):
    """q(z | Y): images [batch, H, W, 3] in [-1, 1] -> z [batch, latent_dim], the mean of
    the inference network (module doc). Always float32, whatever the dtype policy.

    `batch_invariant` (like `Generator.batch_invariant`; the served graph sets it)
    computes each example alone (`batch_invariant_conv`, `layers.matmul`), so that its z
    is the same bits in any batch.
    """

    def __init__(self, config=None, *, latent_dim, image_size, **kwargs):
        if isinstance(config, dict):
            config = EncoderConfig(**config)
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        self.config = config or EncoderConfig()
        self.latent_dim, self.image_size = int(latent_dim), int(image_size)
        self.convs = [keras.layers.Conv2D(c, KERNEL_SIZE, strides=STRIDES, padding="same",
                                          activation="relu", name=f"conv_{i}")
                      for i, c in enumerate(self.config.channels, 1)]
        self.flatten = keras.layers.Flatten()
        self.head = keras.layers.Dense(self.latent_dim, name="head")
        self.batch_invariant = False
        self.build((None, self.image_size, self.image_size, 3))

    def build(self, input_shape):
        shape = tuple(input_shape)
        for conv in self.convs:
            conv.build(shape)
            shape = conv.compute_output_shape(shape)
        self.head.build((None, shape[1] * shape[2] * shape[3]))
        self.built = True

    def call(self, images):
        x = tf.cast(images, self.compute_dtype)
        if not self.batch_invariant:
            for conv in self.convs:
                x = conv(x)
            return self.head(self.flatten(x))
        for conv in self.convs:
            x = batch_invariant_conv(conv, x)
        x = tf.reshape(x, [tf.shape(x)[0], -1])
        return matmul(x, self.head.kernel, batch_invariant=True) + self.head.bias

    def get_config(self):
        return {**super().get_config(), "config": dataclasses.asdict(self.config),
                "latent_dim": self.latent_dim, "image_size": self.image_size}

    @classmethod
    def from_config(cls, config):
        return cls(**config)
