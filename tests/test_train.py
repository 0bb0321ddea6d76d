"""The real `python train.py` on tiny data: outputs, resume, divergence and flag errors."""

import json
import os

import pytest
import tensorflow as tf

from conftest import (assert_flag_error, last_line, run_train, summary_events, tensorboard_tags,
                      tiny_flags)

# Trains, exports or runs the commands end to end: left out of `pytest -m "not slow"`.
pytestmark = pytest.mark.slow

TINY = tiny_flags(log_every=1)


def checkpoint_step(workdir):
    path = tf.train.latest_checkpoint(os.path.join(workdir, "checkpoints"))
    return int(path.rsplit("-", 1)[1]) if path else None


def scalar_steps(workdir, tag):
    """The sorted steps at which tb/train holds the scalar `tag`, over all event files."""
    events = summary_events(os.path.join(workdir, "tb", "train"), recursive=False)
    return sorted(event.step for event in events
                  if any(v.tag == tag for v in event.summary.value))


def test_train_writes_checkpoints_events_and_flags_then_resumes(tmp_path):
    workdir = str(tmp_path / "run")
    first = run_train(f"--workdir={workdir}", "--train_steps=4", *TINY)
    assert first.returncode == 0, first.stderr[-3000:]
    assert checkpoint_step(workdir) == 4  # 2 steps per epoch, a checkpoint per epoch
    with open(os.path.join(workdir, "config.json")) as f:
        assert json.load(f)["generator"]["topk"] == [4, 8]
    with open(os.path.join(workdir, "flags.txt")) as f:
        assert "--topk=4,8\n" in f.read()
    tags = tensorboard_tags(os.path.join(workdir, "tb"))
    assert {"samples", "data_and_reconstructions", "epoch_psnr", "batch_mse",
            "epoch_dead_channels_2", "epoch_nonzero_1"} <= tags, tags

    reader = tf.train.load_checkpoint(os.path.join(workdir, "checkpoints"))
    chains_key = next(k for k in reader.get_variable_to_shape_map() if "chains" in k)
    chains_before = reader.get_tensor(chains_key)

    second = run_train(f"--workdir={workdir}", "--train_steps=8", *TINY)
    assert second.returncode == 0, second.stderr[-3000:]
    assert "Resumed from" in second.stderr
    assert checkpoint_step(workdir) == 8  # continued at step 4, not from 0
    # The curves continue too: each optimizer step's batch scalar once, the second run's
    # at steps 5-8 (not 1-4 again), and its epochs after the first run's.
    assert scalar_steps(workdir, "batch_loss") == list(range(1, 9))
    assert scalar_steps(workdir, "epoch_psnr") == list(range(4))
    reader = tf.train.load_checkpoint(os.path.join(workdir, "checkpoints"))
    assert reader.get_tensor(chains_key).shape == chains_before.shape
    assert (reader.get_tensor(chains_key) != chains_before).any()


def test_rerun_after_finishing_does_nothing(tmp_path):
    workdir = str(tmp_path / "run")
    assert run_train(f"--workdir={workdir}", "--train_steps=2", *TINY).returncode == 0
    again = run_train(f"--workdir={workdir}", "--train_steps=2", *TINY)
    assert again.returncode == 0 and "nothing to do" in again.stderr
    assert checkpoint_step(workdir) == 2


def test_divergence_stops_with_one_line_and_keeps_the_last_checkpoint(tmp_path):
    workdir = str(tmp_path / "run")
    assert run_train(f"--workdir={workdir}", "--train_steps=2", *TINY).returncode == 0
    index = os.path.join(workdir, "checkpoints", "checkpoint")
    with open(index) as f:
        good = f.read()
    bad = run_train(f"--workdir={workdir}", "--train_steps=6", *TINY,
                    "--langevin_step_size=1e30")
    assert bad.returncode != 0
    assert "diverged" in last_line(bad.stderr) and "Traceback" not in bad.stderr
    with open(index) as f:
        assert f.read() == good
    assert checkpoint_step(workdir) == 2


def test_resume_with_another_architecture_is_refused(tmp_path):
    workdir = str(tmp_path / "run")
    assert run_train(f"--workdir={workdir}", "--train_steps=2", *TINY).returncode == 0
    other = run_train(f"--workdir={workdir}", "--train_steps=2", *TINY, "--channels=8,16")
    assert other.returncode != 0
    assert "--channels" in last_line(other.stderr) and "new --workdir" in last_line(other.stderr)


@pytest.mark.parametrize("flags,message", [
    (["--topk=0,8"], "positive integers"),
    (["--topk=4,1000"], "larger than its feature map"),
    (["--topk=4"], "one K per sparse feature map"),
    (["--strides=3,8"], "does not divide image_size"),
    (["--dataset=imagenet"], "dataset"),
    (["--dataset=folder"], "needs --data_dir"),
    (["--sigma=0"], "--sigma must be > 0"),
    (["--langevin_step_size=-1"], "langevin_step_size"),
    (["--batch_size=128"], "exceeds --num_images"),
    (["--heldout=3"], "--heldout is for image datasets"),
    (["--flip"], "--flip is for image datasets"),
    (["--crop=0.6"], "--crop is for image datasets"),
])
def test_bad_flags_fail_with_one_clear_line_and_write_nothing(tmp_path, flags, message):
    workdir = tmp_path / "run"
    result = run_train(f"--workdir={workdir}", *TINY, *flags, timeout=120)
    assert_flag_error(result, message, workdir)


@pytest.mark.parametrize("make,message", [
    (lambda d: None, "does not exist"),
    (lambda d: d.mkdir(), "is empty"),
    (lambda d: (d.mkdir(), (d / "a.png").write_text("not an image")), "corrupt image file"),
])
def test_bad_data_fails_with_one_line_and_writes_nothing(tmp_path, make, message):
    data_dir = tmp_path / "images"
    make(data_dir)
    workdir = tmp_path / "run"
    result = run_train(f"--workdir={workdir}", "--dataset=folder", f"--data_dir={data_dir}",
                       *TINY, timeout=120)
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    assert message in last_line(result.stderr), result.stderr[-2000:]
    assert not workdir.exists()


def test_train_on_a_folder_of_images(tmp_path):
    data_dir = tmp_path / "images"
    data_dir.mkdir()
    for i in range(40):
        image = tf.cast(tf.random.stateless_uniform([48, 40, 3], [i, 0], 0, 255), tf.uint8)
        tf.io.write_file(str(data_dir / f"{i:03d}.jpg"), tf.io.encode_jpeg(image))
    workdir = str(tmp_path / "run")
    result = run_train(f"--workdir={workdir}", "--dataset=folder", f"--data_dir={data_dir}",
                       "--train_steps=2", *TINY)
    assert result.returncode == 0, result.stderr[-3000:]
    assert checkpoint_step(workdir) == 2  # 40 images, batch 32: one step per epoch
