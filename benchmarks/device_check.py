"""Is this GPU ready? Times the train steps, checks them against the CPU, serves; one JSON.

    python benchmarks/device_check.py --output=device_check.json
    python benchmarks/device_check.py --allow_cpu --tiny --output=check.json  # the suite's

For a user with a GPU. It stops with one line unless TensorFlow sees a GPU (--allow_cpu
runs everything on the CPU instead, as the test suite does). On the device (the first
GPU) it:

  1. times the paper step, the model train.py builds for celeba.flags' architecture (FC
     2x2x256 -> 4x4x128 -> 64x64, K = 64, 128, d = 100; batch 64, L = 30 Langevin steps;
     Adam, Langevin noise) under XLA, in float32 and in each mixed precision, and the
     cooperative step (train.py's descriptor) in float32: the median of --repeats steps
     after the first (compiling) call and --warmup more;
  2. checks one train step of each against the same step on the CPU, from the same
     weights, chains and images. The CPU side runs in a child process that sees no GPU,
     so `AlternatingBackprop.compile` picks what a CPU user gets. The compared step has
     no Langevin noise (XLA and TensorFlow draw different noise from one seed) and uses
     SGD, so that the weights move by the gradient itself (Adam's first step is about
     sign(gradient) per weight). It reports, for the chains and each weight, the largest
     absolute difference, and the difference relative to the change the CPU's step made
     (largest difference / largest change, and root-mean-square ratio), against the
     precision's tolerances (step_comparison.py);
  3. exports the timed float32 generator with serving.export_generator (a short
     reconstruct), loads the SavedModel and calls every signature on the device at
     batch 3: each output has the shape signatures.json gives and is finite.

"float32" is IEEE float32: TensorFloat-32 matmuls, TensorFlow's default on Ampere and
later GPUs, are turned off, so that the float32 comparison is strict. The JSON
(--output) holds the device, the versions, the setup, every time, every difference and
each check's pass/fail; the exit code is non-zero if any check fails.
"""

import dataclasses
import json
import os
import statistics
import sys
import tempfile
import time
import traceback

import keras
import numpy as np
import tensorflow as tf
from absl import app, flags

from step_comparison import (KINDS, SETUPS, compare, cpu_reference, one_step, start_state,
                             step_path, with_precision)

from sparse_gen_tf import serving
from sparse_gen_tf.commands import cli
from sparse_gen_tf.errors import UserError
from sparse_gen_tf.learning.langevin import LangevinConfig
from sparse_gen_tf.training import distribute, run
from sparse_gen_tf.training.config import TrainConfig

MIXED = distribute.PRECISIONS[1:]
flags.DEFINE_string("output", "device_check.json", "Where to write the JSON report.")
flags.register_validator(
    "output", lambda path: os.path.isdir(os.path.dirname(os.path.abspath(path))),
    "--output must be a file in an existing directory")
flags.DEFINE_boolean("allow_cpu", False, "Run the checks on the CPU when TensorFlow sees "
                     "no GPU (the test suite does; the comparisons are then CPU against "
                     "CPU).")
flags.DEFINE_boolean("tiny", False, "The test suite's size: 16x16 images, 8 and 8 "
                     "channels, K = 8, 16, d = 4, batch 8, L = 3, a small descriptor.")
flags.DEFINE_integer("repeats", 5, "Timed steps per setting (the median is reported).",
                     lower_bound=1)
flags.DEFINE_integer("warmup", 2, "Untimed steps after the first (compiling) call.",
                     lower_bound=0)
flags.DEFINE_list("mixed_precisions", [], "Mixed precision policies to time and check "
                  f"({', '.join(MIXED)}); default: mixed_float16 on a GPU, and "
                  "mixed_bfloat16 too from compute capability 8.0 (Ampere) on; "
                  "mixed_bfloat16 on a CPU.")
flags.register_validator("mixed_precisions", lambda names: set(names) <= set(MIXED),
                         f"--mixed_precisions takes a comma list of {', '.join(MIXED)}")
FLAGS = flags.FLAGS


def find_device(allow_cpu):
    """{"name": "/GPU:0" or "/CPU:0", "type", "description", ...} of where checks run."""
    gpus = tf.config.list_physical_devices("GPU")
    if not gpus:
        if not allow_cpu:
            raise UserError("TensorFlow sees no GPU (tf.config.list_physical_devices('GPU') "
                            "is empty); install TensorFlow with its CUDA libraries (pip "
                            "install 'tensorflow[and-cuda]') and check nvidia-smi, or pass "
                            "--allow_cpu to run the checks on the CPU")
        return {"name": "/CPU:0", "type": "CPU", "description": "CPU", "count": 1}
    details = tf.config.experimental.get_device_details(gpus[0])
    capability = details.get("compute_capability")
    return {"name": "/GPU:0", "type": "GPU", "count": len(gpus),
            "description": details.get("device_name", gpus[0].name),
            "compute_capability": list(capability) if capability else None}


def mixed_precisions(device):
    """(the mixed policies to run on device, why those): --mixed_precisions, else
    mixed_float16 on a GPU (and mixed_bfloat16 where it has bfloat16 arithmetic), and
    mixed_bfloat16 on a CPU (mixed_float16 runs there too when asked for)."""
    if FLAGS.mixed_precisions:
        return list(FLAGS.mixed_precisions), "--mixed_precisions"
    if device["type"] == "CPU":
        return ["mixed_bfloat16"], "the default on a CPU"
    capability = tuple(device["compute_capability"] or (0,))
    if capability >= (8, 0):
        return ["mixed_float16", "mixed_bfloat16"], "the default from compute capability 8.0"
    return ["mixed_float16"], "the default below compute capability 8.0 (no bfloat16 units)"


def time_step(setup, data, precision, kind):
    """(the model train.py builds, its times): the first call, --warmup steps, --repeats
    timed steps, under XLA. data: {"ids", "images"}."""
    config = TrainConfig(generator=setup.generator, batch_size=setup.batch_size,
                         langevin=LangevinConfig(steps=setup.langevin_steps),
                         descriptor=setup.descriptor if kind == "cooperative" else None,
                         mixed_precision=precision, jit_compile=True)
    model = with_precision(precision, lambda: run.build_model(config, setup.batch_size))
    ids, images = data["ids"], data["images"]
    start = time.perf_counter()
    model.train_on_batch(ids, images)  # train_on_batch returns NumPy: the step has ended
    first = time.perf_counter() - start
    for _ in range(FLAGS.warmup):
        model.train_on_batch(ids, images)
    times = []
    for _ in range(FLAGS.repeats):
        start = time.perf_counter()
        logs = model.train_on_batch(ids, images, return_dict=True)
        times.append(time.perf_counter() - start)
    finite = all(np.isfinite(v) for v in logs.values())
    return model, {"precision": precision, "path": step_path(model), "first_call_s": first,
                   "median_s": statistics.median(times), "steps_s": times,
                   "loss": float(logs["loss"]), "passed": finite and min(times) > 0}


def check_export(model, workdir, batch=3):
    """Exports model's generator, calls every signature of the loaded SavedModel at batch
    `batch`: {signature: its output shapes, expected shapes, devices, finiteness}."""
    model.fit_prior()
    path = serving.export_generator(
        model.generator, os.path.join(workdir, "export"), step_size=model.langevin.step_size,
        sigma=model.langevin.sigma, chains=model.chains.numpy(), prior=model.prior,
        settings=serving.ReconstructSettings(steps=3, restarts=2, refine_steps=2))
    with open(os.path.join(path, serving.INFO_FILE)) as f:
        described = json.load(f)["signatures"]
    loaded = tf.saved_model.load(path)
    result = {"path_in_workdir": os.path.relpath(path, workdir), "batch": batch,
              "signatures": {}}
    for name in sorted(set(described) | set(loaded.signatures)):
        if name not in loaded.signatures or name not in described:
            result["signatures"][name] = {"passed": False, "error": "in only one of the "
                                          "SavedModel and signatures.json"}
            continue
        signature = loaded.signatures[name]
        inputs = {}
        for i, (key, spec) in enumerate(sorted(signature.structured_input_signature[1].items())):
            shape = [batch] + spec.shape.as_list()[1:]
            inputs[key] = (tf.range(batch, dtype=spec.dtype) if spec.dtype.is_integer else
                           tf.random.stateless_uniform(shape, [i, 1], dtype=spec.dtype))
        outputs = signature(**inputs)
        shapes = {k: list(v.shape) for k, v in outputs.items()}
        expected = {k: [batch if d == -1 else d for d in shape]
                    for k, shape in described[name]["outputs"].items()}
        finite = all(bool(np.isfinite(v.numpy()).all()) for v in outputs.values())
        result["signatures"][name] = {
            "shapes": shapes, "expected_shapes": expected, "finite": finite,
            "devices": sorted({v.device for v in outputs.values()}),
            "passed": shapes == expected and finite}
    result["passed"] = all(s["passed"] for s in result["signatures"].values())
    return result


def attempt(checks, name, fn):
    """fn()'s result dict, its verdict recorded in checks[name]; an exception is a failed
    check (recorded with its message), so one broken part does not hide the others."""
    began = time.perf_counter()
    try:
        result = fn()
    except Exception as e:  # anything a device can throw: report it and go on
        result = {"passed": False, "error": f"{type(e).__name__}: {e}"[:2000],
                  "traceback": traceback.format_exc()[-8000:]}
    result["check_s"] = time.perf_counter() - began
    checks[name] = bool(result["passed"])
    print(f"{'PASS' if checks[name] else 'FAIL'} {name} ({result['check_s']:.1f} s)" + (
        f": {result['error'].splitlines()[0]}" if "error" in result else ""), flush=True)
    return result


def check_device(device, setup_name, workdir):
    """Every check on device: the JSON report (a dict)."""
    setup = SETUPS[setup_name]
    mixed, why = mixed_precisions(device)
    build = tf.sysconfig.get_build_info()
    report = {"device": device, "tensorflow": tf.__version__, "keras": keras.__version__,
              "cuda": build.get("cuda_version"), "cudnn": build.get("cudnn_version"),
              "tensor_float_32": tf.config.experimental.tensor_float_32_execution_enabled(),
              "setup": {"name": setup_name, **dataclasses.asdict(setup),
                        "repeats": FLAGS.repeats, "warmup": FLAGS.warmup},
              "precisions": ["float32", *mixed], "mixed_precisions_chosen_by": why,
              "steps": {}, "comparisons": {}, "checks": {}}
    checks, start = report["checks"], start_state(setup)
    data = {"ids": start["ids"], "images": start["images"]}
    timed = {}
    # Every precision for the paper step, float32 for the cooperative one.
    runs = [(KINDS[0], p) for p in report["precisions"]] + [(KINDS[1], "float32")]
    with tf.device(device["name"]):
        for kind, precision in runs:
            def timing(kind=kind, precision=precision):
                timed[kind, precision], result = time_step(setup, data, precision, kind)
                return result
            report["steps"][f"{kind}_{precision}"] = attempt(
                checks, f"step {kind} {precision}", timing)
    def reference_steps():  # in a child process, after the timings: it cannot disturb them
        after, paths = cpu_reference(setup_name, start, workdir)
        return {"after": after, "paths": paths, "passed": True}
    reference = attempt(checks, "cpu reference", reference_steps)
    report["cpu_reference"] = {"paths": reference.get("paths"),
                               "error": reference.get("error")}
    with tf.device(device["name"]):
        for kind, precision in runs:
            def comparison(kind=kind, precision=precision):
                ours, path = one_step(setup, start, precision, kind)
                return {"path": path, **compare(ours, reference["after"][kind], start,
                                                precision)}
            if "after" in reference:
                report["comparisons"][f"{kind}_{precision}"] = attempt(
                    checks, f"compare {kind} {precision} with the CPU", comparison)
        def export():  # the timed float32 model, or if its timing failed a fresh one
            model = timed.get((KINDS[0], "float32"))
            if model is None:
                model, _ = time_step(setup, data, "float32", KINDS[0])
            return check_export(model, workdir)
        report["export"] = attempt(checks, "export and serve", export)
    report["passed"] = all(checks.values())
    return report


def summary(report, output):
    """The last line: which checks failed on which device, or that all passed."""
    checks, device = report["checks"], report["device"]
    where = f"{device['name']} ({device['description']})"
    failed = [name for name, passed in checks.items() if not passed]
    if failed:
        return (f"device_check.py: {len(failed)} of {len(checks)} checks failed on {where}: "
                f"{', '.join(failed)}; details in {output}")
    return f"device_check.py: all {len(checks)} checks passed on {where}; report in {output}"


def main(argv):
    cli.start("device_check.py", argv)
    try:
        # IEEE float32 everywhere, so that the float32 comparison with the CPU is strict.
        tf.config.experimental.enable_tensor_float_32_execution(False)
        device = find_device(FLAGS.allow_cpu)
    except UserError as e:
        sys.exit(f"device_check.py: error: {e}")
    with tempfile.TemporaryDirectory() as workdir:
        report = check_device(device, "tiny" if FLAGS.tiny else "paper", workdir)
    with open(FLAGS.output, "w") as f:
        json.dump(report, f, indent=2)
    if not report["passed"]:
        sys.exit(summary(report, FLAGS.output))
    print(summary(report, FLAGS.output))


if __name__ == "__main__":
    app.run(main)
