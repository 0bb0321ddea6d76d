"""Export for TF Serving: the SavedModel signatures (signatures.py), versioned atomic writes
(versions.py), example requests (requests.py), and the export of a run (saved_model.py)."""

from sparse_gen_tf.serving.saved_model import export_generator, export_workdir
from sparse_gen_tf.serving.requests import example_requests
from sparse_gen_tf.serving.signatures import (MIN_MEMBERS, RECONSTRUCT_METHODS,
                                              RECONSTRUCT_SEED, SIGNATURES,
                                              ReconstructSettings, build_archive, describe,
                                              explanation, from_unit_range, infer_latent,
                                              serving_graph, to_unit_range)
from sparse_gen_tf.model.prior import latent_from_seeds
from sparse_gen_tf.serving.versions import INFO_FILE, choose_version, existing_versions

__all__ = ["INFO_FILE", "MIN_MEMBERS", "RECONSTRUCT_METHODS", "RECONSTRUCT_SEED", "SIGNATURES",
           "ReconstructSettings", "build_archive", "choose_version", "describe",
           "example_requests", "existing_versions", "explanation", "export_generator",
           "export_workdir", "from_unit_range", "infer_latent", "latent_from_seeds",
           "serving_graph", "to_unit_range"]
