"""The two Langevin gradient paths (learning/gradient_path.py) against the matmul peak.

    python benchmarks/gradient_paths.py                  # paper point + K sweep
    python benchmarks/gradient_paths.py --fractions=0.0625 --repeats=10

For each K / size fraction (the same fraction in both sparse layers; 0.0625 is the
paper's K = 64 of 1,024 and 128 of 2,048) it times the paper-size train step (64x64,
batch 64, L = 30, celeba.flags' architecture) on the dense XLA path and through the
compiled sparse kernels, alternating the two, and a --peak_size float32 matmul after
every step, so all of them see the same load. It prints the best and median step, the
dense-equivalent FLOP/s (the dense FLOP count of benchmarks/train_step.py, whichever path
ran) as a fraction of the best matmul, and the kernels' speed-up over the dense step,
the figure behind `gradient_path.SPARSE_KERNELS_MAX_DENSITY`. With --torch (and
PyTorch installed) it also times a stock PyTorch version of the same dense step
(ConvTranspose2d, torch.topk, autograd Langevin) at the paper point, the speed reference,
in a fresh process right after the paper point's row. Last, the dense floor:
the FLOPs the dense path really executes at the paper point (`dense_floor`) over the same
window's peak, the step's time if every matmul ran at the peak and nothing else took time,
and the PyTorch reference over it, the most any dense formulation could be faster.
"""

import dataclasses
import math
import statistics
import subprocess
import sys
import time

from absl import app, flags

from train_step import forward_flops, matmul_timer, paper_config, step_setup

from sparse_gen_tf import Generator

flags.DEFINE_list("fractions", ["0.01", "0.015", "0.02", "0.04", "0.0625", "0.125", "0.25", "0.5"],
                  "K / (h*w*c) of both sparse layers.")
flags.DEFINE_boolean("torch", True, "Also time the PyTorch reference, if installed.")
flags.DEFINE_boolean("torch_probe", False, "Internal: time the PyTorch reference in this "
                     "(fresh) process, print its best seconds per step and exit.")
FLAGS = flags.FLAGS
# train_step's own flags (--repeats, --peak_size, --batch_sizes, --langevin_steps; the
# first entry of each list) apply here, with defaults for this comparison.
FLAGS.set_default("repeats", 5)
FLAGS.set_default("peak_size", 4096)


def with_fraction(config, fraction):
    """config with K_i = round(fraction * h*w*c) in every sparse layer (at least 1)."""
    topk = tuple(max(1, round(fraction * h * w * c)) for h, w, c in
                 config.feature_map_shapes())
    return dataclasses.replace(config, topk=topk)


# The paths timed: name -> AlternatingBackprop(sparse_kernels=...).
DENSE, KERNELS = "dense", "sparse kernels"
PATHS = {DENSE: False, KERNELS: True}


def executed_forward_flops(generator):
    """Multiply-adds x 2 that one example's forward pass of the dense Langevin path really
    does, read off the kernels the loop runs (`Generator.langevin_kernels`): the FC layer,
    each window of a windowed layer (its zero blocks are not multiplied), and h*w blocked
    rows of a matmul kernel otherwise. Backward to the input does as many again."""
    cfg = generator.config
    flops = 2 * cfg.latent_dim * cfg.top_size ** 2 * cfg.channels[0]
    for kernel, (h, w, _) in zip(generator.langevin_kernels(), cfg.feature_map_shapes()):
        if isinstance(kernel, tuple):
            flops += sum(2 * math.prod(b.matrix.shape) for row in kernel for b in row)
        else:
            flops += 2 * h * w * math.prod(kernel.shape)
    return flops


def dense_floor(config, batch_size, steps):
    """(FLOPs per train step that the dense path executes, the dense-equivalent count):
    L Langevin steps of forward + backward to z through the kernels they run, then the θ
    step's 3 forward-equivalents through the blocked kernels (train_step.forward_flops).
    Divided by the matmul peak, the first is the fastest the dense formulation could run
    if every matmul ran at the peak and nothing else took time."""
    generator = Generator(config)
    executed = (2 * steps * executed_forward_flops(generator) + 3 * forward_flops(config))
    return executed * batch_size, (2 * steps + 3) * forward_flops(config) * batch_size


def time_paths(config, batch_size, steps, repeats, matmul):
    """{path: (first call s, [step s])} and [matmul s], the paths interleaved."""
    runs, times, matmuls = {}, {}, []
    for path, sparse_kernels in PATHS.items():
        model, ids, images = step_setup(config, batch_size, steps, jit_compile=True,
                                        sparse_kernels=sparse_kernels)
        if model.uses_sparse_kernels != sparse_kernels:
            raise SystemExit(f"{path}: compile chose {model.gradient_path.reason}")
        start = time.perf_counter()
        model.train_on_batch(ids, images)
        runs[path] = (model, ids, images)
        times[path] = (time.perf_counter() - start, [])
    for _ in range(repeats):
        for path, (model, ids, images) in runs.items():
            start = time.perf_counter()
            model.train_on_batch(ids, images)
            times[path][1].append(time.perf_counter() - start)
            matmuls.append(matmul())
    return times, matmuls


def torch_step_time(config, batch_size, steps, repeats):
    """Best seconds per train step of a stock PyTorch ABP step of the same shape, or None
    without PyTorch: dense ConvTranspose2d layers, TopK by torch.topk on the flattened
    map, L autograd Langevin steps on z, then one Adam step on θ."""
    try:
        import torch
    except ImportError:
        return None
    torch.manual_seed(0)
    (h1, _, c1), (_, _, c2) = config.feature_map_shapes()
    k1, k2 = config.topk
    ks, ss = config.kernel_sizes, config.strides
    fc = torch.nn.Linear(config.latent_dim, h1 * h1 * c1)
    up1 = torch.nn.ConvTranspose2d(c1, c2, ks[0], ss[0], padding=(ks[0] - ss[0]) // 2)
    up2 = torch.nn.ConvTranspose2d(c2, 3, ks[1], ss[1], padding=(ks[1] - ss[1]) // 2)
    params = [*fc.parameters(), *up1.parameters(), *up2.parameters()]
    optimizer = torch.optim.Adam(params, 1e-3)

    def topk(x, k):
        flat = x.flatten(1)
        kept = torch.zeros_like(flat).scatter(1, flat.topk(k, dim=1).indices, 1.0)
        return torch.relu(x * kept.view_as(x))

    def g(z):
        fm = topk(fc(z).view(-1, c1, h1, h1), k1)
        return torch.tanh(up2(topk(up1(fm), k2)))

    size, sigma, delta = config.image_size, 0.3, 0.3
    images = torch.rand(batch_size, 3, size, size) * 2 - 1
    chains = torch.randn(batch_size, config.latent_dim)

    def step():
        z = chains.clone()
        for _ in range(steps):
            z.requires_grad_(True)
            log_p = (-((images - g(z)) ** 2).sum() / (2 * sigma ** 2)
                     - 0.5 * (z ** 2).sum())
            grad, = torch.autograd.grad(log_p, z)
            z = (z + 0.5 * delta ** 2 * grad + delta * torch.randn_like(z)).detach()
        chains.copy_(z)
        optimizer.zero_grad()
        loss = ((images - g(z)) ** 2).sum(dim=(1, 2, 3)).mean() / (2 * sigma ** 2)
        loss.backward()
        optimizer.step()

    step()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return min(times)


def torch_reference(batch, steps, repeats):
    """torch_step_time in a fresh process, so that TensorFlow's thread pools in this one
    do not compete with PyTorch's; None without PyTorch."""
    result = subprocess.run(
        [sys.executable, __file__, "--torch_probe", f"--batch_sizes={batch}",
         f"--langevin_steps={steps}", f"--repeats={repeats}"],
        capture_output=True, text=True, check=True)
    last = result.stdout.split()[-1]
    return None if last == "-" else float(last)


def main(argv):
    del argv
    batch, steps = int(FLAGS.batch_sizes[0]), int(FLAGS.langevin_steps[0])
    if FLAGS.torch_probe:
        reference = torch_step_time(paper_config(64), batch, steps, FLAGS.repeats)
        print("-" if reference is None else f"{reference:.4f}")
        return
    base = paper_config(64)
    matmul = matmul_timer(FLAGS.peak_size)
    print(f"\nbatch {batch}, L = {steps}, XLA; peak: {FLAGS.peak_size}² float32 matmul in "
          "the same window\n\n| K / size | K | path | first call s | step s (best) | "
          "step s (median) | dense-equivalent GFLOP/s | peak GFLOP/s | of peak | "
          "speed-up over dense |\n|---|---|---|---|---|---|---|---|---|---|")
    torch_line = floor_line = None
    for fraction in map(float, FLAGS.fractions):
        config = with_fraction(base, fraction)
        paper = config.topk == base.topk
        times, matmuls = time_paths(config, batch, steps, FLAGS.repeats, matmul)
        flops = (2 * steps + 3) * forward_flops(config) * batch
        peak = 2 * FLAGS.peak_size ** 3 / min(matmuls)
        best = {path: min(t) for path, (_, t) in times.items()}
        for path, (first, t) in times.items():
            speedup = f"{best[DENSE] / best[path]:.2f}x" if path != DENSE else ""
            print(f"| {fraction:.2%} | {','.join(map(str, config.topk))} | {path} | "
                  f"{first:.2f} | {best[path]:.4f} | {statistics.median(t):.4f} | "
                  f"{flops / best[path] / 1e9:.0f} | {peak / 1e9:.0f} | "
                  f"{flops / best[path] / peak:.0%} | {speedup} |", flush=True)
        if paper:
            executed, _ = dense_floor(config, batch, steps)
            floor = executed / peak
            floor_line = (f"\nDense floor at the paper point: the dense path executes "
                          f"{executed / 1e9:.1f} GFLOP per step ({flops / 1e9:.1f} "
                          f"dense-equivalent); at the {peak / 1e9:.0f} GFLOP/s peak that is "
                          f"{floor:.4f} s, the dense step {best[DENSE] / floor:.2f}x it")
        if paper and FLAGS.torch:
            # Right after the paper point, so that the load is as close as it gets.
            reference = torch_reference(batch, steps, max(2, FLAGS.repeats // 2))
            torch_line = torch_row(reference, best)
            if reference is not None:
                floor_line += (f"; PyTorch / floor = {reference / floor:.1f}x, the most any "
                               "dense formulation could reach against it")
    if torch_line:
        print(torch_line)
    if floor_line:
        print(floor_line)


def torch_row(reference, paper_best):
    if reference is None:
        return "\nPyTorch not installed: no reference column."
    return (f"\nPyTorch reference (paper point, fresh process, timed right after it): "
            f"{reference:.3f} s per step; "
            + ", ".join(f"{path} {reference / t:.1f}x" for path, t in paper_best.items())
            + " faster than it")


if __name__ == "__main__":
    app.run(main)
