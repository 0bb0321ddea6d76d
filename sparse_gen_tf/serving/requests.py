"""Example TF Serving REST request bodies for an export (export/requests/)."""

import numpy as np
import tensorflow as tf

from sparse_gen_tf.serving.signatures import SIGNATURES


def example_requests(export_dir, rows=2):
    """Example TF Serving REST predict bodies that fit the export at export_dir.

    Returns {file name: JSON-able body}: "<signature>.rows.json" (row format,
    "instances") and "<signature>.columns.json" (columnar format, "inputs") for each
    signature. Shapes and dtypes are read from the export's own signatures, so the
    bodies follow the exported config. reconstruct gets one small synthetic picture (a
    disc on a gradient) of the exported size.
    """
    loaded = tf.saved_model.load(export_dir)
    rng = np.random.RandomState(0)
    bodies = {}
    for name in SIGNATURES:
        specs = loaded.signatures[name].structured_input_signature[1]
        inputs = {key: _example_input(key, spec, rows, rng) for key, spec in specs.items()}
        batch = len(next(iter(inputs.values())))
        bodies[f"{name}.rows.json"] = {
            "signature_name": name,
            "instances": [{key: value[i] for key, value in inputs.items()}
                          for i in range(batch)]}
        bodies[f"{name}.columns.json"] = {"signature_name": name, "inputs": inputs}
    return bodies


def _example_input(key, spec, rows, rng):
    """A nested list (JSON) for one named input of spec [None, ...]."""
    if spec.dtype.is_integer:
        return list(range(7, 7 + rows))
    shape = spec.shape.as_list()[1:]
    if key == "image":
        h, w, _ = shape
        y, x = np.mgrid[0:h, 0:w] / max(h - 1, 1)
        disc = ((y - 0.5) ** 2 + (x - 0.5) ** 2 < 0.08).astype(np.float32)
        picture = np.stack([0.2 + 0.7 * disc, 0.1 + 0.3 * x, 0.6 * (1 - disc) * y], -1)
        return np.round(picture[None], 3).tolist()
    return np.round(rng.standard_normal([rows] + shape), 4).tolist()
