"""Every command on every run: a folder of an awkward size, a moved run, a relative
--workdir from another directory, and one-line refusals. All through the real commands."""

import json
import os
import shutil
import textwrap

import numpy as np
import pytest
import tensorflow as tf

# Trains, exports or runs the commands end to end: left out of `pytest -m "not slow"`.
pytestmark = pytest.mark.slow

NUM_FILES, HELDOUT = 37, 4  # 33 training images: not a multiple of the batch (16)


def write_folder(path, count):
    """count PNG files of assorted sizes (landscape, portrait, grey), each a blob on a
    gradient, so that centre-crop-and-resize and the colour handling all run."""
    path.mkdir()
    rng = np.random.RandomState(0)
    for i in range(count):
        h, w = [(40, 56), (64, 48), (33, 33)][i % 3]
        y, x = np.mgrid[0:h, 0:w]
        blob = ((y - rng.uniform(0, h)) ** 2 + (x - rng.uniform(0, w)) ** 2) < (h / 4) ** 2
        image = np.stack([blob * 200 + 30, x * 255 / w, y * 255 / h], -1).astype(np.uint8)
        if i % 5 == 0:
            image = image[..., :1]  # greyscale files are read as RGB
        tf.io.write_file(str(path / f"img_{i:03d}.png"), tf.io.encode_png(image))


@pytest.fixture(scope="module")
def folder_run(tmp_path_factory, commands):
    """A run trained on a 37-image folder with --heldout=4 (the default --num_images=2048
    is far more than the folder has)."""
    tmp = tmp_path_factory.mktemp("any_run")
    write_folder(tmp / "images", NUM_FILES)
    workdir = str(tmp / "run")
    result = commands.train(f"--workdir={workdir}", "--dataset=folder",
                            f"--data_dir={tmp / 'images'}", f"--heldout={HELDOUT}",
                            "--train_steps=4", *commands.tiny)
    assert result.returncode == 0, result.stderr[-3000:]
    return workdir, result.stderr


def test_a_folder_smaller_than_num_images_trains_on_all_of_it_and_says_so(folder_run):
    workdir, log = folder_run
    train = NUM_FILES - HELDOUT
    assert f"has only {NUM_FILES} images and {HELDOUT} are held out; training on all " \
           f"{train}" in log
    with open(os.path.join(workdir, "config.json")) as f:
        saved = json.load(f)
    assert saved["num_examples"] == train and saved["num_images"] == 2048
    assert saved["heldout"] == HELDOUT
    reader = tf.train.load_checkpoint(os.path.join(workdir, "checkpoints"))
    assert reader.get_tensor("model/chains/.ATTRIBUTES/VARIABLE_VALUE").shape == (train, 4)


def served_in_plain_tensorflow(export_dir, tmp, commands):
    """Calls the export's three signatures in a process that cannot import
    sparse_gen_tf; returns their outputs."""
    script = textwrap.dedent(f"""
        import sys
        sys.modules["sparse_gen_tf"] = None
        import numpy as np
        import tensorflow as tf
        signatures = tf.saved_model.load({export_dir!r}).signatures
        images = tf.random.stateless_uniform([3, 32, 32, 3], [1, 2])
        outputs = {{}}
        for name, inputs in [("serving_default", {{"z": tf.zeros([2, 4])}}),
                             ("reconstruct", {{"image": images}}),
                             ("sample", {{"seed": tf.constant([1, 2], tf.int64)}})]:
            for key, value in signatures[name](**inputs).items():
                outputs[name + "/" + key] = value.numpy()
        np.savez({str(tmp / "served.npz")!r}, **outputs)
    """)
    result = commands.run("-c", script, cwd=str(tmp))
    assert result.returncode == 0, result.stderr[-3000:]
    return dict(np.load(tmp / "served.npz"))


def test_the_folder_run_explains_evaluates_and_exports(folder_run, tmp_path, commands):
    workdir, _ = folder_run
    explained = commands.explain(f"--workdir={workdir}", "--num_samples=1",
                                 "--num_images=2", *commands.fast_inference)
    assert explained.returncode == 0, explained.stderr[-3000:]
    with open(os.path.join(workdir, "explain", "summary.json")) as f:
        summary = json.load(f)
    assert summary["images_are"] == "heldout" and len(summary["images"]) == 2

    evaluated = commands.evaluate(f"--workdir={workdir}", *commands.fast_inference)
    assert evaluated.returncode == 0, evaluated.stderr[-3000:]
    with open(os.path.join(workdir, "evaluation.json")) as f:
        scores = json.load(f)
    assert scores["num_examples"] == NUM_FILES - HELDOUT
    assert scores["num_heldout"] == HELDOUT
    for key in ("psnr_train", "psnr_train_infer", "psnr_heldout", "psnr_heldout_served"):
        assert np.isfinite(scores[key]) and scores[key] > 0, key
    # K = 4 of the 2x2x8 top map: a quarter of its units survive, at most.
    assert 0 < scores["nonzero_1"] <= 4 / 32
    assert "| PSNR held-out, exported reconstruct (dB) |" in evaluated.stdout

    base = str(tmp_path / "exports")
    exported = commands.export(f"--workdir={workdir}", f"--export_base={base}",
                               "--reconstruct_steps=3", "--reconstruct_restarts=2")
    assert exported.returncode == 0, exported.stderr[-3000:]
    served = served_in_plain_tensorflow(os.path.join(base, "1"), tmp_path, commands)
    assert served["reconstruct/reconstruction"].shape == (3, 32, 32, 3)
    assert served["sample/image"].shape == (2, 32, 32, 3)


def test_a_moved_run_and_a_relative_workdir_work_from_anywhere(folder_run, tmp_path,
                                                                commands):
    workdir, _ = folder_run
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    moved = elsewhere / "run"
    shutil.copytree(workdir, moved)
    # Nothing may read the old location: hide it while the moved copy is used.
    hidden = workdir + ".hidden"
    os.rename(workdir, hidden)
    try:
        exported = commands.export(f"--workdir={moved}", f"--export_base={tmp_path / 'E'}",
                                   "--reconstruct_steps=2", "--reconstruct_restarts=1")
        assert exported.returncode == 0, exported.stderr[-3000:]
        assert os.path.exists(tmp_path / "E" / "1" / "saved_model.pb")
        # Relative --workdir and --export_base, from the run's parent directory.
        other_cwd = str(elsewhere)
        explained = commands.explain("--workdir=run", "--num_samples=1", "--num_images=1",
                                     *commands.fast_inference, cwd=other_cwd)
        assert explained.returncode == 0, explained.stderr[-3000:]
        assert os.path.exists(moved / "explain" / "summary.json")
        exported = commands.export("--workdir=run", "--export_base=exports",
                                   "--reconstruct_steps=2", "--reconstruct_restarts=1",
                                   cwd=other_cwd)
        assert exported.returncode == 0, exported.stderr[-3000:]
        assert os.path.exists(elsewhere / "exports" / "1" / "saved_model.pb")
        evaluated = commands.evaluate("--workdir=run", "--noserved",
                                      *commands.fast_inference, cwd=other_cwd)
        assert evaluated.returncode == 0, evaluated.stderr[-3000:]
    finally:
        os.rename(hidden, workdir)


def test_resuming_on_a_folder_that_gained_an_image_is_refused(folder_run, tmp_path,
                                                              commands):
    workdir = tmp_path / "run"
    shutil.copytree(folder_run[0], workdir)
    with open(workdir / "config.json") as f:
        images = tmp_path / "images"
        shutil.copytree(json.load(f)["data_dir"], images)
    shutil.copy(images / "img_000.png", images / "img_999.png")
    listing = sorted(os.listdir(workdir / "checkpoints"))
    result = commands.train(f"--workdir={workdir}", "--dataset=folder",
                            f"--data_dir={images}", f"--heldout={HELDOUT}",
                            "--train_steps=8", *commands.tiny, timeout=120)
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert (f"trained on {NUM_FILES - HELDOUT} images, but the data now gives "
            f"{NUM_FILES + 1 - HELDOUT}") in commands.last_line(result.stderr)
    assert sorted(os.listdir(workdir / "checkpoints")) == listing


def test_a_run_without_heldout_parses_its_training_images(tmp_path, commands):
    write_folder(tmp_path / "images", 20)
    workdir = str(tmp_path / "run")
    trained = commands.train(f"--workdir={workdir}", "--dataset=folder",
                             f"--data_dir={tmp_path / 'images'}", "--train_steps=1",
                             *commands.tiny)
    assert trained.returncode == 0, trained.stderr[-3000:]
    explained = commands.explain(f"--workdir={workdir}", "--num_samples=0",
                                 "--num_images=2", *commands.fast_inference)
    assert explained.returncode == 0, explained.stderr[-3000:]
    with open(os.path.join(workdir, "explain", "summary.json")) as f:
        assert json.load(f)["images_are"] == "training"
    evaluated = commands.evaluate(f"--workdir={workdir}", *commands.fast_inference)
    assert evaluated.returncode == 0, evaluated.stderr[-3000:]
    with open(os.path.join(workdir, "evaluation.json")) as f:
        scores = json.load(f)
    assert scores["num_heldout"] == 0 and "psnr_heldout" not in scores
    assert np.isfinite(scores["psnr_train_infer"])


def other_architecture(folder_run, tmp_path):
    """A copy of the folder run whose config.json claims 16 top channels."""
    copy = tmp_path / "edited"
    shutil.copytree(folder_run[0], copy)
    with open(copy / "config.json") as f:
        config = json.load(f)
    config["generator"]["channels"] = [16, 8]
    (copy / "config.json").write_text(json.dumps(config))
    return copy


def no_checkpoint(folder_run, tmp_path):
    copy = tmp_path / "no_checkpoint"
    copy.mkdir()
    shutil.copy(os.path.join(folder_run[0], "config.json"), copy / "config.json")
    return copy


def corrupt_config(folder_run, tmp_path):
    copy = no_checkpoint(folder_run, tmp_path)
    (copy / "config.json").write_text('{"topk": [4, 8')  # cut short, as by a full disk
    return copy


@pytest.mark.parametrize("command", ["explain", "evaluate", "export"])
@pytest.mark.parametrize("make,message", [
    (no_checkpoint, "no checkpoint in"),
    (other_architecture, "does not fit the architecture in"),
    (corrupt_config, "is not a training run's config"),
])
def test_a_broken_run_is_refused_in_one_line(folder_run, tmp_path, commands, command, make,
                                             message):
    workdir = make(folder_run, tmp_path)
    extra = [f"--export_base={tmp_path / 'E'}"] if command == "export" else []
    result = getattr(commands, command)(f"--workdir={workdir}", *extra, timeout=120)
    assert result.returncode != 0
    assert "Traceback" not in result.stderr, result.stderr[-2000:]
    assert message in commands.last_line(result.stderr), result.stderr[-2000:]
    assert not (tmp_path / "E").exists()


def test_an_export_base_that_is_a_file_is_refused_in_one_line(folder_run, tmp_path,
                                                              commands):
    (tmp_path / "a_file").write_text("not a directory")
    result = commands.export(f"--workdir={folder_run[0]}",
                             f"--export_base={tmp_path / 'a_file'}", timeout=120)
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert "cannot create --export_base" in commands.last_line(result.stderr)
    assert (tmp_path / "a_file").read_text() == "not a directory"


def test_heldout_that_leaves_nothing_to_train_on_is_refused(tmp_path, commands):
    write_folder(tmp_path / "images", 5)
    folder = commands.train(f"--workdir={tmp_path / 'f'}", "--dataset=folder",
                            f"--data_dir={tmp_path / 'images'}", "--heldout=5",
                            *commands.tiny, timeout=120)
    assert folder.returncode != 0 and "Traceback" not in folder.stderr
    assert "would leave none to train on" in commands.last_line(folder.stderr)
    assert not (tmp_path / "f").exists()

