"""One train step on this device against the same step on the CPU (device_check.py).

    python benchmarks/step_comparison.py DIR SETUP   # the CPU side: DIR/start.npz in,
                                                     # DIR/reference.npz out

Both sides start from the same weights, chains and images (`start_state`) and run one
step of the model under XLA as `AlternatingBackprop.compile` sets it up where it runs
(`one_step`). The CPU side runs in a child process that sees no GPU (`cpu_reference`), so
it is the step a CPU user gets. The step has no Langevin noise (XLA and TensorFlow draw
different noise from one seed) and uses SGD at learning rate 1, so that the weights move
by the gradient itself (Adam's first step is about sign(gradient) for every weight).
`compare` measures the chains and each weight after it against the CPU's, relative to
the change the CPU's step made, and checks them against the precision's TOLERANCES.
"""

import dataclasses
import os
import subprocess
import sys

import keras
import numpy as np
import tensorflow as tf

from sparse_gen_tf.errors import UserError
from sparse_gen_tf.learning.abp import AlternatingBackprop
from sparse_gen_tf.learning.cooperative import CooperativeLearning
from sparse_gen_tf.learning.langevin import LangevinConfig
from sparse_gen_tf.model.descriptor import Descriptor, DescriptorConfig
from sparse_gen_tf.model.generator import Generator, GeneratorConfig
from sparse_gen_tf.training import distribute


@dataclasses.dataclass(frozen=True)
class Setup:
    """What is timed and compared: the generator, the descriptor, batch and L."""
    generator: GeneratorConfig
    descriptor: DescriptorConfig
    batch_size: int
    langevin_steps: int


SETUPS = {
    # celeba.flags' architecture and step: FC 2x2x256 -> 4x4x128 -> 64x64, K = 64, 128,
    # d = 100, batch 64, L = 30; train.py's descriptor.
    "paper": Setup(GeneratorConfig(image_size=64, latent_dim=100, channels=(256, 128),
                                   topk=(64, 128), kernel_sizes=(4, 16), strides=(2, 16)),
                   DescriptorConfig(), batch_size=64, langevin_steps=30),
    # The test suite's: seconds on a CPU.
    "tiny": Setup(GeneratorConfig(image_size=16, latent_dim=4, channels=(8, 8), topk=(8, 16),
                                  kernel_sizes=(4, 4), strides=(2, 4)),
                  DescriptorConfig(channels=(4, 8, 8), steps=3), batch_size=8,
                  langevin_steps=3),
}
KINDS = ("abp", "cooperative")

# The compared step's SGD learning rates (generator, descriptor): 1, so that a weight's
# change is minus its gradient, far above float32's resolution at the weight (with 1e-4
# the FC kernel's changes were a few units in the last place of its weights).
LEARNING_RATES = (1.0, 1.0)
# Tolerances on the difference from the CPU's float32 step, relative to the change that
# step made, as (largest difference / largest change, RMS difference / RMS change): for
# the chains, for each weight, and for the median over the weights; None is not checked.
# float32: the CPU's own formulations of the paper step, the sparse kernels and the dense
# XLA step with top_k that a GPU runs, agree to 1e-7 in the chains and 6e-6 in the
# weights (2e-6 RMS); the tolerances leave room for other reduction orders and for a unit
# at a TopK threshold that falls on the other side of it. Mixed precision rounds g and
# its gradients to 16 bits. At the paper size on the CPU, mixed_bfloat16 (mixed_float16)
# put the chains within 2e-4 (7e-5) RMS of float32's (1e-2 at the tiny size) and the
# median weight within 0.09 (0.035), but the output bias, whose gradient sums the
# residual Y - g(z) over every pixel, 1.2 (0.18) off: near a fit that residual is of the
# order of g's 16-bit rounding, which the sum does not average away. So a mixed step is
# checked for moving the chains as float32 does, and the median weight: a skipped step is
# 1.0 off, a step the wrong way 2.0. Every weight's numbers are in the report.
TOLERANCES = {
    "float32": {"chains": (1e-3, 1e-4), "each weight": (1e-2, 1e-3),
                "median weight": (None, None)},
    **{mixed: {"chains": (0.1, 0.05), "each weight": (None, None),
               "median weight": (None, 0.5)} for mixed in distribute.PRECISIONS[1:]},
}


def with_precision(precision, build):
    """build() under Keras' global policy precision; the policy is float32 again after."""
    distribute.set_precision(precision)
    try:
        return build()
    finally:
        distribute.set_precision("float32")


def step_path(model):
    """Which formulation of the train step `compile` chose, in words."""
    if model.uses_sparse_kernels:
        return "sparse kernels for the Langevin gradient, the θ step under XLA"
    return ("XLA" if model.jit_compile else "no XLA") + ", dense" + (
        ", TopK by bisection" if model.generator.topks[0].bisection else ", TopK by top_k")


def start_state(setup, seed=0):
    """The compared step's start: {"ids", "images", "chains", "generator_i",
    "descriptor_i"}. The images are g(z*) of the start weights at z* ~ N(0, I), and the
    chains z* plus N(0, 0.25) noise: data the generator can fit, as in training, so that
    the step's gradients are not sums of cancelling random terms, whose float error
    would swamp the comparison. The biases are random: an untrained generator's zero
    biases make ties at the TopK thresholds."""
    keras.utils.set_random_seed(seed)
    rng = np.random.default_rng(seed)
    with tf.device("/CPU:0"):
        generator = Generator(setup.generator)
        for variable in generator.weights:
            if variable.path.endswith("bias"):
                variable.assign(rng.normal(0.0, 0.1, variable.shape).astype(np.float32))
        descriptor = Descriptor(setup.descriptor, image_size=setup.generator.image_size)
        z = rng.standard_normal([setup.batch_size, setup.generator.latent_dim])
        images = generator(z.astype(np.float32)).numpy()
    state = {"ids": np.arange(setup.batch_size, dtype=np.int32), "images": images,
             "chains": (z + 0.5 * rng.standard_normal(z.shape)).astype(np.float32)}
    for name, weights in (("generator", generator.get_weights()),
                          ("descriptor", descriptor.get_weights())):
        state.update({f"{name}_{i}": w for i, w in enumerate(weights)})
    return state


def weights_of(state, name):
    """The list of arrays state[name_0], state[name_1], ..."""
    return [state[f"{name}_{i}"] for i in range(len(state)) if f"{name}_{i}" in state]


def one_step(setup, start, precision="float32", kind="abp"):
    """One compared train step from start (no Langevin noise, SGD, under XLA):
    ({"chains", "generator_i"[, "descriptor_i"]} after it, the path compile chose)."""
    cooperative = kind == "cooperative"

    def build():
        langevin = dict(langevin=LangevinConfig(steps=setup.langevin_steps),
                        langevin_noise=False)
        generator = Generator(setup.generator)
        if cooperative:
            model = CooperativeLearning(
                generator, Descriptor(setup.descriptor, image_size=setup.generator.image_size),
                setup.batch_size, descriptor_noise=False,
                descriptor_optimizer=keras.optimizers.SGD(LEARNING_RATES[1]), **langevin)
        else:
            model = AlternatingBackprop(generator, setup.batch_size, **langevin)
        optimizer = keras.optimizers.SGD(LEARNING_RATES[0])
        if precision == "mixed_float16":  # as run.build_model: no overflowing loss scale
            optimizer = keras.optimizers.LossScaleOptimizer(optimizer, initial_scale=1.0)
        model.compile(optimizer=optimizer, jit_compile=True)
        return model

    model = with_precision(precision, build)
    model.generator.set_weights(weights_of(start, "generator"))
    model.chains.assign(start["chains"])
    if cooperative:
        model.descriptor.set_weights(weights_of(start, "descriptor"))
    model.train_on_batch(start["ids"], start["images"])
    after = {"chains": model.chains.numpy()}
    after.update({f"generator_{i}": w for i, w in enumerate(model.generator.get_weights())})
    if cooperative:
        after.update({f"descriptor_{i}": w
                      for i, w in enumerate(model.descriptor.get_weights())})
    return after, step_path(model)


def difference(ours, reference, start):
    """How far ours is from reference, both one step after start (arrays of one shape):
    the largest absolute difference, and the difference relative to the reference step's
    change, largest over largest and RMS over RMS. A change counts as at least float32's
    resolution at the start's scale (at least 1), so that a weight the step leaves
    alone, such as the descriptor's score bias, whose gradient cancels, is not divided
    by zero."""
    ours, reference, start = (np.asarray(a, np.float64) for a in (ours, reference, start))
    change, diff = reference - start, ours - reference
    floor = np.finfo(np.float32).eps * max(np.abs(start).max(), 1.0)
    return {"max_abs_diff": float(np.abs(diff).max()),
            "max_abs_change": float(np.abs(change).max()),
            "relative_diff": float(np.abs(diff).max() / max(np.abs(change).max(), floor)),
            "rms_relative_diff": float(np.linalg.norm(diff) / max(
                np.linalg.norm(change), floor * np.sqrt(change.size)))}


def within(values, tolerance):
    """True when values' relative_diff and rms_relative_diff are within tolerance, a
    (max, rms) pair whose None entries are not checked."""
    return all(limit is None or values[key] <= limit for key, limit in zip(
        ("relative_diff", "rms_relative_diff"), tolerance))


def compare(ours, reference, start, precision):
    """The chains and every weight of ours against the CPU's reference step, checked
    against TOLERANCES[precision]: {"parts": {name: difference + "passed"}, "median
    weight", "worst" (the part furthest off in RMS), "passed"}."""
    tolerances = TOLERANCES[precision]
    result = {"tolerances": tolerances, "parts": {}}
    for key in sorted(reference):
        part = difference(ours[key], reference[key], start[key])
        part["shape"] = list(reference[key].shape)
        part["passed"] = bool(np.isfinite(ours[key]).all() and within(
            part, tolerances["chains" if key == "chains" else "each weight"]))
        result["parts"][key] = part
    weights = [part for key, part in result["parts"].items() if key != "chains"]
    median = {key: float(np.median([part[key] for part in weights]))
              for key in ("relative_diff", "rms_relative_diff")}
    median["passed"] = within(median, tolerances["median weight"])
    worst = max(result["parts"], key=lambda k: result["parts"][k]["rms_relative_diff"])
    result.update({"median weight": median, "worst": worst, "passed": median["passed"] and all(
        part["passed"] for part in result["parts"].values())})
    return result


def cpu_reference(setup_name, start, workdir):
    """The CPU's float32 step of each of KINDS from start, in a child process that sees no
    GPU: ({kind: after}, {kind: the path compile chose there})."""
    np.savez(os.path.join(workdir, "start.npz"), **start)
    result = subprocess.run(
        [sys.executable, os.path.abspath(__file__), workdir, setup_name],
        env={**os.environ, "CUDA_VISIBLE_DEVICES": "-1"}, capture_output=True, text=True)
    if result.returncode != 0:
        lines = [line for line in result.stderr.splitlines() if line.strip()]
        raise RuntimeError("the CPU's step failed: " + (lines[-1] if lines else "no output"))
    saved = dict(np.load(os.path.join(workdir, "reference.npz")))
    after = {kind: {key.split("/", 1)[1]: value for key, value in saved.items()
                    if key.startswith(kind + "/")} for kind in KINDS}
    return after, {kind: str(saved[f"path/{kind}"]) for kind in KINDS}


def write_reference(workdir, setup_name):
    """The child's side of cpu_reference: DIR/start.npz in, DIR/reference.npz out."""
    if tf.config.list_physical_devices("GPU"):
        raise UserError("the CPU's step must run where TensorFlow sees no GPU; set "
                        "CUDA_VISIBLE_DEVICES=-1")
    start = dict(np.load(os.path.join(workdir, "start.npz")))
    saved = {}
    for kind in KINDS:
        after, path = one_step(SETUPS[setup_name], start, "float32", kind)
        saved.update({f"{kind}/{key}": value for key, value in after.items()})
        saved[f"path/{kind}"] = np.array(path)
    np.savez(os.path.join(workdir, "reference.npz"), **saved)


if __name__ == "__main__":
    if len(sys.argv) != 3 or sys.argv[2] not in SETUPS:
        sys.exit(f"usage: {sys.argv[0]} DIR {{{','.join(SETUPS)}}}")
    try:
        write_reference(*sys.argv[1:])
    except UserError as e:
        sys.exit(f"step_comparison.py: error: {e}")
