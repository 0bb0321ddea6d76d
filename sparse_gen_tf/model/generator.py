"""The top-down generator with TopK-sparse feature maps, g(Z; θ, tk) of Eq. (7).

    z [batch, d] -> Dense -> reshape [s, s, c_1] -> TopK(K_1) -> ReLU                  fm^1_s
      -> [TransposedConv -> TopK(K_i) -> ReLU] for i = 2..n                           fm^i_s
      -> TransposedConv -> tanh                                                       Y

Layer i counts from 1 at the top (the FC map). s = image_size / prod(strides).
"""

import dataclasses
import math

import keras
import numpy as np
import tensorflow as tf

from sparse_gen_tf.model import sparse_kernels as kernels_lib
from sparse_gen_tf.model.layers import TopK, TransposedConv, matmul


@dataclasses.dataclass(frozen=True)
class GeneratorConfig:
    """Architecture of the sparse generator.

    channels[i], topk[i]: channels and K of sparse feature map i+1 (top first).
    kernel_sizes[i], strides[i]: the transposed conv that leaves feature map i+1;
    the last one paints the 3-channel image.

    The defaults are train.py's (the embedded parts setup; parts.flags gives the reasons).
    Field metadata: "help" (train.py's flag shows it), "lower_bound" (that flag's), and
    "state": the field shapes the weights, so a resumed run must keep it. K does not:
    it may change between runs.
    """
    image_size: int = dataclasses.field(default=32, metadata={
        "help": "Side of the square images, pixels.", "lower_bound": 4, "state": True})
    latent_dim: int = dataclasses.field(default=32, metadata={
        "help": "Dimension d of z.", "lower_bound": 1, "state": True})
    channels: tuple = dataclasses.field(default=(64, 64), metadata={
        "help": "Channels of each sparse feature map, top (FC) first.", "state": True})
    topk: tuple = dataclasses.field(default=(8, 24), metadata={
        "help": "K of each sparse feature map, top first."})
    kernel_sizes: tuple = dataclasses.field(default=(4, 8), metadata={
        "help": "Kernel size of each transposed conv (the conv leaving feature map i).",
        "state": True})
    strides: tuple = dataclasses.field(default=(2, 8), metadata={
        "help": "Stride of each transposed conv; their product divides image_size.",
        "state": True})

    def __post_init__(self):
        for name in ("channels", "topk", "kernel_sizes", "strides"):
            object.__setattr__(self, name, tuple(int(v) for v in getattr(self, name)))
        problem = self.problem()
        if problem:
            raise ValueError(problem)

    @property
    def top_size(self):
        """Side s of the top (FC) feature map."""
        return self.image_size // math.prod(self.strides)

    def feature_map_shapes(self):
        """[(h, w, c)] of each sparse feature map, top first."""
        shapes, size = [], self.top_size
        for c, stride in zip(self.channels, (1,) + self.strides[:-1]):
            size *= stride
            shapes.append((size, size, c))
        return shapes

    def problem(self):
        """Returns a one-line description of what is inconsistent, or None."""
        n = len(self.channels)
        if n < 1:
            return "channels must list at least one sparse feature map"
        if len(self.topk) != n:
            return (f"topk has {len(self.topk)} entries but channels has {n}: "
                    "give one K per sparse feature map")
        if len(self.kernel_sizes) != n or len(self.strides) != n:
            return (f"kernel_sizes and strides need {n} entries each (one per transposed "
                    f"conv, i.e. one per entry of channels), got {len(self.kernel_sizes)} "
                    f"and {len(self.strides)}")
        if any(v <= 0 for v in self.channels + self.kernel_sizes + self.strides):
            return "channels, kernel_sizes and strides must all be positive"
        for k, s in zip(self.kernel_sizes, self.strides):
            if k < s:
                return f"kernel size {k} is smaller than its stride {s}; use kernel >= stride"
        prod = math.prod(self.strides)
        if self.image_size % prod or self.image_size < prod:
            return (f"strides {','.join(map(str, self.strides))} multiply to {prod}, which "
                    f"does not divide image_size {self.image_size}; change strides or "
                    "image_size so that image_size / prod(strides) is a whole number")
        for i, (k, (h, w, c)) in enumerate(zip(self.topk, self.feature_map_shapes()), 1):
            if k <= 0:
                return f"topk for layer {i} is {k}; K must be at least 1"
            if k > h * w * c:
                return (f"topk for layer {i} is {k}, larger than its feature map "
                        f"{h}x{w}x{c}={h * w * c}; use K <= {h * w * c} (K = size is dense)")
        return None


@keras.saving.register_keras_serializable(package="sparse_gen_tf")
class Generator(keras.Model):
    """g(z): [batch, latent_dim] -> images [batch, H, W, 3] in [-1, 1].

    `parse(z)` also returns every sparse layer's feature map, TopK and ReLU masks, and
    surviving activations; `parse(z, masks=...)` freezes the masks, which makes the
    network linear in each layer's activations (Eq. 2).
    """

    def __init__(self, config=None, **kwargs):
        if isinstance(config, dict):
            config = GeneratorConfig(**config)
        super().__init__(**kwargs)
        self.config = config or GeneratorConfig()
        cfg = self.config
        s, c1 = cfg.top_size, cfg.channels[0]
        self.fc = keras.layers.Dense(s * s * c1, name="fc")
        self.topks = [TopK(k, name=f"topk_{i}") for i, k in enumerate(cfg.topk, 1)]
        out_channels = cfg.channels[1:] + (3,)
        self.deconvs = [
            TransposedConv(c, k, st, name=f"deconv_{i}")
            for i, (c, k, st) in enumerate(zip(out_channels, cfg.kernel_sizes, cfg.strides), 1)]
        self.build((None, cfg.latent_dim))

    def build(self, input_shape):
        cfg = self.config
        self.fc.build(input_shape)
        for deconv, topk, (h, w, c) in zip(self.deconvs, self.topks, cfg.feature_map_shapes()):
            deconv.build((None, h, w, c))
            # TopK has no weights, but Keras checks that every layer is built before fit
            # under a tf.distribute strategy.
            topk.build((None, h, w, c))
        self.built = True

    @property
    def num_layers(self):
        return len(self.topks)

    def initialize_output_bias(self, mean_pixel):
        """Sets the image layer's bias to atanh(mean pixel) [3] (values in [-1, 1]).

        An untrained generator then paints the data's mean colour instead of grey. On
        mostly-black data this saves Adam the thousands of steps that moving a bias from 0
        to about -1 takes at a learning rate of 1e-3.
        """
        mean_pixel = np.clip(np.asarray(mean_pixel, np.float32), -0.95, 0.95)
        self.deconvs[-1].bias.assign(np.arctanh(mean_pixel))

    @property
    def batch_invariant(self):
        """Whether every example's forward and backward pass is computed alone (FC and
        deconvs through `layers.matmul(batch_invariant=True)`), so that its bits do not
        depend on the rest of the batch. Not part of the config: the
        served graph sets it (serving/signatures.py), training leaves it off."""
        return all(deconv.batch_invariant for deconv in self.deconvs)

    @batch_invariant.setter
    def batch_invariant(self, value):
        for deconv in self.deconvs:
            deconv.batch_invariant = bool(value)

    def top_feature_map(self, z):
        """fm^1 = reshape(FC(z)) [batch, s, s, c_1], the top feature map before its TopK."""
        cfg = self.config
        if self.batch_invariant:
            z = tf.cast(z, self.compute_dtype)
            fc = (matmul(z, tf.cast(self.fc.kernel, z.dtype), batch_invariant=True)
                  + tf.cast(self.fc.bias, z.dtype))
        else:
            fc = self.fc(z)
        return tf.reshape(fc, [-1, cfg.top_size, cfg.top_size, cfg.channels[0]])

    def parse(self, z, masks=None, kernels=None, blocked=False):
        """Runs g and records the parse (§2.1-2.2).

        Args:
          z: [batch, latent_dim].
          masks: optional list, one per sparse layer, of (mask_T, mask_R) [batch, h, w, c]
            to use instead of computing them: the frozen, linear generator of Eq. (2).
          kernels: optional list of each deconv's `matmul_kernel()`,
            `unrolled_kernel()` or `windowed_kernel()` (see `langevin_kernels`), computed
            once by a caller that runs g many times with fixed weights.
          blocked: return "logits" and "image" as `tf.nn.space_to_depth(·, s)` of the
            image, [batch, H/s, W/s, s*s*3] (needs `blocked_output`); see
            `squared_error_fn`.
        Returns:
          dict with "image" [batch, H, W, 3] = tanh("logits"), "logits" (pre-tanh), and
          per sparse layer i (lists, top first): "feature_maps" fm^i (before TopK),
          "topk_masks" mask_T, "relu_masks" mask_R, "activations" fm^i_s (after ReLU).
        """
        return self.parse_from_top(self.top_feature_map(z), masks=masks, kernels=kernels,
                                   blocked=blocked)

    def parse_from_top(self, top, masks=None, kernels=None, blocked=False):
        """`parse` from the top feature map fm^1 [batch, s, s, c_1] (before TopK_1) down:
        Eq. (1) at every layer. A parse drawn from the grammar prior starts here, and so
        does the re-rendering of a parse from its layer-1 activations, which TopK_1 and
        ReLU keep as they are. Arguments and result as in `parse`."""
        fm = tf.cast(top, self.compute_dtype)
        record = {"feature_maps": [], "topk_masks": [], "relu_masks": [], "activations": []}
        for i, topk in enumerate(self.topks):
            if masks is None:
                kept, mask_t = topk(fm, return_mask=True)
                mask_r = tf.cast(kept > 0, fm.dtype)
            else:
                mask_t, mask_r = (tf.cast(m, fm.dtype) for m in masks[i])
            activation = fm * mask_t * mask_r
            for key, value in zip(record, (fm, mask_t, mask_r, activation)):
                record[key].append(value)
            fm = self.deconvs[i](activation, kernel=None if kernels is None else kernels[i],
                                 blocked=blocked and i == len(self.topks) - 1)
        record["logits"] = fm
        record["image"] = tf.tanh(fm)
        return record

    @property
    def blocked_output(self):
        """True when the image layer's kernel equals its stride (the paper's bottom layer,
        and every default here): g(z) is then a depth_to_space of one matmul."""
        last = self.deconvs[-1]
        return last.paints_disjoint_cells and last.strides > 1

    def langevin_kernels(self):
        """Each deconv's kernel in the form that a loop with fixed weights runs fastest:
        where the whole layer as one matrix does no more multiply-adds than the blocked
        matmul (`TransposedConv.unrolls`, the paper's top layer), that matrix without
        its zero blocks (`TransposedConv.windowed_kernel`), which saves the overlap-add
        of the shifted blocks; elsewhere `matmul_kernel`. Pass them as
        `parse(kernels=...)`.

        When `batch_invariant` (the served graph, without XLA), the whole-layer matrix
        itself (`unrolled_kernel`): one product instead of one per window, where every
        op costs its dispatch and a Langevin step of one image is all dispatch."""
        kernels = []
        for deconv, shape in zip(self.deconvs, self.config.feature_map_shapes()):
            if not deconv.unrolls(shape):
                kernels.append(deconv.matmul_kernel(self.compute_dtype))
            elif self.batch_invariant:
                kernels.append(deconv.unrolled_kernel(shape, self.compute_dtype))
            else:
                kernels.append(deconv.windowed_kernel(shape, self.compute_dtype))
        return kernels

    def sparse_kernels_problem(self):
        """None when `langevin_gradient_fn` can run this generator here, else why not: g
        must compute in float32 and the kernels must build."""
        if self.compute_dtype != "float32":
            return f"the sparse kernels are float32 and g computes in {self.compute_dtype}"
        return kernels_lib.unavailable_reason()

    def langevin_gradient_fn(self, images, sigma, observed=None):
        """Returns z [batch, d] -> ∂/∂z log p(z, Y) [batch, d] of Eq. (11) through the
        compiled sparse kernels, for a loop with fixed weights.

        The same gradient as autodiff of `squared_error_fn` (up to the order of float
        sums), written out layer by layer: each sparse layer's TopK and ReLU masks
        (Eq. 1-2) are constants of the step, so g is linear between them and its
        transpose is the backward pass. Forward, each transposed conv paints only the
        kept units' basis patches; backward, only the kept units read the residual back;
        then the FC layer's transpose gives ∂/∂z. A layer whose kernel equals its stride
        (disjoint cells) runs as rows of a matmul (`sparse_rows_matmul`,
        `masked_matmul_t`, in the blocked layout of `matmul_kernel`), one with a larger
        kernel as a deconvolution (`sparse_transposed_conv`, `masked_transposed_conv_t`).
        The element-wise parts (biases, TopK thresholds, tanh and residual) run as small
        XLA functions between the kernels; the kernels themselves are TensorFlow ops, so
        the caller must not be XLA-compiled.

        Args: images [batch, H, W, 3]; sigma σ of Eq. (11); observed optional
          [batch, H, W, 1 or 3] 0/1 mask of the pixels in the likelihood.
        """
        cfg = self.config
        images = tf.convert_to_tensor(images, tf.float32)
        if observed is None:
            observed = tf.ones_like(images)
        observed = tf.broadcast_to(tf.cast(observed, tf.float32), tf.shape(images))
        blocked = self.blocked_output
        if blocked:  # compare in the bottom layer's own layout, as squared_error_fn does
            cell = self.deconvs[-1].strides
            images = tf.nn.space_to_depth(images, cell)
            observed = tf.nn.space_to_depth(observed, cell)
        shapes = cfg.feature_map_shapes()
        last = len(self.deconvs) - 1
        # Per layer: whether it paints disjoint cells (rows of a matmul), the kernel in
        # the form its kernels take, and the bias.
        cells = [deconv.paints_disjoint_cells for deconv in self.deconvs]
        kernels = [deconv.matmul_kernel(tf.float32) if rows
                   else tf.convert_to_tensor(deconv.kernel, tf.float32)
                   for deconv, rows in zip(self.deconvs, cells)]
        biases = [tf.convert_to_tensor(deconv.bias, tf.float32) for deconv in self.deconvs]
        fc_kernel = tf.convert_to_tensor(self.fc.kernel, tf.float32)
        fc_bias = tf.convert_to_tensor(self.fc.bias, tf.float32)
        s, c1 = cfg.top_size, cfg.channels[0]

        # The element-wise work between two kernel calls, each one small XLA function:
        # XLA fuses it, and each launch costs about as much as a TensorFlow op.
        def keep(i, fm):
            """Sparse layer i's TopK and ReLU (Eq. 1) on fm [batch, h, w, c]:
            (activation, mask), as rows [batch*h*w, c] for a cell layer."""
            mask = self.topks[i].mask(fm) * tf.cast(fm > 0, fm.dtype)
            activation = fm * mask
            if cells[i]:
                return (tf.reshape(activation, [-1, shapes[i][2]]),
                        tf.reshape(mask, [-1, shapes[i][2]]))
            return activation, mask

        def finish(i, out):
            """Deconv i's product, without its bias -> the next map, or the logits."""
            if not cells[i]:
                return out + biases[i]
            h, w, _ = shapes[i]
            st, c_out = self.deconvs[i].strides, self.deconvs[i].filters
            out = tf.reshape(out, [-1, h, w, st * st * c_out])
            if blocked and i == last:
                return out + tf.tile(biases[i], [st * st])
            return tf.nn.depth_to_space(out, st) + biases[i]

        def paint(i, activation):
            if cells[i]:
                return kernels_lib.sparse_rows_matmul(activation, kernels[i])
            return kernels_lib.sparse_transposed_conv(activation, kernels[i],
                                                      self.deconvs[i].strides)

        def read_back(i, grad, mask):
            """∂/∂(deconv i's output) -> ∂/∂(its input map) [batch, h, w, c_in]."""
            st = self.deconvs[i].strides
            if not cells[i]:
                return kernels_lib.masked_transposed_conv_t(grad, kernels[i], mask, st)
            if not (blocked and i == last):
                grad = tf.nn.space_to_depth(grad, st)
            grad = kernels_lib.masked_matmul_t(
                tf.reshape(grad, [tf.shape(mask)[0], -1]), kernels[i], mask)
            return tf.reshape(grad, [-1, *shapes[i]])

        @tf.function(jit_compile=True)
        def head(z):
            return keep(0, tf.reshape(tf.matmul(z, fc_kernel) + fc_bias, [-1, s, s, c1]))

        between = [tf.function(lambda out, i=i: keep(i + 1, finish(i, out)),
                               jit_compile=True) for i in range(last)]

        @tf.function(jit_compile=True)
        def residual(out):
            image = tf.tanh(finish(last, out))
            # ∂/∂logits of -‖(Y - g) ⊙ observed‖² / (2σ²): tanh' = 1 - g².
            return (images - image) * observed * (1.0 - tf.square(image)) / sigma ** 2

        @tf.function(jit_compile=True)
        def to_z(grad, z):
            grad = tf.reshape(grad, [tf.shape(z)[0], -1])
            return tf.matmul(grad, fc_kernel, transpose_b=True) - z  # ∂/∂z log p(z)

        def gradient(z):
            activation, mask = head(z)
            masks = [mask]
            for i in range(last + 1):
                out = paint(i, activation)
                if i < last:
                    activation, mask = between[i](out)
                    masks.append(mask)
            grad = residual(out)
            for i in reversed(range(last + 1)):
                grad = read_back(i, grad, masks[i])
            return to_z(grad, z)
        return gradient

    def squared_error_fn(self, images, observed=None):
        """Returns z [batch, latent_dim] -> ‖(Y - g(z)) ⊙ observed‖² [batch] (float32),
        the likelihood term of Eq. (11), for a loop that calls it with fixed weights.

        Everything that does not depend on z is computed once, here, outside the loop:
        the deconvs' kernels (`langevin_kernels`) and, when `blocked_output`, the images
        (and mask) rearranged by space_to_depth, so that the residual is taken on the
        matmul's own layout. The sum of squares does not depend on the order of the
        pixels, and XLA would otherwise redo the kernels' transposes and read the image
        with a stride of 3 floats in every Langevin step.

        Args:
          images: [batch, H, W, 3]; observed: optional [batch, H, W, 1 or 3] 0/1 mask.
        """
        images = tf.convert_to_tensor(images)
        kernels = self.langevin_kernels()
        blocked = self.blocked_output
        if observed is not None:
            observed = tf.broadcast_to(tf.cast(observed, images.dtype), tf.shape(images))
        if blocked:
            cell = self.deconvs[-1].strides
            images = tf.nn.space_to_depth(images, cell)
            if observed is not None:
                observed = tf.nn.space_to_depth(observed, cell)

        def squared_error(z):
            image = self.parse(z, kernels=kernels, blocked=blocked)["image"]
            # Under a mixed precision policy g(z) is 16-bit; the residual stays float32.
            residual = images - tf.cast(image, images.dtype)
            if observed is not None:
                residual = residual * observed
            return tf.reduce_sum(tf.square(residual), axis=[1, 2, 3])
        return squared_error

    def call(self, z):
        return self.parse(z)["image"]

    def get_config(self):
        return {**super().get_config(), "config": dataclasses.asdict(self.config)}

    @classmethod
    def from_config(cls, config):
        return cls(**config)
