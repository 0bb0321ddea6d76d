"""What a training run leaves for TensorBoard: described image summaries and the HParams
record (callbacks.HParamsSummary) that puts runs side by side in its table."""

import math
import os

import pytest
import tensorflow as tf
from tensorboard.plugins.hparams import metadata as hparams_metadata
from tensorboard.plugins.hparams import plugin_data_pb2

from conftest import summary_events, summary_values, tiny_flags, train_ok

# Trains, exports or runs the commands end to end: left out of `pytest -m "not slow"`.
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    return train_ok(tmp_path_factory.mktemp("tensorboard") / "run", *tiny_flags(train_steps=2))


def values(directory):
    """Every summary value in the event files directly inside directory."""
    return summary_values(directory, recursive=False)


def test_every_image_summary_says_what_it_shows(workdir):
    descriptions = {}
    for value in values(os.path.join(workdir, "tb", "images")):
        if value.metadata.plugin_data.plugin_name == "images":
            descriptions[value.tag] = value.metadata.summary_description
    assert set(descriptions) == {"samples", "data_and_reconstructions", "kernels/bottom",
                                 "kernels/top_in_image_space", "parse/train_0",
                                 "kernels/bottom_normalised",
                                 "kernels/top_in_image_space_normalised",
                                 "parse/train_0_normalised"}
    assert all(len(text) > 40 for text in descriptions.values()), descriptions


def test_hyperparameters_and_final_metrics_are_in_the_hparams_plugin(workdir):
    tb = os.path.join(workdir, "tb")
    found = {v.tag: v for v in values(tb)}
    start = plugin_data_pb2.HParamsPluginData.FromString(found[
        hparams_metadata.SESSION_START_INFO_TAG].metadata.plugin_data.content)
    hparams = {k: v.WhichOneof("kind") and getattr(v, v.WhichOneof("kind"))
               for k, v in start.session_start_info.hparams.items()}
    assert hparams["K_1"] == 4 and hparams["K_2"] == 8 and hparams["topk"] == "4,8"
    assert hparams["channels"] == "8,8" and hparams["dataset"] == "parts"
    assert hparams["dense"] is False and hparams["descriptor"] is False
    assert hparams["L (langevin_steps)"] == 2 and hparams["sigma"] == pytest.approx(0.3)
    assert start.session_start_info.group_name == workdir
    experiment = plugin_data_pb2.HParamsPluginData.FromString(found[
        hparams_metadata.EXPERIMENT_TAG].metadata.plugin_data.content).experiment
    columns = {m.name.tag for m in experiment.metric_infos}
    assert {"final/psnr", "final/dead_channels_2"} <= columns
    # The metric columns are scalars of the same run directory, after training.
    for tag in columns:
        assert tag in found, tag
        assert math.isfinite(float(tf.make_ndarray(found[tag].tensor))), tag


def test_image_grids_and_figures_come_every_figures_every_epochs_and_at_the_end(
        tmp_path):
    # 2 steps per epoch, a checkpoint every epoch (3 kept), the prior's fit with the
    # image grids, figures and grammar scores every 4 epochs and at the last (6).
    workdir = train_ok(tmp_path / "run", *tiny_flags(train_steps=12, figures_every=4))
    steps = {}
    for event in summary_events(os.path.join(workdir, "tb", "images"), recursive=False):
        for value in event.summary.value:
            steps.setdefault(value.tag, set()).add(event.step)
    assert steps["samples"] == steps["data_and_reconstructions"] == {8, 12}
    assert steps["kernels/bottom"] == steps["parse/train_0"] == {8, 12}
    assert steps["grammar/validity_samples"] == {8, 12}
    # The checkpoint of epoch 5 holds the prior fitted at epoch 4: it is marked.
    checkpoints = os.path.join(workdir, "checkpoints")
    assert tf.train.latest_checkpoint(checkpoints).endswith("ckpt-12")
    assert sorted(name for name in os.listdir(checkpoints)
                  if name.endswith(".prior_stale")) == ["ckpt-10.prior_stale"]
