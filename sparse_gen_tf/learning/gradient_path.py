"""How the Langevin loop computes ∂/∂z log p(z, Y) of Eq. (11): one path per device.

Two paths compute the same gradient, to the order of float sums:

  dense           autodiff of `Generator.squared_error_fn` through the dense matmuls of
                  every layer; the whole train step one XLA computation. TopK finds its
                  threshold by `layers.kth_largest_by_bisection` where XLA compiles for
                  a CPU (XLA:CPU's top_k is a serial sort), by top_k elsewhere.
  sparse kernels  `Generator.langevin_gradient_fn`: the compiled CPU kernels of
                  model/sparse_kernels.py paint and read back only the K kept units of
                  each layer (Eq. 1, 3); the loop runs as a TensorFlow graph with small
                  XLA functions between the kernels.

`choose` is the one place that picks between them: the sparse kernels on a CPU where
they build and the maps are sparse enough for them to pay, the dense path on a GPU or
TPU and everywhere else. The SavedModel never depends on the choice: it is traced on
`PLAIN`, the dense path with top_k (`plain`).
"""

import contextlib
import dataclasses
import math

import tensorflow as tf

# The largest K / (h*w*c) of any sparse layer at which `choose` picks the sparse kernels
# on its own: they do the work of the K kept units only, so their lead over the dense
# matmuls shrinks as K grows, and past this density the dense step wins (docs/speed.md).
SPARSE_KERNELS_MAX_DENSITY = 0.1


@dataclasses.dataclass(frozen=True)
class GradientPath:
    """The chosen path.

    sparse_kernels: ∂/∂z through the compiled sparse kernels (the train step then cannot
      be one XLA computation: the kernels are TensorFlow ops).
    bisection: TopK's thresholds by bisection in traced calls (`TopK.bisection`).
    reason: one line saying why this path, for the log.
    """
    sparse_kernels: bool
    bisection: bool
    reason: str

    def apply(self, generator):
        """Sets the generator's TopK layers to this path's threshold."""
        for topk in generator.topks:
            topk.bisection = self.bisection


# The dense path with TensorFlow's top_k: the default of a fresh generator, and what the
# SavedModel runs (TF Serving has no XLA and none of the sparse kernels).
PLAIN = GradientPath(sparse_kernels=False, bisection=False,
                     reason="the dense path with top_k, without XLA")


def accelerator():
    """'GPU' or 'TPU' when TensorFlow sees one, else None."""
    for kind in ("GPU", "TPU"):
        if tf.config.list_logical_devices(kind):
            return kind
    return None


def density(generator):
    """The largest K / (h*w*c) of the generator's sparse layers."""
    config = generator.config
    return max(k / math.prod(shape)
               for k, shape in zip(config.topk, config.feature_map_shapes()))


def choose(generator, *, xla, sparse_kernels=None, dense_only=None):
    """The gradient path of generator's Langevin loop on this host.

    Args:
      generator: a `Generator`.
      xla: whether XLA compiles the Langevin loop (the train step's jit_compile, or the
        loop alone under a multi-replica strategy).
      sparse_kernels: None picks them where they pay (a CPU, XLA on, every layer at most
        SPARSE_KERNELS_MAX_DENSITY); True wherever they can run; False never.
      dense_only: why the caller's train step cannot use the kernels (the cooperative
        step), or None.
    Returns:
      a `GradientPath`.
    """
    device = accelerator()
    if device:
        return GradientPath(False, False, f"a {device} is visible: the dense step, "
                            "compiled by XLA, with top_k (the sparse kernels are CPU kernels)")
    dense = GradientPath(False, bool(xla), "the dense step" + (
        ", compiled by XLA, with TopK by bisection" if xla else ", without XLA"))
    if sparse_kernels is False:
        return dataclasses.replace(dense, reason=dense.reason + " (sparse kernels off)")
    if sparse_kernels is None:
        if not xla:
            return dataclasses.replace(dense, reason=dense.reason + " (sparse kernels "
                                       "only by default where XLA is on)")
        if density(generator) > SPARSE_KERNELS_MAX_DENSITY:
            return dataclasses.replace(dense, reason=(
                f"{dense.reason}: a layer keeps {density(generator):.1%} of its units, "
                f"more than the {SPARSE_KERNELS_MAX_DENSITY:.0%} up to which the sparse "
                "kernels pay"))
    problem = dense_only or generator.sparse_kernels_problem()
    if problem:
        return dataclasses.replace(dense, reason=f"{dense.reason}: {problem}")
    return GradientPath(True, True, "the compiled sparse kernels" + (
        "" if sparse_kernels else f": every layer keeps at most "
        f"{SPARSE_KERNELS_MAX_DENSITY:.0%} of its units"))


@contextlib.contextmanager
def plain(generator):
    """The generator on `PLAIN` while the block runs (an export traces it); the TopK
    layers' previous thresholds are restored after."""
    saved = [topk.bisection for topk in generator.topks]
    PLAIN.apply(generator)
    try:
        yield
    finally:
        for topk, bisection in zip(generator.topks, saved):
            topk.bisection = bisection


__all__ = ["GradientPath", "PLAIN", "SPARSE_KERNELS_MAX_DENSITY", "accelerator", "choose",
           "density", "plain"]
