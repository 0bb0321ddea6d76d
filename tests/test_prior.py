"""The prior that samples come from (model/prior.py, model/blocks.py): the grammar prior's
samples are legal images of the parts grammar far more often than N(0, I)'s, its swap test
finds dependent blocks, it stores no training image's code, it is checkpointed with the
model, old runs open with the prior their checkpoint holds, and a seed fixes a sample."""

import dataclasses
import json
import os
import types

import keras
import numpy as np
import pytest
import tensorflow as tf

from conftest import tiny_generator, tiny_train_config
from sparse_gen_tf import serving
from sparse_gen_tf.data import pipeline
from sparse_gen_tf.errors import UserError
from sparse_gen_tf.explanation import parts_scores
from sparse_gen_tf.model import blocks as block_lib
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


def top_activations(model):
    """Every training image's surviving top OR nodes, activation_1 flattened: [N, U]."""
    parse = model.generator.parse(model.chains.numpy())
    return parse["activations"][0].numpy().reshape(len(model.chains.numpy()), -1)


@pytest.fixture(scope="module")
def nodes(tiny):
    """The node-by-node prior fitted to the tiny run's chains."""
    prior = prior_lib.make("nodes", tiny.model.generator.config)
    prior.fit(tiny.model.generator, tiny.model.chains.numpy(), seed=0)
    return prior


def export_with(generator, prior, directory):
    """A SavedModel of generator and prior in directory, as cheap to trace as it gets
    (one restart of one Langevin step), loaded back."""
    path = serving.export_generator(generator, str(directory), step_size=0.1, sigma=0.3,
                                    settings=serving.ReconstructSettings(steps=1, restarts=1),
                                    prior=prior)
    return tf.saved_model.load(path)


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
    # The labels name each point's kept cluster, whose mean is its centroid.
    same, sizes, labels = clusters.kmeans(points, 6, min_members=8, return_labels=True)
    np.testing.assert_array_equal(same, centroids)
    np.testing.assert_array_equal(np.bincount(labels[labels >= 0]), sizes)
    for c, centroid in enumerate(same):
        np.testing.assert_allclose(points[labels == c].mean(0), centroid, atol=1e-5)
    # The check can fail: clusters of one point are the points themselves.
    singles, _ = clusters.kmeans(points[:10], 10, min_members=1)
    assert nearest_code_distance(singles, points[:10]) < 1e-6


BLOCK_STATE = ("blocks", "configurations", "members", "lifted", "quadrant_configurations",
               "quadrant_members", "quadrant_kept")


def test_the_checkpoint_holds_the_fitted_prior_and_a_fresh_model_restores_it(tiny):
    reader = tf.train.load_checkpoint(tiny.opened.checkpoint)

    def saved(name):
        return reader.get_tensor(f"model/prior/{name}/.ATTRIBUTES/VARIABLE_VALUE")

    if saved("lifted"):  # chains in kept clusters, per quadrant of fm^2 or per block
        per_part = saved("quadrant_members").sum(-1)
    else:
        per_part = saved("members")[np.unique(saved("blocks"))].sum(-1)
    assert (per_part > 0).all() and (per_part <= tiny.opened.num_examples).all()
    fresh = run.build_model(tiny.config, tiny.opened.num_examples)
    assert fresh.prior.kind == "grammar"
    assert not fresh.prior.fitted and not fresh.prior.configurations.numpy().any()
    checkpoint, _ = run.checkpoint_for(fresh)
    checkpoint.restore(tiny.opened.checkpoint).expect_partial()
    for name in BLOCK_STATE:
        np.testing.assert_array_equal(getattr(fresh.prior, name).numpy(), saved(name))
    assert fresh.prior.fitted
    seeds = prior_lib.sample_seeds(4)
    np.testing.assert_array_equal(fresh.prior.sample(fresh.generator, seeds)["image"],
                                  tiny.model.prior.sample(tiny.model.generator, seeds)["image"])


@pytest.fixture(scope="module")
def blocks_only(tiny):
    """The grammar prior fitted to the tiny run's chains without its lifted candidate, so
    that it searches the blocks of top OR nodes."""
    prior = prior_lib.make("grammar", tiny.model.generator.config, lift=False)
    prior.fit(tiny.model.generator, tiny.model.chains.numpy(), seed=tiny.config.seed)
    return prior


def test_every_stored_block_configuration_is_a_mean_of_min_members_codes_and_none_is_one(
        tiny, blocks_only):
    prior, codes = blocks_only, top_activations(tiny.model)
    assert not prior.can_lift and prior.fitted
    members, blocks = prior.members.numpy(), prior.blocks.numpy()
    configurations = prior.configurations.numpy()
    assert ((members == 0) | (members >= serving.MIN_MEMBERS)).all()
    assert (members.sum(-1) <= tiny.opened.num_examples).all()
    # Unused slots, and blocks that hold no unit, store nothing.
    assert not members[np.setdiff1d(np.arange(len(members)), blocks)].any()
    for block in np.unique(blocks):
        units = blocks == block
        kept = members[block] > 0
        assert not configurations[~kept][:, units].any()
        block_codes = codes[:, units]
        scale = np.linalg.norm(block_codes - block_codes.mean(0), axis=1).mean()
        assert nearest_code_distance(configurations[kept][:, units], block_codes) > (
            1e-3 * scale)
        # Each is the mean of its cluster's codes: k-means again reproduces them all (64
        # parses allow 8 clusters of 8, fewer than any count the fit tries).
        found, sizes = clusters.kmeans(block_codes, min(prior_lib.BLOCK_CLUSTERS),
                                       seed=tiny.config.seed + block)
        np.testing.assert_allclose(configurations[kept][:, units], found, rtol=1e-4,
                                   atol=1e-5)
        np.testing.assert_array_equal(members[block][kept], sizes)


def test_every_stored_kept_share_is_a_count_over_its_configuration_s_members(tiny, blocks_only):
    prior, codes = blocks_only, top_activations(tiny.model)
    members, blocks = prior.members.numpy(), prior.blocks.numpy()
    configurations, kept = prior.configurations.numpy(), prior.kept.numpy()
    assert (kept >= 0).all() and (kept <= 1).all() and kept.any()
    # A unit is on in some member exactly where its mean is positive (codes are ReLU'd).
    np.testing.assert_array_equal(kept > 0, configurations > 0)
    for block in np.unique(blocks):
        units, used = blocks == block, members[block] > 0
        counts = kept[used][:, units] * members[block][used][:, None]
        np.testing.assert_allclose(counts, counts.round(), atol=1e-3)
        # The shares are those of the members k-means gives each configuration.
        _, _, labels = clusters.kmeans(codes[:, units], min(prior_lib.BLOCK_CLUSTERS),
                                       seed=tiny.config.seed + block, return_labels=True)
        for j in np.flatnonzero(used)[:4]:
            np.testing.assert_allclose(kept[j, units], (codes[labels == j][:, units] > 0).mean(0),
                                       atol=1e-6)


def test_on_off_draws_units_at_their_kept_share_and_averages_to_the_mean():
    rng = np.random.RandomState(0)
    kept = np.array([0.0, 0.125, 0.5, 1.0], np.float32)
    means = np.array([0.0, 0.25, 1.0, 3.0], np.float32)
    uniform = rng.uniform(size=(20000, 4)).astype(np.float32)
    drawn = prior_lib.on_off(means, kept, uniform)
    np.testing.assert_allclose((drawn > 0).mean(0), kept, atol=0.01)
    # On, a unit has its members' mean strength; over draws, the configuration's mean.
    np.testing.assert_allclose(drawn[drawn[:, 2] > 0, 2], 2.0)
    np.testing.assert_allclose(drawn.mean(0), means, rtol=0.05, atol=1e-6)
    np.testing.assert_allclose(
        prior_lib.on_off(tf.constant(means), tf.constant(kept), tf.constant(uniform[:8])),
        drawn[:8])


def test_a_grammar_prior_saved_without_kept_shares_samples_its_configurations_means(
        tiny, blocks_only):
    generator, seeds = tiny.model.generator, prior_lib.sample_seeds(4)
    legacy = prior_lib.make("grammar", generator.config, lift=False)
    for name in ("blocks", "configurations", "members"):
        getattr(legacy, name).assign(getattr(blocks_only, name))
    assert not legacy.kept.numpy().any()
    sample = legacy.sample(generator, seeds)
    logits = prior_lib.size_logits(blocks_only.members)
    choice = tf.random.stateless_categorical(logits, 1, tf.constant([int(seeds[0]), 0],
                                                                    tf.int64))[:, 0].numpy()
    means = blocks_only.configurations.numpy()[choice[blocks_only.blocks.numpy()],
                                               np.arange(blocks_only.num_units)]
    expected = generator.parse_from_top(means.reshape(1, *sample["feature_maps"][0].shape[1:]))
    np.testing.assert_allclose(sample["image"][0], expected["image"][0], atol=1e-5)


def test_a_run_whose_prior_lacks_a_variable_of_today_s_opens_and_fits_it_again(tiny,
                                                                            monkeypatch):
    """As a grammar run saved before the kept shares were: restored in part, its prior
    would sample with shares of 0; it is fitted again instead."""
    class Later(prior_lib.BlockGrammarPrior):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.later = self.add_weight(name="later", shape=(), initializer="zeros",
                                         trainable=False)

        def fit(self, *args, **kwargs):
            super().fit(*args, **kwargs)
            self.later.assign(1.0)

    make = prior_lib.make
    monkeypatch.setattr(prior_lib, "make", lambda kind, config, **kwargs: (
        Later(config, name="prior", **kwargs) if kind == "grammar"
        else make(kind, config, **kwargs)))
    path = run.latest_checkpoint(tiny.config.workdir)
    assert run.prior_in_checkpoint(path) and run.prior_fitted_in_checkpoint(path)
    assert not run.prior_fitted_in_checkpoint(path, tiny.opened.config)
    for opened in (run.open_run(tiny.config.workdir),
                   run.open_run(tiny.config.workdir, learner=True)):
        assert isinstance(opened.prior, Later) and opened.prior.later.numpy() == 1.0
        assert opened.prior.fitted
    # Where it is not fitted again unasked (export), one line says why.
    with pytest.raises(UserError, match="saved by an earlier version.*--fit_prior"):
        run.open_run(tiny.config.workdir, fit_prior=False)


def test_every_stored_node_configuration_pools_at_least_min_members_training_parses(tiny,
                                                                                   nodes):
    members = nodes.members.numpy()
    assert ((members == 0) | (members >= serving.MIN_MEMBERS)).all()
    assert (members.sum(-1) <= tiny.opened.num_examples).all()
    for centroids, count, codes in zip(nodes.centroids.numpy(), members, top_codes(tiny.model)):
        kept = centroids[count > 0]
        scale = np.linalg.norm(codes - codes.mean(0), axis=1).mean()
        assert nearest_code_distance(kept, codes) > 1e-3 * scale
        # A bank of the codes themselves would be caught by the same measure.
        assert nearest_code_distance(codes[:4], codes) == 0.0


def test_an_export_with_the_grammar_prior_serves_its_samples_and_no_training_code(tiny,
                                                                                 tmp_path):
    path = serving.export_workdir(tiny.config.workdir, str(tmp_path))
    loaded = tf.saved_model.load(path)
    variables = {v.name.split(":")[0]: v.numpy() for v in loaded.variables}
    prior = tiny.model.prior
    np.testing.assert_array_equal(variables["prior/configurations"],
                                  prior.configurations.numpy())
    num_examples = tiny.opened.num_examples
    assert not [name for name, v in variables.items() if v.shape and v.shape[0] == num_examples]
    codes, blocks = top_activations(tiny.model), variables["prior/blocks"]
    for block in np.unique(blocks):
        used = variables["prior/configurations"][variables["prior/members"][block] > 0]
        assert nearest_code_distance(used[:, blocks == block], codes[:, blocks == block]) > 1e-4
    seeds = tf.constant([3, 4], tf.int64)
    served = loaded.signatures["sample"](seed=seeds)
    assert "z" not in served
    np.testing.assert_allclose(served["image"],
                               (prior.sample(tiny.model.generator, seeds)["image"] + 1) / 2,
                               atol=1e-5)


def dependent_case(num=512, prototypes=4, side=4, seed=0):
    """A renderer with a dependency built in, and codes [num, 3 * prototypes] of three
    blocks of units. Each block holds one of `prototypes` one-hot codes times an intensity
    in [0.6, 1); blocks 0 and 1 always hold the same prototype, block 2 its own. Image
    quadrants 0 and 1 are painted by blocks 0 and 1 together (their sum), quadrants 2 and 3
    by block 2 alone; a fixed random pattern [prototypes, side*side] paints a prototype.
    Returns (codes, blocks [U], render(codes) -> images [n, 2*side, 2*side, 1])."""
    rng = np.random.RandomState(seed)
    patterns = rng.normal(size=(prototypes, side * side)).astype(np.float32)
    first, third = rng.randint(prototypes, size=num), rng.randint(prototypes, size=num)
    eye = np.eye(prototypes, dtype=np.float32)

    def intensity():
        return rng.uniform(0.6, 1.0, size=(num, 1)).astype(np.float32)

    codes = np.concatenate([eye[first] * intensity(), eye[first] * intensity(),
                            eye[third] * intensity()], axis=1)
    blocks = np.repeat(np.arange(3), prototypes)

    def render(maps):
        a, b, c = (maps[:, blocks == i] @ patterns for i in range(3))
        quadrants = [a + b, a + b, c, c]  # row-major: top-left, top-right, bottom-...
        tiles = [q.reshape(-1, side, side, 1) for q in quadrants]
        return np.concatenate([np.concatenate(tiles[:2], 2), np.concatenate(tiles[2:], 2)], 1)

    return codes, blocks, render


def test_the_swap_test_merges_the_blocks_built_to_depend_on_one_another():
    codes, blocks, render = dependent_case()
    check = block_lib.QuadrantCheck(render(codes))
    # Reconstructions pass about as often as the quantile says (leave-one-out).
    assert abs(check(render(codes), np.arange(len(codes))[:, None])
               - block_lib.NEAR_QUANTILE) < 0.05

    def score(maps, donors=None):
        return check(render(maps), donors)

    trail = list(block_lib.merge_by_swap_test(codes, blocks, score, np.random.RandomState(0),
                                              256))
    (first, separate), (merged, together) = trail[0], trail[1]
    assert len(np.unique(first)) == 3 and len(np.unique(merged)) == 2
    # The first merge joins blocks 0 and 1, and only they.
    assert merged[0] == merged[4] != merged[8]
    # Swapped apart they paint blends in quadrants 0 and 1; swapped together, legal ones.
    assert together > separate + 0.3 and together > block_lib.NEAR_QUANTILE - 0.1
    # Copied quadrants are judged as new ones, not as near for being copies.
    assert trail[-1][1] < 0.97


def test_painted_quadrants_put_every_unit_of_a_tiny_generator_in_one_quadrant():
    generator = Generator(tiny_generator(16))
    found = block_lib.painted_quadrants(generator)
    s, c = generator.config.top_size, generator.config.channels[0]
    assert found.shape == (s * s * c,) and set(np.unique(found)) <= {0, 1, 2, 3}
    np.testing.assert_array_equal(block_lib.node_blocks((s, s, c)), np.repeat(np.arange(4), c))


def training_images(tiny):
    """The tiny run's training images in [-1, 1], as the trainer gives them to the prior."""
    return pipeline.to_model_range(
        tiny.opened.data().images[:block_lib.MAX_REFERENCE]).numpy()


def test_the_grammar_prior_reports_its_choice_and_the_learner_fitted_the_same(tiny,
                                                                             blocks_only):
    generator = tiny.model.generator
    prior = prior_lib.make("grammar", generator.config)
    prior.fit(generator, tiny.model.chains.numpy(), seed=tiny.config.seed,
              images=training_images(tiny))
    report = prior.fit_report
    assert report["dropped"] is not None
    assert report["split"] in ("nodes", "quadrants", "lifted")
    assert set(report["lifted"]) == set(prior_lib.LIFT_CLUSTERS)
    assert 0.0 <= report["score"] <= 1.0
    # The scores tried are reported to 3 decimals.
    assert report["score"] == pytest.approx(
        max([*report["lifted"].values(), *report["counts"].values()]), abs=5e-4)
    for name in BLOCK_STATE:  # the checkpoint's prior is the same fit
        np.testing.assert_array_equal(getattr(prior, name).numpy(),
                                      getattr(tiny.model.prior, name).numpy())
    # Without the lift, the blocks are searched: their report says which were tried.
    report = blocks_only.fit_report
    assert report["split"] in ("nodes", "quadrants") and not report["lifted"]
    assert report["clusters"] in prior_lib.BLOCK_CLUSTERS
    assert round(report["score"], 3) == max(report["counts"].values())  # rounded there
    covered = sorted({n for nodes in report["nodes"] for n in nodes})
    assert covered == list(range(generator.config.top_size ** 2))
    assert "blocks of top OR nodes" in blocks_only.describe()
    sample = blocks_only.sample(generator, prior_lib.sample_seeds(8))
    for k, mask_t, mask_r in zip(TINY.generator.topk, sample["topk_masks"], sample["relu_masks"]):
        kept = (mask_t * mask_r).numpy().reshape(8, -1).sum(1)
        assert (kept <= k).all() and (kept > 0).all()


@pytest.mark.parametrize("lift", [True, False])
def test_a_search_on_some_parses_fits_the_choice_to_all_of_them(tiny, monkeypatch, lift):
    monkeypatch.setattr(prior_lib, "SEARCH_PARSES", 32)  # of the tiny run's 64
    prior = prior_lib.make("grammar", tiny.model.generator.config, lift=lift)
    prior.fit(tiny.model.generator, tiny.model.chains.numpy(), seed=0)
    if float(prior.lifted.numpy()):
        members = prior.quadrant_members.numpy().sum(-1)
    else:
        members = prior.members.numpy()[np.unique(prior.blocks.numpy())].sum(-1)
    # 32 parses make at most 4 clusters of 8 per block; all 64 are clustered in the end.
    assert (members > 32).all() and (members <= 64).all()


def test_a_grammar_prior_of_too_few_parses_keeps_nothing_and_samples_the_empty_top(tiny,
                                                                                   lifted):
    generator = tiny.model.generator
    prior = prior_lib.make("grammar", generator.config)
    prior.set_weights(lifted.get_weights())  # a fitted, lifted state to be cleared
    prior.fit(generator, tiny.model.chains.numpy()[:clusters.MIN_MEMBERS - 1], seed=0)
    assert not prior.fitted and "too few training images" in prior.describe()
    for name in BLOCK_STATE[1:]:  # blocks: one per top AND node, as unfitted
        assert not getattr(prior, name).numpy().any(), name
    sample = prior.sample(generator, prior_lib.sample_seeds(2))
    np.testing.assert_array_equal(sample["image"],
                                  generator.parse_from_top(tf.zeros([2, *sample[
                                      "feature_maps"][0].shape[1:]]))["image"])


def test_the_lift_finds_at_most_k_top_or_nodes_that_paint_a_parse_s_bottom_map(tiny):
    generator = tiny.model.generator
    parse = generator.parse(tiny.model.chains.numpy()[:16])
    bottom = parse["feature_maps"][1]  # fm^2 before TopK_2
    top = prior_lib.lift(generator, bottom).numpy()
    kept = (top > 0).reshape(16, -1).sum(1)
    assert (top >= 0).all() and (kept <= TINY.generator.topk[0]).all() and (kept > 0).all()
    zero = generator.deconvs[0](tf.zeros_like(top[:1]))
    lifted = generator.deconvs[0](top)
    # It paints the parse's fm^2 far better than an empty top layer does.
    assert (np.linalg.norm((lifted - bottom).numpy().reshape(16, -1), axis=1)
            < 0.5 * np.linalg.norm((zero - bottom).numpy().reshape(16, -1), axis=1)).all()


@pytest.mark.parametrize("lift", [True, False])
def test_configurations_far_from_every_training_image_are_dropped_but_none_empties_a_block(
        tiny, lift, monkeypatch):
    generator, chains = tiny.model.generator, tiny.model.chains.numpy()
    images = training_images(tiny)
    kept = prior_lib.make("grammar", generator.config, lift=lift)
    kept.fit(generator, chains, seed=0)
    assert kept.fit_report["dropped"] is None
    # Against "training images" that are the reconstructions themselves, and with the
    # images' spacing among themselves taken as 0, the threshold is 0 and every
    # recombined rendering is far: each block (or quadrant) keeps one.
    monkeypatch.setattr(prior_lib, "_nearest_other_d2", lambda q: np.zeros(q.shape[:2]))
    pruned = prior_lib.make("grammar", generator.config, lift=lift)
    pruned.fit(generator, chains, seed=0, images=generator(chains[:len(images)]).numpy())
    lifted = bool(float(pruned.lifted.numpy()))
    assert lifted == bool(float(kept.lifted.numpy()))
    if lifted:
        before, after = kept.quadrant_members.numpy(), pruned.quadrant_members.numpy()
        stored = pruned.quadrant_configurations.numpy()
    else:
        used = np.unique(pruned.blocks.numpy())
        before, after = kept.members.numpy()[used], pruned.members.numpy()[used]
        stored = pruned.configurations.numpy()
    assert ((after > 0).sum(-1) == 1).all() and pruned.fitted
    np.testing.assert_array_equal(after[after > 0], before[after > 0])  # sizes as they were
    dropped, share = pruned.fit_report["dropped"]
    assert dropped == int((before > 0).sum() - (after > 0).sum())
    assert share == pytest.approx(before[(before > 0) & (after == 0)].sum() / before.sum(),
                                  abs=1e-3)
    # A dropped configuration leaves nothing stored in its slot.
    if lifted:
        quadrant_of = block_lib.image_quadrant_units(pruned.bottom_shape)
        for q in range(4):
            assert not stored[after[q] == 0][:, quadrant_of == q].any()
    else:
        for row, block in enumerate(used):
            assert not stored[after[row] == 0][:, pruned.blocks.numpy() == block].any()
    sample = pruned.sample(generator, prior_lib.sample_seeds(4))["image"].numpy()
    assert np.isfinite(sample).all()


def test_the_images_spacing_is_each_quadrant_s_distance_to_its_nearest_other_image():
    rng = np.random.default_rng(0)
    quadrants = rng.normal(size=(4, 50, 12)).astype(np.float32)
    quadrants[2, 7] = quadrants[2, 3]  # a repeated image is at distance 0 from its twin
    spacing = prior_lib._nearest_other_d2(quadrants, chunk=16)  # chunks cross the diagonal
    d2 = ((quadrants[:, :, None] - quadrants[:, None]) ** 2).sum(-1)
    d2[:, np.arange(50), np.arange(50)] = np.inf  # never itself
    np.testing.assert_allclose(spacing, d2.min(-1), rtol=1e-4, atol=1e-4)
    assert spacing[2, 7] == pytest.approx(0.0, abs=1e-4) and spacing.min(1)[[0, 1, 3]].min() > 0


def test_the_lift_s_coefficients_fit_the_units_of_weight_one_in_least_squares(tiny):
    generator = tiny.model.generator
    bottom = generator.parse(tiny.model.chains.numpy()[:16])["feature_maps"][1].numpy()
    weights = np.where(bottom > np.median(bottom), 1.0, 0.1).astype(np.float32)
    top = prior_lib.lift(generator, bottom, weights, refine_steps=0)  # the pursuit alone
    zero = generator.deconvs[0](tf.zeros_like(top[:1])).numpy()
    painted = (generator.deconvs[0](top).numpy() - zero).reshape(16, -1)
    goal = (bottom - zero).reshape(16, -1)
    on = weights.reshape(16, -1) >= 1.0
    # No scale of the painting fits the units of weight 1 better: its residual there is
    # orthogonal to it (where the fit's scale is positive, as on every row here).
    assert ((goal * painted * on).sum(1) > 0).all()
    residual = ((goal - painted) * painted * on).sum(1)
    np.testing.assert_allclose(residual / (painted ** 2 * on).sum(1), 0.0, atol=1e-3)


@pytest.fixture(scope="module")
def lifted(tiny):
    """The grammar prior fitted to the tiny run's chains and switched to its lifted
    samples (quadrant configurations of fm^2, lifted to a top layer)."""
    prior = prior_lib.make("grammar", tiny.model.generator.config)
    prior.fit(tiny.model.generator, tiny.model.chains.numpy(), seed=0)
    prior.lifted.assign(1.0)
    return prior


def test_lifted_samples_are_sparse_parses_of_means_of_min_members_quadrant_codes(tiny,
                                                                                lifted):
    generator = tiny.model.generator
    assert lifted.can_lift and "one layer down" in lifted.describe()
    assert set(lifted.fit_report["lifted"]) <= set(prior_lib.LIFT_CLUSTERS)
    sample = lifted.sample(generator, prior_lib.sample_seeds(8))
    for k, mask_t, mask_r in zip(TINY.generator.topk, sample["topk_masks"], sample["relu_masks"]):
        kept = (mask_t * mask_r).numpy().reshape(8, -1).sum(1)
        assert (kept <= k).all() and (kept > 0).all()
    alone = lifted.sample(generator, tf.constant([8], tf.int64))["image"]
    both = lifted.sample(generator, tf.constant([7, 8], tf.int64))["image"]
    np.testing.assert_array_equal(alone[0], both[1])
    members = lifted.quadrant_members.numpy()
    assert ((members == 0) | (members >= serving.MIN_MEMBERS)).all() and members.any()
    bottom = generator.parse(tiny.model.chains.numpy())["feature_maps"][1].numpy()
    codes = bottom.reshape(len(bottom), -1)
    quadrant_of = block_lib.image_quadrant_units(bottom.shape[1:])
    stored = lifted.quadrant_configurations.numpy()
    shares = lifted.quadrant_kept.numpy()
    for q in range(4):
        used = stored[members[q] > 0][:, quadrant_of == q]
        assert nearest_code_distance(used, codes[:, quadrant_of == q]) > 1e-4
        assert not stored[members[q] == 0][:, quadrant_of == q].any()
        # Kept shares are counts over each configuration's >= MIN_MEMBERS members.
        share = shares[members[q] > 0][:, quadrant_of == q]
        counts = share * members[q][members[q] > 0][:, None]
        np.testing.assert_allclose(counts, counts.round(), atol=1e-3)
        assert (share >= 0).all() and (share <= 1).all()


def test_an_export_with_lifted_samples_serves_them(tiny, lifted, tmp_path):
    generator = tiny.model.generator
    loaded = export_with(generator, lifted, tmp_path)
    variables = {v.name.split(":")[0]: v.numpy() for v in loaded.variables}
    assert variables["prior/lifted"] == 1.0
    assert not [name for name, v in variables.items()
                if v.shape and v.shape[0] == tiny.opened.num_examples]
    seeds = tf.constant([3, 4], tf.int64)
    served = loaded.signatures["sample"](seed=seeds)
    expected = lifted.sample(generator, seeds)["image"]
    np.testing.assert_allclose(served["image"], (expected + 1) / 2, atol=1e-5)


def test_a_run_saved_with_the_node_prior_under_grammar_opens_and_resumes_with_it(tmp_path):
    config = dataclasses.replace(TINY, workdir=str(tmp_path / "run"), prior="nodes")
    trainer.train(config)
    trained = run.open_run(config.workdir)
    assert trained.prior.kind == "nodes"
    # As a run trained when `grammar` was the node-by-node prior: its config says grammar.
    path = os.path.join(config.workdir, run.CONFIG_FILE)
    with open(path) as f:
        saved = json.load(f)
    saved["prior"] = "grammar"
    with open(path, "w") as f:
        json.dump(saved, f)
    opened = run.open_run(config.workdir)
    assert opened.config.prior == "grammar" and opened.prior.kind == "nodes"
    assert run.saved_prior(opened.config, opened.checkpoint) == "nodes"
    np.testing.assert_array_equal(opened.prior.centroids.numpy(),
                                  trained.prior.centroids.numpy())
    resumed = run.open_run(config.workdir, learner=True)
    assert resumed.prior.kind == "nodes"
    np.testing.assert_array_equal(resumed.prior.members.numpy(), trained.prior.members.numpy())


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
    loaded = export_with(generator, prior_lib.NormalPrior(generator.config), tmp_path)
    served = loaded.signatures["sample"](seed=tf.constant([3, 4], tf.int64))
    z = prior_lib.latent_from_seeds(tf.constant([3, 4], tf.int64), 4)
    np.testing.assert_array_equal(served["z"], z)
    np.testing.assert_allclose(served["image"], (generator(z) + 1) / 2, atol=1e-6)


def test_unknown_priors_are_refused_in_one_line():
    with pytest.raises(ValueError, match="unknown prior 'gaussian'; use one of grammar, "
                                         "nodes, joint, normal"):
        prior_lib.make("gaussian", GeneratorConfig())


@pytest.mark.parametrize("kind", ["nodes", "joint", "normal"])
def test_every_prior_fits_from_the_same_call_and_only_the_grammar_reads_images(tiny, kind):
    # One call fits any prior (the learner's and open_run's); a prior that does not use
    # the training images fits the same state with them as without.
    assert prior_lib.make("grammar", tiny.model.generator.config).uses_images
    generator, chains = tiny.model.generator, tiny.model.chains.numpy()
    images = tiny.opened.data().images[:len(chains)]
    fitted = []
    for given in (None, pipeline.to_model_range(images).numpy()):
        prior = prior_lib.make(kind, generator.config)
        assert not prior.uses_images
        prior.fit(generator, chains, seed=0, images=given)
        fitted.append([w.numpy() for w in prior.weights])
    assert len(fitted[0]) == len(fitted[1])
    for without, with_images in zip(*fitted):
        np.testing.assert_array_equal(without, with_images)


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
    loaded = export_with(generator, joint, tmp_path)
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


def test_the_refined_lift_renders_the_directly_painted_image_closer_than_the_pursuit():
    # A constructed generator (seeded, its kernels scaled up so that images are far from
    # flat grey), and bottom maps whose quadrants come from four different parses, as a
    # lifted sample's quadrant configurations do: no K_1 top OR nodes paint them exactly.
    keras.utils.set_random_seed(0)
    generator = Generator(tiny_generator())
    for deconv in generator.deconvs:
        deconv.kernel.assign(10.0 * deconv.kernel)
    z = np.random.default_rng(0).normal(size=(32, generator.config.latent_dim))
    parses = [generator.parse(np.roll(z, i, 0).astype(np.float32))["feature_maps"][1].numpy()
              for i in range(4)]
    quadrant_of = block_lib.image_quadrant_units(parses[0].shape[1:]).reshape(
        parses[0].shape[1:])
    bottom = np.select([quadrant_of == q for q in range(4)], parses)
    weights = np.where(bottom > np.median(bottom), 1.0, prior_lib.LIFT_OFF_WEIGHT)
    pursuit = prior_lib.lift(generator, bottom, weights, refine_steps=0).numpy()
    refined = prior_lib.lift(generator, bottom, weights).numpy()
    # The same units on (the pursuit's support, at most K_1), non-negative.
    assert (refined >= 0).all() and not (refined[pursuit == 0] > 0).any()
    target = prior_lib.paint_bottom(generator, bottom).numpy()

    def distance(top):
        image = generator.parse_from_top(top)["image"].numpy()
        return ((image - target) ** 2).reshape(len(top), -1).sum(1)

    before, after = distance(pursuit), distance(refined)
    assert (after <= before * (1 + 1e-5)).all()  # never worse, row by row
    assert after.mean() < 0.9 * before.mean()
    # A row's refinement does not depend on the rows lifted with it.
    alone = prior_lib.lift(generator, bottom[3:4], weights[3:4]).numpy()
    np.testing.assert_allclose(alone[0], refined[3], rtol=1e-4, atol=1e-5)
