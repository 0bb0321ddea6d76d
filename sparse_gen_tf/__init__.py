"""sparse_gen_tf: an explainable generator with TopK-sparse feature maps.

The public surface: the layers (`TopK`, `TransposedConv`), the generator
(`Generator`, `GeneratorConfig`), its learning algorithm (`AlternatingBackprop`, whose
Langevin inference `LangevinConfig` sets), and the descriptor of §2.4 with cooperative
learning (`Descriptor`, `DescriptorConfig`, `CooperativeLearning`).
"""

from sparse_gen_tf.learning.abp import AlternatingBackprop
from sparse_gen_tf.learning.cooperative import CooperativeLearning
from sparse_gen_tf.model.descriptor import Descriptor, DescriptorConfig
from sparse_gen_tf.model.generator import Generator, GeneratorConfig
from sparse_gen_tf.learning.langevin import LangevinConfig, langevin, log_joint
from sparse_gen_tf.model.layers import TopK, TransposedConv

__all__ = ["AlternatingBackprop", "CooperativeLearning", "Descriptor", "DescriptorConfig",
           "Generator", "GeneratorConfig", "LangevinConfig", "TopK",
           "TransposedConv", "langevin", "log_joint"]
