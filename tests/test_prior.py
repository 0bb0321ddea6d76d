"""The prior that samples come from (model/prior.py): the grammar prior's samples are legal
images of the parts grammar far more often than N(0, I)'s, it stores no training image's
code, it is checkpointed with the model, and a seed fixes a sample."""

import dataclasses
import types

import numpy as np
import pytest
import tensorflow as tf

from conftest import tiny_generator, tiny_train_config
from sparse_gen_tf import serving
from sparse_gen_tf.explanation import parts_scores
from sparse_gen_tf.model import clusters
from sparse_gen_tf.model import prior as prior_lib
from sparse_gen_tf.model.generator import Generator, GeneratorConfig
from sparse_gen_tf.training import run, trainer
from sparse_gen_tf.training.config import TrainConfig

TINY = tiny_train_config()
# The default run for a fifth of its steps (one checkpoint, at the end): enough for a
# good share of the reconstructions' quadrants to be legal derivations of the grammar,
# and so a fair test of whether the prior's samples come near them.
SMALL = TrainConfig(train_steps=640, checkpoint_every=1000, num_summary_images=4)
NUM_SAMPLES = 256


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A tiny trained run (its checkpoint holds a fitted grammar prior) and its model."""
    config = dataclasses.replace(TINY, workdir=str(tmp_path_factory.mktemp("tiny") / "run"))
    trainer.train(config)
    opened = run.open_run(config.workdir)
    return types.SimpleNamespace(config=config, opened=opened, model=opened)


def top_codes(model):
    """Every training image's code at every top AND node: [s*s, N, c_1]."""
    top = model.generator.top_feature_map(model.chains.numpy()).numpy()
    n, s, _, c = top.shape
    return top.reshape(n, s * s, c).transpose(1, 0, 2)


def nearest_code_distance(centroids, codes):
    """The smallest distance from any centroid [C, D] to any code [N, D]."""
    d2 = ((centroids[:, None] - codes[None]) ** 2).sum(-1)
    return float(np.sqrt(d2.min())) if d2.size else np.inf


def test_kmeans_keeps_only_clusters_of_at_least_min_members_and_no_single_point():
    rng = np.random.RandomState(0)
    points = np.concatenate([rng.normal(c, 0.3, [n, 3]) for c, n in ((-6, 40), (0, 25),
                                                                      (6, 12), (20, 3))])
    centroids, members = clusters.kmeans(points, 6, min_members=8)
    assert len(centroids) >= 2 and (members >= 8).all() and members.sum() <= len(points)
    # The three far points (at 20) form a cluster too small to keep.
    assert (np.abs(centroids - 20).max(1) > 5).all()
    assert nearest_code_distance(centroids, points) > 0.05
    # The check can fail: clusters of one point are the points themselves.
    singles, _ = clusters.kmeans(points[:10], 10, min_members=1)
    assert nearest_code_distance(singles, points[:10]) < 1e-6


def test_the_checkpoint_holds_the_fitted_prior_and_a_fresh_model_restores_it(tiny):
    reader = tf.train.load_checkpoint(tiny.opened.checkpoint)
    saved = reader.get_tensor("model/prior/members/.ATTRIBUTES/VARIABLE_VALUE")
    per_node = saved.sum(-1)  # chains in kept clusters, per top AND node
    assert (per_node > 0).all() and (per_node <= tiny.opened.num_examples).all()
    fresh = run.build_model(tiny.config, tiny.opened.num_examples)
    assert not fresh.prior.fitted and not fresh.prior.centroids.numpy().any()
    checkpoint, _ = run.checkpoint_for(fresh)
    checkpoint.restore(tiny.opened.checkpoint).expect_partial()
    for name in ("centroids", "members"):
        np.testing.assert_array_equal(getattr(fresh.prior, name).numpy(), reader.get_tensor(
            f"model/prior/{name}/.ATTRIBUTES/VARIABLE_VALUE"))
    assert fresh.prior.fitted


def test_every_stored_configuration_pools_at_least_min_members_training_parses(tiny):
    prior = tiny.model.prior
    members = prior.members.numpy()
    assert ((members == 0) | (members >= serving.MIN_MEMBERS)).all()
    assert (members.sum(-1) <= tiny.opened.num_examples).all()
    for centroids, count, codes in zip(prior.centroids.numpy(), members, top_codes(tiny.model)):
        kept = centroids[count > 0]
        scale = np.linalg.norm(codes - codes.mean(0), axis=1).mean()
        assert nearest_code_distance(kept, codes) > 1e-3 * scale
        # A bank of the codes themselves would be caught by the same measure.
        assert nearest_code_distance(codes[:4], codes) == 0.0


@pytest.mark.slow
def test_the_export_stores_the_prior_and_no_row_per_training_image(tiny, tmp_path):
    path = serving.export_workdir(tiny.config.workdir, str(tmp_path))
    variables = {v.name.split(":")[0]: v.numpy() for v in tf.saved_model.load(path).variables}
    np.testing.assert_array_equal(variables["prior/centroids"],
                                  tiny.model.prior.centroids.numpy())
    num_examples = tiny.opened.num_examples
    assert not [name for name, v in variables.items() if v.shape and v.shape[0] == num_examples]
    for centroids, codes in zip(variables["prior/centroids"], top_codes(tiny.model)):
        used = centroids[np.abs(centroids).sum(-1) > 0]
        assert nearest_code_distance(used, codes) > 1e-4


def test_the_same_seed_gives_the_same_sample_whatever_else_is_in_the_batch(tiny):
    generator, prior = tiny.model.generator, tiny.model.prior
    both = prior.sample(generator, tf.constant([7, 8], tf.int64))
    again = prior.sample(generator, tf.constant([7, 8], tf.int64))
    alone = prior.sample(generator, tf.constant([8], tf.int64))
    np.testing.assert_array_equal(both["image"], again["image"])
    np.testing.assert_array_equal(alone["image"][0], both["image"][1])
    many = prior.sample(generator, prior_lib.sample_seeds(32))["image"].numpy()
    assert len(np.unique(many.round(4).reshape(32, -1), axis=0)) > 1


def test_a_grammar_sample_is_a_sparse_parse_that_its_top_layer_determines(tiny):
    generator = tiny.model.generator
    sample = tiny.model.prior.sample(generator, prior_lib.sample_seeds(8))
    assert "z" not in sample
    for k, mask_t, mask_r in zip(TINY.generator.topk, sample["topk_masks"], sample["relu_masks"]):
        kept = (mask_t * mask_r).numpy().reshape(8, -1).sum(1)
        assert (kept <= k).all() and (kept > 0).all()
    again = generator.parse_from_top(sample["activations"][0])
    np.testing.assert_allclose(again["image"], sample["image"], atol=1e-6)


@pytest.mark.slow
def test_an_export_with_the_normal_prior_samples_z_and_serves_it(tmp_path):
    generator = Generator(tiny_generator())
    path = serving.export_generator(generator, str(tmp_path), step_size=0.1, sigma=0.3,
                                    settings=serving.ReconstructSettings(steps=1, restarts=1),
                                    prior=prior_lib.NormalPrior(generator.config))
    served = tf.saved_model.load(path).signatures["sample"](seed=tf.constant([3, 4], tf.int64))
    z = prior_lib.latent_from_seeds(tf.constant([3, 4], tf.int64), 4)
    np.testing.assert_array_equal(served["z"], z)
    np.testing.assert_allclose(served["image"], (generator(z) + 1) / 2, atol=1e-6)


def test_unknown_priors_are_refused_in_one_line():
    with pytest.raises(ValueError,
                       match="unknown prior 'gaussian'; use one of grammar, joint, normal"):
        prior_lib.make("gaussian", GeneratorConfig())


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    """A small run on the parts grammar, trained long enough to parse it."""
    config = dataclasses.replace(SMALL, workdir=str(tmp_path_factory.mktemp("small") / "run"))
    trainer.train(config)
    opened = run.open_run(config.workdir)
    return types.SimpleNamespace(model=opened, truth=opened.data().ground_truth)


@pytest.mark.slow
def test_grammar_samples_are_legal_images_far_more_often_than_normal_samples(small):
    generator, seeds = small.model.generator, prior_lib.sample_seeds(NUM_SAMPLES)

    def validity(images):
        return parts_scores.grammar_validity(np.asarray(images), small.truth)[0]

    grammar = validity(small.model.prior.sample(generator, seeds)["image"])
    normal = validity(prior_lib.NormalPrior(generator.config).sample(generator, seeds)["image"])
    chains = validity(generator(small.model.chains.numpy()[:NUM_SAMPLES]))
    assert grammar > normal + 0.2, (grammar, normal, chains)
    assert grammar > 0.7 * chains, (grammar, normal, chains)


def top_maps(model):
    """Every training image's whole top feature map fm^1, flattened: [N, s*s*c_1]."""
    top = model.generator.top_feature_map(model.chains.numpy()).numpy()
    return top.reshape(len(top), -1)


@pytest.fixture(scope="module")
def joint(tiny):
    """The joint prior fitted to the tiny run's chains, asked for more clusters than the
    privacy rule allows, so that it must drop some."""
    prior = prior_lib.make("joint", tiny.model.generator.config, clusters=40)
    prior.fit(tiny.model.generator, tiny.model.chains.numpy(), seed=0)
    return prior


def test_every_joint_configuration_pools_at_least_min_members_parses_and_none_is_one(tiny, joint):
    members = joint.members.numpy()
    num_examples = tiny.opened.num_examples
    assert members.max() >= serving.MIN_MEMBERS and members.sum() <= num_examples
    assert ((members == 0) | (members >= serving.MIN_MEMBERS)).all()
    # At most N / MIN_MEMBERS clusters can each pool MIN_MEMBERS parses.
    assert (members > 0).sum() <= num_examples // serving.MIN_MEMBERS
    codes = top_maps(tiny.model)
    kept = members > 0
    centroids = joint.centroids.numpy()[kept].reshape(kept.sum(), -1)
    scale = np.linalg.norm(codes - codes.mean(0), axis=1).mean()
    assert nearest_code_distance(centroids, codes) > 1e-3 * scale
    # Each stored mean is the mean of its cluster's codes: clustering the same parses again
    # reproduces every one of them from >= MIN_MEMBERS codes.
    active = tiny.model.generator.parse(tiny.model.chains.numpy())["activations"][0]
    labels = prior_lib.configuration_clusters(active.numpy().reshape(len(codes), -1), 40)
    means = np.stack([codes[labels == c].mean(0) for c in np.unique(labels[labels >= 0])])
    np.testing.assert_allclose(means, centroids, rtol=1e-4, atol=1e-4)
    # The spreads are shrunk standard deviations of the same members, never a code.
    assert (joint.scales.numpy()[~kept] == 0).all()
    assert (joint.scales.numpy()[kept] >= 0).all()


def test_configuration_clusters_drop_clusters_below_min_members():
    rng = np.random.RandomState(1)
    rows = np.concatenate([rng.normal(c, 0.1, [n, 6]) for c, n in ((0, 30), (5, 20), (40, 3))])
    labels = prior_lib.configuration_clusters(rows, 5, components=3)
    sizes = np.bincount(labels[labels >= 0])
    assert (sizes[sizes > 0] >= clusters.MIN_MEMBERS).all()
    # The three far rows are too few for a cluster of their own: they join the nearest
    # kept one, so two clusters remain.
    assert len(np.unique(labels[labels >= 0])) == 2
    assert (labels[-3:] == labels[30]).all()
    assert (prior_lib.configuration_clusters(rows[:5], 2) == -1).all()


def test_a_joint_sample_is_a_sparse_parse_whose_seed_fixes_it(tiny, joint):
    generator = tiny.model.generator
    sample = joint.sample(generator, prior_lib.sample_seeds(8))
    assert "z" not in sample
    for k, mask_t, mask_r in zip(TINY.generator.topk, sample["topk_masks"], sample["relu_masks"]):
        kept = (mask_t * mask_r).numpy().reshape(8, -1).sum(1)
        assert (kept <= k).all() and (kept > 0).all()
    both = joint.sample(generator, tf.constant([7, 8], tf.int64))["image"]
    alone = joint.sample(generator, tf.constant([8], tf.int64))["image"]
    np.testing.assert_array_equal(alone[0], both[1])
    assert not np.array_equal(both[0], both[1])


def test_an_export_with_the_joint_prior_serves_samples_and_no_training_code(tiny, joint,
                                                                            tmp_path):
    generator = tiny.model.generator
    path = serving.export_generator(generator, str(tmp_path), step_size=0.1, sigma=0.3,
                                    settings=serving.ReconstructSettings(steps=1, restarts=1),
                                    prior=joint)
    loaded = tf.saved_model.load(path)
    variables = {v.name.split(":")[0]: v.numpy() for v in loaded.variables}
    np.testing.assert_array_equal(variables["prior/centroids"], joint.centroids.numpy())
    assert not [name for name, v in variables.items()
                if v.shape and v.shape[0] == tiny.opened.num_examples]
    used = variables["prior/centroids"][variables["prior/members"] > 0]
    assert nearest_code_distance(used.reshape(len(used), -1), top_maps(tiny.model)) > 1e-4
    served = loaded.signatures["sample"](seed=tf.constant([3, 4], tf.int64))
    expected = joint.sample(generator, tf.constant([3, 4], tf.int64))["image"]
    np.testing.assert_allclose(served["image"], (expected + 1) / 2, atol=1e-5)
    assert "z" not in served
