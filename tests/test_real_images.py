"""The real-image experiments' pieces: location specificity and sharpness (unit_scores),
normalised kernel figures, and benchmarks/paper_experiments.py run for real on a tiny
generated folder (no data from outside the repository, no scikit-image)."""

import json
import os

import numpy as np
import pytest

from conftest import tiny_generator
from sparse_gen_tf import Generator
from sparse_gen_tf.explanation import basis, unit_scores, visualize
from sparse_gen_tf.explanation.figures import write_png

SCRIPT = os.path.join("benchmarks", "paper_experiments.py")
TINY_FLAGFILE = ("--image_size=32\n--num_images=64\n--batch_size=8\n--latent_dim=4\n"
                 "--channels=8,8\n--kernel_sizes=4,8\n--strides=2,8\n--topk=4,8\n"
                 "--langevin_steps=2\n--checkpoint_every=1\n--num_summary_images=2\n")
FAST = ("--inference_steps=2", "--restarts=2", "--refine_steps=2", "--num_heldout=4",
        "--heldout=4", "--face_steps=2")


def test_a_channel_at_one_cell_scores_one_and_an_even_channel_one_over_cells():
    activations = np.zeros([5, 4, 4, 3], np.float32)
    activations[:, 1, 2, 0] = 2.0            # channel 0: always the same cell
    activations[:, :, :, 1] = 0.5            # channel 1: every cell alike
    # channel 2 never fires: not in use, so it does not pull the mean down.
    score, in_use = unit_scores.location_specificity(unit_scores.cell_energies(activations))
    assert in_use == 2
    assert score == pytest.approx((1.0 + 1.0 / 16) / 2)


def test_specificity_weights_cells_by_energy():
    activations = np.zeros([2, 2, 2, 1], np.float32)
    activations[0, 0, 0, 0] = 3.0            # energy 9 at one cell
    activations[1, 1, 1, 0] = 1.0            # energy 1 at another
    score, _ = unit_scores.location_specificity(unit_scores.cell_energies(activations))
    assert score == pytest.approx(0.9)


def test_specificity_of_a_silent_layer_is_nan():
    score, in_use = unit_scores.location_specificity(np.zeros([2, 2, 3]))
    assert in_use == 0 and np.isnan(score)


def test_sharpness_is_one_for_the_data_and_below_one_when_blurred():
    rng = np.random.default_rng(0)
    images = rng.uniform(-1, 1, [4, 16, 16, 3])
    blurred = (images + np.roll(images, 1, 1) + np.roll(images, 1, 2)
               + np.roll(images, (1, 1), (1, 2))) / 4
    assert unit_scores.sharpness(images, images) == pytest.approx(1.0)
    assert unit_scores.sharpness(blurred, images) < 0.5
    assert unit_scores.sharpness(np.zeros_like(images), images) == 0.0


def test_layer_specificities_lie_between_uniform_and_one():
    generator = Generator(tiny_generator())
    z = visualize.sample_latents(generator, 16)
    scores = unit_scores.layer_specificities(generator, z, batch=5)
    assert scores["specificity_uniform_1"] == 0.25 and scores["specificity_uniform_2"] == 1 / 16
    for i in (1, 2):
        assert scores[f"specificity_uniform_{i}"] <= scores[f"specificity_{i}"] <= 1.0


def test_normalised_kernels_span_the_full_range_whatever_their_scale():
    generator = Generator(tiny_generator())
    z = visualize.sample_latents(generator, 16)
    deconv = generator.deconvs[-1]
    deconv.kernel.assign(deconv.kernel * 1e-3)  # faint beside the bias, as on faces
    raw = visualize.bottom_kernels(generator, z)
    normalised = visualize.normalise_each(deconv.kernel.numpy())
    assert np.ptp(raw, axis=(1, 2, 3)).max() < 0.05
    np.testing.assert_allclose(normalised.min(axis=(1, 2, 3)), -1.0, atol=1e-6)
    np.testing.assert_allclose(normalised.max(axis=(1, 2, 3)), 1.0, atol=1e-6)
    figures = visualize.kernel_figures(generator, z)
    assert {"bottom", "top", "bottom_normalised", "top_normalised"} <= set(figures)
    assert figures["bottom_normalised"].shape == figures["bottom"].shape
    drawn = visualize.bottom_kernels(generator, z, normalised=True)
    used = basis.mean_coefficients(generator, z, 2)[0] > 0  # unused ones are dimmed
    assert used.any() and (np.ptp(drawn[used], axis=(1, 2, 3)) > 1.9).all()


def test_a_top_unit_alone_is_rendered_by_the_real_network_below_it():
    generator = Generator(tiny_generator())
    z = visualize.sample_latents(generator, 32)
    channels, cells, coefficients, images = visualize.top_units_alone(generator, z, num=5)
    assert 0 < len(channels) <= 5 and images.shape[1:] == (32, 32, 3)
    assert (coefficients > 0).all()
    used = (generator.parse(z)["activations"][0].numpy() > 0).sum(axis=(0, 1, 2))
    assert list(used[channels]) == sorted(used[channels], reverse=True)  # most used first
    # Each image is g from a top map holding that one unit, TopK and ReLU run below it.
    s, c = generator.config.top_size, generator.config.channels[0]
    top = np.zeros((1, s, s, c), np.float32)
    top[0, cells[0][0], cells[0][1], channels[0]] = coefficients[0]
    np.testing.assert_allclose(images[0], generator.parse_from_top(top)["image"][0],
                               atol=1e-6)
    empty = generator.parse_from_top(np.zeros((1, s, s, c), np.float32))["image"][0]
    assert np.abs(images[0] - empty).max() > 1e-4  # the unit paints something


@pytest.fixture(scope="module")
def experiment(tmp_path_factory, commands):
    """The script run on a folder of 32 generated 32x32 images, each a bright square in
    one of the four quadrants, as the faces, with an attribute file that names the
    quadrant; crops of two generated photographs as the bricks."""
    root = tmp_path_factory.mktemp("paper")
    (root / "images").mkdir()
    rng = np.random.default_rng(0)
    for i in range(32):
        image = np.full((32, 32, 3), 40, np.uint8)
        y, x = 16 * (i % 2), 16 * (i // 2 % 2)
        image[y + 4:y + 12, x + 4:x + 12] = rng.integers(150, 255)
        write_png(str(root / "images" / f"{i:03d}.png"), image)
    flagfile = root / "tiny.flags"
    flagfile.write_text(TINY_FLAGFILE)
    # One attribute per quadrant, "Bangs" the top-left square: what the dissection finds.
    names = ("Bangs", "Smiling", "Eyeglasses", "Mustache")
    lines = [str(32), " ".join(names)]
    for i in range(32):
        quadrant = 2 * (i // 2 % 2) + i % 2
        lines.append(f"{i:03d}.png" + "".join("  1" if q == quadrant else " -1"
                                               for q in range(4)))
    (root / "list_attr.txt").write_text("\n".join(lines) + "\n")
    (root / "photos").mkdir()
    for i in range(2):  # two "brick-wall photographs", larger than a crop
        write_png(str(root / "photos" / f"wall{i}.png"),
                  rng.integers(0, 255, (80, 96, 3)).astype(np.uint8))
    args = (SCRIPT, f"--faces={root / 'images'}", f"--faces_flagfile={flagfile}",
            f"--attributes={root / 'list_attr.txt'}", "--face_multiples=2",
            f"--brick_photos={root / 'photos'}", f"--bricks_flagfile={flagfile}",
            "--num_bricks=20", "--brick_steps=2", "--brick_heldout=8",
            f"--runs={root / 'runs'}", f"--docs={root / 'docs'}", *FAST,
            "--heldout=8", "--num_heldout=8")
    result = commands.run(*args, timeout=1800)
    assert result.returncode == 0, result.stderr[-3000:]
    return root, args, result


@pytest.mark.slow
def test_the_script_trains_sparse_and_dense_and_writes_the_figures(experiment):
    root, _, result = experiment
    names = {f"faces_{f}.png" for f in ("kernels_bottom", "kernels_bottom_raw",
                                         "kernels_top", "kernels_top_raw", "parse",
                                         "reconstructions", "samples")}
    bricks = {n.replace("faces_", "bricks_") for n in names}
    assert set(os.listdir(root / "docs")) == names | bricks | {"real_images.md",
                                                               "faces_tradeoff.png"}
    records = json.loads((root / "runs" / "paper_experiments.json").read_text())
    sparse, dense = records["faces"]["sparse"], records["faces"]["dense"]
    double = records["faces"]["k2"]
    # Dense is K = h w c at every layer: 2*2*8 and 4*4*8; k2 twice the sparse K.
    assert sparse["results"]["topk"] == [4, 8] and dense["results"]["topk"] == [32, 128]
    assert double["results"]["topk"] == [8, 16] and "--topk=8,16" in double["command"]
    assert "--topk=32,128" in dense["command"] and "--heldout=8" in dense["command"]
    # The docs name the folders by their flags, never by a machine's paths.
    assert "--data_dir=FACES" in sparse["command"]
    assert str(root / "images") not in sparse["command"]
    assert "--workdir=RUNS/faces_sparse" in sparse["command"]
    for kind in (sparse, dense, double):
        results = kind["results"]
        assert results["num_heldout"] == 8 and results["num_examples"] == 24
        assert kind["train_s"] > 0 and results["sharpness_samples"] >= 0
        assert 0.25 <= results["specificity_1"] <= 1 and 1 / 16 <= results["specificity_2"] <= 1
        assert 0 <= results["attribute_auc_2"] <= 1 and results["frechet_samples"] >= 0
    assert np.isfinite(sparse["results"]["psnr_heldout_served"])
    assert "psnr_heldout_served" not in double["results"]  # only the pair is exported
    assert records["bricks"]["sparse"]["results"]["num_examples"] == 12
    assert len(os.listdir(root / "runs" / "brick_photo_crops")) == 20
    table = (root / "docs" / "real_images.md").read_text()
    assert "Location specificity, layer 2 (uniform 0.062)" in table
    assert "PSNR held-out, exported reconstruct (dB)" in table and "## bricks" in table
    assert "### The trade-off across K" in table and "| k2 | 8,16 |" in table
    assert "| pixel PCA |" in table
    assert str(root / "images") not in table and str(root / "runs") not in table


@pytest.mark.slow
def test_a_second_call_reuses_the_runs(experiment, commands):
    root, args, _ = experiment
    checkpoint = root / "runs" / "faces_sparse" / "checkpoints" / "checkpoint"
    before = checkpoint.stat().st_mtime_ns
    result = commands.run(*args, "--noserved", timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "reusing" in result.stdout and checkpoint.stat().st_mtime_ns == before


@pytest.mark.slow
def test_another_step_budget_is_refused_rather_than_resumed(experiment, commands):
    root, args, _ = experiment
    result = commands.run(*args, "--face_steps=5", timeout=600)
    assert result.returncode != 0
    assert "was trained with --train_steps=2" in commands.last_line(result.stderr)
    assert "Traceback" not in result.stderr


@pytest.mark.slow
@pytest.mark.parametrize("args, message", [
    ((), "nothing to do"),
    (("--faces=/no/such/folder",), "is not a folder"),
    (("--bricks=.", "--make_bricks"), "not both"),
    (("--faces=.", "--face_trials=bigger"), "unknown --face_trials bigger"),
])
def test_bad_input_fails_in_one_line(args, message, tmp_path, commands):
    result = commands.run(SCRIPT, f"--runs={tmp_path}", f"--docs={tmp_path}", *args)
    assert result.returncode != 0
    assert message in commands.last_line(result.stderr) and "Traceback" not in result.stderr
