"""Train-step speed against the machine's own matmul peak, with and without XLA.

    python benchmarks/train_step.py                       # paper-size 64x64, batch 64, L=30
    python benchmarks/train_step.py --batch_sizes=16,64,256 --langevin_steps=10,30,60
    python benchmarks/train_step.py --sweep=all --memory  # scaling tables + memory vs L

For each configuration it reports the seconds per train step (best and median of
--repeats), the analytic FLOPs per step, (2L + 3) x forward FLOPs x batch (L Langevin steps
of forward + backward, then one forward + backward for the weights: 2L + 3
forward-equivalents, counting a backward as two), the peak float32 matmul FLOP/s, and the
achieved fraction of that peak. The peak is measured in the same window as the steps (one
--peak_size matmul after every step), so that both see the same load from other
processes, and the fraction compares the best step with the best matmul, the two least
disturbed. The first call (trace + compile) is timed separately.

--profile traces 3 steps of the paper-size XLA step with the TensorFlow profiler and prints
the XLA operations that take the most time (ms per train step, summed over threads): the
six matmuls of each Langevin step, the two TopK custom calls, the fusions around them.

--whole_run=parts.flags times `python train.py --flagfile=parts.flags` itself against its
own train step alone, alternating the two in one window (--rounds of each): train.py runs in
a fresh process, and the seconds from the end of epoch 1 to the end of epoch
1 + --whole_run_epochs, read from train.py's own progress lines (`callbacks.Progress`),
are divided by their steps (so the first epoch, with its tracing and compiling, is left
out, and the checkpoints, TensorBoard summaries and prior fits of those epochs are in);
--whole_run_flags adds flags after the flagfile (a folder of faces for celeba.flags). The
step alone is the same model (`run.build_model` of the run's config.json) on the run's
batches through `train_on_batch`, mean seconds per step over --repeats steps after two
warm-up steps. Prints both and their ratio.

--sweep varies one of batch, L and image size around the paper's point (batch 64, L = 30,
64x64), XLA only. --memory runs a few steps at L = 10 and L = 60, each in a fresh
process, and reports the peak resident memory (and the GPU's peak allocation when there
is a GPU): the Langevin loop is a tf.while_loop, so it should not grow with L. Prints
markdown tables.
"""

import collections
import glob
import os
import resource
import statistics
import tempfile
import subprocess
import sys
import time

import keras
import numpy as np
import tensorflow as tf
from absl import app, flags

from sparse_gen_tf import AlternatingBackprop, Generator, GeneratorConfig, LangevinConfig
from sparse_gen_tf.data import pipeline
from sparse_gen_tf.training import run as run_lib
from sparse_gen_tf.training.callbacks import Progress

flags.DEFINE_list("batch_sizes", ["64"], "Batch sizes to time.")
flags.DEFINE_list("langevin_steps", ["30"], "Langevin step counts L to time.")
flags.DEFINE_list("image_sizes", ["64"], "32, 64 or 128 (strides scale the bottom conv).")
flags.DEFINE_list("jit_compile", ["true", "false"], "XLA settings to time.")
flags.DEFINE_integer("repeats", 10, "Timed train steps per configuration.")
flags.DEFINE_integer("peak_size", 2048, "Side of the square matmul that measures the peak.")
flags.DEFINE_enum("sweep", "none", ["none", "batch", "langevin_steps", "image_size", "all"],
                  "Vary one setting around the paper's point instead of the lists above.")
flags.DEFINE_boolean("memory", False, "Also measure peak memory at L = 10 and L = 60.")
flags.DEFINE_boolean("profile", False, "Print where the XLA step spends its time and exit.")
flags.DEFINE_string("whole_run", None, "A flagfile: time python train.py with it against "
                    "its train step alone (module doc).")
flags.DEFINE_list("whole_run_flags", [], "--whole_run: more train.py flags, after the "
                  "flagfile, e.g. --dataset=folder,--data_dir=DIR,--crop=1.")
flags.DEFINE_integer("whole_run_epochs", 10, "Epochs of train.py timed after the first "
                     "(a multiple of the flagfile's --checkpoint_every counts its "
                     "checkpoints in proportion).")
flags.DEFINE_integer("rounds", 2, "--whole_run: train.py runs, each followed by --repeats "
                     "steps alone.")
flags.DEFINE_integer("memory_probe", None, "Internal: run a few steps at this L, print "
                     "the peak memory and exit (a fresh process per L).")
FLAGS = flags.FLAGS

SWEEPS = {  # (batch sizes, Langevin steps, image sizes), XLA only
    "batch": ([16, 32, 64, 128, 256], [30], [64]),
    "langevin_steps": ([64], [10, 20, 30, 60], [64]),
    "image_size": ([64], [30], [32, 64, 128]),
}


def paper_config(image_size):
    """The paper's shape: FC 2x2x256 -> 4x4x128 -> image, bottom kernel = stride = cell."""
    cell = image_size // 4
    return GeneratorConfig(image_size=image_size, latent_dim=100, channels=(256, 128),
                           topk=(64, 128), kernel_sizes=(4, cell), strides=(2, cell))


def forward_flops(config):
    """Multiply-adds x 2 of one example's forward pass: the FC layer and each transposed
    conv counted densely (every input unit paints its k x k x c_out patch)."""
    shapes = config.feature_map_shapes()
    s, c1 = config.top_size, config.channels[0]
    flops = 2 * config.latent_dim * s * s * c1
    out_channels = config.channels[1:] + (3,)
    for (h, w, c), k, c_out in zip(shapes, config.kernel_sizes, out_channels):
        flops += 2 * h * w * c * k * k * c_out
    return flops


def matmul_timer(n):
    """A function timing one n x n float32 matmul (seconds), the kernel class the model uses."""
    a = tf.random.normal([n, n])
    b = tf.random.normal([n, n])
    matmul = tf.function(lambda a, b: tf.matmul(a, b))
    matmul(a, b).numpy()

    def run():
        start = time.perf_counter()
        matmul(a, b).numpy()
        return time.perf_counter() - start
    return run


def step_setup(config, batch_size, langevin_steps, jit_compile, sparse_kernels=None):
    """(compiled model, ids, random images) for timing the train step of config;
    sparse_kernels as in AlternatingBackprop (None: compile's own choice)."""
    model = AlternatingBackprop(Generator(config), batch_size,
                                langevin=LangevinConfig(steps=langevin_steps),
                                sparse_kernels=sparse_kernels)
    model.compile(optimizer=keras.optimizers.Adam(1e-3), jit_compile=jit_compile)
    ids = np.arange(batch_size, dtype=np.int32)
    images = np.random.default_rng(0).uniform(
        -1, 1, (batch_size, config.image_size, config.image_size, 3)).astype(np.float32)
    return model, ids, images


def time_train_step(config, batch_size, langevin_steps, jit_compile, repeats,
                    between=None):
    """Returns (first-call seconds, [seconds per step], [between() after each step])."""
    model, ids, images = step_setup(config, batch_size, langevin_steps, jit_compile)
    start = time.perf_counter()
    model.train_on_batch(ids, images)
    first = time.perf_counter() - start
    times, between_results = [], []
    for _ in range(repeats):
        start = time.perf_counter()
        model.train_on_batch(ids, images)
        times.append(time.perf_counter() - start)
        if between is not None:
            between_results.append(between())
    return first, times, between_results


def table(title, settings):
    """Times each (image size, batch, L, XLA) of settings; prints a markdown table."""
    matmul = matmul_timer(FLAGS.peak_size)
    print(f"\n{title}\n\n| image | batch | L | XLA | first call s | step s (best) | "
          "step s (median) | GFLOP/step | GFLOP/s | peak GFLOP/s | of peak |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for image_size, batch_size, steps, jit in settings:
        config = paper_config(image_size)
        first, times, matmuls = time_train_step(config, batch_size, steps, jit,
                                                FLAGS.repeats, between=matmul)
        best = min(times)
        flops = (2 * steps + 3) * forward_flops(config) * batch_size
        peak = 2 * FLAGS.peak_size ** 3 / min(matmuls)
        print(f"| {image_size} | {batch_size} | {steps} | {jit} | {first:.2f} | {best:.4f} | "
              f"{statistics.median(times):.4f} | {flops / 1e9:.1f} | "
              f"{flops / best / 1e9:.0f} | {peak / 1e9:.0f} | {flops / best / peak:.0%} |",
              flush=True)


def peak_memory(langevin_steps):
    """(peak RSS MiB, peak GPU allocation MiB or None) of a fresh process training a few
    steps of the first --image_sizes / --batch_sizes at langevin_steps."""
    result = subprocess.run(
        [sys.executable, __file__, f"--memory_probe={langevin_steps}",
         f"--image_sizes={FLAGS.image_sizes[0]}", f"--batch_sizes={FLAGS.batch_sizes[0]}"],
        capture_output=True, text=True, check=True)
    rss, gpu = result.stdout.split()[-2:]
    return float(rss), None if gpu == "-" else float(gpu)


def memory_probe(langevin_steps):
    config = paper_config(int(FLAGS.image_sizes[0]))
    time_train_step(config, int(FLAGS.batch_sizes[0]), langevin_steps, True, repeats=2)
    # ru_maxrss is in KiB on Linux.
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    gpu = "-"
    if tf.config.list_logical_devices("GPU"):
        gpu = f"{tf.config.experimental.get_memory_info('GPU:0')['peak'] / 2 ** 20:.0f}"
    print(f"{rss:.0f} {gpu}")


def profile(config, batch_size, langevin_steps, steps=3, top=16):
    """Prints the XLA operations of the train step that take the most time, from a
    TensorFlow profiler trace of `steps` steps (ms per step, summed over threads)."""
    # The trace is an XSpace protobuf; TensorFlow ships its definition.
    from tensorflow.tsl.profiler.protobuf import xplane_pb2

    # The XLA step: its operations are what the trace lists.
    model, ids, images = step_setup(config, batch_size, langevin_steps, jit_compile=True,
                                    sparse_kernels=False)
    for _ in range(2):
        model.train_on_batch(ids, images)
    logdir = tempfile.mkdtemp()
    tf.profiler.experimental.start(logdir)
    for _ in range(steps):
        model.train_on_batch(ids, images)
    tf.profiler.experimental.stop()
    space = xplane_pb2.XSpace()
    with open(glob.glob(f"{logdir}/**/*.xplane.pb", recursive=True)[0], "rb") as f:
        space.ParseFromString(f.read())
    totals, counts = collections.Counter(), collections.Counter()
    for plane in space.planes:
        for line in plane.lines:
            if not line.name.startswith("tf_numa"):  # XLA's worker threads only
                continue
            for event in line.events:
                name = plane.event_metadata[event.metadata_id].name
                if name.startswith(("ThunkExecutor", "SlinkyThreadPool")):
                    continue  # the executor's own spans and waits, not operations
                totals[name] += event.duration_ps / 1e9 / steps
                counts[name] += 1
    print("\n| XLA operation | ms per train step | calls per step |\n|---|---|---|")
    for name, ms in totals.most_common(top):
        print(f"| {name} | {ms:.1f} | {counts[name] // steps} |")


ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def cpu_seconds(pid):
    """The CPU time (user + system, all threads) process pid has used so far, from
    /proc; None where there is no /proc."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    # Fields 14 and 15 of stat(5), counted after the ")" closing the command's name.
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def time_whole_run(flagfile, workdir, epochs):
    """Seconds per train step of `python train.py --flagfile=flagfile` over epochs 2 to
    1 + epochs, from the progress line that ends epoch 1 (`callbacks.Progress`, one line
    per epoch when not on a terminal) to the one that ends epoch 1 + epochs; the process
    is ended then. Returns (seconds per step, CPU seconds per step or None, steps per
    epoch): the CPU seconds are the process's own, which other jobs on a shared machine
    disturb less than the elapsed time."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "TF_CPP_MIN_LOG_LEVEL": "2",
           "PYTHONPATH": os.pathsep.join(filter(None, [ROOT, os.environ.get("PYTHONPATH")]))}
    # Far more steps than timed, so that no epoch of the window is the run's last.
    process = subprocess.Popen(
        [sys.executable, os.path.join(ROOT, "train.py"), f"--flagfile={flagfile}",
         *FLAGS.whole_run_flags, f"--workdir={workdir}", "--train_steps=1000000"],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    ends, cpu, steps, tail = {}, {}, {}, collections.deque(maxlen=20)
    try:
        for line in process.stdout:
            tail.append(line)
            progress = Progress.parse(line)
            if progress:
                epoch, _, steps[epoch] = progress
                ends[epoch], cpu[epoch] = time.perf_counter(), cpu_seconds(process.pid)
                if epoch == 1 + epochs:
                    break
    finally:
        process.kill()
        process.wait()
    if 1 + epochs not in ends:
        sys.exit("train.py ended before the timed epochs:\n" + "".join(tail))
    timed = steps[1 + epochs] - steps[1]
    used = None if cpu[1] is None else (cpu[1 + epochs] - cpu[1]) / timed
    return (ends[1 + epochs] - ends[1]) / timed, used, steps[1 + epochs] - steps[epochs]


def whole_run_table(flagfile):
    """Alternates --rounds runs of train.py with --repeats steps of its step alone."""
    tmp = tempfile.mkdtemp()
    whole, alone, model, batches = [], [], None, None
    whole_cpu, alone_cpu = [], []
    for round_ in range(FLAGS.rounds):
        workdir = os.path.join(tmp, f"run_{round_}")
        per_step, cpu_per_step, steps_per_epoch = time_whole_run(
            flagfile, workdir, FLAGS.whole_run_epochs)
        whole.append(per_step)
        whole_cpu.append(cpu_per_step)
        if model is None:  # the run's own model and batches, built once
            config, num_examples = run_lib.read_saved(workdir)
            model = run_lib.build_model(config, num_examples)
            data = pipeline.load_for(config)
            batches = iter(pipeline.train_dataset(data, config.batch_size,
                                                  seed=config.seed, repeat=True))
            for _ in range(2):
                model.train_on_batch(*next(batches))
        times, cpu = [], []
        for _ in range(FLAGS.repeats):
            ids, images = next(batches)
            start, start_cpu = time.perf_counter(), time.process_time()
            model.train_on_batch(ids, images)
            times.append(time.perf_counter() - start)
            cpu.append(time.process_time() - start_cpu)
        alone.append(statistics.mean(times))
        alone_cpu.append(statistics.mean(cpu))
        print(f"round {round_ + 1}: train.py {per_step:.4f} s/step "
              f"({cpu_per_step or float('nan'):.4f} CPU), the step alone {alone[-1]:.4f} "
              f"s/step ({alone_cpu[-1]:.4f} CPU)", flush=True)
    ratio = statistics.median(w / a for w, a in zip(whole, alone))
    cpu_rows = ""
    if None not in whole_cpu:
        cpu_rows = (f"| train.py, CPU s per step | {statistics.median(whole_cpu):.4f} |\n"
                    f"| the step alone, CPU s per step | {statistics.median(alone_cpu):.4f} |\n"
                    "| train.py / step alone in CPU time (median of rounds) | "
                    f"{statistics.median(w / a for w, a in zip(whole_cpu, alone_cpu)):.3f} |\n")
    extra = "".join(f" {flag}" for flag in FLAGS.whole_run_flags)
    print(f"\npython train.py --flagfile={flagfile}{extra}: epochs "
          f"2-{1 + FLAGS.whole_run_epochs} ({steps_per_epoch} steps each), {FLAGS.rounds} "
          "rounds alternated with "
          f"{FLAGS.repeats} steps alone\n\n| | s per step (median of rounds) |\n|---|---|\n"
          f"| train.py, whole epochs | {statistics.median(whole):.4f} |\n"
          f"| the step alone | {statistics.median(alone):.4f} |\n"
          f"| train.py / step alone (median of rounds) | {ratio:.3f} |\n" + cpu_rows)


def main(argv):
    del argv
    if FLAGS.whole_run:
        whole_run_table(FLAGS.whole_run)
        return
    if FLAGS.profile:
        profile(paper_config(int(FLAGS.image_sizes[0])), int(FLAGS.batch_sizes[0]),
                int(FLAGS.langevin_steps[0]))
        return
    if FLAGS.memory_probe is not None:
        memory_probe(FLAGS.memory_probe)
        return
    if FLAGS.sweep == "none":
        table("train step:", [(int(i), int(b), int(s), j.lower() == "true")
                              for i in FLAGS.image_sizes for b in FLAGS.batch_sizes
                              for s in FLAGS.langevin_steps for j in FLAGS.jit_compile])
    for name, (batches, steps, sizes) in SWEEPS.items():
        if FLAGS.sweep in (name, "all"):
            table(f"step time against {name} (XLA):",
                  [(i, b, s, True) for i in sizes for b in batches for s in steps])
    if FLAGS.memory:
        print("\n| L | peak RSS MiB | peak GPU MiB |\n|---|---|---|")
        for steps in (10, 60):
            rss, gpu = peak_memory(steps)
            print(f"| {steps} | {rss:.0f} | {'-' if gpu is None else f'{gpu:.0f}'} |",
                  flush=True)


if __name__ == "__main__":
    app.run(main)
