"""Cooperative learning (§2.4): the train step, its metrics, checkpoints and flags."""

import dataclasses
import os

import keras
import numpy as np
import pytest
import tensorflow as tf

from conftest import (assert_flag_error, last_line, run_train, tensorboard_tags, tiny_flags,
                      tiny_generator)
from sparse_gen_tf import Generator, LangevinConfig
from sparse_gen_tf.learning.cooperative import COOPERATIVE_METRICS, CooperativeLearning
from sparse_gen_tf.model.descriptor import Descriptor, DescriptorConfig

GENERATOR = tiny_generator(image_size=16)
# The paper's pure replacement (w = 0) and CoopNets' s, which these tests were written for.
DESCRIPTOR = DescriptorConfig(channels=(4, 8, 8), reference=0.016, data_weight=0.0)
N = 16


def make_model(jit_compile=True, generator_optimizer=None, descriptor_noise=True,
               **descriptor):
    """descriptor: DescriptorConfig fields that differ from DESCRIPTOR's."""
    model = CooperativeLearning(
        Generator(GENERATOR),
        Descriptor(dataclasses.replace(DESCRIPTOR, **descriptor), image_size=16), N,
        descriptor_optimizer=keras.optimizers.Adam(0.01, beta_1=0.5),
        langevin=LangevinConfig(steps=3, step_size=0.1), seed=1,
        descriptor_noise=descriptor_noise)
    model.compile(optimizer=generator_optimizer or keras.optimizers.Adam(1e-3),
                  jit_compile=jit_compile)
    return model


def data():
    images = tf.random.stateless_uniform([N, 16, 16, 3], [2, 3], -1, 1)
    return tf.range(N), images


def test_steps_under_xla_update_both_nets_and_widen_the_descriptor_gap():
    model = make_model()
    ids, images = data()
    chains = model.chains.numpy().copy()
    generator_kernel = model.generator.deconvs[-1].kernel.numpy().copy()
    descriptor_kernel = model.descriptor.score.kernel.numpy().copy()
    gaps, logs = [], None
    for step in range(6):
        batch = slice(4 * (step % 4), 4 * (step % 4) + 4)
        logs = model.train_on_batch(ids[batch], images[batch], return_dict=True)
        gaps.append(logs["f_observed"] - logs["f_revised"])
    # The first gap is measured with the initial φ; maximum likelihood then separates
    # the data from the revised samples.
    assert gaps[-1] > gaps[0] + 0.1 and gaps[-1] > 0, gaps
    assert np.isclose(logs["descriptor_loss"], -gaps[-1], rtol=1e-4)
    assert int(model.descriptor_optimizer.iterations) == 6
    assert int(model.optimizer.iterations) == 6
    assert (np.abs(model.chains.numpy() - chains).max(axis=1) > 0).all()
    assert not np.allclose(model.generator.deconvs[-1].kernel.numpy(), generator_kernel)
    assert not np.allclose(model.descriptor.score.kernel.numpy(), descriptor_kernel)
    for name in ("loss", "mse", "psnr", "z_norm", "nonzero_2") + COOPERATIVE_METRICS:
        assert np.isfinite(logs[name]), name
    assert logs["revision"] > 0


def test_noise_free_revision_lowers_the_energy_it_reports():
    model = make_model(descriptor_noise=False, step_size=0.01, reference=0.5)
    ids, images = data()
    logs = model.train_on_batch(ids[:4], images[:4], return_dict=True)
    assert logs["energy_after"] < logs["energy_before"]


def test_generator_learns_only_from_the_revision():
    # A revision too small to represent in float32 leaves Ỹ = g(z): Eq. (12) with Ỹ for
    # Y then has a zero gradient, however far g(z) is from the data.
    model = make_model(generator_optimizer=keras.optimizers.SGD(1.0), steps=1,
                       step_size=1e-30, descriptor_noise=False)
    ids, images = data()
    weights = [w.numpy().copy() for w in model.generator.trainable_weights]
    logs = model.train_on_batch(ids[:4], images[:4], return_dict=True)
    assert logs["loss"] == 0.0 and logs["revision"] == 0.0 and logs["mse"] > 0.1
    for before, after in zip(weights, model.generator.trainable_weights):
        np.testing.assert_array_equal(before, after.numpy())


def test_data_weight_mixes_the_data_into_the_generators_target():
    # With the same negligible revision (Ỹ = g(z)), the target (1 - w) Ỹ + w Y makes the
    # loss w² ‖Y - g(z)‖² / (2σ²), so it scales with w² against the data term alone.
    ids, images = data()
    losses = {}
    for weight in (0.5, 1.0):
        model = make_model(steps=1, step_size=1e-30, descriptor_noise=False,
                           data_weight=weight)
        logs = model.train_on_batch(ids[:4], images[:4], return_dict=True)
        losses[weight] = logs["loss"]
        data_loss = -logs["log_likelihood"]  # ‖Y - g(z_i)‖² / (2σ²), the same z
        np.testing.assert_allclose(logs["loss"], weight ** 2 * data_loss, rtol=1e-4)
    assert losses[1.0] > 3 * losses[0.5]


def test_fresh_samples_join_the_step_but_only_the_batch_chains_move():
    model = make_model(fresh_samples=True)
    ids, images = data()
    chains = model.chains.numpy().copy()
    logs = model.train_on_batch(ids[:4], images[:4], return_dict=True)
    moved = np.abs(model.chains.numpy() - chains).max(axis=1) > 0
    assert moved[:4].all() and not moved[4:].any()
    assert all(np.isfinite(logs[name]) for name in COOPERATIVE_METRICS)


def test_fit_stops_with_one_sentence_when_the_revision_diverges():
    from sparse_gen_tf.errors import DivergenceError

    model = make_model(step_size=50.0)  # noise alone moves pixels by ~190
    ids, images = data()
    dataset = tf.data.Dataset.from_tensor_slices((ids, images)).batch(4)
    with pytest.raises(DivergenceError, match="descriptor's Langevin diverged .* lower "
                                              "--descriptor_step_size"):
        model.fit(dataset, epochs=1, verbose=0)
    assert int(model.optimizer.iterations) == 1  # stopped after the first step


# --- the real train.py --descriptor -------------------------------------------------------

TINY = tiny_flags(log_every=1)
DESCRIPTOR_FLAGS = ["--descriptor", "--descriptor_channels=4,4,4", "--descriptor_steps=2"]


def descriptor_tensors(workdir):
    reader = tf.train.load_checkpoint(os.path.join(workdir, "checkpoints"))
    return {k: reader.get_tensor(k) for k in reader.get_variable_to_shape_map()
            if k.startswith("model/descriptor")}


@pytest.mark.slow
def test_checkpoints_hold_the_descriptor_and_its_optimizer_and_resume_restores_them(
        tmp_path):
    from sparse_gen_tf.training import run

    workdir = str(tmp_path / "run")
    first = run_train(f"--workdir={workdir}", "--train_steps=2", *TINY, *DESCRIPTOR_FLAGS)
    assert first.returncode == 0, first.stderr[-3000:]
    saved = descriptor_tensors(workdir)
    tags = tensorboard_tags(os.path.join(workdir, "tb"))
    assert {"data_reconstructions_revisions", "epoch_revision", "epoch_f_observed"} <= tags
    kernel_key = "model/descriptor/score/_kernel/.ATTRIBUTES/VARIABLE_VALUE"
    iterations_key = "model/descriptor_optimizer/_iterations/.ATTRIBUTES/VARIABLE_VALUE"
    assert saved[iterations_key] == 2 and saved[kernel_key].shape == (8 * 8 * 4, 1)
    assert any("descriptor_optimizer/_variables" in k for k in saved)  # Adam's moments

    # Restored into a fresh model: the descriptor and its optimizer are the saved ones.
    model = run.open_run(workdir, learner=True).learner
    np.testing.assert_array_equal(model.descriptor.score.kernel.numpy(), saved[kernel_key])
    assert int(model.descriptor_optimizer.iterations) == 2

    second = run_train(f"--workdir={workdir}", "--train_steps=4", *TINY, *DESCRIPTOR_FLAGS)
    assert second.returncode == 0, second.stderr[-3000:]
    assert "Resumed from" in second.stderr
    resumed = descriptor_tensors(workdir)
    assert resumed[iterations_key] == 4  # continued at 2, not from 0
    assert not np.array_equal(resumed[kernel_key], saved[kernel_key])

    plain = run_train(f"--workdir={workdir}", "--train_steps=6", *TINY)
    assert plain.returncode != 0
    assert "--descriptor was True, now False" in last_line(plain.stderr)


@pytest.mark.slow
@pytest.mark.parametrize("flags,message", [
    (["--descriptor_steps=5"], "add --descriptor"),
    (["--descriptor_fresh_samples"], "add --descriptor"),
    (["--descriptor_data_weight=0.25"], "add --descriptor"),
    (["--descriptor", "--descriptor_data_weight=1.5"], "descriptor_data_weight"),
    (["--descriptor", "--descriptor_step_size=0"], "--descriptor_step_size must be > 0"),
    (["--descriptor", "--descriptor_reference=-1"], "--descriptor_reference must be > 0"),
    (["--descriptor", "--descriptor_learning_rate=0"], "--descriptor_learning_rate must be"),
    (["--descriptor", "--descriptor_steps=0"], "descriptor_steps"),
    (["--descriptor", "--descriptor_channels=8,8"], "need 2 entries each"),
    (["--descriptor", "--descriptor_strides=2,x,1"], "positive integers"),
])
def test_bad_descriptor_flags_fail_with_one_clear_line_and_write_nothing(tmp_path, flags,
                                                                          message):
    workdir = tmp_path / "run"
    result = run_train(f"--workdir={workdir}", *TINY, *flags, timeout=120)
    assert_flag_error(result, message, workdir)
