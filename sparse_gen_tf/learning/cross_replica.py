"""What a train step needs from the other replicas: their chains, and results Keras can
reduce over workers.

The strategy itself (which devices, which hosts, who writes the workdir) is chosen by
training/distribute.py; a train step only runs under it, in replica context.
"""

import tensorflow as tf


def all_gather(values):
    """Every replica's values [local, ...], concatenated in replica order: [n * local, ...].

    Call in replica context. This is ReplicaContext.all_gather written as a sum of
    zero-padded blocks (exact, since x + 0 = x): all_gather itself fails under
    MultiWorkerMirroredStrategy with one device per worker ("destinations can not be
    empty", TF 2.21), while all_reduce is what every gradient already goes through.
    """
    replica = tf.distribute.get_replica_context()
    n = replica.num_replicas_in_sync
    if n == 1:
        return values
    shape = tf.shape(values)
    blocks = tf.scatter_nd([[replica.replica_id_in_sync_group]], values[None],
                           tf.concat([[n], shape], 0))
    summed = replica.all_reduce(tf.distribute.ReduceOp.SUM, blocks)
    return tf.reshape(summed, tf.concat([[n * shape[0]], shape[1:]], 0))


def is_multi_worker(strategy):
    """True when strategy spans several processes (a TF_CONFIG cluster of two or more)."""
    resolver = strategy.cluster_resolver
    if resolver is None:
        return False
    return sum(len(tasks) for tasks in resolver.cluster_spec().as_dict().values()) > 1


def step_logs(logs):
    """A train step's {name: scalar} results, in the shape Keras can reduce over workers.

    With several workers Keras averages each result with strategy.reduce(MEAN, axis=0),
    which rejects scalars (tensorflow/tensorflow#72388); a [1] vector reduces to the
    same scalar. Elsewhere the results stay scalars.
    """
    if not is_multi_worker(tf.distribute.get_strategy()):
        return logs
    return {name: tf.reshape(value, [1]) for name, value in logs.items()}


__all__ = ["all_gather", "is_multi_worker", "step_logs"]
