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
at every checkpoint (`AlternatingBackprop.fit_prior`), saved in the checkpoint and in
the export, and restored with the rest.

Every prior samples with standard TensorFlow ops and one stateless seed per row, so a
row's sample does not depend on the rows batched with it (TF Serving's batching).
"""

import keras
import numpy as np
import tensorflow as tf

from sparse_gen_tf.model import clusters

PRIORS = ("grammar", "normal")
DEFAULT_PRIOR = "grammar"
# OR configurations kept per top AND node. A parts quadrant has 8 composites, but the
# model codes one composite with several top-node configurations: 8 or 16 clusters per
# node lose a third or a tenth of the legal quadrants that 32 reach, and 64 add nothing
# (docs/grammar_prior.md).
GRAMMAR_CLUSTERS = 32


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
    raise ValueError(f"unknown prior {kind!r}; use one of {', '.join(PRIORS)}")


__all__ = ["DEFAULT_PRIOR", "GRAMMAR_CLUSTERS", "GrammarPrior", "NormalPrior", "PRIORS",
           "latent_from_seeds", "make", "sample_seeds"]
