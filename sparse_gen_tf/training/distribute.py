"""Where a training run executes: its tf.distribute strategy, devices and precision.

    --strategy=default        one device, TensorFlow's default strategy
    --strategy=mirrored       MirroredStrategy: one replica per local GPU, or per logical
                              CPU device (--cpu_devices=N) on a machine without GPUs
    --strategy=multi_worker   MultiWorkerMirroredStrategy over the hosts named in TF_CONFIG

--batch_size is the global batch: each of the n replicas trains on batch_size / n examples
and Keras sums their gradients (the train steps scale each replica's loss by 1/n).

Only the chief (the `chief` task, or worker 0 when the cluster has none) writes into the
workdir: config, checkpoints, TensorBoard events. Every worker still takes part in each
checkpoint save, because reading distributed variables for a save may run collective ops,
but the others save into a temporary directory that is deleted after training (the
standard MultiWorkerMirroredStrategy pattern). The workdir must be on a filesystem all
hosts see, since every worker resumes from the chief's latest checkpoint.

What a train step itself does across replicas (gathering the chains, results Keras can
reduce over workers) is learning/cross_replica.py.
"""

import json
import os
import shutil
import tempfile

import keras
import tensorflow as tf

from sparse_gen_tf.errors import UserError

STRATEGIES = ("default", "mirrored", "multi_worker")
PRECISIONS = ("float32", "mixed_float16", "mixed_bfloat16")


def configure_cpu_devices(num_devices):
    """Splits the CPU into num_devices logical devices (num_devices <= 1: leaves it whole).

    TensorFlow fixes its devices the first time it runs anything, so this must come first
    in the process; afterwards it raises UserError.
    """
    if num_devices <= 1:
        return
    cpu = tf.config.list_physical_devices("CPU")[0]
    try:
        tf.config.set_logical_device_configuration(
            cpu, [tf.config.LogicalDeviceConfiguration()] * num_devices)
    except RuntimeError:
        if len(tf.config.list_logical_devices("CPU")) == num_devices:
            return  # already split this way, e.g. by an earlier call in this process
        raise UserError(f"--cpu_devices={num_devices} must be applied before TensorFlow "
                        "starts; set it before anything else runs in the process") from None


def make_strategy(name, cpu_devices=0):
    """The tf.distribute strategy called `name` (one of STRATEGIES).

    Call it at the start of the program: the logical CPU devices and MultiWorkerMirrored-
    Strategy's collective ops can only be set up before TensorFlow initialises.
    """
    configure_cpu_devices(cpu_devices)
    if name == "default":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        # MirroredStrategy() alone takes only CPU:0 when there is no GPU; list the logical
        # CPUs so that --cpu_devices gives several replicas.
        devices = (tf.config.list_logical_devices("GPU")
                   or tf.config.list_logical_devices("CPU"))
        return tf.distribute.MirroredStrategy([d.name for d in devices])
    if name == "multi_worker":
        check_tf_config()
        return tf.distribute.MultiWorkerMirroredStrategy()
    raise UserError(f"unknown --strategy={name}; use one of {', '.join(STRATEGIES)}")


def check_tf_config():
    """Raises UserError unless TF_CONFIG describes a cluster and this process's task in it."""
    text = os.environ.get("TF_CONFIG")
    example = ('TF_CONFIG=\'{"cluster": {"worker": ["host1:12345", "host2:12345"]}, '
               '"task": {"type": "worker", "index": 0}}\'')
    if not text:
        raise UserError("--strategy=multi_worker needs the TF_CONFIG environment variable "
                        f"on every host, e.g. {example}")
    try:
        config = json.loads(text)
        task, cluster = config["task"], config["cluster"]
        hosts = cluster[task["type"]]
        hosts[int(task["index"])]
    except (ValueError, KeyError, TypeError, IndexError):
        raise UserError("TF_CONFIG must be JSON with a cluster and this process's task in "
                        f"it, e.g. {example}; got {text!r}") from None


def is_chief(strategy):
    """True in the process that writes the workdir (any process without a cluster)."""
    resolver = strategy.cluster_resolver
    if resolver is None or not resolver.task_type:
        return True
    if resolver.task_type == "chief":
        return True
    return (resolver.task_type == "worker" and resolver.task_id == 0
            and "chief" not in resolver.cluster_spec().as_dict())


def checkpoint_dir(workdir, strategy):
    """Where this process writes checkpoints: the workdir's on the chief, else a fresh
    temporary directory (remove it with `cleanup` when training ends)."""
    if is_chief(strategy):
        return os.path.join(workdir, "checkpoints")
    resolver = strategy.cluster_resolver
    return tempfile.mkdtemp(prefix=f"sparse_gen_{resolver.task_type}{resolver.task_id}_")


def cleanup(path, strategy):
    """Deletes a non-chief worker's temporary checkpoint directory."""
    if not is_chief(strategy):
        shutil.rmtree(path, ignore_errors=True)


def compile_options(strategy, jit_compile):
    """(jit_compile for the whole train step, jit_compile for Langevin alone).

    XLA cannot compile a step that runs on several replicas: each replica's variables live
    on its own device ("Trying to access resource ... located in device CPU:1 from device
    CPU:0"), and the gradient all-reduce is a collective. So with several replicas only the
    Langevin loop, which touches no variable but the generator's, is compiled.
    """
    if not jit_compile:
        return False, False
    if strategy.num_replicas_in_sync > 1:
        return False, True
    return True, False


def set_precision(policy):
    """Sets Keras' global dtype policy: "float32", "mixed_float16" or "mixed_bfloat16".

    Under a mixed policy the generator computes in 16 bits and keeps float32 weights; the
    chains z, the Langevin updates and the losses stay float32 (see abp.py, langevin.py),
    and Keras wraps the optimizer in a LossScaleOptimizer for mixed_float16.
    """
    if policy not in PRECISIONS:
        raise UserError(f"unknown --mixed_precision={policy}; use one of "
                        f"{', '.join(PRECISIONS)}")
    keras.mixed_precision.set_global_policy(policy)


__all__ = ["STRATEGIES", "PRECISIONS", "make_strategy", "configure_cpu_devices",
           "is_chief", "checkpoint_dir", "cleanup", "compile_options", "set_precision"]
