"""sparse_gen_tf: an explainable generator with TopK-sparse feature maps.

The public surface: the layers (`TopK`, `TransposedConv`), the generator
(`Generator`, `GeneratorConfig`), its learning algorithm (`AlternatingBackprop`), and the
descriptor of §2.4 with cooperative learning (`Descriptor`, `DescriptorConfig`,
`CooperativeLearning`).
"""

from sparse_gen_tf.learning.abp import AlternatingBackprop
from sparse_gen_tf.learning.cooperative import CooperativeLearning
from sparse_gen_tf.model.descriptor import Descriptor, DescriptorConfig
from sparse_gen_tf.model.generator import Generator, GeneratorConfig
from sparse_gen_tf.learning.langevin import langevin, log_joint
from sparse_gen_tf.model.layers import TopK, TransposedConv

__all__ = ["AlternatingBackprop", "CooperativeLearning", "Descriptor", "DescriptorConfig",
           "Generator", "GeneratorConfig", "TopK",
           "TransposedConv", "langevin", "log_joint"]
