"""The explain and evaluate commands, run for real on a tiny trained workdir."""

import json
import os

import numpy as np
import pytest
import tensorflow as tf

from conftest import last_line, run_command as run
from sparse_gen_tf import Generator, GeneratorConfig
from sparse_gen_tf.explanation import visualize
from sparse_gen_tf.explanation.parse_graph import ParseGraph

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = ["--num_images=64", "--batch_size=32", "--langevin_steps=2", "--channels=8,8",
        "--topk=4,8", "--latent_dim=4", "--checkpoint_every=1", "--train_steps=2"]
FAST_INFERENCE = ["--inference_steps=3", "--restarts=2"]


def png_shape(path):
    return tuple(tf.io.decode_png(tf.io.read_file(path)).shape)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("explain") / "run")
    result = run(os.path.join(ROOT, "train.py"), f"--workdir={path}", *TINY)
    assert result.returncode == 0, result.stderr[-3000:]
    return path


def test_training_writes_kernel_and_parse_summaries_at_checkpoints(workdir):
    tags = set()
    images = os.path.join(workdir, "tb", "images")
    for name in os.listdir(images):
        for event in tf.compat.v1.train.summary_iterator(os.path.join(images, name)):
            tags.update(v.tag for v in event.summary.value)
    assert {"kernels/bottom", "kernels/top_in_image_space", "parse/train_0",
            "grammar/validity_samples", "grammar/clean_cells_reconstructions"} <= tags, tags


def test_explain_writes_figures_and_parse_graphs(workdir):
    result = run("-m", "sparse_gen_tf.explain", f"--workdir={workdir}", "--num_samples=2",
                 "--num_images=2", *FAST_INFERENCE)
    assert result.returncode == 0, result.stderr[-3000:]
    out = os.path.join(workdir, "explain")
    # 8 bottom kernels of 8x8 drawn at 4x in one row, 2-pixel gaps.
    assert png_shape(os.path.join(out, "kernels_bottom.png")) == (32, 8 * 34 - 2, 3)
    # 8 top units as 32x32 images drawn at 2x.
    assert png_shape(os.path.join(out, "kernels_top.png")) == (64, 8 * 66 - 2, 3)
    # Two pairs (held-out image, reconstruction) of 32x32 in one row, drawn at 3x.
    for name in ("reconstructions.png", "occlusion.png"):
        assert png_shape(os.path.join(out, name)) == (96, 3 * (4 * 33 - 1), 3)
    with open(os.path.join(out, "summary.json")) as f:
        summary = json.load(f)
    for record in summary["samples"] + summary["images"]:
        assert max(record["eq5_relative_error"]) < 1e-4
        assert png_shape(os.path.join(out, record["figure"]))[2] == 3
        with open(os.path.join(out, record["parse_graph"])) as f:
            graph = ParseGraph.from_json(f.read())
        assert [len(layer.and_nodes) for layer in graph.layers] == [4, 16]
        # Samples of the default (grammar) prior are parses with no z; images have one.
        assert len(graph.latent) == (0 if record in summary["samples"] else 4)
    assert summary["prior"] == "grammar" and len(summary["samples"]) == 2
    assert summary["inference"]["restarts"] == 2


def test_evaluate_prints_the_table_and_writes_json(workdir):
    result = run("-m", "sparse_gen_tf.evaluate", f"--workdir={workdir}", "--num_heldout=8",
                 "--num_fit=32", "--nobaseline", *FAST_INFERENCE)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "| Parse accuracy, held-out |" in result.stdout
    with open(os.path.join(workdir, "evaluation.json")) as f:
        scores = json.load(f)
    assert 0.0 <= scores["parse_accuracy"] <= 1.0
    assert -1.0 <= scores["dictionary_recovery"] <= 1.0
    assert scores["kernels_in_use"] <= 8 and np.isfinite(scores["psnr_heldout"])
    # The control is the data itself: every quadrant a legal derivation.
    assert scores["validity_data"] == 1.0 and scores["clean_cells_data"] == 1.0
    assert "| Grammar validity, samples from the prior (legal quadrants) |" in result.stdout


@pytest.mark.parametrize("module", ["sparse_gen_tf.explain", "sparse_gen_tf.evaluate"])
def test_missing_workdir_or_checkpoint_is_one_line(tmp_path, workdir, module):
    missing = run("-m", module, f"--workdir={tmp_path / 'nothing'}", timeout=120)
    assert missing.returncode != 0 and "Traceback" not in missing.stderr
    assert "no training run in" in last_line(missing.stderr)
    empty = tmp_path / "empty"
    empty.mkdir()
    with open(os.path.join(workdir, "config.json")) as f:
        (empty / "config.json").write_text(f.read())
    no_checkpoint = run("-m", module, f"--workdir={empty}", timeout=120)
    assert no_checkpoint.returncode != 0 and "Traceback" not in no_checkpoint.stderr
    assert "no checkpoint in" in last_line(no_checkpoint.stderr)


def test_parse_figure_has_one_block_per_layer_and_is_rgb():
    config = GeneratorConfig(image_size=32, latent_dim=4, channels=(8, 8), topk=(4, 8))
    generator = Generator(config)
    figure = visualize.parse_figure(generator, np.zeros(4, np.float32))
    assert figure.dtype == np.uint8 and figure.shape[2] == 3
    # Each layer block starts with a white title row; two layers, two titles.
    white_rows = np.flatnonzero((figure == 255).all(axis=(1, 2)))
    assert figure.shape[0] > 2 * 32 and len(white_rows) > 0
