"""The compiled sparse kernels of the Langevin loop (model/sparse_kernels.py).

They must compute the dense path's function: the two products against dense matmuls,
∂/∂z of `Generator.langevin_gradient_fn` against autodiff of the dense likelihood (ties
at the TopK threshold, kernel == stride and kernel > stride, occlusion masks), whole
Langevin chains and train steps against the dense XLA step, and two mirrored replicas
against one device. Where they cannot be built, the dense path runs and says why (the
compiler's first error line); a compiler that does not know -mno-avx512fp16 builds without it.
"""

import os
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

from conftest import (assert_mirrored_weights_match, run_mirrored, run_train, tiny_flags,
                      tiny_generator)
from sparse_gen_tf import (AlternatingBackprop, Generator, GeneratorConfig, LangevinConfig,
                           serving)
from sparse_gen_tf.learning.langevin import langevin, squared_error_fn
from sparse_gen_tf.model import sparse_kernels
from sparse_gen_tf.model.layers import TopK, TransposedConv

# Skipped only off CI, on a machine without a C++ compiler: CI installs g++ (.ci/run), so
# there a kernel that does not build fails these tests instead of hiding.
pytestmark = pytest.mark.skipif(
    not os.environ.get("CI") and sparse_kernels.unavailable_reason() is not None,
    reason=f"sparse kernels: {sparse_kernels.unavailable_reason()}")


def sparse_rows(rng, rows, cols, k):
    """[rows, cols] float32 keeping each row's k largest entries (TopK), zeros elsewhere."""
    x = tf.constant(rng.standard_normal([rows, cols]).astype(np.float32))
    return x * TopK(k).mask(x)


@pytest.mark.parametrize("rows,inner,cols,k", [(64, 1024, 2048, 64), (1024, 128, 768, 8),
                                               (5, 7, 300, 3), (3, 4, 130, 4)])
def test_the_two_products_equal_dense_matmuls(rows, inner, cols, k):
    rng = np.random.default_rng(rows + inner)
    x = sparse_rows(rng, rows, inner, k)
    w = tf.constant(rng.standard_normal([inner, cols]).astype(np.float32))
    painted = sparse_kernels.sparse_rows_matmul(x, w)
    np.testing.assert_allclose(painted, tf.matmul(x, w), rtol=1e-5, atol=1e-4)
    mask = tf.cast(x != 0, tf.float32)
    g = tf.constant(rng.standard_normal([rows, cols]).astype(np.float32))
    read_back = sparse_kernels.masked_matmul_t(g, w, mask).numpy()
    np.testing.assert_allclose(read_back, tf.matmul(g, w, transpose_b=True) * mask,
                               rtol=1e-5, atol=1e-4)
    assert (read_back[mask.numpy() == 0] == 0).all()  # dropped units get no gradient


@pytest.mark.parametrize("h,c_in,k,stride,c_out,keep", [
    (2, 16, 4, 2, 8, 6), (4, 8, 4, 2, 8, 10), (3, 5, 3, 1, 4, 7), (3, 4, 5, 2, 6, 9),
    (2, 6, 4, 4, 3, 12)])
def test_the_deconvolution_pair_equals_transposed_conv_and_its_gradient(
        h, c_in, k, stride, c_out, keep):
    rng = np.random.default_rng(h * k + stride)
    deconv = TransposedConv(c_out, k, stride)
    deconv.build((None, h, h, c_in))
    x = tf.reshape(sparse_rows(rng, 3, h * h * c_in, keep), [3, h, h, c_in])
    kernel = tf.convert_to_tensor(deconv.kernel)
    painted = sparse_kernels.sparse_transposed_conv(x, kernel, stride)
    expected = deconv(x, include_bias=False)
    assert painted.shape == expected.shape
    np.testing.assert_allclose(painted, expected, rtol=1e-5, atol=1e-5)
    mask = tf.cast(x != 0, tf.float32)
    g = tf.constant(rng.standard_normal(expected.shape).astype(np.float32))
    with tf.GradientTape() as tape:
        tape.watch(x)
        out = deconv(x, include_bias=False)
    vjp = tape.gradient(out, x, output_gradients=g) * mask
    read_back = sparse_kernels.masked_transposed_conv_t(g, kernel, mask, stride)
    np.testing.assert_allclose(read_back, vjp, rtol=1e-5, atol=1e-5)


def test_the_products_reject_mismatched_shapes_with_one_message():
    with pytest.raises(tf.errors.InvalidArgumentError, match="x \\[M, K\\] and w \\[K, N\\]"):
        sparse_kernels.sparse_rows_matmul(tf.ones([2, 3]), tf.ones([4, 5]))
    with pytest.raises(tf.errors.InvalidArgumentError, match="mask \\[M, K\\]"):
        sparse_kernels.masked_matmul_t(tf.ones([2, 5]), tf.ones([3, 5]), tf.ones([2, 4]))
    with pytest.raises(tf.errors.InvalidArgumentError, match="k >= stride"):
        sparse_kernels.sparse_transposed_conv(tf.ones([1, 2, 2, 3]), tf.ones([3, 2, 2, 4]), 4)
    with pytest.raises(tf.errors.InvalidArgumentError, match="h\\*stride"):
        sparse_kernels.masked_transposed_conv_t(tf.ones([1, 3, 3, 4]), tf.ones([3, 4, 4, 4]),
                                                tf.ones([1, 2, 2, 3]), 2)


# (name, config): the paper's geometry in small (top layer one matrix, k > s; bottom
# k == s in disjoint cells), a stack of two k == s layers (the top one through
# depth_to_space), and K = the whole map (the dense generator).
GEOMETRIES = {
    "top k>s, bottom k==s": tiny_generator(16),
    "two k==s layers": GeneratorConfig(image_size=32, latent_dim=5, channels=(8, 8),
                                      topk=(10, 40), kernel_sizes=(2, 4), strides=(2, 4)),
    "K = size": tiny_generator(16, topk=(32, 128)),
    "overlapping 4x4 top map": GeneratorConfig(
        image_size=32, latent_dim=4, channels=(8, 8), topk=(8, 16), kernel_sizes=(4, 4),
        strides=(2, 4)),
}


def dense_gradient(generator, z, images, sigma, observed=None):
    """∂/∂z log p(z, Y) (Eq. 11) by autodiff of the dense path."""
    squared_error = squared_error_fn(generator, images, observed)
    with tf.GradientTape() as tape:
        tape.watch(z)
        log_p = (-tf.reduce_sum(squared_error(z)) / (2 * sigma ** 2)
                 - 0.5 * tf.reduce_sum(tf.square(z)))
    return tape.gradient(log_p, z)


def sparse_gradient(generator, z, images, sigma, observed=None):
    for topk in generator.topks:
        topk.bisection = True
    fn = tf.function(lambda z: generator.langevin_gradient_fn(images, sigma, observed)(z))
    return fn(z)


@pytest.mark.parametrize("name", GEOMETRIES)
@pytest.mark.parametrize("occluded", [False, True])
def test_the_gradient_equals_autodiff_of_the_dense_path(name, occluded):
    config = GEOMETRIES[name]
    generator = Generator(config)
    assert generator.sparse_kernels_problem() is None
    size = config.image_size
    z = tf.random.stateless_normal([6, config.latent_dim], [1, 2])
    images = tf.random.stateless_uniform([6, size, size, 3], [3, 4], -1.0, 1.0)
    observed = None
    if occluded:  # the left half of every image unobserved
        observed = tf.concat([tf.zeros([6, size, size // 2, 1]),
                              tf.ones([6, size, size - size // 2, 1])], axis=2)
    expected = dense_gradient(generator, z, images, 0.3, observed)
    got = sparse_gradient(generator, z, images, 0.3, observed)
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4 * np.abs(expected).max())


def test_the_gradient_breaks_ties_at_the_threshold_like_the_dense_path():
    # FC columns all equal (and equal biases) make every unit of the top map the same
    # value, z·u + 1 > 0: all tie at the threshold, TopK keeps the K lowest flat indices,
    # and the gradient still flows through them.
    generator = Generator(tiny_generator(16))
    u = tf.random.stateless_normal([4, 1], [1, 1]) * 0.1
    generator.fc.kernel.assign(tf.tile(u, [1, generator.fc.kernel.shape[1]]))
    generator.fc.bias.assign(tf.ones_like(generator.fc.bias))
    z = tf.random.stateless_normal([4, 4], [5, 6])
    images = tf.random.stateless_uniform([4, 16, 16, 3], [7, 8], -1.0, 1.0)
    top = generator.parse(z)["topk_masks"][0].numpy().reshape(4, -1)
    assert (top[:, :8] == 1).all() and top[:, 8:].sum() == 0  # the ties are broken
    expected = dense_gradient(generator, z, images, 0.3)
    assert np.abs(expected + z).max() > 1e-3  # the likelihood term is not zero
    got = sparse_gradient(generator, z, images, 0.3)
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4 * np.abs(expected).max())


def test_a_langevin_chain_through_the_kernels_follows_the_dense_chain():
    generator = Generator(tiny_generator(16))
    for topk in generator.topks:
        topk.bisection = True
    z = tf.random.stateless_normal([8, 4], [9, 9])
    images = tf.random.stateless_uniform([8, 16, 16, 3], [1, 9], -1.0, 1.0)

    def chain(z, **kernels):
        return langevin(generator, z, images, tf.constant([3, 4]), steps=10, step_size=0.3,
                        sigma=0.3, **kernels)
    dense = tf.function(chain, jit_compile=True)(z)
    sparse = tf.function(lambda z: chain(z, sparse_kernels=True))(z)
    assert np.abs(sparse - z).max() > 0.1  # the chain moved
    np.testing.assert_allclose(sparse, dense, rtol=1e-4, atol=1e-4)


def make_model(sparse, config=None, jit_compile=True):
    config = config or tiny_generator(16)
    model = AlternatingBackprop(Generator(config), 16, langevin=LangevinConfig(steps=3),
                                langevin_noise=False, sparse_kernels=sparse)
    model.compile(optimizer=keras.optimizers.SGD(0.05), jit_compile=jit_compile)
    return model


def test_a_train_step_through_the_kernels_matches_the_dense_xla_step():
    dense, sparse = make_model(False), make_model(True)
    assert sparse.uses_sparse_kernels and not sparse.jit_compile
    assert not dense.uses_sparse_kernels and dense.jit_compile
    sparse.generator.set_weights(dense.generator.get_weights())
    sparse.chains.assign(dense.chains.numpy())
    ids = np.arange(8, dtype=np.int32)
    images = tf.random.stateless_uniform([8, 16, 16, 3], [2, 3], -1.0, 1.0).numpy()
    for _ in range(2):
        dense_logs = dense.train_on_batch(ids, images, return_dict=True)
        sparse_logs = sparse.train_on_batch(ids, images, return_dict=True)
    for ours, theirs in zip(sparse.generator.get_weights(), dense.generator.get_weights()):
        np.testing.assert_allclose(ours, theirs, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(sparse.chains.numpy(), dense.chains.numpy(), rtol=1e-4,
                               atol=1e-5)
    np.testing.assert_allclose(sparse_logs["loss"], dense_logs["loss"], rtol=1e-5)
    assert sparse_logs["nonzero_2"] == pytest.approx(dense_logs["nonzero_2"])


def test_unsupported_setups_keep_the_dense_xla_step_and_say_why(host_gpus, caplog):
    host_gpus(True)
    model = make_model(True)
    assert not model.uses_sparse_kernels and model.jit_compile
    assert "GPU" in model.gradient_path.reason
    host_gpus(False)
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        model = make_model(True)
    finally:
        keras.mixed_precision.set_global_policy("float32")
    assert not model.uses_sparse_kernels
    assert "float32" in model.gradient_path.reason


@pytest.mark.parametrize("broken", ["no compiler", "cache not writable"])
def test_without_a_build_the_kernels_say_why_and_training_stays_dense(
        monkeypatch, tmp_path, broken):
    cache = tmp_path / "cache"
    if broken == "no compiler":
        monkeypatch.setenv("CXX", str(tmp_path / "no-such-compiler"))
    else:
        (tmp_path / "file").write_text("")
        cache = tmp_path / "file" / "cache"  # under a file: mkdir fails
    monkeypatch.setenv("SPARSE_GEN_TF_CACHE", str(cache))
    sparse_kernels._load.cache_clear()
    try:
        reason = sparse_kernels.unavailable_reason()
        assert reason.startswith("building sparse_matmul.cc with") and "failed" in reason
        model = make_model(True)
        assert not model.uses_sparse_kernels and model.jit_compile
        if broken == "no compiler":
            assert not list(cache.glob("**/*.so"))  # nothing half-built is left
    finally:
        monkeypatch.undo()
        sparse_kernels._load.cache_clear()
    assert sparse_kernels.unavailable_reason() is None


def fake_compiler(path, script):
    """An executable shell script at path standing in for the C++ compiler."""
    path.write_text("#!/bin/sh\n" + script)
    path.chmod(0o755)
    return path


def test_a_compiler_that_does_not_know_the_fp16_flag_builds_with_march_native_alone(
        tmp_path):
    # As GCC < 12 answers -mno-avx512fp16; a compiler that old never emits AVX512-FP16,
    # which the stand-in gets from the real one by that flag where it has it. In a fresh
    # process, which loads the ops it built.
    real = sparse_kernels._compiler()
    log = tmp_path / "calls"
    compiler = fake_compiler(tmp_path / "old-g++", f"""echo "$*" >> {log}
case "$*" in *-mno-avx512fp16*)
  echo "g++: error: unrecognized command-line option '-mno-avx512fp16'" >&2; exit 1;;
esac
if {real} -mno-avx512fp16 -E -x c++ /dev/null > /dev/null 2>&1; then
  exec {real} "$@" -mno-avx512fp16
fi
exec {real} "$@"
""")
    env = {**os.environ, "CXX": str(compiler), "SPARSE_GEN_TF_CACHE": str(tmp_path / "cache"),
           "TF_CPP_MIN_LOG_LEVEL": "2"}
    code = ("from sparse_gen_tf.model import sparse_kernels as s; import numpy as np; "
            "print(s.unavailable_reason()); "
            "print(s.sparse_rows_matmul(np.eye(3, dtype=np.float32), "
            "np.ones([3, 2], np.float32)).numpy().sum())")
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                            text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.split() == ["None", "6.0"]
    calls = log.read_text().splitlines()
    assert len(calls) == 2
    assert "-mno-avx512fp16" in calls[0] and "-mno-avx512fp16" not in calls[1]
    assert "-march=native" in calls[1]


def test_a_failed_build_gives_the_compiler_s_first_error_line(monkeypatch, tmp_path):
    # GCC ends its output with the caret line under the source: not a reason.
    compiler = fake_compiler(tmp_path / "bad-g++", """cat >&2 <<'END'
In file included from Eigen/Core:222,
PacketMathFP16.h:740:49: error: expected initializer before '<' token
  740 | EIGEN_STRONG_INLINE Packet16h predux_half_dowto4<Packet32h>(const Packet32h& a) {
      |                                                 ^
END
exit 1
""")
    monkeypatch.setenv("CXX", str(compiler))
    monkeypatch.setenv("SPARSE_GEN_TF_CACHE", str(tmp_path / "cache"))
    sparse_kernels._load.cache_clear()
    try:
        reason = sparse_kernels.unavailable_reason()
    finally:
        monkeypatch.undo()
        sparse_kernels._load.cache_clear()
    assert reason == (f"building sparse_matmul.cc with {compiler} failed: PacketMathFP16.h:"
                      "740:49: error: expected initializer before '<' token")
    assert not list((tmp_path / "cache").glob("**/*.so"))


MIRRORED = """
def make(sparse, jit_compile):
    model = AlternatingBackprop(Generator(config), n, langevin=LangevinConfig(steps=3),
                                langevin_noise=False, sparse_kernels=sparse)
    model.compile(optimizer=keras.optimizers.SGD(0.05), jit_compile=jit_compile)
    return model

single = make(False, True)
with strategy.scope():
    mirrored = make(True, False)
assert mirrored.uses_sparse_kernels
mirrored.generator.set_weights(single.generator.get_weights())
mirrored.chains.assign(single.chains.numpy())
single.fit(dataset, epochs=1, verbose=0)
mirrored.fit(dataset, epochs=1, verbose=0)
replica_chains = [v.numpy() for v in strategy.experimental_local_results(mirrored.chains.value)]
np.savez(sys.argv[1], replicas=strategy.num_replicas_in_sync,
         single_chains=single.chains.numpy(), replica_chains=np.stack(replica_chains),
         **{f"single_w{i}": w for i, w in enumerate(single.generator.get_weights())},
         **{f"mirrored_w{i}": w for i, w in enumerate(mirrored.generator.get_weights())})
"""


@pytest.mark.slow
def test_two_mirrored_replicas_through_the_kernels_match_one_dense_device(tmp_path):
    run = run_mirrored(MIRRORED, str(tmp_path / "run.npz"))
    assert_mirrored_weights_match(run)
    for replica in run["replica_chains"]:
        np.testing.assert_allclose(replica, run["single_chains"], rtol=1e-4, atol=1e-5)


@pytest.mark.slow
def test_train_py_trains_with_sparse_kernels(tmp_path):
    result = run_train(f"--workdir={tmp_path / 'run'}", "--sparse_kernels=on",
                       *tiny_flags(train_steps=2), timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "dense path runs instead" not in result.stderr  # no fallback
    assert "sparse kernels unavailable" not in result.stderr.lower()
    assert tf.train.latest_checkpoint(str(tmp_path / "run" / "checkpoints"))


@pytest.mark.slow
def test_an_export_of_a_model_trained_on_the_kernels_holds_none_of_them(tmp_path):
    # TF Serving has no such ops: the SavedModel's reconstruct runs the dense Langevin loop.
    model = make_model(True)
    assert model.uses_sparse_kernels
    ids = np.arange(8, dtype=np.int32)
    model.train_on_batch(ids, np.zeros([8, 16, 16, 3], np.float32))
    path = serving.export_generator(model.generator, str(tmp_path), step_size=0.1, sigma=0.3,
                                   settings=serving.ReconstructSettings(steps=2, restarts=1))
    graph = open(os.path.join(path, "saved_model.pb"), "rb").read()
    for op in (b"SparseRowsMatmul", b"MaskedMatmulT", b"SparseTransposedConv",
               b"MaskedTransposedConvT"):
        assert op not in graph
    reconstruct = tf.saved_model.load(path).signatures["reconstruct"]
    out = reconstruct(image=tf.zeros([2, 16, 16, 3]))
    assert all(np.isfinite(v.numpy()).all() for v in out.values())
