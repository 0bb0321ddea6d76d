"""Runs trained before the config was nested still open: explain, evaluate, export, resume.

tests/data/legacy_runs holds two tiny runs made by commit 5a21ac1 (flat config.json, its
flags.txt, checkpoint ckpt-4 after 4 steps): `abp` with
    --batch_size=16 --langevin_steps=2 --channels=8,8 --topk=4,8 --latent_dim=4
    --num_images=32 --train_steps=4
and `cooperative`, the same with --descriptor --descriptor_channels=8,8
--descriptor_kernel_sizes=5,3 --descriptor_strides=2,2. Their config.json names the
workdir they were trained in (/tmp/legacy/...); the --workdir given is the truth.
"""

import dataclasses
import json
import os
import shutil

import numpy as np
import pytest
import tensorflow as tf

from conftest import tiny_generator
from sparse_gen_tf.model.descriptor import DescriptorConfig

# Trains, exports or runs the commands end to end: left out of `pytest -m "not slow"`.
pytestmark = pytest.mark.slow

LEGACY = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", "legacy_runs")
GENERATOR = tiny_generator()
DESCRIPTORS = {"abp": None, "cooperative": DescriptorConfig(
    channels=(8, 8), kernel_sizes=(5, 3), strides=(2, 2))}


@pytest.fixture(params=sorted(DESCRIPTORS))
def legacy(request, tmp_path):
    """(name, a copy of the legacy run in a fresh directory)."""
    copy = tmp_path / request.param
    shutil.copytree(os.path.join(LEGACY, request.param), copy)
    return request.param, str(copy)


def checkpoint_step(workdir):
    path = tf.train.latest_checkpoint(os.path.join(workdir, "checkpoints"))
    return int(path.rsplit("-", 1)[1]) if path else None


def test_a_flat_config_json_opens_as_the_nested_config_at_its_checkpoint(legacy):
    from sparse_gen_tf.training import run
    name, workdir = legacy
    opened = run.open_run(workdir, learner=True)
    config = opened.config
    assert config.workdir == workdir  # not the /tmp/legacy/... it was trained in
    assert config.generator == GENERATOR and config.descriptor == DESCRIPTORS[name]
    assert (config.langevin.steps, config.batch_size, config.num_images) == (2, 16, 32)
    assert opened.step == 4 and opened.num_examples == 32
    assert hasattr(opened.learner, "descriptor") == (name == "cooperative")


def test_a_legacy_run_explains(legacy, commands):
    _, workdir = legacy
    result = commands.explain(f"--workdir={workdir}", "--num_samples=2", "--num_images=2",
                              *commands.fast_inference)
    assert result.returncode == 0, result.stderr[-3000:]
    with open(os.path.join(workdir, "explain", "summary.json")) as f:
        summary = json.load(f)
    assert len(summary["samples"]) == 2 and len(summary["images"]) == 2
    assert os.path.getsize(os.path.join(workdir, "explain", "index.html")) > 0


def test_a_legacy_run_evaluates(legacy, commands):
    _, workdir = legacy
    result = commands.evaluate(f"--workdir={workdir}", "--noserved", "--num_heldout=8",
                               *commands.fast_inference)
    assert result.returncode == 0, result.stderr[-3000:]
    with open(os.path.join(workdir, "evaluation.json")) as f:
        scores = json.load(f)
    assert scores["num_examples"] == 32 and scores["topk"] == [4, 8]
    assert np.isfinite(scores["psnr_heldout"])


def test_a_legacy_run_exports_with_fit_prior_and_not_without(legacy, commands, tmp_path):
    _, workdir = legacy
    base = tmp_path / "exports"
    # Its checkpoint holds no prior: export fits none unless asked to.
    refused = commands.export(f"--workdir={workdir}", f"--export_base={base}")
    assert refused.returncode != 0 and "Traceback" not in refused.stderr
    assert "holds no fitted prior" in commands.last_line(refused.stderr)
    assert "--fit_prior" in commands.last_line(refused.stderr)
    assert not base.exists()
    result = commands.export(f"--workdir={workdir}", f"--export_base={base}", "--fit_prior")
    assert result.returncode == 0, result.stderr[-3000:]
    assert (base / "1" / "saved_model.pb").is_file()
    signatures = tf.saved_model.load(str(base / "1")).signatures
    served = signatures["serving_default"](z=tf.zeros([1, 4]))
    assert served["image"].shape == (1, 32, 32, 3)


def test_a_legacy_run_resumes_from_its_flags_txt_and_then_writes_the_nested_config(
        legacy, commands):
    from sparse_gen_tf.training import run
    _, workdir = legacy
    before = run.read_config(workdir)
    result = commands.train(f"--flagfile={os.path.join(workdir, 'flags.txt')}",
                            f"--workdir={workdir}", "--train_steps=6")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Resumed from" in result.stderr
    assert checkpoint_step(workdir) == 6  # one more epoch of 2 steps after step 4
    with open(os.path.join(workdir, "config.json")) as f:
        saved = json.load(f)
    assert saved["format_version"] == run.FORMAT_VERSION and saved["num_examples"] == 32
    assert run.read_config(workdir) == dataclasses.replace(before, workdir=workdir,
                                                           train_steps=6)
