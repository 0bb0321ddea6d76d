"""Where samples come from: the prior over a sample's parse graph (`--prior`).

    normal   z ~ N(0, I), the paper's prior (Eq. 7); the sample is g(z).
    grammar  the induced And-Or grammar (§2.1), sampled at its top layer by blocks of top
             OR nodes (`BlockGrammarPrior`): every block (a top AND node, AND nodes whose
             codes depend on one another, or the units painting one quadrant) picks one of
             its OR configurations, a cluster of that block's codes over the training
             parses, with the cluster's frequency, and then which of its units are on
             (each with the share of the cluster's members that keep it, at their mean
             strength: the cluster's mean would paint a blend); where top kernels overlap
             the quadrants it samples the quadrants of the layer below and lifts them to
             a top layer.
             The rest of the network renders the picked map, TopK and ReLU included, so
             every sample is a sparse parse of every layer. Given the training images,
             its fit drops the configurations whose renderings lie far from all of them.
             The default (docs/grammar_prior.md).
    nodes    the same node by node (`NodeGrammarPrior`): every top AND node (cell (y, x)
             of fm^1) picks one of its OR configurations independently. On the default
             geometry its samples are legal images of the grammar about as often as the
             reconstructions of training images, where N(0, I) almost never is; runs
             saved when it was `grammar` open with it.
    joint    whole top-layer configurations (`JointGrammarPrior`).

Why the grammar is sampled at the top feature map and not in z. Each quadrant of a parts
image picks its composite independently, but the FC map entangles the quadrants: the
top-node codes of different training images, put together, are not the FC image of any z,
and the least-squares z of such a map renders about half as many legal quadrants as the
map itself (docs/grammar_prior.md). So a grammar sample has no z. Its parse starts at
fm^1: layer 1's surviving OR nodes (activation_1) determine the image, and
`Generator.parse_from_top` reproduces it from them. One layer further down (a centroid
per quadrant's block of bottom AND nodes) scores a little higher, but has no top-layer
parse to report, unless it is lifted to one (`lift`), as `grammar` does where the top
kernels overlap the quadrants.

What is stored. A cluster's configuration is its centroid, the mean of the codes (of a
node, block or quadrant) of at least `clusters.MIN_MEMBERS` training parses, with the
share of those members that keep each unit where a sample draws its units (`on_off`),
and its frequency is its number of members; no single training image's code is kept (the
privacy rule of the export). The state is fitted from the persistent chains with
`fit(generator, chains, seed, images=None)`, one call for every prior (`uses_images`:
whether it reads the training images), every --figures_every epochs of training and at
its end (`AlternatingBackprop.fit_prior`), saved in the checkpoints (a checkpoint written
between two fits is marked stale and fitted again when opened, training/run.py) and in
the export, and restored with the rest.

Every prior samples with standard TensorFlow ops and one stateless seed per row, so a
row's sample does not depend on the rows batched with it (TF Serving's batching).
"""

import keras
import numpy as np
import tensorflow as tf

from sparse_gen_tf.model import blocks as block_lib
from sparse_gen_tf.model import clusters

PRIORS = ("grammar", "nodes", "joint", "normal")
DEFAULT_PRIOR = "grammar"
# OR configurations kept per top AND node. A parts quadrant has 8 composites, but the
# model codes one composite with several top-node configurations: 8 or 16 clusters per
# node lose a third or a tenth of the legal quadrants that 32 reach, and 64 add nothing
# (docs/grammar_prior.md).
GRAMMAR_CLUSTERS = 32
# The numbers of OR configurations per block that the grammar prior tries (it keeps the
# one whose samples pass the nearest-quadrant check most often): a block of one node
# needs about 32, a block of two nodes nearer 8 x 8 composites' worth; between the two,
# 64 and 128 were never better on the parts geometries (docs/grammar_prior.md).
BLOCK_CLUSTERS = (32, 256)
# The lifted candidate (`BlockGrammarPrior`) runs a pursuit of K_1 steps per sample; above
# this K_1 (a dense top layer) it is not tried: there the top-layer blocks do well.
MAX_LIFT = 32
# The search for blocks and counts clusters at most this many training parses (k-means of
# hundreds of clusters over tens of thousands of parses, for every candidate, would take
# minutes at every checkpoint); the candidate chosen is then fitted to all of them.
SEARCH_PARSES = 4096
# Its numbers of configurations per quadrant of fm^2: a quadrant has 8 composites, and
# means of few, large clusters lift to cleaner top layers than many small ones.
LIFT_CLUSTERS = (16, 32, 64)
# The weight, in the lift's least squares, of a unit of fm^2 that TopK_2 drops in most of
# a quadrant configuration's members (the kept ones weigh 1): its value matters only
# below the threshold. On `overlap`, 1 lifts 0.76 legal quadrants, 0.3 0.92, 0.1 0.94.
LIFT_OFF_WEIGHT = 0.1
# The lift's refinement (`refine_lift`): noise-free heavy-ball steps on the pursuit's top
# code, its support fixed, towards the image that the quadrant configurations paint
# directly one layer down. On `overlap` sparse (3,008 steps) 20 steps at rate 0.03 and
# momentum 0.9 lift legal quadrants from 0.955 to 0.995 (direct painting: 0.990), on
# `large` sparse (1,504) from 0.981 to 0.991; 50 steps add at most 0.001, and a slower
# rate (0.01 at momentum 0.5) needs 50 (docs/grammar_prior.md).
LIFT_REFINE_STEPS = 20
LIFT_REFINE_RATE = 0.03
LIFT_REFINE_MOMENTUM = 0.9
# Samples per configuration in which `BlockGrammarPrior` checks its renderings against
# the training images (`_keep_near_images`).
NEAR_IMAGE_DRAWS = 8
# The quantile of the reconstructions' distances to their own training images, and of
# the training images' to their nearest other (per quadrant; the larger of the two), below
# which a rendered quadrant counts as near a training image.
NEAR_IMAGE_QUANTILE = 0.5
# Whole top-layer configurations kept by the joint prior, the spread of its samples around
# a configuration's mean (in its members' standard deviations), and the principal
# components its k-means runs in (benchmarks/sampling.py, docs/grammar_prior.md).
JOINT_CLUSTERS = 128
JOINT_SHRINK = 0.25
JOINT_COMPONENTS = 32


def size_logits(members):
    """Logits [..., clusters] that draw a cluster in proportion to its members
    [..., clusters]: log(members), and a finite floor for empty slots, whose probability
    is then 0 (`tf.random.stateless_categorical` takes no -inf rows)."""
    return tf.where(members > 0, tf.math.log(tf.maximum(members, 1.0)),
                    tf.fill(tf.shape(members), -1e30))


def latent_from_seeds(seeds, latent_dim):
    """z [batch, latent_dim] ~ N(0, I); row i is drawn from the stateless seed (seeds[i], 0).

    One seed per row (rather than one seed for the batch) keeps a row's z independent of
    the rows TF Serving batches it with.
    """
    seeds = tf.cast(seeds, tf.int64)
    return tf.map_fn(
        lambda s: tf.random.stateless_normal([latent_dim], tf.stack([s, tf.zeros_like(s)])),
        seeds, fn_output_signature=tf.float32)


@keras.saving.register_keras_serializable(package="sparse_gen_tf")
class NormalPrior(keras.layers.Layer):
    """z ~ N(0, I) of Eq. (7): nothing to fit, and every sample has its z."""

    kind = "normal"
    has_latent = True
    uses_images = False

    def __init__(self, generator_config, **kwargs):
        super().__init__(**kwargs)
        self.generator_config = generator_config
        self.built = True

    def fit(self, generator, chains, seed=0, images=None):
        """Nothing to fit: the prior is the paper's."""
        del generator, chains, seed, images

    @property
    def fitted(self):
        return True

    def sample(self, generator, seeds):
        """The parse (`Generator.parse`) of z = `latent_from_seeds(seeds)`, with "z" [b, d].

        seeds: int64 [batch], one stateless seed per row.
        """
        z = latent_from_seeds(seeds, self.generator_config.latent_dim)
        return {**generator.parse(z), "z": z}

    def describe(self):
        return ("one z ~ N(0, I) per seed (stateless, seed (seed, 0)), the paper's prior "
                "(Eq. 7), and its image g(z)")


@keras.saving.register_keras_serializable(package="sparse_gen_tf")
class BlockGrammarPrior(keras.layers.Layer):
    """The induced And-Or grammar's distribution over blocks of top OR nodes (`grammar`).

    The top OR nodes (units (y, x, channel) of fm^1) are split into blocks that a sample
    draws independently: one block per top AND node where the nodes' codes do not depend
    on one another, merged blocks where they do, or one block per quadrant that the top
    kernels paint (`blocks.py`: the swap test on the training parses gives the merges, the
    nearest-quadrant check of samples chooses). Each block's codes over the training
    parses are clustered by k-means into its OR configurations, a sample picks one per
    block by the cluster's size, then which of the block's top OR nodes are on, each with
    the share of the cluster's members that keep it, at its mean over those members
    (`on_off`: the discrete configuration first, its coefficients after; the cluster's
    mean itself would paint a blend of its members), and the network renders the map,
    TopK and ReLU included. The number of configurations (BLOCK_CLUSTERS) is chosen by
    the same check.

    Where the top kernels overlap the quadrants (the `overlap` geometry), every active
    top OR node paints several quadrants, so no block of them is one quadrant's, and
    recombined blocks paint blends. The fit then also tries the grammar one layer down,
    lifted: each quadrant of fm^2 picks one of its configurations (k-means centroids of
    the training parses' fm^2 there, LIFT_CLUSTERS), and a pursuit (`lift`) finds the K_1
    top OR nodes whose painting matches them, refined (`refine_lift`) until their
    rendering comes near the image the configurations paint directly one layer down; the
    network renders that top layer. It is
    kept (`lifted` = 1) when its samples pass the check more often, and tried only for a
    sparse top layer (K_1 <= MAX_LIFT) below which there is a second layer.

    The nearest-quadrant check compares with reconstructions, and passes a blend that the
    model paints for some composite (its reconstructions are blends there too). Given the
    training images, the fit then drops the configurations of the candidate kept whose
    renderings lie far from every training image (`_keep_near_images`).

    State (non-trainable variables), U = s*s*c_1 units, B = max(s*s, 4) block slots:
      blocks [U] int32: the block of each unit of fm^1 (flattened row-major);
      configurations [clusters, U]: row k holds, on the units of block b, block b's
        configuration k, the mean top-layer code (activation_1: fm^1 after TopK_1 and
        ReLU) of the >= MIN_MEMBERS training parses in its cluster, or 0;
      members [B, clusters]: the size of block b's cluster k, >= MIN_MEMBERS, or 0 for an
        unused slot; block b picks configuration k with probability members / total;
      kept [clusters, U]: on block b's units, the share of configuration k's members in
        which each unit is on (activation_1 > 0), a mean of the same members; a sample's
        unit is on with that probability, at configurations / kept (all 0 in a prior
        saved before it: such a prior samples the means);
      lifted []: 1 when samples are drawn one layer down and lifted, else 0;
      quadrant_configurations [clusters, h_2*w_2*c_2] and quadrant_members [4, clusters]:
        the same for the quadrants of fm^2 (means of >= MIN_MEMBERS training parses'
        fm^2 there; [1, ...] when the lift is not tried);
      quadrant_kept [clusters, h_2*w_2*c_2]: the share of a configuration's members whose
        TopK_2 and ReLU keep each unit (a mean of the same members); the lift fits the
        units kept by most of them with weight 1, the others with LIFT_OFF_WEIGHT.
    No stored value is any one training parse's code on a block or quadrant (a mean of
    >= 8 codes). A run with fewer than MIN_MEMBERS training images keeps no configuration:
    its samples are the image of the empty top layer.
    """

    kind = "grammar"
    has_latent = False
    # Its fit checks its configurations against training images (`fit`'s images).
    uses_images = True
    # The steps of `refine_lift` after the pursuit, in the fit (`_lifted_draw`,
    # `_keep_near_images`) and in `sample` alike, so that the fit judges the samples that
    # `sample` draws. Not state: 0 (the pursuit alone) is for comparing the two
    # (benchmarks/lift_cost.py).
    lift_refine_steps = LIFT_REFINE_STEPS

    def __init__(self, generator_config, clusters=max(BLOCK_CLUSTERS), lift=True, **kwargs):
        super().__init__(**kwargs)
        self.generator_config = generator_config
        self.num_clusters = int(clusters)
        s, c = generator_config.top_size, generator_config.channels[0]
        self.num_units, self.num_blocks = s * s * c, max(s * s, 4)
        self.blocks = self.add_weight(name="blocks", shape=(self.num_units,), dtype="int32",
                                      initializer="zeros", trainable=False)
        self.configurations = self.add_weight(
            name="configurations", shape=(self.num_clusters, self.num_units),
            initializer="zeros", trainable=False)
        self.members = self.add_weight(name="members",
                                       shape=(self.num_blocks, self.num_clusters),
                                       initializer="zeros", trainable=False)
        # The on/off half of each configuration: its units' kept shares (`on_off`).
        self.kept = self.add_weight(name="kept", shape=self.configurations.shape,
                                    initializer="zeros", trainable=False)
        # The lifted candidate: quadrant configurations of fm^2, and a switch.
        shapes = generator_config.feature_map_shapes()
        self.can_lift = bool(lift) and len(shapes) > 1 and generator_config.topk[0] <= MAX_LIFT
        self.bottom_shape = shapes[1] if len(shapes) > 1 else (2, 2, 1)
        self.lifted = self.add_weight(name="lifted", shape=(), initializer="zeros",
                                      trainable=False)
        self.quadrant_configurations = self.add_weight(
            name="quadrant_configurations",
            shape=(self.num_clusters if self.can_lift else 1, int(np.prod(self.bottom_shape))),
            initializer="zeros", trainable=False)
        self.quadrant_members = self.add_weight(
            name="quadrant_members", shape=(4, self.num_clusters if self.can_lift else 1),
            initializer="zeros", trainable=False)
        self.quadrant_kept = self.add_weight(
            name="quadrant_kept", shape=self.quadrant_configurations.shape,
            initializer="zeros", trainable=False)
        self.fit_report = None
        self.built = True

    def fit(self, generator, chains, seed=0, counts=None, evaluations=512, images=None):
        """Chooses how samples are drawn and fits that state from the parses of the
        persistent chains [N, d]; `fit_report` records every score.

        First the lifted candidate (when `can_lift`): each quadrant of fm^2 clustered into
        each count of LIFT_CLUSTERS, `evaluations` lifted samples scored by the
        nearest-quadrant check. If they pass less often than NEAR_QUANTILE (the share the
        reconstructions pass), the blocks of top OR nodes are searched too: the swap test
        (`blocks.merge_by_swap_test`, a quarter of `evaluations` recombined maps per split)
        gives an order of merges from each first split, one block per top AND node and
        one per painted quadrant (unless that is the same split); along each, splits are
        tried from the finest, each block clustered into the most configurations of
        `counts` (default BLOCK_CLUSTERS, at most the slots), as long as `evaluations`
        samples of each split pass the check more often than the last's; then the best
        split's smaller counts (ties: the fewer). The candidate whose samples pass most
        often is kept. The search clusters the first SEARCH_PARSES parses; the candidate
        kept is fitted to all of them.

        images [N, H, W, C] in [-1, 1] (optional): the training images of the chains, in
        their order. Given, the configurations whose renderings lie far from every
        training image are dropped from the kept candidate (`_keep_near_images`;
        `fit_report["dropped"]`: how many, and their share of the members), unless the
        images are not of the generator's size.
        """
        chains = np.asarray(chains, np.float32)
        # The codes are the surviving top OR nodes, activation_1 = fm^1 after TopK_1 and
        # ReLU, not fm^1: a unit that a parse leaves off is 0 in it, so a block recombined
        # with others brings no near-threshold values that win TopK_1 from their units.
        # The parse of activation_1 is the parse of fm^1 (`parse_from_top`).
        top = np.concatenate([
            generator.parse_from_top(generator.top_feature_map(chains[i:i + 512]))[
                "activations"][0].numpy() for i in range(0, len(chains), 512)])
        shape = top.shape[1:]
        codes = top.reshape(len(top), -1)
        configurations = np.zeros(self.configurations.shape, np.float32)
        kept = np.zeros(self.kept.shape, np.float32)
        members = np.zeros(self.members.shape, np.float32)
        if len(codes) < clusters.MIN_MEMBERS:
            self._assign(block_lib.node_blocks(shape), configurations, members)
            self.kept.assign(kept)
            for variable in (self.lifted, self.quadrant_configurations,
                             self.quadrant_members, self.quadrant_kept):
                variable.assign(tf.zeros_like(variable))
            self.fit_report = None
            return
        rng = np.random.RandomState(seed)
        check = block_lib.QuadrantCheck(_render(generator, codes[:block_lib.MAX_REFERENCE],
                                                shape))

        def score(maps, donors=None):
            return check(_render(generator, maps, shape), donors)

        search = slice(0, SEARCH_PARSES)
        lifted = self._fit_lifted(generator, top, score, rng, seed, evaluations)
        lifted_score = max((v[0] for v in lifted.values()), default=-1.0)
        tried, swap, by_count = {}, {}, {}
        name, count, fitted_score = "nodes", 0, -1.0
        chosen = block_lib.node_blocks(shape)
        # Reconstructions pass the check NEAR_QUANTILE of the time by construction: lifted
        # samples that pass as often need no search through blocks (the slow part).
        if lifted_score < block_lib.NEAR_QUANTILE:
            (name, chosen), count, fitted_score, found, tried, swap, by_count = (
                self._fit_blocks(generator, codes[search], shape, check, score, rng, seed,
                                 counts, evaluations))
            if len(codes) > SEARCH_PARSES:  # the choice, fitted to every parse
                found = _cluster_blocks(codes, chosen, count, seed)
            for block, (centroids, sizes, shares) in enumerate(found):
                configurations[:len(centroids), chosen == block] = centroids
                kept[:len(centroids), chosen == block] = shares
                members[block, :len(sizes)] = sizes
        self._assign(chosen, configurations, members)
        self.kept.assign(kept)
        use = lifted_score > fitted_score
        self.lifted.assign(float(use))
        if use:
            count = max(lifted, key=lambda c: (lifted[c][0], -c))
            name, fitted_score = "lifted", lifted_score
        size = self.generator_config.image_size
        dropped = (self._keep_near_images(generator, codes, shape, images, rng)
                   if images is not None and np.shape(images)[1:3] == (size, size) else None)
        self.fit_report = dict(
            dropped=dropped,
            split=name, nodes=_node_groups(chosen, shape), swap=swap,
            splits={(n, len(np.unique(b))): round(v[0], 3) for (n, b), v in tried.items()},
            counts={c: round(v[0], 3) for c, v in sorted(by_count.items())},
            lifted={c: round(v[0], 3) for c, v in sorted(lifted.items())},
            clusters=count, score=fitted_score)

    def _keep_near_images(self, generator, codes, shape, images, rng):
        """Drops the configurations (of blocks, or lifted, of quadrants) whose renderings
        lie far from every training image: returns (configurations dropped, their share
        of the members).

        A configuration of the model's parses can be a blend that the model paints for
        some composite at this budget (its reconstructions are blends too, so the
        nearest-quadrant check against them passes it). Each configuration is drawn in
        NEAR_IMAGE_DRAWS samples (the others picked uniformly, so that every
        configuration is seen as often); a quadrant of a sample is near when its squared
        distance to the nearest training image's quadrant there is at most the larger of
        the median distance of the reconstructions' quadrants to their own training
        image's (how close the model comes to the images it was fitted to) and the median
        distance of a training image's quadrant to its nearest other training image's
        (how close a new image of the data comes to them). A configuration whose
        quadrants (those its units paint) are near in fewer than half its samples is
        dropped, unless its block or quadrant would be left with none. No ground truth:
        only the training images and their chains.

        codes [N, U]: the training parses' activation_1, flattened (their images the
        reconstructions); images [N, H, W, C] in [-1, 1], in the chains' order.
        """
        images = np.asarray(images, np.float32)[:block_lib.MAX_REFERENCE]
        reference = block_lib.image_quadrants(images)
        own = block_lib.image_quadrants(_render(generator, codes[:len(images)], shape))
        # As near as the reconstructions come to their own images, or as the training
        # images come to each other, whichever is looser. On the parts data the first
        # decides (a fresh derivation nearly repeats a training quadrant; every geometry's
        # runs); on faces a new face is farther from every training face than a
        # reconstruction from its own (about 2x), and the first alone would keep only the
        # configurations that paint blends near the mean face.
        threshold = np.maximum(
            np.quantile(((own - reference) ** 2).sum(-1), NEAR_IMAGE_QUANTILE, axis=1),
            np.quantile(_nearest_other_d2(reference), NEAR_IMAGE_QUANTILE, axis=1))  # [4]
        lifted = self.can_lift and float(self.lifted.numpy()) > 0
        if lifted:
            members = self.quadrant_members.numpy()
            painted = [[q] for q in range(4)]
        else:
            members = self.members.numpy()
            by_unit = block_lib.painted_quadrants(generator)
            painted = [sorted(set(by_unit[self.blocks.numpy() == b])) if
                       np.any(self.blocks.numpy() == b) else [] for b in range(len(members))]
        used = members > 0
        num = NEAR_IMAGE_DRAWS * max(int(used.sum(-1).max()), 1)
        picks = np.stack([rng.choice(np.flatnonzero(u), size=num) if u.any()
                          else np.zeros(num, int) for u in used], 1)  # [num, blocks]
        if lifted:
            table = np.stack([self.quadrant_configurations.numpy(),
                              self.quadrant_kept.numpy()])
            quadrant_of = block_lib.image_quadrant_units(self.bottom_shape)
            targets = np.zeros((2, num, len(quadrant_of)), np.float32)
            for q in range(4):
                targets[:, :, quadrant_of == q] = table[:, picks[:, q]][:, :, quadrant_of == q]
            weights = np.where(targets[1] > 0.5, 1.0, LIFT_OFF_WEIGHT)
            maps = lift(generator, targets[0].reshape(-1, *self.bottom_shape),
                        weights.reshape(-1, *self.bottom_shape),
                        self.lift_refine_steps).numpy().reshape(num, -1)
        else:
            blocks, table = self.blocks.numpy(), self.configurations.numpy()
            shares = self.kept.numpy()
            maps = np.zeros((num, len(blocks)), np.float32)
            for b in np.unique(blocks):
                units = blocks == b
                means = table[picks[:, b]][:, units]
                # Drawn as `sample` draws them (a prior saved before the shares: means).
                maps[:, units] = (on_off(means, shares[picks[:, b]][:, units],
                                         rng.uniform(size=means.shape))
                                  if shares.any() else means)
        quadrants = block_lib.image_quadrants(_render(generator, maps, shape))
        near = np.stack([_nearest_d2_chunked(quadrants[q], reference[q]) <= threshold[q]
                         for q in range(4)], 1)  # [num, 4]
        drop = np.zeros_like(used)
        for b, qs in enumerate(painted):
            if not qs or not used[b].any():
                continue
            shares = np.array([near[picks[:, b] == k][:, qs].mean() if
                               np.any(picks[:, b] == k) else 1.0 for k in range(len(used[b]))])
            drop[b] = used[b] & (shares < 0.5)
            if drop[b].sum() == used[b].sum():  # never a block without configurations
                drop[b, np.argmax(np.where(used[b], shares, -1.0))] = False
        kept_members = np.where(drop, 0.0, members).astype(np.float32)
        if lifted:
            configurations = self.quadrant_configurations.numpy()
            kept = self.quadrant_kept.numpy()
            quadrant_of = block_lib.image_quadrant_units(self.bottom_shape)
            for q, k in zip(*np.nonzero(drop)):
                configurations[k, quadrant_of == q] = 0.0
                kept[k, quadrant_of == q] = 0.0
            self.quadrant_configurations.assign(configurations)
            self.quadrant_kept.assign(kept)
            self.quadrant_members.assign(kept_members)
        else:
            configurations, shares = self.configurations.numpy(), self.kept.numpy()
            for b, k in zip(*np.nonzero(drop)):
                configurations[k, self.blocks.numpy() == b] = 0.0
                shares[k, self.blocks.numpy() == b] = 0.0
            self.configurations.assign(configurations)
            self.kept.assign(shares)
            self.members.assign(kept_members)
        return int(drop.sum()), round(float(members[drop].sum() / max(members.sum(), 1)), 3)

    def _fit_blocks(self, generator, codes, shape, check, score, rng, seed, counts,
                    evaluations):
        """The search through blocks of top OR nodes (`fit`): ((first split's name,
        blocks [U]), count, score, [(centroids, members)] per block, and the scores of
        every split, swap test and count tried)."""
        counts = sorted(c for c in (counts or BLOCK_CLUSTERS) if c <= self.num_clusters)
        tried, swap = {}, {}  # (split name, blocks) -> (score, count, clusters)

        def sample_score(split, count):
            found = _cluster_blocks(codes, split, count, seed)
            return score(_draw(found, split, rng, evaluations)), count, found

        firsts = {"nodes": block_lib.node_blocks(shape)}
        painted = block_lib.painted_quadrants(generator)
        if len(set(zip(firsts["nodes"], painted))) > len(np.unique(painted)):
            firsts["quadrants"] = painted  # not the nodes again, relabelled
        for name, first in firsts.items():
            swap[name], last = [], -1.0
            # The next merge's swap test runs only while merging still helps.
            for split, swapped in block_lib.merge_by_swap_test(
                    codes[:check.size], first, score, rng, max(evaluations // 4, 1)):
                swap[name].append((len(np.unique(split)), round(swapped, 3)))
                key = (name, tuple(split))
                tried[key] = sample_score(split, counts[-1])
                if tried[key][0] <= last:
                    break
                last = tried[key][0]
        (name, chosen), best = max(tried.items(), key=lambda kv: kv[1][0])
        chosen = np.asarray(chosen)
        by_count = {best[1]: best}
        for count in counts[:-1]:
            by_count[count] = sample_score(chosen, count)
        top_score = max(v[0] for v in by_count.values())
        fitted_score, count, found = by_count[min(c for c, v in by_count.items()
                                                  if v[0] >= top_score)]
        return (name, chosen), count, fitted_score, found, tried, swap, by_count

    def _fit_lifted(self, generator, top, score, rng, seed, evaluations):
        """Fits the lifted candidate (`fit`): for each count of LIFT_CLUSTERS, each
        quadrant's fm^2 codes of the parses of activation_1 top [N, s, s, c_1] (at most
        SEARCH_PARSES of them) clustered, scored by `evaluations` lifted samples; stores
        the best count's state, fitted to every parse, and returns {count: (score, table,
        sizes)} ({} when the lift is not tried)."""
        if not self.can_lift:
            return {}
        # fm^2 of the training parses, split into the quadrants of the bottom map, and
        # which of its units TopK_2 and ReLU keep.
        parses = [generator.parse_from_top(top[i:i + 512]) for i in range(0, len(top), 512)]
        bottom = np.concatenate([p["feature_maps"][1].numpy() for p in parses])
        kept = np.concatenate([p["activations"][1].numpy() > 0 for p in parses])
        bottom, kept = bottom.reshape(len(top), -1), kept.reshape(len(top), -1)
        lifted = {}
        for count in (c for c in LIFT_CLUSTERS if c <= self.num_clusters):
            table, sizes = self._quadrant_table(bottom[:SEARCH_PARSES], kept[:SEARCH_PARSES],
                                                count, seed)
            maps = self._lifted_draw(generator, table, sizes, rng, evaluations)
            lifted[count] = (score(maps.reshape(len(maps), -1)), table, sizes)
        best = max(lifted, key=lambda c: (lifted[c][0], -c))
        table, sizes = (self._quadrant_table(bottom, kept, best, seed)
                        if len(top) > SEARCH_PARSES else lifted[best][1:])
        self.quadrant_configurations.assign(table[0])
        self.quadrant_kept.assign(table[1])
        self.quadrant_members.assign(sizes)
        return lifted

    def _quadrant_table(self, bottom, kept, count, seed):
        """(table [2, clusters, D_2]: each quadrant's configurations of fm^2, bottom
        [N, D_2], in the rows of its units, and the share of their members whose TopK_2
        and ReLU keep each unit, kept [N, D_2]; sizes [4, clusters])."""
        quadrant_of = block_lib.image_quadrant_units(self.bottom_shape)
        table = np.zeros((2, *self.quadrant_configurations.shape), np.float32)
        sizes = np.zeros(self.quadrant_members.shape, np.float32)
        for q in range(4):
            units = quadrant_of == q
            centroids, found, labels = clusters.kmeans(
                bottom[:, units], count, seed=seed + q, return_labels=True)
            if not len(found):
                continue
            table[0, :len(centroids), units] = centroids.T
            # The share of each configuration's members that keep each unit: a mean of
            # >= MIN_MEMBERS parses too.
            table[1, :len(centroids), units] = np.stack(
                [kept[labels == j][:, units].mean(0) for j in range(len(found))]).T
            sizes[q, :len(found)] = found
        return table, sizes

    def _lifted_draw(self, generator, table, sizes, rng, num):
        """num lifted top maps [num, s, s, c_1] of quadrant configurations (table [2,
        clusters, D_2]: means and kept shares; sizes [4, clusters]) drawn by size."""
        quadrant_of = block_lib.image_quadrant_units(self.bottom_shape)
        targets = np.zeros((2, num, len(quadrant_of)), np.float32)
        for q in range(4):
            if sizes[q].sum():
                picks = rng.choice(len(sizes[q]), size=num, p=sizes[q] / sizes[q].sum())
                targets[:, :, quadrant_of == q] = table[:, picks][:, :, quadrant_of == q]
        weights = np.where(targets[1] > 0.5, 1.0, LIFT_OFF_WEIGHT)
        return lift(generator, targets[0].reshape(-1, *self.bottom_shape),
                    weights.reshape(-1, *self.bottom_shape), self.lift_refine_steps).numpy()

    def _assign(self, blocks, configurations, members):
        self.blocks.assign(np.asarray(blocks, np.int32))
        self.configurations.assign(configurations)
        self.members.assign(members)

    @property
    def fitted(self):
        """True when every block that holds units (or, lifted, every quadrant of fm^2) has
        at least one configuration."""
        if self.can_lift and float(self.lifted.numpy()) > 0:
            return bool(np.all(self.quadrant_members.numpy().sum(-1) > 0))
        used = np.unique(self.blocks.numpy())
        return bool(np.all(self.members.numpy()[used].sum(-1) > 0))

    def sample(self, generator, seeds):
        """The parse (`Generator.parse_from_top`) of one top feature map per seed.

        seeds: int64 [batch]; row i's configurations come from the stateless seed
        (seeds[i], 0), their units' on/off draws (`on_off`) from (seeds[i], 2).
        Returns the parse dict (no "z": a recombined map has none).
        """
        s, c = self.generator_config.top_size, self.generator_config.channels[0]
        logits = size_logits(self.members)
        by_unit = tf.transpose(self.configurations)  # [U, clusters]
        kept_by_unit = tf.transpose(self.kept)
        # A prior saved before the shares were (all 0) samples its configurations' means.
        has_shares = tf.reduce_any(self.kept > 0)

        @tf.autograph.experimental.do_not_convert
        def one(seed):  # [s, s, c] for one row
            choice = tf.random.stateless_categorical(
                logits, 1, tf.stack([seed, tf.zeros_like(seed)]))[:, 0]  # [B]
            per_unit = tf.gather(tf.cast(choice, tf.int32), self.blocks)[:, None]  # [U, 1]
            picked = tf.gather(by_unit, per_unit, batch_dims=1)[:, 0]
            kept = tf.gather(kept_by_unit, per_unit, batch_dims=1)[:, 0]
            uniform = tf.random.stateless_uniform(tf.shape(kept),
                                                  tf.stack([seed, 2 + tf.zeros_like(seed)]))
            picked = tf.where(has_shares, on_off(picked, kept, uniform), picked)
            return tf.reshape(picked, [s, s, c])

        top = tf.map_fn(one, tf.cast(seeds, tf.int64),
                        fn_output_signature=tf.TensorSpec([s, s, c], tf.float32))
        if self.can_lift:
            top = tf.where(self.lifted > 0, self._lifted_sample(generator, seeds), top)
        return generator.parse_from_top(top)

    def _lifted_sample(self, generator, seeds):
        """Top feature maps [batch, s, s, c_1] that paint one quadrant configuration of
        fm^2 per quadrant, drawn from the stateless seeds (seeds[i], 1) (`lift`)."""
        logits = size_logits(self.quadrant_members)
        quadrant_of = tf.constant(block_lib.image_quadrant_units(self.bottom_shape), tf.int32)
        # [D_2, clusters, 2]: each unit's mean and kept share in each configuration.
        by_unit = tf.stack([tf.transpose(self.quadrant_configurations),
                            tf.transpose(self.quadrant_kept)], -1)

        @tf.autograph.experimental.do_not_convert
        def one(seed):  # [h_2 * w_2 * c_2, 2] for one row
            choice = tf.random.stateless_categorical(
                logits, 1, tf.stack([seed, tf.ones_like(seed)]))[:, 0]  # [4]
            per_unit = tf.gather(tf.cast(choice, tf.int32), quadrant_of)
            return tf.gather(by_unit, per_unit[:, None], batch_dims=1)[:, 0]

        picked = tf.map_fn(one, tf.cast(seeds, tf.int64), fn_output_signature=tf.TensorSpec(
            [int(np.prod(self.bottom_shape)), 2], tf.float32))
        weights = tf.where(picked[..., 1] > 0.5, 1.0, LIFT_OFF_WEIGHT)
        return lift(generator, tf.reshape(picked[..., 0], [-1, *self.bottom_shape]),
                    tf.reshape(weights, [-1, *self.bottom_shape]), self.lift_refine_steps)

    def describe(self):
        members = self.members.numpy()
        if self.can_lift and float(self.lifted.numpy()) > 0:
            used = self.quadrant_members.numpy() > 0
            return (f"one parse per seed from the induced And-Or grammar, one layer down: "
                    f"each of the 4 quadrants of the bottom feature map fm^2 picks one of its "
                    f"{int(used.sum(-1).min())}-{int(used.sum(-1).max())} configurations "
                    "(k-means centroids of that quadrant's fm^2 codes over the training "
                    f"parses, each the mean of at least {clusters.MIN_MEMBERS}) by its "
                    "cluster's size (stateless, seed (seed, 1)); a pursuit of "
                    f"K_1 = {self.generator_config.topk[0]} top OR nodes finds the top "
                    "layer that paints them (its top kernels overlap the quadrants, so no "
                    "block of top OR nodes is one quadrant's), and gradient steps on its "
                    "rendering bring its picture near what they paint directly; TopK, "
                    "ReLU and the rest of "
                    "the network render it. There is no z output")
        if not self.fitted:
            return ("the parse of an empty top layer for every seed: the grammar prior "
                    f"keeps only configurations of at least {clusters.MIN_MEMBERS} "
                    "training parses, and this run has too few training images")
        used = members[np.unique(self.blocks.numpy())] > 0
        return (f"one parse per seed from the induced And-Or grammar: each of "
                f"{len(used)} blocks of top OR nodes picks one of its "
                f"{int(used.sum(-1).min())}-{int(used.sum(-1).max())} OR configurations "
                "(k-means centroids of that block's top feature map codes over the "
                f"training parses, each the mean of at least {clusters.MIN_MEMBERS}), with "
                "probability proportional to its cluster's size (stateless, seed "
                "(seed, 0)), then each of its units on with the share of the cluster's "
                "members that keep it, at their mean strength (seed (seed, 2)); the "
                "blocks are the top AND nodes, merged where the swap test "
                "finds them dependent, or the quadrants the top kernels paint; TopK, ReLU "
                "and the rest of the network render it. There is no z output: a parse "
                "recombined across blocks is in general the image of no latent vector")


def _render(generator, codes, shape, chunk=512):
    """Images [n, H, W, 3] of flattened top maps codes [n, U] of shape [s, s, c]."""
    return np.concatenate([
        generator.parse_from_top(codes[i:i + chunk].reshape(-1, *shape))["image"].numpy()
        for i in range(0, len(codes), chunk)])


def _nearest_other_d2(quadrants, chunk=1024):
    """[4, n] squared distance of each image's quadrant to the same quadrant of its
    nearest other image, for quadrants [4, n, D]."""
    return np.stack([_nearest_d2_chunked(q, q, chunk, skip_self=True) for q in quadrants])


def _nearest_d2_chunked(queries, reference, chunk=1024, skip_self=False):
    """[n] squared distance of each query [n, D] to its nearest reference row [m, D];
    skip_self: the queries are the reference, and a row is not its own nearest."""
    squared = (reference ** 2).sum(1)[None]
    rows = []
    for i in range(0, len(queries), chunk):
        q = queries[i:i + chunk]
        d2 = (q ** 2).sum(1)[:, None] + squared - 2.0 * q @ reference.T
        if skip_self:
            d2[np.arange(len(q)), np.arange(i, i + len(q))] = np.inf
        rows.append(np.maximum(d2.min(1), 0.0))
    return np.concatenate(rows)


def _cluster_blocks(codes, blocks, count, seed):
    """[(centroids [C_b, U_b], members [C_b], kept [C_b, U_b])] of each block b's codes
    codes[:, blocks == b] (`clusters.kmeans`: each centroid the mean of >= MIN_MEMBERS
    codes; kept, the share of those members in which each unit is on, > 0)."""
    found = []
    for b in range(int(blocks.max()) + 1):
        block = codes[:, blocks == b]
        centroids, sizes, labels = clusters.kmeans(block, count, seed=seed + b,
                                                   return_labels=True)
        kept = np.stack([(block[labels == j] > 0).mean(0) for j in range(len(sizes))]
                        ) if len(sizes) else np.zeros_like(centroids)
        found.append((centroids, sizes, kept.astype(np.float32)))
    return found


def _draw(found, blocks, rng, num):
    """num flattened top maps [num, U]: each block's configuration drawn by its size, and
    its units by `on_off` (the numpy twin of `BlockGrammarPrior._on_off_sample`)."""
    out = np.zeros((num, len(blocks)), np.float32)
    for b, (centroids, sizes, kept) in enumerate(found):
        if len(sizes):
            picks = rng.choice(len(sizes), size=num, p=sizes / sizes.sum())
            out[:, blocks == b] = on_off(centroids[picks], kept[picks],
                                         rng.uniform(size=(num, centroids.shape[1])))
    return out


def on_off(means, kept, uniform):
    """Codes [..., U] of configurations with means [..., U] and kept shares [..., U]: unit u
    on when uniform [..., U] < its share, then at its mean over the members that keep it
    (mean / share), else 0. Works on numpy arrays and tensors alike.

    Why not the mean itself: a mean of sparse codes with different supports is on
    wherever any member is, at a fraction of its strength; TopK_1 keeps its K_1 largest
    units, the ones most members share, and the picture is the blend of its members (on
    faces, sharpness 0.04-0.06 against the reconstructions' 0.25). A support drawn unit
    by unit at the members' own rates, each unit at its members' strength, paints like one
    parse (0.21; docs/grammar_prior.md).
    """
    where = tf.where if tf.is_tensor(means) else np.where
    # Where no member keeps a unit (kept 0) its mean is 0 too: divide by 1 there.
    strength = means / where(kept > 0, kept, 1.0)
    return where(uniform < kept, strength, 0.0)


def lift(generator, targets, weights=None, refine_steps=LIFT_REFINE_STEPS):
    """Top feature maps [n, s, s, c_1] of at most K_1 non-negative top OR nodes that paint
    the bottom feature maps targets [n, h_2, w_2, c_2] (fm^2, before TopK_2) in weighted
    least squares: a greedy pursuit of K_1 steps (orthogonal matching pursuit), each adding
    the unit whose painting (deconv_1 of the unit alone, Eq. 1) best matches what is left,
    then refitting the chosen units' coefficients, clipped at 0; then `refine_steps` steps
    of `refine_lift` on the rendering (0: the pursuit alone).

    weights [n, h_2, w_2, c_2] (default 1): how much each unit of fm^2 counts. The units
    that TopK_2 keeps matter; the value of one that it drops does not, as long as it stays
    below the threshold. The coefficients found are then scaled, per sample, to fit the
    units of weight >= 1 alone.

    Every row is lifted on its own (no op mixes rows), so a sample does not depend on the
    rows batched with it.
    """
    cfg = generator.config
    s, c, k = cfg.top_size, cfg.channels[0], cfg.topk[0]
    units, n = s * s * c, tf.shape(targets)[0]
    def deconv(maps):  # float32 whatever the layer computes in (mixed precision)
        return tf.cast(generator.deconvs[0](tf.cast(maps, generator.compute_dtype)),
                       tf.float32)

    bias = tf.reshape(deconv(tf.zeros([1, s, s, c])), [-1])
    paintings = tf.reshape(deconv(tf.reshape(tf.eye(units), [units, s, s, c])),
                           [units, -1]) - bias  # [U, D_2]
    goal = tf.reshape(tf.cast(targets, tf.float32), [n, -1]) - bias
    weights = (tf.ones_like(goal) if weights is None
               else tf.reshape(tf.cast(weights, tf.float32), [n, -1]))
    # Each unit's weighted norm [n, U], without an [n, U, D_2] table of weighted paintings.
    norms = tf.sqrt(weights @ tf.transpose(paintings ** 2)) + 1e-9
    left, chosen = goal, tf.zeros([n, units], tf.bool)
    picks, coefficients = [], None
    for _ in range(k):
        match = tf.where(chosen, -np.inf, ((left * weights) @ tf.transpose(paintings)) / norms)
        pick = tf.argmax(match, axis=1, output_type=tf.int32)
        picks.append(pick)
        chosen = chosen | tf.cast(tf.one_hot(pick, units), tf.bool)
        atoms = tf.gather(paintings, tf.stack(picks, 1))  # [n, j, D_2]
        weighted = atoms * weights[:, None]
        gram = weighted @ tf.transpose(atoms, [0, 2, 1]) + 1e-6 * tf.eye(len(picks))
        coefficients = tf.maximum(
            tf.linalg.solve(gram, weighted @ goal[..., None])[..., 0], 0.0)
        left = goal - tf.einsum("nj,njd->nd", coefficients, atoms)
    # The refit weighs the units that TopK_2 drops too, and they pull the coefficients
    # below what the kept units want (the lifted parts come out dim): one scale per sample,
    # the least-squares fit of the units of weight 1 alone (1 when every unit weighs 1),
    # where that fit is a positive scale (else the coefficients stay as they are).
    painted = tf.einsum("nj,njd->nd", coefficients, atoms)
    kept = tf.cast(weights >= 1.0, tf.float32)
    fit, energy = (tf.reduce_sum(kept * painted * goal, 1),
                   tf.reduce_sum(kept * painted ** 2, 1))
    scale = tf.where((fit > 0) & (energy > 1e-9), fit / tf.maximum(energy, 1e-9), 1.0)
    coefficients = coefficients * scale[:, None]
    top = tf.reduce_sum(tf.one_hot(tf.stack(picks, 1), units) * coefficients[..., None], 1)
    top = tf.reshape(top, [-1, s, s, c])
    if refine_steps:
        top = refine_lift(generator, top, paint_bottom(generator, targets), refine_steps)
    return top


def paint_bottom(generator, bottom):
    """Images [n, H, W, 3] that bottom feature maps fm^2 [n, h_2, w_2, c_2] (before TopK_2)
    paint directly: TopK_2, ReLU and the layers below (Eq. 1), with no top layer. A quadrant
    configuration painted so is what its lift should render."""
    fm = tf.cast(bottom, generator.compute_dtype)
    for topk, deconv in zip(generator.topks[1:], generator.deconvs[1:]):
        kept = topk(fm)
        fm = deconv(kept * tf.cast(kept > 0, fm.dtype))
    return tf.tanh(tf.cast(fm, tf.float32))


def refine_lift(generator, top, images, steps=LIFT_REFINE_STEPS, rate=LIFT_REFINE_RATE,
                momentum=LIFT_REFINE_MOMENTUM):
    """The top maps top [n, s, s, c_1] (>= 0, at most K_1 units on) after `steps` noise-free
    heavy-ball steps on the squared distance between their rendering
    (`Generator.parse_from_top`, TopK and ReLU included) and images [n, H, W, 3]:
    velocity <- momentum * velocity - rate * gradient, top <- max(top + velocity, 0) on
    the units already on (the support stays the pursuit's, so at most K_1). Each row keeps
    the refined map only where it renders nearer its image than the start.

    Why: the pursuit fits fm^2 linearly, but the image depends on which units TopK_2
    keeps and at what strength; the units of a part just below the threshold or
    painted too weakly give dim parts, the lift's failures (docs/grammar_prior.md). The
    gradient through the rendering (TopK's masks constant, as in training) moves the
    K_1 coefficients towards the picture itself. Rows do not mix (the loss is a sum of
    per-row terms, TopK is per row).
    """
    top = tf.cast(top, tf.float32)
    images = tf.cast(images, tf.float32)
    support = tf.cast(top > 0, tf.float32)

    def distance(maps):  # [n]: per row, so each row's gradient is its own
        rendered = tf.cast(generator.parse_from_top(maps)["image"], tf.float32)
        return tf.reduce_sum(tf.reshape((rendered - images) ** 2, [tf.shape(maps)[0], -1]), 1)

    def step(t, maps, velocity):
        with tf.GradientTape() as tape:
            tape.watch(maps)
            loss = tf.reduce_sum(distance(maps))
        velocity = momentum * velocity - rate * tape.gradient(loss, maps) * support
        return t + 1, tf.maximum(maps + velocity, 0.0) * support, velocity

    _, refined, _ = tf.while_loop(lambda t, *_: t < steps, step,
                                  (tf.constant(0), top, tf.zeros_like(top)))
    # A rate that suits the parts models could overshoot on another: never worse than
    # the pursuit, row by row.
    better = distance(refined) <= distance(top)
    return tf.where(better[:, None, None, None], refined, top)


def _node_groups(blocks, shape):
    """For each block, the top AND nodes (row-major) that hold some of its units."""
    s, _, c = shape
    per_node = np.asarray(blocks).reshape(s * s, c)
    return [sorted({int(n) for n in np.flatnonzero((per_node == b).any(1))})
            for b in range(int(np.max(blocks)) + 1)]


@keras.saving.register_keras_serializable(package="sparse_gen_tf")
class NodeGrammarPrior(keras.layers.Layer):
    """The induced And-Or grammar's distribution over each top AND node's OR configuration,
    node by node (`--prior=nodes`; the default `grammar` before `BlockGrammarPrior`, and
    what runs whose checkpoint holds this state still open with).

    State (non-trainable variables), for the s x s top AND nodes in row-major order:
      centroids [s*s, clusters, c_1]: configuration k of node n, the mean fm^1 code at
        node n (before TopK) of the training parses in its cluster;
      members [s*s, clusters]: how many training parses the cluster pools, >= MIN_MEMBERS,
        or 0 for an unused slot; node n picks cluster k with probability members / total.
    A run with fewer than MIN_MEMBERS training images keeps no cluster: its nodes stay
    empty (code 0), and its samples are the image of the empty top layer.
    The nodes pick independently, as the quadrants of the parts grammar do. (The model's
    own parses do show some dependence between the nodes' clusters, but independent picks
    already come within a few percent of the reconstructions' validity: README.)
    """

    kind = "nodes"
    has_latent = False
    uses_images = False

    def __init__(self, generator_config, clusters=GRAMMAR_CLUSTERS, **kwargs):
        super().__init__(**kwargs)
        self.generator_config = generator_config
        self.num_clusters = int(clusters)
        s, c = generator_config.top_size, generator_config.channels[0]
        self.centroids = self.add_weight(name="centroids", shape=(s * s, self.num_clusters, c),
                                         initializer="zeros", trainable=False)
        self.members = self.add_weight(name="members", shape=(s * s, self.num_clusters),
                                       initializer="zeros", trainable=False)
        self.built = True

    def fit(self, generator, chains, seed=0, images=None):
        """Clusters each top AND node's codes fm^1[:, y, x] [N, c_1] over the parses of the
        persistent chains [N, d] (`clusters.kmeans`, clusters of >= MIN_MEMBERS) and
        stores the centroids and their sizes. With fewer than MIN_MEMBERS chains no
        cluster is kept and the prior stays unfitted. images: unused (`uses_images`)."""
        top = np.asarray(generator.top_feature_map(np.asarray(chains, np.float32)))
        n, s, _, c = top.shape
        centroids = np.zeros(self.centroids.shape, np.float32)
        members = np.zeros(self.members.shape, np.float32)
        for node, code in enumerate(top.reshape(n, s * s, c).transpose(1, 0, 2)):
            found, sizes = clusters.kmeans(code, self.num_clusters, seed=seed + node)
            centroids[node, :len(found)] = found
            members[node, :len(found)] = sizes
        self.centroids.assign(centroids)
        self.members.assign(members)

    @property
    def fitted(self):
        """True when every top AND node has at least one configuration."""
        return bool(np.all(self.members.numpy().sum(-1) > 0))

    def sample(self, generator, seeds):
        """The parse (`Generator.parse_from_top`) of one top feature map per seed.

        seeds: int64 [batch]; row i's choices come from the stateless seed (seeds[i], 0).
        Returns the parse dict (no "z": a recombined map has none).
        """
        s, c = self.generator_config.top_size, self.generator_config.channels[0]
        logits = size_logits(self.members)

        # Plain TF ops, nothing for AutoGraph to convert (it warns about the closure).
        @tf.autograph.experimental.do_not_convert
        def one(seed):  # [s, s, c] for one row
            choice = tf.random.stateless_categorical(
                logits, 1, tf.stack([seed, tf.zeros_like(seed)]))  # [s*s, 1]
            picked = tf.gather(self.centroids, tf.cast(choice, tf.int32), batch_dims=1)
            return tf.reshape(picked, [s, s, c])

        top = tf.map_fn(one, tf.cast(seeds, tf.int64),
                        fn_output_signature=tf.TensorSpec([s, s, c], tf.float32))
        return generator.parse_from_top(top)

    def describe(self):
        members = self.members.numpy()
        if not self.fitted:
            return ("the parse of an empty top layer for every seed: the grammar prior "
                    f"keeps only configurations of at least {clusters.MIN_MEMBERS} "
                    "training parses, and this run has too few training images")
        return (f"one parse per seed from the induced And-Or grammar: each of the "
                f"{len(members)} top AND nodes picks one of its "
                f"{int((members > 0).sum(-1).min())}-{int((members > 0).sum(-1).max())} "
                "OR configurations (k-means centroids of that node's top feature map "
                "codes over the training parses, each the mean of at least "
                f"{clusters.MIN_MEMBERS}), with probability proportional to its "
                "cluster's size (stateless, seed (seed, 0)); TopK, ReLU and the rest of "
                "the network render it. There is no z output: a parse recombined across "
                "AND nodes is in general the image of no latent vector; the top layer's "
                "parse (mask_1, activation_1) determines the image")


@keras.saving.register_keras_serializable(package="sparse_gen_tf")
class JointGrammarPrior(keras.layers.Layer):
    """The induced grammar's distribution over whole top-layer parses, not node by node.

    A parse's configuration is which top OR nodes survive TopK_1 and ReLU, over every top
    AND node together, with their coefficients: activation_1 [s, s, c_1]. The training
    parses are clustered by it (k-means, each cluster >= MIN_MEMBERS parses), and a sample
    picks one cluster by its size and draws its top feature map from that cluster's own
    distribution: the mean fm^1 of its members plus `shrink` times their per-unit spread,
    N(mean, diag(shrink * sd)^2). The rest of the network renders it, TopK included. So
    the top AND nodes of a sample are never recombined from different clusters: what one
    node codes is sampled with what the others coded in the same training parses.

    State (non-trainable variables):
      centroids [clusters, s, s, c_1]: each cluster's mean fm^1 (before TopK);
      scales [clusters, s, s, c_1]: shrink * the members' standard deviation per unit;
      members [clusters]: the cluster's size, >= MIN_MEMBERS, or 0 for an unused slot.
    Neither a mean nor a per-unit spread of >= MIN_MEMBERS codes is any one training
    image's code. A run with fewer than MIN_MEMBERS training images keeps no cluster.
    """

    kind = "joint"
    has_latent = False
    uses_images = False

    def __init__(self, generator_config, clusters=JOINT_CLUSTERS, shrink=JOINT_SHRINK,
                 **kwargs):
        super().__init__(**kwargs)
        self.generator_config = generator_config
        self.num_clusters = int(clusters)
        self.shrink = float(shrink)
        s, c = generator_config.top_size, generator_config.channels[0]
        shape = (self.num_clusters, s, s, c)
        self.centroids = self.add_weight(name="centroids", shape=shape, initializer="zeros",
                                         trainable=False)
        self.scales = self.add_weight(name="scales", shape=shape, initializer="zeros",
                                      trainable=False)
        self.members = self.add_weight(name="members", shape=(self.num_clusters,),
                                       initializer="zeros", trainable=False)
        self.built = True

    def fit(self, generator, chains, seed=0, images=None):
        """Clusters the parses of the persistent chains [N, d] by their whole top layer's
        configuration activation_1 [N, s*s*c_1] (k-means in its first JOINT_COMPONENTS
        principal components, which keeps k-means cheap at hundreds of clusters) and stores
        each cluster of >= MIN_MEMBERS parses: the mean and spread of its fm^1.
        images: unused (`uses_images`)."""
        chains = np.asarray(chains, np.float32)
        parse = generator.parse(chains)
        top = parse["feature_maps"][0].numpy()  # [N, s, s, c] before TopK
        active = parse["activations"][0].numpy().reshape(len(chains), -1)
        labels = configuration_clusters(active, self.num_clusters, seed=seed)
        centroids = np.zeros(self.centroids.shape, np.float32)
        scales = np.zeros(self.scales.shape, np.float32)
        members = np.zeros(self.members.shape, np.float32)
        for slot, cluster in enumerate(np.unique(labels[labels >= 0])):
            codes = top[labels == cluster]
            centroids[slot] = codes.mean(0)
            scales[slot] = self.shrink * codes.std(0)
            members[slot] = len(codes)
        self.centroids.assign(centroids)
        self.scales.assign(scales)
        self.members.assign(members)

    @property
    def fitted(self):
        """True when at least one whole configuration is kept."""
        return bool(self.members.numpy().sum() > 0)

    def sample(self, generator, seeds):
        """The parse (`Generator.parse_from_top`) of one top feature map per seed.

        seeds: int64 [batch]; row i's cluster and noise come from the stateless seeds
        (seeds[i], 0) and (seeds[i], 1). Returns the parse dict (no "z").
        """
        shape = self.centroids.shape[1:]
        logits = size_logits(self.members)[None]  # [1, clusters]

        @tf.autograph.experimental.do_not_convert
        def one(seed):  # [s, s, c] for one row
            choice = tf.random.stateless_categorical(
                logits, 1, tf.stack([seed, tf.zeros_like(seed)]))[0, 0]
            noise = tf.random.stateless_normal(shape, tf.stack([seed, tf.ones_like(seed)]))
            return tf.gather(self.centroids, choice) + tf.gather(self.scales, choice) * noise

        top = tf.map_fn(one, tf.cast(seeds, tf.int64),
                        fn_output_signature=tf.TensorSpec(shape, tf.float32))
        return generator.parse_from_top(top)

    def describe(self):
        members = self.members.numpy()
        if not self.fitted:
            return ("the parse of an empty top layer for every seed: the joint grammar "
                    f"prior keeps only configurations of at least {clusters.MIN_MEMBERS} "
                    "training parses, and this run has too few training images")
        return (f"one parse per seed from the induced And-Or grammar, whole: one of "
                f"{int((members > 0).sum())} configurations of the entire top layer "
                "(k-means clusters of the training parses' surviving top OR nodes, each "
                f"of at least {clusters.MIN_MEMBERS} parses) picked by its size, its top "
                f"feature map drawn around the cluster's mean with {self.shrink:g} times "
                "its members' spread per unit (stateless, seeds (seed, 0) and (seed, 1)); "
                "TopK, ReLU and the rest of the network render it. There is no z output")


def configuration_clusters(active, num, seed=0, components=None):
    """Labels [N] of k-means clusters of whole configurations active [N, D] that each hold
    >= MIN_MEMBERS rows, -1 for rows in none.

    k-means (`clusters.kmeans`, which keeps clusters of >= MIN_MEMBERS) runs in the first
    `components` (default JOINT_COMPONENTS) principal components of the rows; then every
    row goes to its nearest kept centroid there (rows of dropped clusters join a kept
    one), and a cluster left with fewer than MIN_MEMBERS rows is dropped (-1). With
    fewer than MIN_MEMBERS rows every label is -1.
    """
    components = JOINT_COMPONENTS if components is None else components
    active = np.asarray(active, np.float64)
    centred = active - active.mean(0)
    if len(active) < clusters.MIN_MEMBERS:
        return np.full(len(active), -1)
    basis = np.linalg.svd(centred, full_matrices=False)[2][:components]  # [k, D]
    projected = centred @ basis.T
    centroids, _ = clusters.kmeans(projected, num, seed=seed)
    if not len(centroids):
        return np.full(len(active), -1)
    d2 = (centroids ** 2).sum(1)[None] - 2.0 * projected @ centroids.T
    labels = d2.argmin(1)
    sizes = np.bincount(labels, minlength=len(centroids))
    return np.where(sizes[labels] >= clusters.MIN_MEMBERS, labels, -1)


def sample_seeds(num, seed=0):
    """int64 [num]: the row seeds of num samples for a run seed, seed * 2^32 + row, so
    that samples for one seed are rows 0, 1, ... of the same sequence."""
    return tf.constant(np.arange(num, dtype=np.int64) + (int(seed) << 32))


def make(kind, generator_config, **kwargs):
    """The prior named kind (one of PRIORS) for a generator with this config."""
    if kind == "normal":
        return NormalPrior(generator_config, name="prior", **kwargs)
    if kind == "grammar":
        return BlockGrammarPrior(generator_config, name="prior", **kwargs)
    if kind == "nodes":
        return NodeGrammarPrior(generator_config, name="prior", **kwargs)
    if kind == "joint":
        return JointGrammarPrior(generator_config, name="prior", **kwargs)
    raise ValueError(f"unknown prior {kind!r}; use one of {', '.join(PRIORS)}")


__all__ = ["BLOCK_CLUSTERS", "BlockGrammarPrior", "DEFAULT_PRIOR", "GRAMMAR_CLUSTERS",
           "JOINT_CLUSTERS", "LIFT_CLUSTERS", "LIFT_OFF_WEIGHT", "MAX_LIFT",
           "LIFT_REFINE_MOMENTUM", "LIFT_REFINE_RATE", "LIFT_REFINE_STEPS",
           "NodeGrammarPrior", "SEARCH_PARSES", "lift", "paint_bottom", "refine_lift",
           "JointGrammarPrior", "NormalPrior", "PRIORS", "configuration_clusters",
           "latent_from_seeds", "make", "sample_seeds"]
