"""Where `fit` spends time beside the train step, in one process: the step alone
(`train_on_batch`) against `fit` with a new input iterator every epoch (a finite dataset)
and with one endless dataset (steps_per_epoch), alternated over --rounds; and the cost of
writing a dozen scalars to TensorBoard as eager ops against one traced function.

    python benchmarks/fit_overhead.py --flagfile=parts.flags --rounds=8 --epochs_each=3

Prints per-step wall and CPU milliseconds (medians of rounds).
"""

import statistics
import sys
import tempfile
import time

import keras
import tensorflow as tf
from absl import flags

from sparse_gen_tf.data import pipeline
from sparse_gen_tf.training import flags as train_flags
from sparse_gen_tf.training import run
from sparse_gen_tf.training.callbacks import TrainScalars

flags.DEFINE_integer("epochs_each", 3, "Timed epochs per variant and round.")
flags.DEFINE_integer("rounds", 8, "Rounds, each timing every variant once.")
FLAGS = flags.FLAGS


class EpochTimer(keras.callbacks.Callback):
    """Wall and CPU seconds of each epoch."""

    def __init__(self):
        super().__init__()
        self.wall, self.cpu = [], []

    def on_epoch_begin(self, epoch, logs=None):
        self.start = time.perf_counter(), time.process_time()

    def on_epoch_end(self, epoch, logs=None):
        self.wall.append(time.perf_counter() - self.start[0])
        self.cpu.append(time.process_time() - self.start[1])


def main():
    FLAGS(sys.argv)
    config = train_flags.train_config()
    keras.utils.set_random_seed(config.seed)
    data = pipeline.load_for(config)
    finite = pipeline.train_dataset(data, config.batch_size, seed=config.seed)
    endless = pipeline.train_dataset(data, config.batch_size, seed=config.seed, repeat=True)
    steps = data.num_examples // config.batch_size
    model = run.build_model(config, data.num_examples)
    model.fit(finite, epochs=1, verbose=0)  # trace and compile
    batches = iter(endless)
    wall = {name: [] for name in ("alone", "iterator per epoch", "one iterator")}
    cpu = {name: [] for name in wall}
    for _ in range(FLAGS.rounds):
        start = time.perf_counter(), time.process_time()
        for _ in range(steps * FLAGS.epochs_each):
            model.train_on_batch(*next(batches))
        wall["alone"].append((time.perf_counter() - start[0]) / steps / FLAGS.epochs_each)
        cpu["alone"].append((time.process_time() - start[1]) / steps / FLAGS.epochs_each)
        for name, dataset, per_epoch in (("iterator per epoch", finite, None),
                                         ("one iterator", endless, steps)):
            timer = EpochTimer()
            # The first epoch of each fit makes its iterator in both: left out.
            model.fit(dataset, epochs=FLAGS.epochs_each + 1, steps_per_epoch=per_epoch,
                      verbose=0, callbacks=[timer])
            wall[name].append(statistics.mean(timer.wall[1:]) / steps)
            cpu[name].append(statistics.mean(timer.cpu[1:]) / steps)
    print("| | wall ms/step | CPU ms/step |\n|---|---|---|")
    for name in wall:
        print(f"| {name} | {statistics.median(wall[name]) * 1e3:.1f} | "
              f"{statistics.median(cpu[name]) * 1e3:.1f} |")

    logs = {name: 1.0 for name in model.trackers}
    scalars = TrainScalars(tempfile.mkdtemp(), 1)
    scalars.on_train_begin()
    writer = scalars.writer

    def eager(step):
        with writer.as_default(step=step), tf.summary.record_if(True):
            for name, value in logs.items():
                tf.summary.scalar(f"batch_{name}", float(value))

    for name, write in (("eager ops", eager),
                        ("one traced function", lambda step: scalars._write("batch", logs,
                                                                             step))):
        write(0)
        start = time.process_time()
        for step in range(200):
            write(step)
        print(f"{len(logs)} scalars as {name}: "
              f"{(time.process_time() - start) / 200 * 1e3:.2f} ms of CPU per write")


if __name__ == "__main__":
    main()
