"""run.open_run: a trained run opened without its learner gives back exactly the generator,
chains, prior and inference network that training ended with."""

import dataclasses

import numpy as np
import pytest
import tensorflow as tf

from conftest import tiny_train_config
from sparse_gen_tf.errors import UserError
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
