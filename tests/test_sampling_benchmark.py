"""benchmarks/sampling.py's comparison of the priors on every parts geometry."""

import os

from conftest import ROOT, run_command


def test_unknown_geometries_are_refused_in_one_line(tmp_path):
    result = run_command(os.path.join(ROOT, "benchmarks", "sampling.py"),
                         f"--geometry_dir={tmp_path}", "--geometries=default,huge")
    assert result.returncode != 0
    assert "unknown geometries huge; use some of default, large, overlap" in result.stderr
    assert "Traceback" not in result.stderr
    assert not os.listdir(tmp_path)  # nothing was trained
