"""One training run's settings, as a plain dataclass (the flags in `flags.py` fill it)."""

import dataclasses

from sparse_gen_tf.generator import GeneratorConfig


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Everything `trainer.train` needs. Defaults are the embedded `parts` setup."""
    workdir: str = "runs/parts"
    dataset: str = "parts"
    data_dir: str = None
    image_size: int = 32
    num_images: int = 2048
    batch_size: int = 64
    train_steps: int = 3000
    latent_dim: int = 32
    channels: tuple = (64, 64)
    topk: tuple = (8, 24)
    kernel_sizes: tuple = (4, 8)
    strides: tuple = (2, 8)
    langevin_steps: int = 20
    langevin_step_size: float = 0.1
    sigma: float = 0.3
    learning_rate: float = 1e-3
    jit_compile: bool = True
    seed: int = 0
    checkpoint_every: int = 5      # epochs
    keep_checkpoints: int = 3
    log_every: int = 10            # steps between TensorBoard scalars
    num_summary_images: int = 16   # images per TensorBoard grid

    def generator_config(self):
        return GeneratorConfig(image_size=self.image_size, latent_dim=self.latent_dim,
                               channels=self.channels, topk=self.topk,
                               kernel_sizes=self.kernel_sizes, strides=self.strides)

    # Settings that shape the checkpointed state: a resumed run must agree on all of them.
    # (K may change between runs: the weights and chains keep their shapes.)
    STATE_FIELDS = ("dataset", "image_size", "num_images", "latent_dim", "channels",
                    "kernel_sizes", "strides", "seed")
