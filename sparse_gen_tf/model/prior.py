"""Where samples come from: the prior over a sample's parse graph (`--prior`).

    normal   z ~ N(0, I), the paper's prior (Eq. 7); the sample is g(z).
    grammar  the induced And-Or grammar (§2.1), sampled at its top layer: every top AND
             node (cell (y, x) of the top feature map fm^1) picks one of its OR
             configurations, a cluster of that node's codes over the training parses,
             with the cluster's frequency; the rest of the network renders the picked
             map, TopK and ReLU included, so every sample is a sparse parse of every
             layer. The default: on the parts data its samples are legal images of the
             grammar about as often as the reconstructions of training images, where
             N(0, I) almost never is (docs/grammar_prior.md).

Why the grammar is sampled at the top feature map and not in z. Each quadrant of a parts
image picks its composite independently, but the FC map entangles the quadrants: the
top-node codes of different training images, put together, are not the FC image of any z,
and the least-squares z of such a map renders about half as many legal quadrants as the
map itself (docs/grammar_prior.md). So a grammar sample has no z. Its parse starts at
fm^1: layer 1's surviving OR nodes (activation_1) determine the image, and
`Generator.parse_from_top` reproduces it from them. One layer further down (a centroid
per quadrant's block of bottom AND nodes) scores a little higher, but has no top-layer
parse to report.

What is stored. A cluster's configuration is its centroid, the mean of the codes (fm^1 at
that node, before TopK) of at least `clusters.MIN_MEMBERS` training parses, and its
frequency is its number of members; no single training image's code is kept (the
privacy rule of the export). The state is fitted from the persistent chains with `fit`
every --figures_every epochs of training and at its end (`AlternatingBackprop.fit_prior`),
saved in the checkpoints (a checkpoint written between two fits is marked stale and
fitted again when opened, training/run.py) and in
the export, and restored with the rest.

Every prior samples with standard TensorFlow ops and one stateless seed per row, so a
row's sample does not depend on the rows batched with it (TF Serving's batching).
"""

import keras
import numpy as np
import tensorflow as tf

from sparse_gen_tf.model import clusters

PRIORS = ("grammar", "joint", "normal")
DEFAULT_PRIOR = "grammar"
# OR configurations kept per top AND node. A parts quadrant has 8 composites, but the
# model codes one composite with several top-node configurations: 8 or 16 clusters per
# node lose a third or a tenth of the legal quadrants that 32 reach, and 64 add nothing
# (docs/grammar_prior.md).
GRAMMAR_CLUSTERS = 32
# Whole top-layer configurations kept by the joint prior, the spread of its samples around
# a configuration's mean (in its members' standard deviations), and the principal
# components its k-means runs in (benchmarks/sampling.py, docs/grammar_prior.md).
JOINT_CLUSTERS = 128
JOINT_SHRINK = 0.25
JOINT_COMPONENTS = 32


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

    def __init__(self, generator_config, **kwargs):
        super().__init__(**kwargs)
        self.generator_config = generator_config
        self.built = True

    def fit(self, generator, chains, seed=0):
        """Nothing to fit: the prior is the paper's."""
        del generator, chains, seed

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
class GrammarPrior(keras.layers.Layer):
    """The induced And-Or grammar's distribution over each top AND node's OR configuration.

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

    kind = "grammar"
    has_latent = False

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

    def fit(self, generator, chains, seed=0):
        """Clusters each top AND node's codes fm^1[:, y, x] [N, c_1] over the parses of the
        persistent chains [N, d] (`clusters.kmeans`, clusters of >= MIN_MEMBERS) and
        stores the centroids and their sizes. With fewer than MIN_MEMBERS chains no
        cluster is kept and the prior stays unfitted."""
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
        # log(members), and a finite floor for empty slots: their probability is 0.
        logits = tf.where(self.members > 0, tf.math.log(tf.maximum(self.members, 1.0)),
                          tf.fill(tf.shape(self.members), -1e30))

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

    def fit(self, generator, chains, seed=0):
        """Clusters the parses of the persistent chains [N, d] by their whole top layer's
        configuration activation_1 [N, s*s*c_1] (k-means in its first JOINT_COMPONENTS
        principal components, which keeps k-means cheap at hundreds of clusters) and stores
        each cluster of >= MIN_MEMBERS parses: the mean and spread of its fm^1."""
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
        logits = tf.where(self.members > 0, tf.math.log(tf.maximum(self.members, 1.0)),
                          tf.fill(tf.shape(self.members), -1e30))[None]  # [1, clusters]

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
        return GrammarPrior(generator_config, name="prior", **kwargs)
    if kind == "joint":
        return JointGrammarPrior(generator_config, name="prior", **kwargs)
    raise ValueError(f"unknown prior {kind!r}; use one of {', '.join(PRIORS)}")


__all__ = ["DEFAULT_PRIOR", "GRAMMAR_CLUSTERS", "GrammarPrior", "JOINT_CLUSTERS",
           "JointGrammarPrior", "NormalPrior", "PRIORS", "configuration_clusters",
           "latent_from_seeds", "make", "sample_seeds"]
