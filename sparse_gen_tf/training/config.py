"""One training run's settings, as a plain dataclass (the flags in `flags.py` fill it)."""

import dataclasses

from sparse_gen_tf.model.descriptor import DescriptorConfig
from sparse_gen_tf.model.generator import GeneratorConfig


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Everything `trainer.train` needs. Defaults are the embedded `parts` setup."""
    workdir: str = "runs/parts"
    dataset: str = "parts"
    data_dir: str = None
    image_size: int = 32
    num_images: int = 2048
    # Image datasets: the images after the training ones set aside for explain and
    # evaluate (the parts dataset draws fresh held-out images instead).
    heldout: int = 0
    batch_size: int = 64
    train_steps: int = 3000
    latent_dim: int = 32
    channels: tuple = (64, 64)
    topk: tuple = (8, 24)
    kernel_sizes: tuple = (4, 8)
    strides: tuple = (2, 8)
    langevin_steps: int = 20
    langevin_step_size: float = 0.3
    sigma: float = 0.3
    learning_rate: float = 3e-3     # cosine-decayed to a tenth over train_steps
    jit_compile: bool = True
    seed: int = 0
    checkpoint_every: int = 5      # epochs
    keep_checkpoints: int = 3
    log_every: int = 10            # steps between TensorBoard scalars
    num_summary_images: int = 16   # images per TensorBoard grid
    # Cooperative learning with a descriptor (§2.4, cooperative.py). Steps, δ and the
    # kernels/strides are the CoopNets descriptor's; its channels (64, 128, 256) are cut
    # to a quarter for the 32x32 parts data, whose 15 descriptor Langevin steps per train
    # step would otherwise dominate the CPU time.
    descriptor: bool = False
    descriptor_channels: tuple = (16, 32, 64)
    descriptor_kernel_sizes: tuple = (5, 3, 3)
    descriptor_strides: tuple = (2, 2, 1)
    descriptor_steps: int = 15
    descriptor_step_size: float = 0.002
    # s = 1, not CoopNets' 0.016: at 0.016 the reference term -Y/s² shrinks every revision
    # towards grey by ~11% over 15 steps unless f learns to cancel it; at 1 it is nearly
    # flat at the data's scale and f alone moves Ỹ. Parts, 640 steps, w = 0.5: sample
    # high-frequency power 0.24 of the data's at s = 1, 0.10 at 0.016 (ABP 0.09).
    descriptor_reference: float = 1.0
    # Adam, β1 = 0.5, constant. CoopNets' 0.007 made the revision diverge after ~1,700
    # steps on parts (benchmarks/cooperative_vs_abp.py); 1e-3 stayed stable for 3,000.
    descriptor_learning_rate: float = 1e-3
    descriptor_fresh_samples: bool = False
    # The generator's target mixes the data back in: (1 - w) Ỹ + w Y (cooperative.py).
    # The paper's pure replacement (w = 0) left the generator at 11.7 dB after 640 steps
    # on parts, against ABP's 17.1; w = 0.5 reached 17.0 with sharper samples.
    descriptor_data_weight: float = 0.5
    # Where the run executes (distribute.py). A run may resume under another strategy or
    # number of devices: the checkpoint holds one copy of every variable.
    strategy: str = "default"      # default, mirrored or multi_worker
    cpu_devices: int = 0           # logical CPU devices for mirrored without GPUs
    mixed_precision: str = "float32"   # or mixed_float16 / mixed_bfloat16 (Keras policy)

    def generator_config(self):
        return GeneratorConfig(image_size=self.image_size, latent_dim=self.latent_dim,
                               channels=self.channels, topk=self.topk,
                               kernel_sizes=self.kernel_sizes, strides=self.strides)

    def descriptor_config(self):
        return DescriptorConfig(channels=self.descriptor_channels,
                                kernel_sizes=self.descriptor_kernel_sizes,
                                strides=self.descriptor_strides)

    # Settings that shape the checkpointed state: a resumed run must agree on all of them.
    # (K may change between runs: the weights and chains keep their shapes.)
    STATE_FIELDS = ("dataset", "image_size", "num_images", "heldout", "latent_dim",
                    "channels",
                    "kernel_sizes", "strides", "seed",
                    "descriptor", "descriptor_channels", "descriptor_kernel_sizes",
                    "descriptor_strides",
                    # mixed_float16 wraps the optimizer (loss scaling), so its slots move.
                    "mixed_precision")
