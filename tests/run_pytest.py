"""Runs one test file under pytest: the entry point of each Bazel py_test (see BUILD)."""

import sys

import pytest

if __name__ == "__main__":
    sys.exit(pytest.main(["-q", *sys.argv[1:]]))
