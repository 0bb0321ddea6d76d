"""The TopK warm-up (--topk_warmup): K_l from the whole feature map down to --topk.

The schedule's values at the steps that matter, TopK following it without retracing
(eager, traced by bisection, traced by top_k under XLA), a short trained run that ends
with exactly K_l units kept per layer, an export of a learner mid-warm-up that serves the
configured K, and the flag's checks.
"""

import dataclasses

import numpy as np
import pytest
import tensorflow as tf

from conftest import assert_flag_error, run_train, tiny_flags, tiny_train_config

from sparse_gen_tf import serving
from sparse_gen_tf.errors import UserError
from sparse_gen_tf.learning.abp import topk_schedule
from sparse_gen_tf.model.layers import TopK
from sparse_gen_tf.training import run, trainer
from sparse_gen_tf.training.config import topk_warmup_start, topk_warmup_steps


def test_schedule_goes_from_the_map_to_k_at_the_warmup_step():
    k, start, warmup = 24, 1024, 500
    values = [int(topk_schedule(k, start, step, warmup)) for step in range(0, 1500)]
    assert values[0] == start
    assert values[warmup - 1] > k  # still warming up one step before the end
    assert values[warmup:] == [k] * (1500 - warmup)
    assert all(a >= b for a, b in zip(values, values[1:]))  # never goes back up
    assert values[warmup // 2] == k + (start - k) // 2  # a straight line


@pytest.mark.parametrize("how", ["eager", "bisection", "top_k"])
def test_topk_keeps_the_k_in_force_without_retracing(how):
    step = tf.Variable(0, dtype=tf.int64)
    layer = TopK(8)
    layer.set_schedule(lambda: topk_schedule(8, 128, step, 10), 128)
    # Ties at the threshold too (the zeros), which must still leave exactly K.
    x = tf.nn.relu(tf.random.stateless_normal([3, 2, 2, 32], seed=[1, 2]))
    if how == "eager":
        count = lambda: tf.reduce_sum(layer.mask(x), [1, 2, 3])  # noqa: E731
    else:
        layer.bisection = how == "bisection"
        count = tf.function(lambda: tf.reduce_sum(layer.mask(x), [1, 2, 3]),
                            jit_compile=True)
    for at, expected in [(0, 128), (5, 68), (9, 20), (10, 8), (40, 8)]:
        step.assign(at)
        np.testing.assert_array_equal(count().numpy(), [expected] * 3)
    if how != "eager":
        assert count.experimental_get_tracing_count() == 1
    layer.set_schedule(None, None)  # back to the fixed K
    np.testing.assert_array_equal(tf.reduce_sum(layer.mask(x), [1, 2, 3]).numpy(), [8] * 3)


def test_trained_run_with_warmup_ends_with_exactly_k_units_per_layer(tmp_path):
    # A start of 100 K: more than each map, so the warm-up starts from the dense generator.
    config = tiny_train_config(workdir=str(tmp_path / "run"), train_steps=4,
                               topk_warmup=0.5, topk_warmup_start=100.0, checkpoint_every=1)
    assert topk_warmup_steps(config) == 2
    assert topk_warmup_start(config) == (32, 128)  # the maps 2x2x8 and 4x4x8
    assert topk_warmup_start(dataclasses.replace(config, topk_warmup_start=4.0)) == (16, 32)
    fresh = run.build_model(config, 64)
    z = tf.random.stateless_normal([5, config.generator.latent_dim], seed=[3, 4])
    shapes = config.generator.feature_map_shapes()
    # At step 0 the whole map is kept: the dense generator.
    for mask, (h, w, c) in zip(fresh.generator.parse(z)["topk_masks"], shapes):
        np.testing.assert_array_equal(tf.reduce_sum(mask, [1, 2, 3]).numpy(), [h * w * c] * 5)

    trainer.train(config)
    opened = run.open_run(config.workdir, learner=True, fit_prior=False)
    assert opened.step == 4
    chains = opened.chains[:16]
    for parse in (opened.learner.generator.parse(chains), opened.generator.parse(chains)):
        for mask, k in zip(parse["topk_masks"], config.generator.topk):
            np.testing.assert_array_equal(tf.reduce_sum(mask, [1, 2, 3]).numpy(), [k] * 16)
    # The generator alone (explain, evaluate, export) has no schedule: K is fixed.
    assert all(topk.k_in_force is None for topk in
               run.open_run(config.workdir).generator.topks)


def test_warmup_that_does_not_end_before_training_is_refused(tmp_path):
    config = tiny_train_config(workdir=str(tmp_path / "run"), topk_warmup=1.0)
    with pytest.raises(UserError, match=r"--topk_warmup=1.0 must be in \[0, 1\)"):
        trainer.train(config)


@pytest.mark.parametrize("value, message", [
    ("1", "--topk_warmup must be in [0, 1)"),
    ("-0.5", "topk_warmup"),
])
def test_warmup_flag_checks(tmp_path, value, message):
    workdir = tmp_path / "run"
    result = run_train(f"--workdir={workdir}", *tiny_flags(train_steps=8),
                       f"--topk_warmup={value}")
    assert_flag_error(result, message, workdir)


def test_export_of_a_learner_under_warmup_serves_the_configured_k(tmp_path):
    # At step 0 of a warm-up from 100 K the learner's TopKs keep the whole map; the export
    # serves Eq. 1's K all the same, from signatures traced with an unknown batch size,
    # and holds none of the training state (the optimizer's step) the schedule reads.
    config = tiny_train_config(workdir=str(tmp_path / "run"), train_steps=4,
                               topk_warmup=0.5, topk_warmup_start=100.0)
    learner = run.build_model(config, 64)
    generator = learner.generator
    path = serving.export_generator(generator, str(tmp_path / "export"), step_size=0.1,
                                    sigma=0.3,
                                    settings=serving.ReconstructSettings(steps=1, restarts=1))
    loaded = tf.saved_model.load(path)
    z = tf.random.stateless_normal([5, config.generator.latent_dim], seed=[5, 6])
    served = loaded.signatures["serving_default"](z=z)
    with TopK.fixed(generator.topks):
        fixed = generator.parse(z)
    for i, k in enumerate(config.generator.topk, 1):
        np.testing.assert_array_equal(
            tf.reduce_sum(fixed["topk_masks"][i - 1], [1, 2, 3]).numpy(), [k] * 5)
        assert (served[f"mask_{i}"].numpy().reshape(5, -1).sum(axis=1) <= k).all()
        np.testing.assert_allclose(served[f"activation_{i}"], fixed["activations"][i - 1],
                                   rtol=1e-5, atol=1e-6)
    # Served images are in [0, 1], the generator's in [-1, 1].
    np.testing.assert_allclose(served["image"], (fixed["image"] + 1) / 2, rtol=1e-5,
                               atol=1e-6)
    # The schedules are back on the learner once the export is written.
    for mask, (h, w, c) in zip(generator.parse(z)["topk_masks"],
                               config.generator.feature_map_shapes()):
        np.testing.assert_array_equal(tf.reduce_sum(mask, [1, 2, 3]).numpy(), [h * w * c] * 5)
    assert learner.optimizer.iterations.dtype == tf.int64
    assert all(v.dtype != tf.int64 for v in loaded.variables)
