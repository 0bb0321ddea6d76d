"""run.open_run: a trained run opened without its learner gives back exactly the generator,
chains, prior and inference network that training ended with; a checkpoint written
between two fits of the prior (marked stale) opens with the prior fitted again."""

import dataclasses
import os

import numpy as np
import pytest
import tensorflow as tf

from conftest import tiny_train_config
from sparse_gen_tf.errors import UserError
from sparse_gen_tf.learning.abp import AlternatingBackprop
from sparse_gen_tf.model import prior as prior_lib
from sparse_gen_tf.model.encoder import EncoderConfig
from sparse_gen_tf.training import run, trainer


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """(the learner as training left it, its workdir): a tiny run with an inference network
    trained alongside, trained in this process."""
    config = tiny_train_config(workdir=str(tmp_path_factory.mktemp("open_run") / "run"),
                               encoder=EncoderConfig(channels=(8, 8)))
    history = trainer.train(config)
    return history.model, config.workdir


def test_the_opened_run_computes_exactly_what_the_trained_learner_did(trained):
    learner, workdir = trained
    opened = run.open_run(workdir)
    assert opened.learner is None  # no optimizer, no descriptor built
    assert opened.step == int(learner.optimizer.iterations.numpy()) > 0
    # The transposed convolutions' weights are reachable in the checkpoint only through
    # the optimizer's variable list; a generator that missed them would keep its
    # initialisation and differ here.
    assert len(opened.generator.weights) == len(learner.generator.weights)
    for restored, trained_weight in zip(opened.generator.weights, learner.generator.weights):
        np.testing.assert_array_equal(restored.numpy(), trained_weight.numpy())
    z = tf.random.stateless_normal([6, opened.config.generator.latent_dim], [3, 4])
    np.testing.assert_array_equal(opened.generator(z).numpy(), learner.generator(z).numpy())
    np.testing.assert_array_equal(opened.chains.numpy(), learner.chains.numpy())
    for restored, trained_weight in zip(opened.prior.weights, learner.prior.weights):
        np.testing.assert_array_equal(restored.numpy(), trained_weight.numpy())
    assert opened.prior.fitted
    images = learner.generator(z)
    np.testing.assert_array_equal(opened.encoder(images).numpy(),
                                  learner.encoder(images).numpy())


def test_with_learner_the_whole_learner_is_restored_too(trained):
    learner, workdir = trained
    opened = run.open_run(workdir, learner=True)
    assert opened.generator is opened.learner.generator
    assert (int(opened.learner.optimizer.iterations.numpy())
            == int(learner.optimizer.iterations.numpy()))
    for restored, trained_weight in zip(opened.learner.optimizer.variables,
                                        learner.optimizer.variables):
        np.testing.assert_array_equal(restored.numpy(), trained_weight.numpy())


def test_a_checkpoint_of_another_architecture_is_refused_in_one_line(trained, tmp_path):
    _, workdir = trained
    config = run.read_config(workdir)
    other = dataclasses.replace(config, workdir=str(tmp_path / "other"),
                                generator=dataclasses.replace(config.generator,
                                                              channels=(8, 16)))
    run.write_config(other, num_examples=64)
    tf.io.gfile.makedirs(str(tmp_path / "other" / "checkpoints"))
    for name in tf.io.gfile.listdir(f"{workdir}/checkpoints"):
        tf.io.gfile.copy(f"{workdir}/checkpoints/{name}",
                         str(tmp_path / "other" / "checkpoints" / name))
    with pytest.raises(UserError, match="does not fit the architecture"):
        run.open_run(other.workdir)


@pytest.fixture(scope="module")
def stale(tmp_path_factory):
    """(the tiny run's config, its checkpoints directory): 4 epochs of 2 steps, a
    checkpoint every epoch (3 kept) and the prior fitted every 3 epochs and at the last,
    so ckpt-2 and ckpt-4 were written with a stale prior, ckpt-6 and ckpt-8 fitted."""
    config = tiny_train_config(workdir=str(tmp_path_factory.mktemp("stale") / "run"),
                               train_steps=8, checkpoint_every=1, figures_every=3,
                               keep_checkpoints=3)
    trainer.train(config)
    return config, os.path.join(config.workdir, run.CHECKPOINT_DIR)


def as_if_killed_after(checkpoints, step):
    """Points the checkpoint index at ckpt-<step>, as a run killed after writing it left
    it."""
    with open(os.path.join(checkpoints, "checkpoint"), "w") as f:
        f.write(f'model_checkpoint_path: "ckpt-{step}"\n'
                f'all_model_checkpoint_paths: "ckpt-{step}"\n')


def fitted_prior(config, checkpoint):
    """The run's prior fitted from the chains of the checkpoint at path, as training fits
    it (`AlternatingBackprop.fit_prior`)."""
    model, _ = run.resume(config, 64, path=checkpoint)
    expected = prior_lib.make(config.prior, config.generator)
    expected.fit(model.generator, model.chains.numpy(), seed=config.seed)
    return expected


def test_checkpoints_between_fits_of_the_prior_are_marked_and_their_marks_rotate_away(
        stale):
    _, checkpoints = stale
    assert sorted(os.path.basename(path) for path in tf.train.get_checkpoint_state(
        checkpoints).all_model_checkpoint_paths) == ["ckpt-4", "ckpt-6", "ckpt-8"]
    # ckpt-2's marker went with ckpt-2; the last epoch's checkpoint is always fitted.
    assert sorted(name for name in os.listdir(checkpoints)
                  if name.endswith(run.STALE_PRIOR_SUFFIX)) == ["ckpt-4.prior_stale"]
    assert run.prior_is_stale(os.path.join(checkpoints, "ckpt-4"))
    assert run.prior_fitted_in_checkpoint(os.path.join(checkpoints, "ckpt-8"))
    # The latest is fitted: it opens as any run does.
    opened = run.open_run(os.path.dirname(checkpoints), fit_prior=False)
    assert opened.checkpoint == os.path.join(checkpoints, "ckpt-8") and opened.prior.fitted


def killed_copy(stale, workdir):
    """A copy of the `stale` run in workdir, as if killed after ckpt-4; returns workdir."""
    config, checkpoints = stale
    tf.io.gfile.makedirs(str(workdir / "checkpoints"))
    tf.io.gfile.copy(os.path.join(config.workdir, run.CONFIG_FILE),
                     str(workdir / run.CONFIG_FILE))
    for name in os.listdir(checkpoints):
        tf.io.gfile.copy(os.path.join(checkpoints, name), str(workdir / "checkpoints" / name))
    as_if_killed_after(str(workdir / "checkpoints"), 4)
    return workdir


def test_a_stale_prior_is_refused_without_fit_prior_and_fitted_again_with_it(
        stale, tmp_path):
    config, _ = stale
    workdir = killed_copy(stale, tmp_path / "run")
    with pytest.raises(UserError, match="between two fits of the prior.*--fit_prior"):
        run.open_run(str(workdir), fit_prior=False)
    path = str(workdir / "checkpoints" / "ckpt-4")
    expected = fitted_prior(dataclasses.replace(config, workdir=str(workdir)), path)
    assert expected.fitted
    # In ckpt-4 itself the prior is as it was before any fit: empty.
    in_checkpoint = prior_lib.make(config.prior, config.generator)
    tf.train.Checkpoint(model=tf.train.Checkpoint(prior=in_checkpoint)).restore(
        path).expect_partial()
    assert not in_checkpoint.fitted
    for opened in (run.open_run(str(workdir)), run.open_run(str(workdir), learner=True)):
        assert opened.checkpoint == path and opened.step == 4 and opened.prior.fitted
        for got, want in zip(opened.prior.weights, expected.weights):
            np.testing.assert_array_equal(got.numpy(), want.numpy())


def test_resume_from_a_stale_checkpoint_fits_the_prior_once(stale, monkeypatch):
    config, checkpoints = stale
    path = os.path.join(checkpoints, "ckpt-4")
    fits = []
    real = AlternatingBackprop.fit_prior
    monkeypatch.setattr(AlternatingBackprop, "fit_prior",
                        lambda self: fits.append(1) or real(self))
    model, checkpoint = run.resume(config, 64, path=path)
    assert fits == [1] and model.prior.fitted and int(checkpoint.epoch) == 2
    run.resume(config, 64, path=os.path.join(checkpoints, "ckpt-6"))
    assert fits == [1]  # a fitted checkpoint's prior is restored as it is


@pytest.mark.slow
def test_export_of_a_stale_checkpoint_needs_fit_prior(stale, tmp_path, commands):
    workdir = killed_copy(stale, tmp_path / "run")
    base = tmp_path / "exports"
    refused = commands.export(f"--workdir={workdir}", f"--export_base={base}")
    assert refused.returncode != 0 and "Traceback" not in refused.stderr
    assert "ckpt-4 holds no fitted prior" in commands.last_line(refused.stderr)
    assert "--fit_prior" in commands.last_line(refused.stderr)
    assert not base.exists()
    result = commands.export(f"--workdir={workdir}", f"--export_base={base}", "--fit_prior")
    assert result.returncode == 0, result.stderr[-3000:]
    assert (base / "1" / "saved_model.pb").is_file()
