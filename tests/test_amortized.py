"""The inference network q(z | Y) and the amortized inference: its guess, its refinement,
its training during and after a run, where it is stored, and the commands that use it."""

import json
import os
import shutil

import keras
import numpy as np
import pytest
import tensorflow as tf

from conftest import (assert_flag_error, last_line, run_command, run_train,
                      tensorboard_tags, tiny_flags, tiny_generator, train_ok)
from sparse_gen_tf import Generator, log_joint
from sparse_gen_tf.errors import UserError
from sparse_gen_tf.learning import amortized, inference
from sparse_gen_tf.learning.langevin import langevin
from sparse_gen_tf.model.encoder import Encoder, EncoderConfig
from sparse_gen_tf.training import encoder as encoder_lib
from sparse_gen_tf.training import run

CONFIG = tiny_generator(image_size=16, latent_dim=8, channels=(16, 8), topk=(16, 32))
SIGMA = 0.3


def sharp_generator():
    """A seeded random generator whose image depends strongly on z (a peaked posterior)."""
    keras.utils.set_random_seed(0)
    generator = Generator(CONFIG)
    for weight in generator.trainable_weights:
        weight.assign(weight * 3.0)
    return generator


def tiny_encoder(seed=1):
    keras.utils.set_random_seed(seed)
    return Encoder(EncoderConfig(channels=(8, 16)), latent_dim=8, image_size=16)


def energy(generator, z, images, observed=None):
    """-log p(z, Y) of Eq. (11) per image."""
    log_likelihood, log_prior = log_joint(generator, z, images, SIGMA, observed)
    return -(log_likelihood + log_prior).numpy()


def test_the_encoder_maps_images_to_latents_and_holds_weights_only():
    encoder = tiny_encoder()
    z = encoder(tf.zeros([3, 16, 16, 3]))
    assert z.shape == (3, 8) and z.dtype == tf.float32
    # Two convs (kernel, bias) and the dense head (kernel, bias): nothing else.
    assert [tuple(w.shape) for w in encoder.weights] == [
        (4, 4, 3, 8), (8,), (4, 4, 8, 16), (16,), (4 * 4 * 16, 8), (8,)]


def test_fitting_lowers_the_negative_log_joint_of_the_networks_guess():
    generator = sharp_generator()
    images = generator(tf.random.stateless_normal([64, 8], [1, 1]))
    encoder = tiny_encoder()
    before = energy(generator, encoder(images), images).mean()
    history = amortized.fit(encoder, generator, images, sigma=SIGMA, steps=60,
                            batch_size=32, learning_rate=3e-3)
    after = energy(generator, encoder(images), images).mean()
    assert after < 0.7 * before, (before, after)
    assert history.history["loss"][-1] < history.history["loss"][0]
    # The generator's weights are the model's: fitting the network leaves them alone.
    np.testing.assert_array_equal(generator.fc.kernel, sharp_generator().fc.kernel)


def test_the_refinement_climbs_the_log_joint_from_the_guess():
    generator = sharp_generator()
    images = generator(tf.random.stateless_normal([6, 8], [2, 2]))
    encoder = tiny_encoder()
    guess = inference.guess(encoder, images)
    refined = inference.amortized(generator, encoder, images, steps=20, step_size=0.02,
                                  sigma=SIGMA)
    assert (energy(generator, refined, images) < energy(generator, guess, images)).all()
    # With no steps the answer is the guess itself, as the first start of `infer`.
    np.testing.assert_array_equal(
        inference.amortized(generator, encoder, images, steps=0, step_size=0.02,
                            sigma=SIGMA), guess)


def test_momentum_refinement_climbs_the_log_joint_further_in_the_same_steps():
    generator = sharp_generator()
    images = generator(tf.random.stateless_normal([6, 8], [2, 2]))
    encoder = tiny_encoder()

    def refined(momentum):
        return inference.amortized(generator, encoder, images, steps=10, step_size=0.02,
                                   sigma=SIGMA, momentum=momentum)

    plain, heavy_ball = refined(0.0), refined(0.7)
    assert energy(generator, heavy_ball, images).mean() < energy(
        generator, plain, images).mean()
    # Deterministic: the same image gives the same bits.
    np.testing.assert_array_equal(refined(0.7), heavy_ball)


def test_momentum_is_refused_with_langevin_noise():
    generator = sharp_generator()
    with pytest.raises(ValueError, match="momentum is for noise-free steps"):
        langevin(generator, tf.zeros([1, 8]), tf.zeros([1, 16, 16, 3]), [0, 0], steps=2,
                 step_size=0.1, sigma=SIGMA, momentum=0.5)


def test_the_guess_is_the_first_start_before_the_bank_and_the_draws():
    generator = sharp_generator()
    truth = tf.random.stateless_normal([2, 8], [3, 3])
    bank = tf.concat([tf.random.stateless_normal([20, 8], [4, 4]), truth], 0)
    images = generator(truth)
    encoder = tiny_encoder()
    start = inference.starting_points(generator, images, [0, 0], restarts=4, sigma=SIGMA,
                                      bank=bank, encoder=encoder)
    np.testing.assert_array_equal(start[0], encoder(images))
    np.testing.assert_array_equal(start[1], truth)  # the best bank entry comes next


def test_more_starts_keep_the_refined_start_of_highest_log_joint():
    generator = sharp_generator()
    truth = tf.random.stateless_normal([3, 8], [6, 6])
    bank = tf.concat([tf.random.stateless_normal([20, 8], [7, 7]), truth], 0)
    images = generator(truth)
    encoder = tiny_encoder()

    def infer(starts, steps):
        return inference.amortized(generator, encoder, images, steps=steps,
                                   step_size=0.02, sigma=SIGMA, bank=bank, starts=starts)

    # Unrefined, the bank entry that painted each image beats the untrained guess.
    np.testing.assert_array_equal(infer(3, 0), truth)
    np.testing.assert_array_equal(infer(1, 0), encoder(images))
    # Refined, the kept start is at least as good as the guess refined alone.
    one, three = infer(1, 10), infer(3, 10)
    assert (energy(generator, three, images) <= energy(generator, one, images)).all()
    assert (energy(generator, three, images) < energy(generator, one, images)).any()


def test_hidden_pixels_inform_neither_the_guess_nor_the_refinement():
    generator = sharp_generator()
    images = generator(tf.random.stateless_normal([2, 8], [5, 5])).numpy()
    observed = np.ones([2, 16, 16, 1], np.float32)
    observed[:, 4:12, 8:] = 0.0
    occluded = images.copy()
    occluded[:, 4:12, 8:] = np.random.default_rng(0).uniform(-1, 1, (2, 8, 8, 3))
    encoder = tiny_encoder()

    def infer(y, mask):
        return inference.amortized(generator, encoder, tf.constant(y), steps=5,
                                   step_size=0.02, sigma=SIGMA, observed=mask)

    np.testing.assert_allclose(infer(occluded, observed), infer(images, observed),
                               rtol=1e-5, atol=1e-5)
    assert not np.allclose(infer(occluded, None), infer(images, None))  # the check can fail


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    """A tiny run trained with python train.py --encoder."""
    return train_ok(tmp_path_factory.mktemp("amortized") / "run",
                    *tiny_flags(train_steps=4, log_every=1), "--encoder",
                    "--encoder_channels=8,8", timeout=900)


@pytest.mark.slow
def test_train_with_encoder_trains_the_network_into_the_checkpoint(workdir):
    assert "epoch_encoder_loss" in tensorboard_tags(os.path.join(workdir, "tb", "train"))
    opened = run.open_run(workdir, learner=True)
    names = tf.train.load_checkpoint(opened.checkpoint).get_variable_to_shape_map()
    assert any(name.startswith("model/encoder/") for name in names)
    encoder = opened.encoder
    assert encoder is opened.learner.encoder and encoder.config.channels == (8, 8)
    fresh = Encoder(encoder.config, latent_dim=4, image_size=32)
    assert int(opened.learner.encoder_optimizer.iterations.numpy()) == 4
    assert not all(np.array_equal(a, b) for a, b in zip(encoder.get_weights(),
                                                        fresh.get_weights()))


@pytest.mark.slow
def test_reconstruct_amortized_uses_the_runs_network_and_needs_one(workdir, tmp_path):
    opened = run.open_run(workdir)
    images = opened.generator(tf.random.stateless_normal([3, 4], [6, 6]))
    settings = inference.InferenceSettings(method="amortized", amortized_steps=3,
                                           amortized_step_size=0.05, amortized_momentum=0.5,
                                           amortized_starts=1, amortized_langevin_steps=0)
    z = inference.reconstruct(opened, images, settings=settings).numpy()
    expected = inference.amortized(opened.generator, opened.encoder, images,
                                   steps=3, step_size=0.05, momentum=0.5,
                                   sigma=opened.langevin.sigma)
    np.testing.assert_allclose(z, expected, rtol=1e-4, atol=1e-4)
    opened.encoder = None
    with pytest.raises(UserError, match="no inference network.*fit_encoder"):
        inference.reconstruct(opened, images, settings=settings)


@pytest.mark.slow
def test_a_network_fitted_after_training_is_stored_beside_its_checkpoint(workdir, tmp_path):
    copy = str(tmp_path / "run")
    shutil.copytree(workdir, copy)
    path, loss = encoder_lib.fit_workdir(copy, steps=3, batch_size=32, channels=(4,))
    checkpoint = run.latest_checkpoint(copy)
    assert path == checkpoint + ".encoder.keras" and np.isfinite(loss)
    assert sorted(os.listdir(os.path.dirname(path))) == sorted(
        os.listdir(os.path.join(workdir, "checkpoints")) + [os.path.basename(path)])
    # It takes precedence over the network trained with the run.
    opened = run.open_run(copy)
    assert opened.encoder.config.channels == (4,)
    fitted = run.read_encoder(checkpoint)
    for a, b in zip(opened.encoder.get_weights(), fitted.get_weights()):
        np.testing.assert_array_equal(a, b)
    with open(path, "wb") as f:
        f.write(b"not a keras file")
    with pytest.raises(UserError, match="cannot read the inference network"):
        run.open_run(copy)


@pytest.mark.slow
def test_fit_encoder_command_writes_the_network_or_says_what_is_wrong(workdir, tmp_path):
    copy = str(tmp_path / "run")
    shutil.copytree(workdir, copy)
    result = run_command("-m", "sparse_gen_tf.commands.fit_encoder", f"--workdir={copy}",
                         "--steps=2", "--batch_size=32")
    assert result.returncode == 0, result.stderr[-3000:]
    written = run.latest_checkpoint(copy) + ".encoder.keras"
    assert result.stdout.startswith(f"Wrote {written}") and os.path.exists(written)
    missing = run_command("-m", "sparse_gen_tf.commands.fit_encoder",
                          f"--workdir={tmp_path / 'nothing'}")
    assert missing.returncode != 0 and "Traceback" not in missing.stderr
    assert last_line(missing.stderr).startswith("fit_encoder: error: no training run in")
    assert_flag_error(run_command("-m", "sparse_gen_tf.commands.fit_encoder", f"--workdir={copy}",
                                  "--encoder_channels=8,x"),
                      "--encoder_channels must be a comma list of positive integers")


@pytest.mark.slow
def test_encoder_flags_without_encoder_are_refused_before_anything_is_written(tmp_path):
    workdir = tmp_path / "run"
    result = run_train(f"--workdir={workdir}", *tiny_flags(), "--encoder_channels=8")
    assert_flag_error(result, "--encoder_channels configures the inference network",
                      str(workdir))


@pytest.mark.slow
def test_explain_infers_with_the_network_when_asked(workdir, tmp_path):
    out = str(tmp_path / "explain")
    result = run_command("-m", "sparse_gen_tf.commands.explain", f"--workdir={workdir}",
                         f"--output_dir={out}", "--num_samples=0", "--num_images=2",
                         "--nohtml", "--inference=amortized", "--amortized_steps=2")
    assert result.returncode == 0, result.stderr[-3000:]
    with open(os.path.join(out, "summary.json")) as f:
        summary = json.load(f)
    assert summary["inference"]["method"] == "amortized"
    assert summary["inference"]["amortized_steps"] == 2
    assert os.path.exists(os.path.join(out, "reconstructions.png"))
