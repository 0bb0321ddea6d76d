"""k-means of model/clusters.py: the incremental k-means++ seeding and the early stop give
exactly the clusters of the full-table seeding run for every iteration, and find generated
clusters."""

import numpy as np

from sparse_gen_tf.model import clusters


def reference_kmeans(points, num, *, min_members=clusters.MIN_MEMBERS, seed=0,
                     iterations=25):
    """The former implementation: k-means++ with the whole [N, C, D] distance table per
    draw, and always `iterations` Lloyd steps."""
    points = np.asarray(points, np.float64)
    count = min(int(num), len(points) // min_members)
    rng = np.random.RandomState(seed)
    centroids = points[[rng.randint(len(points))]]
    for _ in range(count - 1):
        d2 = ((points[:, None] - centroids[None]) ** 2).sum(-1).min(1)
        if not d2.sum():
            break
        centroids = np.concatenate([centroids, points[[rng.choice(len(points),
                                                                  p=d2 / d2.sum())]]])
    for _ in range(iterations):
        d2 = (centroids ** 2).sum(1)[None] - 2.0 * points @ centroids.T
        labels = d2.argmin(1)
        found = np.unique(labels)
        centroids = np.stack([points[labels == c].mean(0) for c in found])
    members = np.bincount(labels)[found]
    keep = members >= min_members
    return centroids[keep].astype(np.float32), members[keep].astype(np.int64)


def blobs(num_centers=12, per_center=60, dim=16, spread=0.3, seed=1):
    rng = np.random.RandomState(seed)
    centers = rng.normal(0.0, 3.0, [num_centers, dim])
    points = np.concatenate([c + spread * rng.standard_normal([per_center, dim])
                             for c in centers])
    return points[rng.permutation(len(points))], centers


def test_same_clusters_as_the_full_table_seeding():
    points, _ = blobs()
    for num, seed in ((12, 0), (20, 3), (5, 7)):
        centroids, members = clusters.kmeans(points, num, seed=seed)
        ref_centroids, ref_members = reference_kmeans(points, num, seed=seed)
        np.testing.assert_array_equal(members, ref_members)
        np.testing.assert_array_equal(centroids, ref_centroids)


def test_finds_generated_clusters_with_their_sizes():
    points, centers = blobs()
    centroids, members = clusters.kmeans(points, len(centers), seed=0)
    assert len(centroids) == len(centers)
    # Every true center has a centroid within the noise of a mean of 60 points.
    distance = np.sqrt(((centers[:, None] - centroids[None]) ** 2).sum(-1)).min(1)
    assert distance.max() < 0.3, distance
    np.testing.assert_array_equal(np.sort(members), [60] * len(centers))


def test_stopping_early_changes_nothing_once_converged():
    points, _ = blobs(per_center=30, seed=4)
    few = clusters.kmeans(points, 10, seed=2, iterations=25)
    many = clusters.kmeans(points, 10, seed=2, iterations=500)
    for a, b in zip(few, many):
        np.testing.assert_array_equal(a, b)


def test_centroids_are_means_of_at_least_min_members():
    points, _ = blobs(num_centers=3, per_center=20, seed=5)
    centroids, members = clusters.kmeans(points, 8, min_members=12)
    assert len(centroids) >= 1 and members.min() >= 12 and members.sum() <= len(points)
    assert clusters.kmeans(points[:5], 4)[0].shape == (0, points.shape[1])
