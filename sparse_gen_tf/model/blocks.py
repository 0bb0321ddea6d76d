"""Which top OR nodes a grammar sample must take together: the swap test and the
nearest-quadrant check of `prior.BlockGrammarPrior`, without ground truth.

The grammar prior samples each block of top OR nodes (units (y, x, channel) of fm^1)
independently. Two candidate splits of the units into blocks are tried:

  nodes      one block per top AND node (cell (y, x) of fm^1): the grammar of §2.1 read
             off the architecture, right when a top kernel paints its own quadrant;
  quadrants  one block per quadrant of the bottom feature map, each unit in the quadrant
             its top kernel paints most (`painted_quadrants`): right when top kernels
             overlap their neighbours, so that every AND node reaches every quadrant and
             a quadrant's composite is coded by units of several nodes.

The swap test (`swap_scores`) gives every block of a training parse's top map the codes
of another training parse (a random donor per block) and scores the rendered images by
the nearest-quadrant check (`QuadrantCheck`): the share of their image quadrants that lie
as close to some training reconstruction's quadrant as reconstructions lie to one
another. Blocks whose codes depend on one another fail it; merged, they pass. So blocks
are merged greedily, the pair whose merge passes most first. Merged blocks need more
configurations to cover their combinations, so the prior walks the merges from the finest
split and keeps the one whose own samples (k-means centroids per block) pass the check
most often (`prior.BlockGrammarPrior.fit`).
"""

import numpy as np

# A quadrant is "near" when its distance to the nearest training reconstruction's quadrant
# is at most this quantile of the reconstructions' own leave-one-out nearest distances.
NEAR_QUANTILE = 0.9
# The reconstructions the check compares with (the first of the training parses).
MAX_REFERENCE = 1024


def image_quadrants(images):
    """[n, H, W, C] -> [4, n, (H/2)*(W/2)*C]: the four quadrants of each image, flattened."""
    n, h, w, c = images.shape
    quadrants = np.asarray(images, np.float32).reshape(n, 2, h // 2, 2, w // 2, c)
    return quadrants.transpose(1, 3, 0, 2, 4, 5).reshape(4, n, -1)


def _nearest_d2(queries, reference, exclude_self=False):
    """[n] squared distance of each query [n, D] to its nearest reference row [m, D]."""
    d2 = ((queries ** 2).sum(1)[:, None] + (reference ** 2).sum(1)[None]
          - 2.0 * queries @ reference.T)
    if exclude_self:
        np.fill_diagonal(d2, np.inf)
    return np.maximum(d2.min(1), 0.0)


class QuadrantCheck:
    """The nearest-quadrant check: how many quadrants of rendered images [n, H, W, C] look
    like the quadrant at the same place of some training reconstruction g(z_i).

    reconstructions [N, H, W, C]: the images of the training parses. A quadrant is near
    when its squared distance to the nearest reconstruction's quadrant at the same place is
    at most the NEAR_QUANTILE quantile of the reconstructions' own nearest distances to
    one another (leave-one-out), so that about NEAR_QUANTILE of new quadrants drawn like
    the reconstructions count as near. No ground truth is used.
    """

    def __init__(self, reconstructions, max_reference=MAX_REFERENCE):
        quadrants = image_quadrants(reconstructions[:max_reference])
        self.reference = quadrants
        self.thresholds = np.array([np.quantile(_nearest_d2(q, q, exclude_self=True),
                                                NEAR_QUANTILE) for q in quadrants])

    def __call__(self, images, donors=None):
        """The share of the images' quadrants [n, H, W, C] that are near, in [0, 1].

        donors [n, b] (optional): reconstructions left out of row i's reference, the
        parses that row i was recombined from, so that a copied quadrant is judged as a
        new quadrant drawn like it (the reconstructions' own leave-one-out), not as near
        for being a copy.
        """
        quadrants = image_quadrants(np.asarray(images))
        near = []
        for q, ref, t in zip(quadrants, self.reference, self.thresholds):
            d2 = ((q ** 2).sum(1)[:, None] + (ref ** 2).sum(1)[None] - 2.0 * q @ ref.T)
            if donors is not None:
                d2[np.arange(len(q))[:, None], donors] = np.inf
            near.append(np.maximum(d2.min(1), 0.0) <= t)
        return float(np.mean(near))

    @property
    def size(self):
        """The number of reconstructions in the reference."""
        return self.reference.shape[1]


def image_quadrant_units(shape):
    """Quadrant ids [h*w*c] of the units of a feature map [h, w, c] (flattened row-major),
    in the order of `image_quadrants`."""
    h, w, c = shape
    rows, cols = np.meshgrid(np.arange(h) // (h // 2), np.arange(w) // (w // 2), indexing="ij")
    return np.repeat((2 * rows + cols).reshape(-1), c)


def node_blocks(top_shape):
    """Block ids [s*s*c] of the units of fm^1 [s, s, c], one block per top AND node."""
    s, _, c = top_shape
    return np.repeat(np.arange(s * s), c)


def painted_quadrants(generator):
    """Block ids [s*s*c] of the units of fm^1: the quadrant of the bottom feature map that
    each unit's top kernel paints most (squared weight of deconv_1's response to the unit
    alone), in row-major order."""
    s, c = generator.config.top_size, generator.config.channels[0]
    units = np.eye(s * s * c, dtype=np.float32).reshape(-1, s, s, c)
    deconv = generator.deconvs[0]
    response = deconv(units).numpy() - deconv(np.zeros_like(units[:1])).numpy()
    energy = image_quadrants(response ** 2).sum(-1)  # [4, units]
    return energy.argmax(0)


def recombine(codes, blocks, rng, num):
    """(num top maps [num, U] whose every block takes its codes [N, U] from a random parse
    of its own, the donors [num, blocks]: the swap test's recombinations)."""
    out = np.empty((num, codes.shape[1]), codes.dtype)
    ids = np.unique(blocks)
    donors = rng.randint(len(codes), size=(num, len(ids)))
    for i, block in enumerate(ids):
        out[:, blocks == block] = codes[donors[:, i]][:, blocks == block]
    return out, donors


def merge_by_swap_test(codes, blocks, score, rng, num):
    """Greedy merging of blocks by the swap test, lazily: yields (blocks [U], score) of
    the first split, then of each merge, until one block is left.

    codes [N, U]: the training parses' top-layer codes (flattened; the reference's
    parses); blocks [U]: the first split; score(top [n, U], donors [n, b]) ->
    nearest-quadrant share of their images (`QuadrantCheck`). Each step merges the two
    blocks whose merge scores best on num recombinations (`recombine`).
    """
    blocks = np.unique(blocks, return_inverse=True)[1]
    yield blocks, score(*recombine(codes, blocks, rng, num))
    while len(np.unique(blocks)) > 1:
        ids = np.unique(blocks)
        tried = []
        for i in range(len(ids)):
            for j in range(i + 1, len(ids)):
                merged = np.where(blocks == ids[j], ids[i], blocks)
                tried.append((merged, score(*recombine(codes, merged, rng, num))))
        merged, best = max(tried, key=lambda t: t[1])
        blocks = np.unique(merged, return_inverse=True)[1]
        yield blocks, best


__all__ = ["MAX_REFERENCE", "NEAR_QUANTILE", "QuadrantCheck", "image_quadrant_units",
           "image_quadrants", "merge_by_swap_test", "node_blocks", "painted_quadrants",
           "recombine"]
