"""Keras layers of the sparse generator: the TopK sparse operation and a transposed conv.

Both are written so that XLA compiles them well on CPU and GPU:

* `TopK` finds each example's K-th largest value and keeps everything at or above it. The
  value comes from `tf.math.top_k`, or under XLA on CPU, where top_k is a serial partial
  sort, from an exact bisection on the float bits whose counts are matmuls.
* `TransposedConv` is one matmul followed by an overlap-add, instead of the stock
  `Conv2DTranspose`, whose XLA lowering on CPU multiplies far more slowly.

Every product of a row of activations with a weight matrix goes through `matmul`, which
can make it batch-invariant: a row's result the same bits whatever else is in the batch
(the served graph needs that, `serving/signatures.py`).
"""

import contextlib
import dataclasses
import math

import keras
import tensorflow as tf


def kth_largest(values, k, bisection=False):
    """The k-th largest entry of each row of values [batch, n], as [batch, 1].

    Repeated values count with their multiplicity, so this is the minimum of
    `tf.math.top_k(values, k).values`, whichever way it is computed: `top_k`, or with
    bisection=True and inside a traced function, `kth_largest_by_bisection`. The two
    agree bit for bit. Bisection is for XLA on CPU, whose top_k is a std::partial_sort of
    one row after another on one core (xla/service/cpu/runtime_topk.cc), while without
    XLA (TensorFlow's multi-threaded TopK kernel) and on GPU top_k is the faster one.
    """
    if bisection and not tf.executing_eagerly():
        return kth_largest_by_bisection(values, k)
    top, _ = tf.math.top_k(values, k=k, sorted=False)
    return tf.reduce_min(top, axis=-1, keepdims=True)


def kth_largest_and_count(values, k, bisection=False):
    """(`kth_largest` [batch, 1], how many entries of each row are >= it [batch, 1]
    float32). The count is >= k, and > k exactly when values tie at the threshold; the
    bisection has it for free, top_k pays one more pass."""
    if bisection and not tf.executing_eagerly():
        return kth_largest_by_bisection(values, k, with_count=True)
    threshold = kth_largest(values, k)
    count = tf.reduce_sum(tf.cast(values >= threshold, tf.float32), -1, keepdims=True)
    return threshold, count


def kth_largest_by_bisection(values, k, with_count=False):
    """`kth_largest` as 32 compare-and-count passes, one per bit of a float32.

    Floats map to int32 keys with the same order (a negative float's magnitude bits are
    flipped). The answer is built from the sign bit down: a bit is taken when at least k
    keys are >= the answer with that bit. Exact, ties included; float16 and bfloat16 are
    searched as float32, which holds them exactly. Each count is a matmul of the 0/1
    comparison with a ones vector, which XLA runs as one vectorized GEMV on all cores,
    where its integer reduce_sum runs element by element. with_count=True also returns the count
    of keys >= the answer ([batch, 1] float32), the count of the last bit taken.
    """
    flat = tf.cast(values, tf.float32)
    bits = tf.bitcast(flat, tf.int32)
    magnitude = 0x7FFFFFFF

    def flip(b):  # float bits <-> order-preserving int32, an involution
        return tf.bitwise.bitwise_xor(
            b, tf.bitwise.bitwise_and(tf.bitwise.right_shift(b, 31), magnitude))

    keys = flip(bits)
    k_float = tf.cast(k, tf.float32)  # k may be an int32 tensor (a TopK schedule)
    n = tf.shape(flat)[-1]
    ones = tf.ones(tf.stack([n, 1]), tf.float32)
    answer = tf.fill([tf.shape(flat)[0], 1], tf.constant(-2 ** 31, tf.int32))
    count = tf.fill([tf.shape(flat)[0], 1], tf.cast(n, tf.float32))  # every key >= the minimum

    def step(bit, answer, count):
        # bit 31 is the sign bit, which in the key order is inverted: start at the
        # smallest key and flip it on.
        flag = tf.where(bit == 31, tf.constant(-2 ** 31, tf.int32),
                        tf.bitwise.left_shift(1, bit))
        candidate = tf.bitwise.bitwise_xor(answer, flag)
        candidate_count = tf.matmul(tf.cast(keys >= candidate, tf.float32), ones)
        take = candidate_count >= k_float
        return (bit - 1, tf.where(take, candidate, answer),
                tf.where(take, candidate_count, count))

    # A loop, not 32 unrolled passes: as fast, and quicker for XLA to compile.
    _, answer, count = tf.while_loop(lambda bit, *_: bit >= 0, step,
                                     (tf.constant(31), answer, count), maximum_iterations=32)
    threshold = tf.cast(tf.bitcast(flip(answer), tf.float32), values.dtype)
    return (threshold, count) if with_count else threshold


def matmul(x, kernel, batch_invariant=False):
    """x [rows, n] @ kernel [n, m] -> [rows, m]; with batch_invariant, row r of the result
    is the same bits whatever the other rows are and however many there are.

    TensorFlow's CPU MatMul chooses its kernel by shape, and the kernels sum in different
    orders: a single row runs as a matrix-vector product, several as a blocked GEMM
    (with n = 512, every row of a two-row product differs from the same row alone in the
    last bits; tests/test_layers.py). batch_invariant makes each row its own [1, n] x
    [n, m] product, all of them in one BatchMatMulV2 with the kernel broadcast over the
    rows: every row runs the same kernel on the same shapes, in one op for the batch.
    Its gradient is the same kind of product, so Langevin steps keep the property.
    """
    if not batch_invariant:
        return tf.matmul(x, kernel)
    return tf.matmul(x[:, None, :], kernel)[:, 0, :]


@keras.saving.register_keras_serializable(package="sparse_gen_tf")
class TopK(keras.layers.Layer):
    """The paper's sparse operation fm_s = TopK(fm, K) (§2, Eq. 1).

    For each example it keeps the K largest entries of the whole feature map (all h*w*c
    of them) and sets the others to zero. The kept set is exactly K entries even when
    values tie at the threshold: ties are broken towards the lower flat index. The
    gradient flows only to the kept entries, because the mask is a constant of the
    forward pass. K >= h*w*c makes the layer the identity: the dense generator.

    Input and output: [batch, h, w, c] (any rank >= 2 works; all non-batch axes count).
    `call(x, return_mask=True)` also returns the 0/1 mask, the paper's mask_T (Eq. 2).

    `bisection` (not part of the config: it depends on where the layer runs, not on the
    model) makes traced calls find the threshold with `kth_largest_by_bisection`, the
    faster way under XLA on CPU; `learning/gradient_path.py` sets it.
    """

    def __init__(self, k, **kwargs):
        super().__init__(**kwargs)
        if int(k) <= 0:
            raise ValueError(f"TopK needs k > 0, got k={k}")
        self.k = int(k)
        self.bisection = False
        # A schedule of K during training (`set_schedule`), not part of the config either.
        self.k_in_force, self.k_max = None, None

    def set_schedule(self, k_in_force, k_max):
        """Makes the layer keep k_in_force() entries instead of `k`: a callable giving an
        int32 scalar (a function of the optimizer's step, say), read at every call, so
        that a traced function follows it without retracing. k_max (int) bounds it; the
        way without bisection sorts the k_max largest entries to pick the K-th.
        `set_schedule(None, None)` goes back to the fixed `k`."""
        self.k_in_force = k_in_force
        self.k_max = None if k_max is None else int(k_max)

    def compute_output_shape(self, input_shape):
        return input_shape

    @staticmethod
    @contextlib.contextmanager
    def fixed(topks):
        """Within the block each TopK of topks keeps its own `k`, whatever schedule it is
        under; the schedules come back after it. What is traced inside (an export's
        signatures) is the model as configured, and reads no training state."""
        topks = list(topks)
        schedules = [(topk.k_in_force, topk.k_max) for topk in topks]
        try:
            for topk in topks:
                topk.set_schedule(None, None)
            yield
        finally:
            for topk, schedule in zip(topks, schedules):
                topk.set_schedule(*schedule)

    def is_dense(self, input_shape):
        return self.k >= math.prod(input_shape[1:])

    def _threshold(self, flat):
        """(K, the K-th largest entry of each row [batch, 1], the count of entries >= it
        [batch, 1] float32) for flat [batch, n]; K a Python int, or under a schedule an
        int32 scalar clipped to n."""
        if self.k_in_force is None:
            return (self.k, *kth_largest_and_count(flat, self.k, bisection=self.bisection))
        n = flat.shape[-1]
        k = tf.minimum(tf.cast(self.k_in_force(), tf.int32), n)
        if self.bisection and not tf.executing_eagerly():
            return (k, *kth_largest_by_bisection(flat, k, with_count=True))
        # top_k needs a static k under XLA: the k_max largest, sorted, then the K-th.
        top, _ = tf.math.top_k(flat, k=min(self.k_max or n, n), sorted=True)
        threshold = tf.gather(top, k - 1, axis=-1)[:, None]
        count = tf.reduce_sum(tf.cast(flat >= threshold, tf.float32), -1, keepdims=True)
        return k, threshold, count

    def mask(self, x):
        """Returns the TopK mask of x as x.dtype, 1 on the K kept entries. Shape of x."""
        if self.is_dense(x.shape):
            return tf.ones_like(x)
        # n static even when the batch is not (a served signature's [None, h, w, c]),
        # since a scheduled K is clipped to it.
        flat = tf.reshape(x, [-1, math.prod(x.shape[1:])])
        k, threshold, count = self._threshold(flat)
        # Entries equal to the threshold are kept only as far as needed to make exactly K.
        # Exact ties are not rare here: positions that no active unit reaches all carry the
        # bare bias. Whether any row has a surplus comes with the threshold (its count of
        # entries >= it); the ranking of the tied entries sits behind a cond, because in
        # the Langevin loop every extra pass over the map costs.
        def break_ties():
            above = flat > threshold
            at = flat == threshold
            num_at_needed = k - tf.reduce_sum(tf.cast(above, tf.int32), -1, keepdims=True)
            rank_at = tf.cumsum(tf.cast(at, tf.int32), axis=-1)
            return above | (at & (rank_at <= num_at_needed))

        keep = tf.cond(tf.reduce_any(count > tf.cast(k, count.dtype)), break_ties,
                       lambda: flat >= threshold)
        return tf.reshape(tf.cast(keep, x.dtype), tf.shape(x))

    def call(self, x, return_mask=False):
        mask = tf.stop_gradient(self.mask(x))
        if return_mask:
            return x * mask, mask
        return x * mask

    def get_config(self):
        return {**super().get_config(), "k": self.k}


def windows(n_in, n_out, kernel_size, strides):
    """The output rows of a 'same' transposed conv grouped by the input rows that paint them.

    Output row o receives out[i*s + p - pad] += x[i] * ker[p] from every input row i with
    0 <= o + pad - i*s < k. Neighbouring rows with the same painters form one window.

    Returns:
      [((i0, i1), (o0, o1))]: input rows i0:i1 paint output rows o0:o1, and no others do;
      the output windows tile 0:n_out in order.
    """
    k, s = kernel_size, strides
    pad = (k - s) // 2
    groups = []
    for o in range(n_out):
        painters = [i for i in range(n_in) if 0 <= o + pad - i * s < k]
        if not painters:  # k >= s rules this out
            raise ValueError(f"output row {o} has no input row painting it")
        span = (painters[0], painters[-1] + 1)
        if groups and groups[-1][0] == span:
            groups[-1][1][1] = o + 1
        else:
            groups.append((span, [o, o + 1]))
    return [(span, tuple(rows)) for span, rows in groups]


@dataclasses.dataclass(frozen=True)
class Window:
    """One block of `TransposedConv.windowed_kernel`: the output pixels
    rows[0]:rows[1] x cols[0]:cols[1], painted by input cells
    cell_rows[0]:cell_rows[1] x cell_cols[0]:cell_cols[1] and by no others, through
    `matrix` [cells * c_in, pixels * filters] (both row-major, channels fastest)."""
    cell_rows: tuple
    cell_cols: tuple
    rows: tuple
    cols: tuple
    matrix: tf.Tensor


@keras.saving.register_keras_serializable(package="sparse_gen_tf")
class TransposedConv(keras.layers.Layer):
    """A 'same'-padded transposed convolution written as one matmul plus overlap-add.

    Computes the same function as `keras.layers.Conv2DTranspose(filters, kernel_size,
    strides, padding="same")` (out[i*s + p - pad] += x[i] * ker[p]), the paper's
    deconvolution fm ⊗ ker + bias in Eq. (3). Each input unit paints one kernel-sized
    patch; the kernel is split into ceil(k/s)^2 stride-sized blocks, each block is a
    depth_to_space of the matmul result, and the blocks are added with coarse shifts.

    Input [batch, h, w, c_in] -> output [batch, h*s, w*s, filters].
    The kernel variable has shape [c_in, k, k, filters]: row j is unit j's basis patch.

    `batch_invariant` (not part of the config, like `TopK.bisection`: it depends on where
    the layer runs) makes `call` compute each example's products alone (`matmul`), so
    that an example's output is the same bits in any batch; the served graph sets it.
    """

    def __init__(self, filters, kernel_size, strides, use_bias=True,
                 kernel_initializer=None, **kwargs):
        super().__init__(**kwargs)
        self.filters = int(filters)
        self.kernel_size = int(kernel_size)
        self.strides = int(strides)
        self.use_bias = use_bias
        # None means Glorot-uniform with Conv2DTranspose's fans (k*k*c_in, k*k*filters);
        # Keras' own fan rule would misread the [c_in, k, k, filters] layout.
        self.kernel_initializer = (None if kernel_initializer is None
                                   else keras.initializers.get(kernel_initializer))
        self.batch_invariant = False
        if self.kernel_size < self.strides:
            raise ValueError(
                f"kernel_size ({kernel_size}) must be >= strides ({strides}), or the "
                "output would have holes")

    def build(self, input_shape):
        c_in = input_shape[-1]
        k = self.kernel_size
        initializer = self.kernel_initializer or keras.initializers.RandomUniform(
            -math.sqrt(6.0 / (k * k * (c_in + self.filters))),
            math.sqrt(6.0 / (k * k * (c_in + self.filters))))
        self.kernel = self.add_weight(name="kernel", shape=(c_in, k, k, self.filters),
                                      initializer=initializer)
        self.bias = (self.add_weight(name="bias", shape=(self.filters,), initializer="zeros")
                     if self.use_bias else None)

    def compute_output_shape(self, input_shape):
        b, h, w, _ = input_shape
        s = self.strides
        return (b, None if h is None else h * s, None if w is None else w * s, self.filters)

    @property
    def blocks_per_side(self):
        """m = ceil(k / s): the kernel is split into m x m stride-sized blocks."""
        return -(-self.kernel_size // self.strides)

    @property
    def paints_disjoint_cells(self):
        """True when k == s: each input unit paints its own s x s cell and nothing else, so
        the output is a depth_to_space of one matmul (see `call(blocked=True)`)."""
        return self.kernel_size == self.strides

    def matmul_kernel(self, dtype=None):
        """The kernel as the matmul's right-hand side [c_in, m*m*s*s*filters], block (a, b)
        and in-block offset (r_y, r_x) in depth_to_space order. A pure function of the
        kernel variable: a caller that applies the layer many times with fixed weights
        (the Langevin loop) computes it once and passes it to `call`, because XLA does
        not hoist the transpose out of a while loop."""
        k, s, c_out = self.kernel_size, self.strides, self.filters
        m = self.blocks_per_side
        c_in = self.kernel.shape[0]
        kernel = tf.cast(self.kernel, dtype or self.compute_dtype)
        if m * s != k:  # pad the kernel to a whole number of blocks; the extra rows are 0
            kernel = tf.pad(kernel, [[0, 0], [0, m * s - k], [0, m * s - k], [0, 0]])
        # [c_in, m, s, m, s, c_out] -> [c_in, m, m, s, s, c_out]: block (a, b) paints
        # pixels (a*s + r) of the patch, i.e. the coarse cell i + a at offset r.
        kernel = tf.reshape(kernel, [c_in, m, s, m, s, c_out])
        kernel = tf.transpose(kernel, [0, 1, 3, 2, 4, 5])
        return tf.reshape(kernel, [c_in, m * m * s * s * c_out])

    def unrolls(self, input_shape):
        """True when, on an input map of input_shape (h, w, c_in), the whole layer as one
        matrix (`unrolled_kernel`) does no more multiply-adds than the blocked matmul of
        `call`: h*w <= m*m, as for the paper's top layer (2x2 -> 4x4, k = 4, s = 2). Its
        `windowed_kernel` then saves the overlap-add of the m*m shifted blocks and its
        gradient, which under XLA on CPU cost about as much as the layer's matmul."""
        h, w = (int(v) for v in input_shape[:2])
        m = self.blocks_per_side
        return m > 1 and h * w <= m * m

    def unrolled_kernel(self, input_shape, dtype=None):
        """The layer without its bias as one matrix, [h*w*c_in, h*s*w*s, filters]: row j
        is the output (pixels in row-major order, then filters) of input unit j alone,
        i.e. unit j's basis patch where it lands, cropped by the 'same' padding; what
        `windowed_kernel` cuts into its blocks. Like `matmul_kernel`, a pure function of
        the kernel variable; `call(kernel=...)` takes either, and the two differ only in
        the order of the sums."""
        h, w, c_in = (int(v) for v in input_shape)
        k, s = self.kernel_size, self.strides
        pad = (k - s) // 2
        kernel = tf.cast(self.kernel, dtype or self.compute_dtype)
        rows = []
        for i in range(h):
            for j in range(w):
                # Unit (i, j, ·) paints out[i*s + p - pad] += ker[p]: its patch, placed in
                # the uncropped output of (h-1)*s + k pixels a side, then cropped.
                placed = tf.pad(kernel, [[0, 0], [i * s, (h - 1 - i) * s],
                                         [j * s, (w - 1 - j) * s], [0, 0]])
                rows.append(placed[:, pad:pad + h * s, pad:pad + w * s, :])
        # [h*w, c_in, H, W, filters] -> rows in the input's (i, j, c) order.
        return tf.reshape(tf.stack(rows), [h * w * c_in, h * s * w * s, self.filters])

    def windowed_kernel(self, input_shape, dtype=None):
        """`unrolled_kernel` without its zero blocks, as a grid of `Window`s (a tuple of
        rows of them, top to bottom, left to right).

        In the unrolled matrix, input cell (i, j) has zero rows wherever its patch was
        cropped or does not reach, so a 'same' layer wastes the multiply-adds of those
        zeros: 44% of them for the paper's top layer (2x2 -> 4x4, k = 4, s = 2), whose
        corner input cells paint only 3x3 of the 4x4 output cells. Grouping the output
        pixels by the input cells that paint them (`windows`) leaves one dense matrix per
        group with none of those zeros: 9 matmuls there, instead of one, that do 56% of
        its multiply-adds. The layer's function (without its bias), summed in another order
        than `call`'s overlap-add; pass it as `call(kernel=...)`. A pure function of the
        kernel variable, computed once by a caller that applies the layer many times with
        fixed weights (the Langevin loop).
        """
        h, w, c_in = (int(v) for v in input_shape)
        k, s, c_out = self.kernel_size, self.strides, self.filters
        unrolled = tf.reshape(self.unrolled_kernel(input_shape, dtype),
                              [h, w, c_in, h * s, w * s, c_out])
        grid = []
        for cell_rows, rows in windows(h, h * s, k, s):
            row = []
            for cell_cols, cols in windows(w, w * s, k, s):
                block = unrolled[cell_rows[0]:cell_rows[1], cell_cols[0]:cell_cols[1], :,
                                 rows[0]:rows[1], cols[0]:cols[1], :]
                cells = (cell_rows[1] - cell_rows[0]) * (cell_cols[1] - cell_cols[0])
                pixels = (rows[1] - rows[0]) * (cols[1] - cols[0])
                row.append(Window(cell_rows, cell_cols, rows, cols,
                                  tf.reshape(block, [cells * c_in, pixels * c_out])))
            grid.append(tuple(row))
        return tuple(grid)

    def call(self, x, include_bias=True, kernel=None, blocked=False):
        """x [batch, h, w, c_in] -> [batch, h*s, w*s, filters].

        kernel: optional, precomputed: `matmul_kernel()` (rank 2),
        `unrolled_kernel((h, w, c_in))` (rank 3), which makes the layer one matmul, or
        `windowed_kernel((h, w, c_in))`, that matmul without its zero blocks.
        blocked=True (only when `paints_disjoint_cells`) returns the output before its
        depth_to_space, [batch, h, w, s*s*filters], i.e. `tf.nn.space_to_depth(output, s)`.
        """
        s, c_out = self.strides, self.filters
        m = self.blocks_per_side
        _, h, w, c_in = x.shape
        if kernel is None:
            kernel = self.matmul_kernel(x.dtype)
        batch = tf.shape(x)[0]
        if isinstance(kernel, tuple):
            if blocked:
                raise ValueError("blocked output needs the blocked kernel of matmul_kernel()")
            out = tf.concat([
                tf.concat([tf.reshape(
                    matmul(tf.reshape(x[:, b.cell_rows[0]:b.cell_rows[1],
                                        b.cell_cols[0]:b.cell_cols[1]], [batch, -1]),
                           b.matrix, self.batch_invariant),
                    [batch, b.rows[1] - b.rows[0], b.cols[1] - b.cols[0], c_out])
                    for b in row], axis=2)
                for row in kernel], axis=1)
            if self.use_bias and include_bias:
                out = out + tf.cast(self.bias, out.dtype)
            return out
        if kernel.shape.rank == 3:
            if blocked:
                raise ValueError("blocked output needs the blocked kernel of matmul_kernel()")
            out = tf.reshape(matmul(tf.reshape(x, [-1, h * w * c_in]),
                                    tf.reshape(kernel, [h * w * c_in, -1]),
                                    self.batch_invariant),
                             [batch, h * s, w * s, c_out])
            if self.use_bias and include_bias:
                out = out + tf.cast(self.bias, out.dtype)
            return out
        patches = tf.reshape(matmul(tf.reshape(x, [-1, c_in]), kernel, self.batch_invariant),
                             [batch, h, w, m, m, s * s * c_out])
        if m == 1:
            full = patches[:, :, :, 0, 0]
        else:
            full = 0.0
            for a in range(m):
                for b in range(m):
                    full = full + tf.pad(patches[:, :, :, a, b],
                                         [[0, 0], [a, m - 1 - a], [b, m - 1 - b], [0, 0]])
        return self._pixels(full, h, w, include_bias, blocked)

    def _pixels(self, full, h, w, include_bias, blocked):
        """The coarse cells [batch, h+m-1, w+m-1, s*s*filters] of `call` ->
        the output image [batch, h*s, w*s, filters] (or the blocked layout), plus bias."""
        k, s = self.kernel_size, self.strides
        bias = tf.cast(self.bias, full.dtype) if self.use_bias and include_bias else None
        if blocked:
            if not self.paints_disjoint_cells:
                raise ValueError(f"blocked output needs kernel_size == strides, got "
                                 f"{k} and {s}")
            # depth_to_space order is (r_y, r_x, c), c fastest: the bias repeats s*s times.
            return full if bias is None else full + tf.tile(bias, [s * s])
        # [batch, h+m-1, w+m-1, s*s*c_out] -> pixels; depth_to_space wants (r_y, r_x, c).
        if s > 1:
            full = tf.nn.depth_to_space(full, s)
        # 'same' padding crops (k - s) // 2 pixels at the top-left, like conv2d_transpose.
        pad = (k - s) // 2
        out = full[:, pad:pad + h * s, pad:pad + w * s, :]
        return out if bias is None else out + bias

    def get_config(self):
        return {**super().get_config(), "filters": self.filters,
                "kernel_size": self.kernel_size, "strides": self.strides,
                "use_bias": self.use_bias,
                "kernel_initializer": (None if self.kernel_initializer is None else
                                       keras.initializers.serialize(self.kernel_initializer))}
