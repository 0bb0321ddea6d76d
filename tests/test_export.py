"""SavedModel export for TF Serving: signatures, plain-TF loading, requests and refusals.

One tiny run is trained and exported once for the module (the `exported` fixture).
"""

import dataclasses
import glob
import json
import os
import shutil
import socket
import subprocess
import sys
import textwrap
import time
import types
import urllib.error
import urllib.request

import keras
import numpy as np
import pytest
import tensorflow as tf

from tensorflow.core.protobuf import saved_model_pb2

from conftest import last_line, tiny_train_config

from sparse_gen_tf import serving
from sparse_gen_tf.learning import inference
from sparse_gen_tf.training import run, trainer
from sparse_gen_tf.training.config import TrainConfig
from sparse_gen_tf.errors import UserError
from sparse_gen_tf.model.encoder import EncoderConfig
from sparse_gen_tf.model.generator import Generator

# Trains, exports or runs the commands end to end: left out of `pytest -m "not slow"`.
pytestmark = pytest.mark.slow

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXPORT_SCRIPT = os.path.join(ROOT, "export", "export_saved_model.py")
TINY = tiny_train_config()
# With refinement, so that every test of the served reconstruct covers it too.
RECONSTRUCT = serving.ReconstructSettings(steps=5, restarts=3, refine_steps=4,
                                          refine_step_size=0.05)
# With every part of the amortized inference (extra starts, Langevin steps, momentum), so
# that the tests of the served amortized reconstruct cover them all; the default (the guess
# alone, then the momentum steps) has its own export below.
AMORTIZED = serving.ReconstructSettings(method="amortized", amortized_steps=4,
                                        amortized_step_size=0.05, amortized_momentum=0.5,
                                        amortized_starts=3, amortized_langevin_steps=3)


def run_export(*flags, timeout=300):
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    return subprocess.run([sys.executable, EXPORT_SCRIPT, *flags], capture_output=True,
                          text=True, timeout=timeout, env=env, cwd=ROOT)


def request_tensors(body, signature):
    """The named input tensors TF Serving builds from a REST predict body.

    Row format ("instances"): one object per row, stacked along a new dimension 0.
    Columnar format ("inputs"): each named input as a whole tensor.
    """
    specs = signature.structured_input_signature[1]
    if "instances" in body:
        assert all(set(row) == set(specs) for row in body["instances"])
        columns = {key: [row[key] for row in body["instances"]] for key in specs}
    else:
        assert set(body["inputs"]) == set(specs)
        columns = body["inputs"]
    tensors = {key: tf.constant(columns[key], dtype=spec.dtype) for key, spec in specs.items()}
    for key, spec in specs.items():
        assert spec.is_compatible_with(tensors[key]), (key, spec, tensors[key].shape)
    return tensors


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """A tiny trained workdir, its export E/1 through the command line, and its model."""
    tmp = tmp_path_factory.mktemp("export")
    config = dataclasses.replace(TINY, workdir=str(tmp / "run"))
    trainer.train(config)
    base = str(tmp / "exports")
    result = run_export(f"--workdir={config.workdir}", f"--export_base={base}",
                        f"--reconstruct_steps={RECONSTRUCT.steps}",
                        f"--reconstruct_restarts={RECONSTRUCT.restarts}",
                        f"--reconstruct_refine_steps={RECONSTRUCT.refine_steps}",
                        f"--reconstruct_refine_step_size={RECONSTRUCT.refine_step_size}")
    assert result.returncode == 0, result.stderr[-3000:]
    model = run.open_run(config.workdir)
    return types.SimpleNamespace(workdir=config.workdir, base=base,
                                 path=os.path.join(base, "1"), model=model,
                                 generator=model.generator, tmp=tmp)


@pytest.fixture(scope="module")
def loaded(exported):
    return tf.saved_model.load(exported.path)


@pytest.fixture(scope="module")
def amortized(tmp_path_factory):
    """A tiny run trained with an inference network, its export E/1 with the amortized
    reconstruct through the command line, and its model."""
    tmp = tmp_path_factory.mktemp("amortized_export")
    config = dataclasses.replace(TINY, workdir=str(tmp / "run"),
                                 encoder=EncoderConfig(channels=(8, 8)))
    trainer.train(config)
    base = str(tmp / "exports")
    result = run_export(f"--workdir={config.workdir}", f"--export_base={base}",
                        "--reconstruct=amortized",
                        f"--reconstruct_amortized_steps={AMORTIZED.amortized_steps}",
                        f"--reconstruct_amortized_step_size={AMORTIZED.amortized_step_size}",
                        f"--reconstruct_amortized_momentum={AMORTIZED.amortized_momentum}",
                        f"--reconstruct_amortized_starts={AMORTIZED.amortized_starts}",
                        "--reconstruct_amortized_langevin_steps="
                        f"{AMORTIZED.amortized_langevin_steps}")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "reconstruct (amortized)" in result.stdout
    model = run.open_run(config.workdir)
    path = os.path.join(base, "1")
    return types.SimpleNamespace(workdir=config.workdir, path=path, model=model,
                                 loaded=tf.saved_model.load(path), tmp=tmp)


def test_saved_model_cli_lists_the_three_signatures_with_named_inputs(exported):
    cli = os.path.join(os.path.dirname(sys.executable), "saved_model_cli")
    result = subprocess.run([cli, "show", "--dir", exported.path, "--all"],
                            capture_output=True, text=True, timeout=120,
                            env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
    assert result.returncode == 0, result.stderr[-2000:]
    shown = result.stdout
    for name in serving.SIGNATURES:
        assert f"signature_def['{name}']" in shown
    for line in ("inputs['z'] tensor_info:", "inputs['image'] tensor_info:",
                 "inputs['seed'] tensor_info:", "outputs['reconstruction'] tensor_info:",
                 "outputs['mask_2'] tensor_info:", "outputs['activation_1'] tensor_info:",
                 "shape: (-1, 4)", "shape: (-1, 32, 32, 3)", "dtype: DT_INT64"):
        assert line in shown, line


def test_plain_tensorflow_loads_the_export_and_matches_the_keras_model(exported):
    rng = np.random.RandomState(1)
    inputs = {"z": rng.standard_normal([3, 4]).astype(np.float32),
              "image": rng.uniform(0, 1, [2, 32, 32, 3]).astype(np.float32),
              "seed": np.array([3, -5], np.int64)}
    np.savez(exported.tmp / "inputs.npz", **inputs)
    # No sparse_gen_tf: the import is blocked, and the package is not on the path.
    script = textwrap.dedent(f"""
        import sys
        sys.modules["sparse_gen_tf"] = None
        import numpy as np
        import tensorflow as tf
        inputs = np.load({str(exported.tmp / "inputs.npz")!r})
        signatures = tf.saved_model.load({exported.path!r}).signatures
        outputs = {{}}
        for name, key in [("serving_default", "z"), ("reconstruct", "image"),
                          ("sample", "seed")]:
            for output, value in signatures[name](**{{key: inputs[key]}}).items():
                outputs[name + "/" + output] = value.numpy()
        np.savez({str(exported.tmp / "outputs.npz")!r}, **outputs)
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            timeout=300, cwd=str(exported.tmp),
                            env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2",
                                 "PYTHONPATH": ""})
    assert result.returncode == 0, result.stderr[-3000:]
    served = dict(np.load(exported.tmp / "outputs.npz"))

    generator = exported.generator
    reconstruct_z = serving.infer_latent(
        generator, inputs["image"] * 2 - 1, settings=RECONSTRUCT,
        step_size=exported.model.langevin.step_size, sigma=exported.model.langevin.sigma,
        bank=RECONSTRUCT.bank(exported.model.chains.numpy()))
    # The run's prior is the grammar: its samples are parses, with no z.
    sample_parse = exported.model.prior.sample(generator, tf.constant(inputs["seed"]))
    expected = {}
    for name, parse, extra in [("serving_default", generator.parse(inputs["z"]), {}),
                               ("reconstruct", generator.parse(reconstruct_z),
                                {"z": reconstruct_z}),
                               ("sample", sample_parse, {})]:
        image_key = "reconstruction" if name == "reconstruct" else "image"
        outputs = {image_key: (parse["image"] + 1) / 2, **extra,
                   **{f"mask_{i}": t * r for i, (t, r) in enumerate(
                       zip(parse["topk_masks"], parse["relu_masks"]), 1)},
                   **{f"activation_{i}": a for i, a in enumerate(parse["activations"], 1)}}
        expected.update({f"{name}/{k}": np.asarray(v) for k, v in outputs.items()})
    assert set(served) == set(expected)
    for key, value in expected.items():
        np.testing.assert_allclose(served[key], value, rtol=1e-4, atol=1e-5, err_msg=key)


def test_signatures_json_records_the_refinement_baked_into_reconstruct(exported):
    with open(os.path.join(exported.path, serving.INFO_FILE)) as f:
        reconstruct = json.load(f)["signatures"]["reconstruct"]
    assert reconstruct["langevin"]["refine_steps"] == RECONSTRUCT.refine_steps
    assert reconstruct["langevin"]["refine_step_size"] == RECONSTRUCT.refine_step_size
    assert "noise-free steps" in reconstruct["doc"]


def test_masks_keep_at_most_k_and_activations_are_the_surviving_values(exported, loaded):
    z = tf.random.stateless_normal([6, 4], [2, 0])
    served = loaded.signatures["serving_default"](z=z)
    parse = exported.generator.parse(z)
    for i, k in enumerate(TINY.generator.topk, 1):
        mask = served[f"mask_{i}"].numpy()
        assert mask.dtype == np.float32 and set(np.unique(mask)) <= {0.0, 1.0}
        kept = mask.reshape(6, -1).sum(axis=1)
        assert (kept <= k).all() and (kept > 0).any(), kept
        feature_map = parse["feature_maps"][i - 1].numpy()
        np.testing.assert_allclose(served[f"activation_{i}"], mask * feature_map,
                                   rtol=1e-5, atol=1e-6)
        assert (served[f"activation_{i}"].numpy()[mask == 1] > 0).all()  # ReLU kept them


def test_a_unit_that_topk_keeps_but_relu_zeroes_is_not_in_the_mask(tmp_path):
    generator = Generator(TINY.generator)
    # Layer 1 is its bias alone: 2 positive units, the other 30 at -1. TopK (K = 4) keeps
    # the 2 positives and 2 of the -1s; ReLU then zeroes those two.
    bias = -np.ones(generator.fc.bias.shape, np.float32)
    bias[[3, 17]] = [0.5, 2.0]
    generator.fc.kernel.assign(np.zeros(generator.fc.kernel.shape, np.float32))
    generator.fc.bias.assign(bias)
    path = serving.export_generator(generator, str(tmp_path), step_size=0.1, sigma=0.3,
                                   settings=serving.ReconstructSettings(steps=1, restarts=1))
    served = tf.saved_model.load(path).signatures["serving_default"](z=tf.ones([2, 4]))
    assert tf.reduce_sum(generator.parse(tf.ones([2, 4]))["topk_masks"][0]) == 2 * 4
    mask = served["mask_1"].numpy().reshape(2, -1)
    np.testing.assert_array_equal(np.argwhere(mask[0]).ravel(), [3, 17])
    np.testing.assert_array_equal(served["activation_1"].numpy().reshape(2, -1)[:, [3, 17]],
                                  [[0.5, 2.0], [0.5, 2.0]])


def test_the_same_seed_gives_the_same_sample_whatever_else_is_in_the_batch(loaded):
    sample = loaded.signatures["sample"]
    first = sample(seed=tf.constant([7, 8], tf.int64))
    again = sample(seed=tf.constant([7, 8], tf.int64))
    alone = sample(seed=tf.constant([8], tf.int64))
    for key in first:
        np.testing.assert_array_equal(first[key], again[key])
        np.testing.assert_allclose(alone[key][0], first[key][1], rtol=1e-5, atol=1e-6)
    assert not np.allclose(first["image"][0], first["image"][1])
    assert first["image"].shape == (2, 32, 32, 3)
    assert 0.0 <= first["image"].numpy().min() and first["image"].numpy().max() <= 1.0


def assert_rows_answered_alone_or_batched_bit_for_bit(signatures, rows_of, batches):
    """reconstruct and serving_default give each row of a batch of images the bits they
    give it in other batches (other sizes, neighbours and orders)."""
    images = signatures["sample"](seed=tf.range(1, rows_of + 1, dtype=tf.int64))["image"]
    reconstruct, generate = signatures["reconstruct"], signatures["serving_default"]
    served = reconstruct(image=images)
    # A batched FC layer rounds differently at batch 2 and 4 (it did for this model's
    # weights before the signatures computed every row's products alone).
    z = served["z"]
    generated = generate(z=z)
    for rows in batches:
        alone = reconstruct(image=tf.gather(images, rows))
        for key in served:
            np.testing.assert_array_equal(alone[key], tf.gather(served[key], rows),
                                          err_msg=f"{key} of rows {rows}")
        alone = generate(z=tf.gather(z, rows))
        for key in generated:
            np.testing.assert_array_equal(alone[key], tf.gather(generated[key], rows),
                                          err_msg=f"serving_default {key} of rows {rows}")


def test_reconstruct_and_generate_answer_a_row_the_same_alone_or_batched_bit_for_bit(
        loaded):
    assert_rows_answered_alone_or_batched_bit_for_bit(
        loaded.signatures, 4, ([2], [3, 0], [1, 2, 3]))


def test_the_amortized_reconstruct_answers_a_row_the_same_alone_or_batched_bit_for_bit(
        amortized):
    assert_rows_answered_alone_or_batched_bit_for_bit(
        amortized.loaded.signatures, 17,
        ([0], [16], [5, 2], [1, 2, 3], [4, 3, 9, 0, 12], list(range(8)), list(range(16))))


def test_the_default_amortized_reconstruct_is_the_guess_refined_row_by_row(amortized,
                                                                         tmp_path):
    model = amortized.model
    default = serving.ReconstructSettings(method="amortized")
    path = serving.export_generator(model.generator, str(tmp_path),
                                    step_size=model.langevin.step_size,
                                    sigma=model.langevin.sigma, encoder=model.encoder,
                                    chains=model.chains.numpy(), settings=default)
    signatures = tf.saved_model.load(path).signatures
    assert_rows_answered_alone_or_batched_bit_for_bit(
        signatures, 9, ([0], [8], [5, 2], [1, 2, 3], list(range(5))))
    # The guess alone: no centroid of the chains goes in the file.
    assert default.bank(model.chains.numpy()) is None
    with open(os.path.join(path, serving.INFO_FILE)) as f:
        langevin = json.load(f)["signatures"]["reconstruct"]["langevin"]
    assert (langevin["restarts"], langevin["steps"], langevin["refine_steps"],
            langevin["refine_momentum"]) == (1, 0, inference.AMORTIZED_STEPS,
                                             inference.AMORTIZED_MOMENTUM)
    images = signatures["sample"](seed=tf.constant([3, 4], tf.int64))["image"]
    z = inference.amortized(model.generator, model.encoder, images * 2 - 1,
                            steps=default.amortized_steps,
                            step_size=default.amortized_step_size,
                            momentum=default.amortized_momentum,
                            sigma=model.langevin.sigma)
    np.testing.assert_allclose(signatures["reconstruct"](image=images)["z"], z,
                               rtol=1e-4, atol=1e-4)


def test_the_amortized_reconstruct_is_the_librarys_amortized_inference(amortized):
    model = amortized.model
    images = amortized.loaded.signatures["sample"](seed=tf.constant([3, 4, 5], tf.int64))[
        "image"]
    served = amortized.loaded.signatures["reconstruct"](image=images)
    z = inference.amortized(model.generator, model.encoder, images * 2 - 1,
                            steps=AMORTIZED.amortized_steps,
                            step_size=AMORTIZED.amortized_step_size,
                            momentum=AMORTIZED.amortized_momentum,
                            sigma=model.langevin.sigma,
                            bank=AMORTIZED.bank(model.chains.numpy()),
                            starts=AMORTIZED.amortized_starts,
                            langevin_steps=AMORTIZED.amortized_langevin_steps,
                            langevin_step_size=model.langevin.step_size)
    np.testing.assert_allclose(served["z"], z, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(served["reconstruction"], (model.generator(z) + 1) / 2,
                               rtol=1e-4, atol=1e-4)


def test_signatures_json_records_the_amortized_reconstruct(amortized):
    with open(os.path.join(amortized.path, serving.INFO_FILE)) as f:
        reconstruct = json.load(f)["signatures"]["reconstruct"]
    assert reconstruct["method"] == "amortized"
    langevin = reconstruct["langevin"]
    assert (langevin["steps"], langevin["restarts"], langevin["noise"]) == (
        AMORTIZED.amortized_langevin_steps, AMORTIZED.amortized_starts, True)
    assert langevin["refine_steps"] == AMORTIZED.amortized_steps
    assert langevin["refine_step_size"] == AMORTIZED.amortized_step_size
    assert langevin["refine_momentum"] == AMORTIZED.amortized_momentum
    assert f"momentum β = {AMORTIZED.amortized_momentum}" in reconstruct["doc"]
    assert "inference network" in langevin["start"] and "inference network" in (
        reconstruct["doc"])
    assert "k-means centroids" in langevin["start"]


def test_an_amortized_export_holds_the_networks_weights_centroids_and_no_chains(amortized):
    shapes = saved_tensor_shapes(amortized.path)
    num_examples, d = amortized.model.chains.shape
    assert not [s for s in shapes if s and s[0] == num_examples], shapes
    encoder_shapes = [tuple(w.shape) for w in amortized.model.encoder.weights]
    assert set(encoder_shapes) <= set(shapes)
    # Its other starts are k-means centroids of the chains, as the search's are.
    bank = AMORTIZED.bank(amortized.model.chains.numpy())
    assert bank.shape in shapes and bank.shape[0] < num_examples
    one_start = dataclasses.replace(AMORTIZED, amortized_starts=1)
    assert one_start.bank(amortized.model.chains.numpy()) is None


def test_auto_reconstruct_is_amortized_with_a_network_and_the_search_without(
        amortized, tmp_path):
    model = amortized.model
    methods = []
    for encoder in (model.encoder, None):
        path = serving.export_generator(model.generator, str(tmp_path), step_size=0.1,
                                       sigma=0.3, encoder=encoder,
                                       settings=serving.ReconstructSettings(steps=1))
        with open(os.path.join(path, serving.INFO_FILE)) as f:
            methods.append(json.load(f)["signatures"]["reconstruct"]["method"])
    assert methods == ["amortized", "search"]


def saved_tensor_shapes(export_dir):
    """The shape of every constant in the SavedModel's graphs and of every variable."""
    proto = saved_model_pb2.SavedModel()
    with open(os.path.join(export_dir, "saved_model.pb"), "rb") as f:
        proto.ParseFromString(f.read())
    shapes = []
    for meta_graph in proto.meta_graphs:
        nodes = list(meta_graph.graph_def.node)
        for function in meta_graph.graph_def.library.function:
            nodes.extend(function.node_def)
        shapes += [tuple(d.size for d in node.attr["value"].tensor.tensor_shape.dim)
                   for node in nodes if node.op == "Const"]
    variables = tf.train.load_checkpoint(os.path.join(export_dir, "variables", "variables"))
    shapes += [tuple(s) for s in variables.get_variable_to_shape_map().values()]
    return shapes


def test_a_default_export_holds_no_row_per_training_example(exported, tmp_path):
    num_examples, d = exported.model.chains.shape
    shapes = saved_tensor_shapes(exported.path)
    assert shapes and not [s for s in shapes if s and s[0] == num_examples], shapes
    with open(os.path.join(exported.path, serving.INFO_FILE)) as f:
        start = json.load(f)["signatures"]["reconstruct"]["langevin"]["start"]
    assert "k-means centroids" in start
    # Asked for, the training codes are there: the check above can fail.
    result = run_export(f"--workdir={exported.workdir}", f"--export_base={tmp_path}",
                        "--reconstruct_steps=1", "--export_training_codes")
    assert result.returncode == 0, result.stderr[-3000:]
    assert (num_examples, d) in saved_tensor_shapes(os.path.join(tmp_path, "1"))


def test_chain_centroids_each_average_at_least_min_members_chains():
    rng = np.random.RandomState(0)
    chains = np.concatenate([rng.normal(c, 0.1, [40, 3]) for c in (-5, 0, 5)] +
                            [rng.normal(20, 0.1, [3, 3])])  # an outlier cluster of 3
    centroids = inference.chain_centroids(chains, 8, min_members=8)
    nearest = ((chains[:, None] - centroids[None]) ** 2).sum(-1).argmin(1)
    assert np.bincount(nearest).min() >= 8
    assert not (np.abs(centroids - 20) < 1).all(-1).any()  # the outliers' mean is dropped
    np.testing.assert_allclose(sorted(centroids.mean(1))[0], -5, atol=0.2)
    assert len(inference.chain_centroids(chains[:7], 8, min_members=8)) == 0


@pytest.mark.parametrize("name,inputs,message", [
    ("serving_default", {"z": tf.zeros([2, 5])}, "not compatible with expected shape"),
    ("serving_default", {"z": tf.zeros([2, 4], tf.int32)}, "expected to be a float tensor"),
    ("reconstruct", {"image": tf.zeros([1, 16, 16, 3])},
     r"image must be float32 \[batch, 32, 32, 3\]; got shape\] \[1 16 16 3\]"),
    ("reconstruct", {"image": tf.fill([1, 32, 32, 3], 255.0)},
     r"image must be float32 \[batch, 32, 32, 3\] with values in \[0, 1\]"),
    ("sample", {"seed": tf.constant(7, tf.int64)}, "not compatible with expected shape"),
    ("sample", {"seed": tf.constant([7.0])}, "expected to be a int64 tensor"),
])
def test_a_wrong_shape_or_dtype_is_a_clear_error_and_the_model_still_works(
        loaded, name, inputs, message):
    with pytest.raises(tf.errors.InvalidArgumentError, match=message):
        loaded.signatures[name](**inputs)
    assert loaded.signatures["serving_default"](z=tf.zeros([1, 4]))["image"].shape[0] == 1


def test_example_requests_fit_each_signature_and_rows_equal_columns(exported, loaded):
    bodies = serving.example_requests(exported.path)
    assert set(bodies) == {f"{name}.{form}.json" for name in serving.SIGNATURES
                           for form in ("rows", "columns")}
    for name in serving.SIGNATURES:
        signature = loaded.signatures[name]
        rows = signature(**request_tensors(bodies[f"{name}.rows.json"], signature))
        columns = signature(**request_tensors(bodies[f"{name}.columns.json"], signature))
        for key in rows:
            np.testing.assert_allclose(rows[key], columns[key], rtol=1e-5, atol=1e-6)


def test_committed_requests_fit_an_export_of_the_default_config(tmp_path):
    defaults = TrainConfig()
    path = serving.export_generator(Generator(defaults.generator), str(tmp_path),
                                   settings=serving.ReconstructSettings(steps=1, restarts=1),
                                   step_size=0.1, sigma=0.3)
    signatures = tf.saved_model.load(path).signatures
    files = sorted(glob.glob(os.path.join(ROOT, "export", "requests", "*.json")))
    assert {os.path.basename(f) for f in files} == set(serving.example_requests(path))
    for file in files:
        with open(file) as f:
            body = json.load(f)
        signature = signatures[body["signature_name"]]
        try:
            tensors = request_tensors(body, signature)
        except AssertionError as e:
            pytest.fail(f"{file} does not fit the default config ({e}); regenerate the "
                        "requests with python export/make_requests.py")
        outputs = signature(**tensors)
        assert outputs[next(iter(outputs))].shape[0] == len(next(iter(tensors.values())))


def test_versions_increase_and_an_existing_version_is_never_overwritten(exported, tmp_path):
    base = str(tmp_path / "exports")

    def export_version(version=None):
        return serving.export_generator(exported.generator, base, step_size=0.1, sigma=0.3,
                                       settings=serving.ReconstructSettings(steps=1),
                                       version=version)

    assert export_version() == os.path.join(base, "1")
    assert export_version() == os.path.join(base, "2")
    assert export_version(5) == os.path.join(base, "5")
    assert export_version() == os.path.join(base, "6")
    assert sorted(os.listdir(base)) == ["1", "2", "5", "6"]  # no temporary directory left
    saved = os.path.join(base, "5", "saved_model.pb")
    before = (os.stat(saved).st_mtime_ns, open(saved, "rb").read())
    with pytest.raises(UserError, match="version 5 already exists"):
        export_version(5)
    assert (os.stat(saved).st_mtime_ns, open(saved, "rb").read()) == before
    assert sorted(os.listdir(base)) == ["1", "2", "5", "6"]
    with open(os.path.join(base, "6", serving.INFO_FILE)) as f:
        info = json.load(f)
    assert info["signatures"]["reconstruct"]["langevin"]["steps"] == 1


@pytest.mark.parametrize("case,message", [
    ("no_checkpoint", "no training run in"),
    ("file_in_the_way", "cannot create --export_base"),
    ("existing_version", "version 1 already exists"),
    ("no_network", "no inference network"),
])
def test_export_refuses_in_one_line_and_writes_nothing(exported, tmp_path, case, message):
    workdir, base, flags = exported.workdir, str(tmp_path / "exports"), []
    if case == "no_checkpoint":
        workdir = str(tmp_path / "empty_run")
        os.makedirs(workdir)
    elif case == "file_in_the_way":
        (tmp_path / "a_file").write_text("not a directory")
        base = str(tmp_path / "a_file" / "exports")
    elif case == "existing_version":
        base, flags = exported.base, ["--version=1"]
    else:
        flags = ["--reconstruct=amortized"]
    listing = sorted(os.listdir(exported.base))
    saved = os.path.join(exported.base, "1", "saved_model.pb")
    before = os.stat(saved).st_mtime_ns
    result = run_export(f"--workdir={workdir}", f"--export_base={base}", *flags)
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    assert message in last_line(result.stderr), result.stderr[-2000:]
    assert last_line(result.stderr).startswith("export_saved_model.py: error:")
    assert not os.path.exists(str(tmp_path / "exports"))
    assert sorted(os.listdir(exported.base)) == listing
    assert os.stat(saved).st_mtime_ns == before


def test_generator_round_trips_through_a_keras_file(exported, tmp_path):
    path = str(tmp_path / "generator.keras")
    exported.generator.save(path)
    reloaded = keras.models.load_model(path)
    assert isinstance(reloaded, Generator)
    assert reloaded.config == exported.generator.config
    z = tf.random.stateless_normal([3, 4], [5, 0])
    before, after = exported.generator.parse(z), reloaded.parse(z)
    np.testing.assert_allclose(after["image"], before["image"], rtol=1e-6, atol=1e-6)
    for a, b in zip(after["activations"], before["activations"]):
        np.testing.assert_array_equal(a, b)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http(url, body=None, timeout=60):
    """(status, JSON reply) of a GET, or of a POST of body."""
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data,
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as reply:
            return reply.status, json.loads(reply.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"{}")


@pytest.mark.skipif(shutil.which("tensorflow_model_server") is None,
                    reason="tensorflow_model_server is not on PATH (TF Serving cannot be "
                           "installed on this machine); the export is checked with "
                           "TensorFlow directly by the other tests")
def test_tensorflow_model_server_serves_the_example_requests(exported, loaded, tmp_path):
    with open(os.path.join(ROOT, "export", "models.config")) as f:
        config = f.read()
    assert 'base_path: "/models/sparse_gen"' in config
    config_file = tmp_path / "models.config"
    config_file.write_text(config.replace("/models/sparse_gen", exported.base))
    rest_port = free_port()
    server = subprocess.Popen(
        ["tensorflow_model_server", f"--port={free_port()}", f"--rest_api_port={rest_port}",
         "--rest_api_num_threads=2", f"--model_config_file={config_file}",
         "--enable_batching",
         f"--batching_parameters_file={os.path.join(ROOT, 'export', 'batching_parameters.txt')}"],
        stdout=subprocess.DEVNULL, stderr=open(tmp_path / "server.log", "w"))
    url = f"http://127.0.0.1:{rest_port}/v1/models/sparse_gen"
    try:
        deadline = time.time() + 120
        while True:
            assert server.poll() is None, (tmp_path / "server.log").read_text()[-3000:]
            try:
                status, reply = http(url, timeout=5)
                if status == 200 and reply["model_version_status"][0]["state"] == "AVAILABLE":
                    break
            except (urllib.error.URLError, ConnectionError, KeyError):
                pass
            assert time.time() < deadline, "the model server did not load the export"
            time.sleep(0.5)

        for name, body in serving.example_requests(exported.path).items():
            signature = loaded.signatures[body["signature_name"]]
            expected = signature(**request_tensors(body, signature))
            status, reply = http(f"{url}:predict", body)
            assert status == 200, (name, reply)
            if "instances" in body:
                rows = reply["predictions"]
                got = {key: np.array([row[key] for row in rows]) for key in expected}
            else:
                got = {key: np.array(value) for key, value in reply["outputs"].items()}
            assert set(got) == set(expected), name
            for key, value in expected.items():
                np.testing.assert_allclose(got[key], value, rtol=1e-4, atol=1e-4,
                                           err_msg=f"{name}: {key}")

        status, reply = http(f"{url}:predict", {"inputs": {"z": [[0.0] * 5]}})
        assert status == 400 and "error" in reply, reply  # a wrongly shaped z
        assert http(url)[0] == 200  # still serving
    finally:
        server.terminate()
        server.wait(timeout=30)
