"""A training run: its configuration and flags, the run directory (config.json,
checkpoints), the Keras callbacks and summaries, and tf.distribute / mixed precision."""
