"""The explain and evaluate commands, run for real on a tiny trained workdir."""

import json
import os
import shutil

import numpy as np
import pytest
import tensorflow as tf

from conftest import (FAST_INFERENCE_FLAGS as FAST_INFERENCE, last_line, run_command as run,
                      tensorboard_tags, tiny_flags, tiny_generator, train_ok)
from sparse_gen_tf import Generator
from sparse_gen_tf.data import pipeline
from sparse_gen_tf.explanation import parts_scores, visualize
from sparse_gen_tf.explanation.parse_graph import ParseGraph
from sparse_gen_tf.learning import inference
from sparse_gen_tf.training import run as run_lib

# Trains, exports or runs the commands end to end: left out of `pytest -m "not slow"`.
pytestmark = pytest.mark.slow


def png_shape(path):
    return tuple(tf.io.decode_png(tf.io.read_file(path)).shape)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    return train_ok(tmp_path_factory.mktemp("explain") / "run", *tiny_flags(train_steps=2))


def test_training_writes_kernel_and_parse_summaries_at_checkpoints(workdir):
    tags = tensorboard_tags(os.path.join(workdir, "tb", "images"))
    assert {"kernels/bottom", "kernels/top_in_image_space", "parse/train_0",
            "grammar/validity_samples", "grammar/clean_cells_reconstructions"} <= tags, tags


def test_explain_writes_figures_and_parse_graphs(workdir):
    result = run("-m", "sparse_gen_tf.commands.explain", f"--workdir={workdir}", "--num_samples=2",
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


DEAD = 5  # the bottom channel that test_evaluate kills


def kill_bottom_channel(workdir, channel):
    """Rewrites workdir's model with bottom (layer 2) channel `channel` dead: its bias at
    -1000 puts every unit of it below the K largest, and below ReLU's 0, in every parse.
    Saved as the next checkpoint, which the commands then open."""
    opened = run_lib.open_run(workdir, learner=True)
    bias = opened.learner.generator.deconvs[0].bias
    bias.assign(tf.tensor_scatter_nd_update(bias, [[channel]], [-1000.0]))
    checkpoint, _ = run_lib.checkpoint_for(opened.learner)
    tf.train.CheckpointManager(checkpoint, os.path.dirname(opened.checkpoint),
                               max_to_keep=None).save(checkpoint_number=opened.step + 1)


def test_evaluate_prints_the_table_and_writes_json(workdir, tmp_path):
    copy = str(tmp_path / "run")
    shutil.copytree(workdir, copy)
    kill_bottom_channel(copy, DEAD)
    result = run("-m", "sparse_gen_tf.commands.evaluate", f"--workdir={copy}", "--num_heldout=8",
                 "--num_fit=32", "--nobaseline", *FAST_INFERENCE)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "| Parse accuracy, held-out |" in result.stdout
    assert "| Dead channels, layer 2 |" in result.stdout
    with open(os.path.join(copy, "evaluation.json")) as f:
        scores = json.load(f)
    assert np.isfinite(scores["psnr_heldout"])
    # The control is the data itself: every quadrant a legal derivation.
    assert scores["validity_data"] == 1.0 and scores["clean_cells_data"] == 1.0
    assert "| Grammar validity, samples from the prior (legal quadrants) |" in result.stdout

    # The scores again, from the checkpoint evaluate opened.
    opened = run_lib.open_run(copy)
    generator, chains = opened.generator, opened.chains.numpy()
    truth = opened.data().ground_truth
    # Sparsity rows: over the parses of all training chains.
    used = [a.numpy() != 0 for a in generator.parse(chains)["activations"]]
    for i, mask in enumerate(used, 1):
        dead = np.flatnonzero(~mask.any(axis=(0, 1, 2)))
        assert scores[f"dead_channels_{i}"] == len(dead), i
        assert scores[f"nonzero_{i}"] == pytest.approx(mask.mean()), i
    assert DEAD in np.flatnonzero(~used[1].any(axis=(0, 1, 2)))
    assert scores["dead_channels_2"] >= 1
    # Kernels in use: bottom channels that survive in some parse of the 32 fit chains.
    in_use = used[1][:32].any(axis=(0, 1, 2))
    assert not in_use[DEAD] and scores["kernels_in_use"] == in_use.sum() <= 7
    # Dictionary recovery: each true part's best Pearson r with a bottom patch, averaged.
    patches, _ = parts_scores.bottom_patches(generator, chains[:32])
    parts = truth.parts.reshape(len(truth.parts), -1)
    r = np.corrcoef(parts, patches.reshape(len(patches), -1))[:len(parts), len(parts):]
    assert scores["dictionary_recovery"] == pytest.approx(r.max(1).mean(), abs=1e-6)
    # Parse accuracy: the held-out images inferred with the same settings and seed; each
    # cell's dominant bottom channel (largest s_j ||B_j||), mapped to the part it
    # dominates most often in the fit chains' cells, against the cell's true part.
    def dominant(z):
        energy = parts_scores.bottom_contributions(generator, z)
        return np.where(energy.max(-1) > 0, energy.argmax(-1), -1)

    fit, labels = dominant(chains[:32]), truth.part_labels[:32]
    votes = np.zeros((8, labels.max() + 1), int)
    for channel, part in zip(fit[fit >= 0], labels[fit >= 0]):
        votes[channel, part] += 1
    assert not votes[DEAD].any()
    channel_part = np.where(votes.any(1), votes.argmax(1), -1)
    images, heldout_truth = pipeline.heldout_images(opened.config, 8)
    settings = inference.InferenceSettings(**scores["inference"])
    z = inference.reconstruct(opened, pipeline.to_model_range(images),
                              settings=settings, seed=0).numpy()
    cells = dominant(z)
    predicted = np.where(cells >= 0, channel_part[cells], -1)
    assert scores["parse_accuracy"] == pytest.approx(
        np.mean(predicted == heldout_truth.part_labels))


@pytest.mark.parametrize("module", ["sparse_gen_tf.commands.explain",
                                    "sparse_gen_tf.commands.evaluate"])
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


def runs(flags):
    """The [start, end) of each run of True in a 1-D bool array."""
    edges = np.flatnonzero(np.diff(np.concatenate([[0], np.asarray(flags, np.int8), [0]])))
    return list(zip(edges[::2], edges[1::2]))


def figure_blocks(figure):
    """The AND panels of a parse_figure, read off its pixels: a list, one per layer block
    (top to bottom), of lists, one per grid row of panels, of the panels [rows, columns].

    The layout (visualize.parse_figure): blocks stacked, each a 12-row white title over
    its image and its grid of AND panels (PANEL grey background) with 4 white pixels
    between panels; 8 white rows after each block. So the rows holding PANEL pixels come
    in bands, one per grid row, 4 rows apart within a block and further apart (title,
    padding) between blocks; within a band, the columns holding PANEL pixels come in runs,
    one per panel.
    """
    grey = (figure == visualize.PANEL).all(-1)
    blocks = []
    for top, bottom in runs(grey.any(1)):
        if not blocks or top - blocks[-1][-1][0][0].stop > 4:
            blocks.append([])
        blocks[-1].append([np.s_[top:bottom, left:right]
                           for left, right in runs(grey[top:bottom].any(0))])
    return blocks


@pytest.mark.parametrize("max_or", [3, 1])
def test_parse_figure_has_one_block_per_layer_with_one_panel_per_and_cell(max_or):
    generator = Generator(tiny_generator())
    z = tf.random.stateless_normal([1, 4], [0, 9])
    parse = generator.parse(z)
    figure = visualize.parse_figure(generator, z[0].numpy(), max_or=max_or)
    capped = 0  # cells with more surviving units than the figure draws
    assert figure.dtype == np.uint8 and figure.shape[2] == 3
    assert all(np.count_nonzero(a) for a in parse["activations"])  # units to draw
    blocks = figure_blocks(figure)
    layers = list(range(generator.num_layers, 0, -1))  # bottom first
    assert len(blocks) == len(layers) == 2
    for block, layer in zip(blocks, layers):
        activation = parse["activations"][layer - 1].numpy()[0]
        h, w, _ = activation.shape  # one AND node per cell of the layer's feature map
        assert [len(row) for row in block] == [w] * h, (layer, block)
        # Above the panels, the block's title: white rows with the text "L{layer} K=...".
        title = figure[block[0][0][0].start - 12:block[0][0][0].start]
        assert (title == 255).mean() > 0.9 and (title < 128).any(), layer
        # Each panel draws up to max_or OR nodes, each with a bar under it: as many
        # bars as the cell has surviving units, at most max_or.
        for y, row in enumerate(block):
            for x, panel in enumerate(row):
                bars = (figure[panel] == visualize.BAR).all(-1)
                drawn = len(runs(bars[bars.any(1)][0])) if bars.any() else 0
                surviving = np.count_nonzero(activation[y, x])
                assert drawn == min(max_or, surviving), (layer, y, x)
                capped += surviving > max_or
    # The tiny parse has cells with 2 but none with 4 units, so max_or = 1 is the case
    # that shows the cap at work.
    assert capped > 0 or max_or == 3
