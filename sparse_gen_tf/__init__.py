"""sparse_gen_tf: an explainable generator with TopK-sparse feature maps.

The public surface: the layers (`TopK`, `TransposedConv`), the generator
(`Generator`, `GeneratorConfig`), its learning algorithm (`AlternatingBackprop`, whose
Langevin inference `LangevinConfig` sets), and the descriptor of §2.4 with cooperative
learning (`Descriptor`, `DescriptorConfig`, `CooperativeLearning`).

They are imported on first use, so that `import sparse_gen_tf.console` (the commands'
first import) runs before TensorFlow starts and can quiet its start-up lines.
"""

import importlib

_MODULES = {
    "AlternatingBackprop": "sparse_gen_tf.learning.abp",
    "CooperativeLearning": "sparse_gen_tf.learning.cooperative",
    "Descriptor": "sparse_gen_tf.model.descriptor",
    "DescriptorConfig": "sparse_gen_tf.model.descriptor",
    "Generator": "sparse_gen_tf.model.generator",
    "GeneratorConfig": "sparse_gen_tf.model.generator",
    "LangevinConfig": "sparse_gen_tf.learning.langevin",
    "langevin": "sparse_gen_tf.learning.langevin",
    "log_joint": "sparse_gen_tf.learning.langevin",
    "TopK": "sparse_gen_tf.model.layers",
    "TransposedConv": "sparse_gen_tf.model.layers",
}

__all__ = sorted(_MODULES)


def __getattr__(name):
    """The public name `name`, imported from its module the first time it is asked for."""
    if name not in _MODULES:
        raise AttributeError(f"module 'sparse_gen_tf' has no attribute {name!r}")
    value = getattr(importlib.import_module(_MODULES[name]), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(__all__))
