"""The shipped flag files parse, agree with the defaults, and describe valid generators."""

import dataclasses
import json
import os
import re

import pytest

from sparse_gen_tf.training import flags as train_flags
from sparse_gen_tf.model.generator import GeneratorConfig
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
    shapes = config.generator.feature_map_shapes()
    # 2x2 top AND nodes and 4x4 bottom AND nodes whose kernels paint 16x16 cells.
    assert shapes == [(2, 2, 256), (4, 4, 128)]
    assert config.generator.kernel_sizes[-1] == config.generator.strides[-1] == 16
    assert dataclasses.replace(config, workdir="x").generator.image_size == 64


def test_celeba_wide_flags_differ_from_celeba_flags_only_in_the_code_width():
    paper = config_from(f"--flagfile={os.path.join(ROOT, 'celeba.flags')}")
    wide = config_from(f"--flagfile={os.path.join(ROOT, 'celeba_wide.flags')}")
    assert wide.generator.topk == (256, 512) and wide.generator.latent_dim == 200
    assert wide.train_steps == 2000 and wide.workdir == "runs/celeba_wide"
    assert wide == dataclasses.replace(
        paper, workdir=wide.workdir, train_steps=2000,
        generator=dataclasses.replace(paper.generator, topk=(256, 512), latent_dim=200))


def test_a_runs_flags_txt_reads_back_as_a_flagfile(tmp_path):
    from sparse_gen_tf.training import run
    config = TrainConfig(workdir=str(tmp_path), generator=GeneratorConfig(topk=(4, 8)))
    run.write_config(config, num_examples=config.num_images)
    assert config_from(f"--flagfile={tmp_path / 'flags.txt'}") == config


def test_a_run_with_a_descriptor_reads_back_from_config_json_and_flags_txt(tmp_path):
    from sparse_gen_tf.model.descriptor import DescriptorConfig
    from sparse_gen_tf.training import run
    config = TrainConfig(workdir=str(tmp_path), descriptor=DescriptorConfig(
        channels=(8, 8), kernel_sizes=(5, 3), strides=(2, 2), data_weight=0.25))
    run.write_config(config, num_examples=7)
    with open(tmp_path / "config.json") as f:
        saved = json.load(f)
    assert saved["format_version"] == run.FORMAT_VERSION and saved["num_examples"] == 7
    assert saved["descriptor"]["channels"] == [8, 8]
    assert run.read_saved(str(tmp_path)) == (config, 7)
    assert config_from(f"--flagfile={tmp_path / 'flags.txt'}") == config


def test_a_flat_config_json_of_an_earlier_version_reads_as_the_nested_config(tmp_path):
    from sparse_gen_tf.training import run
    flat = {"workdir": "/elsewhere", "topk": [4, 8], "langevin_step_size": 0.2,
            "descriptor": True, "descriptor_channels": [8, 8],
            "descriptor_kernel_sizes": [5, 3], "descriptor_strides": [2, 2],
            "descriptor_reference": 0.5, "an_unknown_setting": 1, "num_examples": 9}
    (tmp_path / "config.json").write_text(json.dumps(flat))
    config, num_examples = run.read_saved(str(tmp_path))
    assert num_examples == 9 and config.workdir == "/elsewhere"
    assert config.generator == GeneratorConfig(topk=(4, 8))
    assert config.langevin.step_size == 0.2 and config.langevin.steps == 20
    assert config.descriptor.channels == (8, 8) and config.descriptor.reference == 0.5
    flat["descriptor"] = False
    (tmp_path / "config.json").write_text(json.dumps(flat))
    assert run.read_config(str(tmp_path)).descriptor is None


def test_what_a_resumed_run_must_keep_is_what_shapes_its_checkpoint_and_data():
    from sparse_gen_tf.training.config import state_settings
    assert {s.flag for s in state_settings()} == {
        "dataset", "parts_geometry", "num_images", "heldout", "flip", "crop", "seed",
        "image_size", "latent_dim",
        "channels", "kernel_sizes", "strides", "descriptor", "descriptor_channels",
        "descriptor_kernel_sizes", "descriptor_strides", "encoder", "encoder_channels",
        "mixed_precision"}


def readme_flag_table():
    """{flag: default as written} of the README's table under "## Flags"."""
    with open(os.path.join(ROOT, "README.md")) as f:
        text = f.read()
    section = text.split("\n## Flags\n", 1)[1].split("\n## ", 1)[0]
    rows = re.findall(r"^\| `--(\w+)` \| ([^|]+) \|", section, flags=re.M)
    return {name: default.strip().strip("`") for name, default in rows}


def shown(default):
    """A flag's default as the README writes it."""
    if default is None:
        return "none"
    if isinstance(default, bool):
        return str(default).lower()
    if isinstance(default, list):
        return ",".join(default)
    return str(default)


def test_the_readme_flag_table_lists_every_flag_of_train_py_with_its_default():
    table = readme_flag_table()
    defined = {flag.name: shown(flag.default)
               for flag in train_flags.FLAGS.get_flags_for_module(train_flags.__name__)}
    assert table == defined
