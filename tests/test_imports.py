"""The packages import only downward: import-linter's contracts in setup.cfg are kept, and
an upward import planted into a copy of the package breaks them."""

import os
import shutil
import subprocess
import sys

from conftest import ROOT

# lint-imports, run from `cwd` on the setup.cfg there. It puts cwd first on sys.path, so the
# package it analyses is the one in cwd (the checkout, or the planted copy), not whichever
# is installed. No cache: the copy and the checkout must not share one, nor leave one behind.
LINT = ("import sys; from importlinter.cli import lint_imports; "
        "sys.exit(lint_imports(no_cache=True, no_logo=True))")


def lint_imports(cwd):
    env = dict(os.environ, PYTHONPATH=cwd)
    done = subprocess.run([sys.executable, "-c", LINT], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)
    return done.returncode, done.stdout + done.stderr


def copy_of_the_package(tmp_path):
    """setup.cfg and sparse_gen_tf's sources, in tmp_path."""
    shutil.copy(os.path.join(ROOT, "setup.cfg"), tmp_path)
    shutil.copytree(os.path.join(ROOT, "sparse_gen_tf"), tmp_path / "sparse_gen_tf",
                    ignore=shutil.ignore_patterns("__pycache__", "*.so"))
    return tmp_path


def test_every_package_imports_only_the_packages_below_it():
    code, output = lint_imports(ROOT)
    assert code == 0, output
    assert "1 kept, 0 broken" in output, output


def test_an_upward_import_breaks_the_layers(tmp_path):
    copy = copy_of_the_package(tmp_path)
    # The model reaching up into training: the kind of import the layers forbid.
    with open(copy / "sparse_gen_tf" / "model" / "clusters.py", "a") as f:
        f.write("\nfrom sparse_gen_tf.training import run  # noqa: E402,F401\n")
    code, output = lint_imports(str(copy))
    assert code != 0, output
    assert "sparse_gen_tf.model.clusters -> sparse_gen_tf.training.run" in output, output


def test_a_package_outside_the_layers_breaks_them(tmp_path):
    copy = copy_of_the_package(tmp_path)
    # exhaustive = True: a new package must be given its place among the layers.
    os.mkdir(copy / "sparse_gen_tf" / "utilities")
    (copy / "sparse_gen_tf" / "utilities" / "__init__.py").write_text("")
    code, output = lint_imports(str(copy))
    assert code != 0, output
    assert "sparse_gen_tf.utilities" in output, output
