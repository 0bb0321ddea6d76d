"""What the commands print: no TensorFlow start-up or INFO lines, a progress line that
does not wrap, a closing summary that says what was written and what to run next, a bad
flag in one line; and the served reconstruct refusing what it cannot answer."""

import os
import types

import pytest
import tensorflow as tf

from conftest import FAST_INFERENCE_FLAGS, run_command, run_train, tiny_flags

from sparse_gen_tf import console
from sparse_gen_tf.serving import signatures
from sparse_gen_tf.training.callbacks import Progress

# Lines TensorFlow prints unless --verbose: its C++ INFO lines ("I0000 00:00:17964...
# port.cc:153] oneDNN custom operations are on ..."), absl's notice about them, and the
# checkpoint saver's Python INFO line.
NOISE = ("I0000", "oneDNN", "absl::InitializeLog", "Sharding callback",
         "XLA service", "shuffle=True")


def assert_quiet(result):
    output = result.stdout + result.stderr
    for noise in NOISE:
        assert noise not in output, output[-3000:]


def progress_lines(text):
    return [line for line in text.splitlines() if line.startswith("epoch ")]


def test_filtered_stderr_drops_tensorflows_load_lines_and_keeps_the_rest(capfd):
    with console.filtered_stderr():
        os.write(2, b"WARNING: All log messages before absl::InitializeLog() is called are "
                    b"written to STDERR\n")
        os.write(2, b"I0000 00:00:1796473456.863719    5338 port.cc:153] oneDNN custom "
                 b"operations are on.\n")
        os.write(2, b"To enable the following instructions: AVX2 FMA, in other operations\n")
        os.write(2, b"E0000 00:00:1796473456.863719    5338 kernel.cc:1] a real error\n")
        os.write(2, b"a line of the program\n")
    err = capfd.readouterr().err
    assert err == ("E0000 00:00:1796473456.863719    5338 kernel.cc:1] a real error\n"
                   "a line of the program\n")


class _FakeModel:
    def __init__(self, step):
        self.optimizer = types.SimpleNamespace(iterations=tf.Variable(step, dtype=tf.int64))


def test_the_progress_line_fits_120_characters_with_every_metric_logged(capsys):
    progress = Progress()
    progress.set_model(_FakeModel(2_999_999))
    progress.set_params({"epochs": 1_500_000, "steps": 2})
    logs = {"loss": -123456789.123, "psnr": 11.68164, "z_norm": 1e30, "mse": 0.27,
            "log_likelihood": -4635.1, "log_prior": -0.35, "nonzero_1": 0.125,
            "nonzero_2": 0.0625, "dead_channels_1": 0.0, "dead_channels_2": 0.0}
    progress.on_epoch_begin(1_499_999)
    progress.on_train_batch_end(1, logs)
    progress.on_epoch_end(1_499_999, logs)
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 1 and len(lines[0]) < Progress.WIDTH, lines
    line = lines[0]
    assert line.startswith("epoch 1500000/1500000  step 2999999/3000000  loss -1.2346e+08")
    assert "psnr 11.682" in line and "z_norm 1e+30" in line and "s/step" in line
    assert "nonzero" not in line  # the other metrics go to TensorBoard only
    # What benchmarks/train_step.py --whole_run reads of it.
    assert Progress.parse(line + "\n") == (1_500_000, 1_500_000, 2_999_999)
    assert Progress.parse("I1205 trainer.py:72] Resumed from ckpt-4 (epoch 2)") is None


def test_the_served_image_check_refuses_another_size_or_range_in_one_message():
    check = tf.function(lambda images: signatures.checked_images(images, 8),
                        input_signature=[tf.TensorSpec(None, tf.float32)])
    good = tf.fill([2, 8, 8, 3], 0.5)
    assert check(good).shape == (2, 8, 8, 3)
    assert check(tf.zeros([0, 8, 8, 3])).shape == (0, 8, 8, 3)
    cases = [(tf.fill([1, 8, 8, 3], 255.0), r"values in \[0, 1\].*got values from\] \[255\]"),
             (tf.fill([1, 8, 8, 3], -0.5), r"values in \[0, 1\]"),
             (tf.fill([1, 8, 8, 3], float("nan")), r"values in \[0, 1\]"),
             (tf.zeros([1, 16, 16, 3]), r"got shape\] \[1 16 16 3\]"),
             (tf.zeros([8, 8, 3]), r"got shape\] \[8 8 3\]")]
    for images, detail in cases:
        with pytest.raises(tf.errors.InvalidArgumentError,
                           match=r"image must be float32 \[batch, 8, 8, 3\].*" + detail):
            check(images)


def test_a_bad_flag_is_one_line_on_stderr_before_any_dump_of_the_config(tmp_path):
    workdir = tmp_path / "run"
    result = run_train(f"--workdir={workdir}", "--topk=8", timeout=300)
    assert result.returncode != 0
    assert result.stderr.strip().splitlines() == [
        "train.py: error: topk has 1 entries but channels has 2: give one K per sparse "
        "feature map"], result.stderr[-3000:]
    assert result.stdout == "" and not workdir.exists()


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny run through train.py, as a user starts one."""
    workdir = str(tmp_path_factory.mktemp("console") / "run")
    result = run_train(f"--workdir={workdir}", *tiny_flags(train_steps=4))
    assert result.returncode == 0, result.stderr[-3000:]
    return types.SimpleNamespace(workdir=workdir, result=result)


@pytest.mark.slow
def test_train_prints_short_progress_lines_and_ends_with_what_it_wrote(trained):
    result, workdir = trained.result, trained.workdir
    assert_quiet(result)
    lines = progress_lines(result.stdout)
    assert [line.split("  ")[:2] for line in lines] == [["epoch 1/2", "step 2/4"],
                                                       ["epoch 2/2", "step 4/4"]], lines
    assert all(len(line) < Progress.WIDTH and " psnr " in line for line in lines)
    assert [Progress.parse(line) for line in lines] == [(1, 2, 2), (2, 2, 4)]
    summary = result.stdout[result.stdout.index(f"Trained {workdir}:"):]
    assert os.path.join(workdir, "checkpoints", "ckpt-4") in summary
    assert os.path.join(workdir, "tb") in summary
    for script in ("sparse-gen-explain", "sparse-gen-evaluate", "sparse-gen-export"):
        assert f"{script} --workdir={workdir}" in summary


@pytest.mark.slow
def test_every_metric_still_reaches_tensorboard(trained):
    from conftest import tensorboard_tags
    tags = tensorboard_tags(os.path.join(trained.workdir, "tb", "train"))
    for metric in ("loss", "psnr", "z_norm", "mse", "log_likelihood", "nonzero_1",
                   "dead_channels_2"):
        assert f"epoch_{metric}" in tags, tags


@pytest.mark.slow
def test_explain_evaluate_and_export_show_progress_and_say_what_they_wrote(trained,
                                                                          tmp_path):
    workdir = trained.workdir
    explained = run_command("-m", "sparse_gen_tf.commands.explain", f"--workdir={workdir}",
                            "--num_samples=1", "--num_images=2", *FAST_INFERENCE_FLAGS)
    assert explained.returncode == 0, explained.stderr[-3000:]
    assert_quiet(explained)
    assert "explain: inferring z of 2 images and parsing them" in explained.stderr
    assert explained.stdout.strip().startswith(
        f"Wrote the explanation to {os.path.join(workdir, 'explain')}")

    evaluated = run_command("-m", "sparse_gen_tf.commands.evaluate", f"--workdir={workdir}",
                            "--num_heldout=4", "--num_fit=8", "--nobaseline", "--noserved",
                            *FAST_INFERENCE_FLAGS)
    assert evaluated.returncode == 0, evaluated.stderr[-3000:]
    assert_quiet(evaluated)
    assert f"evaluate: {workdir}: inferring z of 4 held-out images" in evaluated.stderr
    assert evaluated.stdout.strip().splitlines()[-1] == (
        f"Wrote {os.path.join(workdir, 'evaluation.json')}")

    base = str(tmp_path / "exports")
    exported = run_command(os.path.join("export", "export_saved_model.py"),
                           f"--workdir={workdir}", f"--export_base={base}",
                           "--reconstruct_steps=2", "--reconstruct_restarts=1")
    assert exported.returncode == 0, exported.stderr[-3000:]
    assert_quiet(exported)
    assert exported.stdout.startswith(f"Exported {os.path.join(base, '1')} ")


def test_the_package_imports_without_tensorflow_and_console_loads_it_quietly():
    result = run_command("-c", "import sys, sparse_gen_tf; print('tensorflow' in sys.modules); "
                         "import sparse_gen_tf.console; print('tensorflow' in sys.modules, "
                         "sparse_gen_tf.TopK.__name__)")
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.split() == ["False", "True", "TopK"]
    assert_quiet(result)


def test_the_package_names_import_lazily():
    import sparse_gen_tf
    assert sparse_gen_tf.Generator.__module__ == "sparse_gen_tf.model.generator"
    assert "TopK" in dir(sparse_gen_tf)
    with pytest.raises(AttributeError):
        sparse_gen_tf.NoSuchName
