"""k-means clusters of training codes that each pool at least `MIN_MEMBERS` of them.

What a served model stores about its training set is summaries of this kind only: the
starting points of `reconstruct` (k-means centroids of the persistent chains) and the
grammar prior (centroids of each top AND node's code over the training parses, with the
cluster sizes). A centroid is the mean of the codes of at least MIN_MEMBERS training
images, so no single image's code, and so no training image g(z_i), is in the file.
"""

import numpy as np

# A stored centroid is the mean of at least this many training codes.
MIN_MEMBERS = 8


def kmeans(points, num, *, min_members=MIN_MEMBERS, seed=0, iterations=25,
           return_labels=False):
    """k-means clusters of points [N, D] that each hold at least min_members points.

    Lloyd's algorithm from a k-means++ start, at most min(num, N // min_members) clusters,
    for at most `iterations` assignments, stopping as soon as an assignment repeats the
    last (every later one would too); the clusters of the last assignment with fewer
    than min_members points are then dropped, so there can be fewer than asked, and none
    when N < min_members.

    Returns:
      (centroids float32 [C, D], members int64 [C]): centroid c is exactly the mean of the
      members[c] >= min_members points that the last assignment gave it; with
      return_labels, also labels int64 [N]: each point's kept cluster, or -1.
    """
    points = np.asarray(points, np.float64)
    count = min(int(num), len(points) // min_members)
    if count < 1:
        empty = np.zeros([0, points.shape[1]], np.float32), np.zeros([0], np.int64)
        return (*empty, np.full(len(points), -1)) if return_labels else empty

    def nearest(centroids):  # [N] index of each point's nearest centroid
        d2 = (centroids ** 2).sum(1)[None] - 2.0 * points @ centroids.T
        return d2.argmin(1)

    rng = np.random.RandomState(seed)
    centroids = [points[rng.randint(len(points))]]
    # k-means++: a new centroid far from the others, drawn by D², the squared distance to
    # the nearest centroid so far, kept up to date one centroid at a time ([N] floats,
    # not an [N, C, D] table per draw).
    d2 = ((points - centroids[0]) ** 2).sum(-1)
    for _ in range(count - 1):
        if not d2.sum():  # fewer distinct points than clusters
            break
        centroids.append(points[rng.choice(len(points), p=d2 / d2.sum())])
        d2 = np.minimum(d2, ((points - centroids[-1]) ** 2).sum(-1))
    centroids, labels = np.stack(centroids), None
    for _ in range(iterations):
        new = nearest(centroids)
        if labels is not None and np.array_equal(new, labels):
            break  # converged: the centroids are already the means of this assignment
        labels = new
        clusters, inverse = np.unique(labels, return_inverse=True)
        # Each cluster's mean as one matmul of the assignment with the points (a loop
        # over hundreds of clusters of boolean masks takes seconds).
        assignment = np.zeros((len(points), len(clusters)))
        assignment[np.arange(len(points)), inverse] = 1.0
        centroids = (assignment.T @ points) / assignment.sum(0)[:, None]
    # The centroids are the means of the last assignment's clusters: keep the big ones.
    members = np.bincount(labels)[clusters]
    keep = members >= min_members
    found = centroids[keep].astype(np.float32), members[keep].astype(np.int64)
    if not return_labels:
        return found
    kept = np.full(len(clusters), -1)
    kept[keep] = np.arange(keep.sum())
    return (*found, kept[inverse])


__all__ = ["MIN_MEMBERS", "kmeans"]
