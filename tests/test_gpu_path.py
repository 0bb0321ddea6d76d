"""The train step a GPU runs, compiled and run on the CPU.

Where TensorFlow sees a GPU, `AlternatingBackprop.compile` picks the dense XLA step with
TopK by top_k: the sparse kernels are CPU kernels, and the bisection is for XLA:CPU. No
GPU is available to the tests, so they pretend one while the step is compiled
(conftest.host_gpus) and run that step on the CPU. It must compile under XLA and give
the answer of the step the CPU picks (the bisection, or the sparse kernels where they
apply): in float32 within device_check's float32 tolerances, and in mixed precision
within its mixed ones, with z, the Langevin updates and the losses in float32
(`distribute.set_precision`). benchmarks/device_check.py checks the same on a GPU.
"""

import dataclasses

import keras
import numpy as np
import pytest
import tensorflow as tf

from conftest import load_benchmark
from sparse_gen_tf import AlternatingBackprop, Generator, LangevinConfig, log_joint
from sparse_gen_tf.model import sparse_kernels
from sparse_gen_tf.training import distribute

comparison = load_benchmark("step_comparison")
TINY = comparison.SETUPS["tiny"]
# K / (h*w*c) = 6.25% in both layers, the paper's: the CPU step runs the sparse kernels
# (where a C++ compiler builds them).
SPARSE = dataclasses.replace(TINY, generator=dataclasses.replace(TINY.generator,
                                                                 topk=(2, 8)))
GPU_PATH = "XLA, dense, TopK by top_k"


@pytest.fixture(scope="module")
def start():
    return comparison.start_state(TINY)


@pytest.fixture(scope="module")
def cpu_float32_step(start):
    """The CPU's own float32 step from start (no GPU here: compile sees none)."""
    return comparison.one_step(TINY, start, "float32", "abp")


def gpu_step(host_gpus, setup, start, precision, kind):
    """one_step with compile seeing a GPU, run on the CPU; host_gpus off again after."""
    host_gpus(True)
    try:
        return comparison.one_step(setup, start, precision, kind)
    finally:
        host_gpus(False)


def moved(reference, start):
    return np.abs(reference["chains"] - start["chains"]).max()


@pytest.mark.parametrize("setup,kind", [(TINY, "abp"), (SPARSE, "abp"),
                                        (TINY, "cooperative")],
                         ids=["abp", "abp where the cpu runs the kernels", "cooperative"])
def test_the_gpu_step_run_on_the_cpu_gives_the_cpu_steps_answer(host_gpus, setup, kind):
    start = comparison.start_state(setup)
    ours, gpu_path = gpu_step(host_gpus, setup, start, "float32", kind)
    reference, cpu_path = comparison.one_step(setup, start, "float32", kind)
    assert gpu_path == GPU_PATH
    expected_cpu = ("sparse kernels" if setup is SPARSE and kind == "abp"
                    and sparse_kernels.unavailable_reason() is None else "bisection")
    assert expected_cpu in cpu_path  # another formulation than the GPU's
    assert moved(reference, start) > 1e-2  # the Langevin chains moved
    result = comparison.compare(ours, reference, start, "float32")
    assert result["passed"], result["parts"][result["worst"]]
    for key in reference:  # and, read plainly, the same numbers
        np.testing.assert_allclose(ours[key], reference[key], rtol=1e-4, atol=1e-6,
                                   err_msg=key)


@pytest.mark.parametrize("precision", ["mixed_bfloat16", "mixed_float16"])
def test_mixed_precision_on_the_gpu_path_moves_as_float32_does(host_gpus, start,
                                                                cpu_float32_step, precision):
    ours, path = gpu_step(host_gpus, TINY, start, precision, "abp")
    reference, _ = cpu_float32_step
    assert path == GPU_PATH
    result = comparison.compare(ours, reference, start, precision)
    # device_check's mixed tolerances, relative to the float32 step's change: the chains
    # within 5% RMS, the median weight within 50% (a skipped step is 100% off).
    assert result["passed"], result["parts"][result["worst"]]
    # It did compute in 16 bits: its answer is not float32's.
    assert result["parts"]["chains"]["max_abs_diff"] > 0


@pytest.fixture
def policy():
    yield distribute.set_precision
    distribute.set_precision("float32")


@pytest.mark.parametrize("precision", ["mixed_bfloat16", "mixed_float16"])
def test_mixed_precision_under_xla_keeps_z_langevin_and_the_loss_float32(
        host_gpus, policy, precision):
    host_gpus(True)
    policy(precision)
    model = AlternatingBackprop(Generator(TINY.generator), 8, langevin_noise=False,
                                langevin=LangevinConfig(steps=TINY.langevin_steps))
    optimizer = keras.optimizers.SGD(1e-4)
    if precision == "mixed_float16":
        optimizer = keras.optimizers.LossScaleOptimizer(optimizer, initial_scale=1.0)
    model.compile(optimizer=optimizer, jit_compile=True)
    policy("float32")
    host_gpus(False)
    assert not any(t.bisection for t in model.generator.topks)  # the GPU's top_k
    images = tf.random.stateless_uniform([8, 16, 16, 3], [1, 2], -1.0, 1.0)
    z0 = tf.constant(model.chains.numpy())

    @tf.function(jit_compile=True)
    def infer_and_score(z):
        z = model.infer(z, images)
        return (z, model.generator(z), *log_joint(model.generator, z, images,
                                                   model.langevin.sigma))

    z, generated, log_likelihood, log_prior = infer_and_score(z0)
    assert generated.dtype == precision.split("_")[1]  # g computes in 16 bits
    assert z.dtype == log_likelihood.dtype == log_prior.dtype == tf.float32
    assert np.abs(z.numpy() - z0.numpy()).max() > 1e-3

    # The step's loss, ‖Y - g(z)‖² / 2σ² averaged over the batch, is taken in float32: it
    # is the float64 loss of the same 16-bit g(z) within float32 rounding (6e-7 here),
    # where the residual Y - g(z) taken in 16 bits would be 4e-5 (bfloat16) or 7e-6
    # (float16) off.
    logs = model.train_on_batch(np.arange(8), images.numpy(), return_dict=True)
    residual = images.numpy().astype(np.float64) - generated.numpy().astype(np.float64)
    expected = (residual ** 2).sum(axis=(1, 2, 3)).mean() / (2 * model.langevin.sigma ** 2)
    assert model.chains.dtype == "float32"
    tolerance = {"mixed_bfloat16": 5e-6, "mixed_float16": 1e-6}[precision]
    assert logs["loss"] == pytest.approx(expected, rel=tolerance)
