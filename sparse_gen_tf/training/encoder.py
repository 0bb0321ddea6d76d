"""The inference network of a finished run: fitted after training to the generator of its
latest checkpoint, on its training images, and stored beside that checkpoint (the
fit_encoder command)."""

import keras
import numpy as np

from sparse_gen_tf.data import pipeline
from sparse_gen_tf.learning import amortized
from sparse_gen_tf.model.encoder import Encoder, EncoderConfig
from sparse_gen_tf.training import run


def fit_workdir(workdir, *, steps, batch_size=64, learning_rate=1e-3, seed=0,
                channels=None):
    """Fits an inference network to the generator of workdir's latest checkpoint, on the
    run's training images (`amortized.fit`), and writes it beside the checkpoint
    (`run.write_encoder`).

    channels: its conv channels; None takes the run's --encoder_channels if it trained a
    network, else `EncoderConfig`'s. Returns (the path written, the last epoch's loss).
    Raises UserError if workdir holds no run (`run.open_run`) or the file cannot be
    written.
    """
    opened = run.open_run(workdir)
    config = opened.config
    if channels is None:
        channels = (config.encoder or EncoderConfig()).channels
    keras.utils.set_random_seed(seed)
    encoder = Encoder(EncoderConfig(channels=channels, learning_rate=learning_rate),
                      latent_dim=config.generator.latent_dim,
                      image_size=config.generator.image_size)
    images = pipeline.to_model_range(opened.data().images).numpy()
    history = amortized.fit(encoder, opened.generator, images, sigma=opened.langevin.sigma,
                            steps=steps, batch_size=batch_size,
                            learning_rate=learning_rate, seed=seed)
    return (run.write_encoder(encoder, opened.checkpoint),
            float(np.asarray(history.history["loss"][-1])))
