"""The shipped flag files parse, agree with the defaults, and describe valid generators."""

import dataclasses
import os

import pytest

from sparse_gen_tf.training import flags as train_flags
from sparse_gen_tf.training.config import TrainConfig

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))




@pytest.fixture(autouse=True)
def fresh_flags():
    yield
    train_flags.FLAGS.unparse_flags()


def config_from(*argv):
    train_flags.FLAGS.unparse_flags()
    train_flags.FLAGS(["train.py", *argv])
    return train_flags.train_config()


def test_parts_flags_equal_the_defaults():
    from_file = config_from(f"--flagfile={os.path.join(ROOT, 'parts.flags')}")
    assert from_file == TrainConfig()


def test_celeba_flags_are_the_papers_setup():
    config = config_from(f"--flagfile={os.path.join(ROOT, 'celeba.flags')}")
    assert config.dataset == "celeb_a" and config.num_images == 5000
    shapes = config.generator_config().feature_map_shapes()
    # 2x2 top AND nodes and 4x4 bottom AND nodes whose kernels paint 16x16 cells.
    assert shapes == [(2, 2, 256), (4, 4, 128)]
    assert config.kernel_sizes[-1] == config.strides[-1] == 16
    assert dataclasses.replace(config, workdir="x").image_size == 64


def test_a_runs_flags_txt_reads_back_as_a_flagfile(tmp_path):
    from sparse_gen_tf.training import run
    config = TrainConfig(workdir=str(tmp_path), topk=(4, 8))
    run.write_config(config, num_examples=config.num_images)
    assert config_from(f"--flagfile={tmp_path / 'flags.txt'}") == config
