"""benchmarks/device_check.py, the check a user with a GPU runs, run on the CPU.

One run at the tiny size (--allow_cpu --tiny, the `report` fixture) so that the script
cannot rot: every check present and passing, the times, the comparison of each step
with the CPU's, part by part, and every served signature's shapes. Without a GPU and
without --allow_cpu it stops in one line; a failed check fails the run.
"""

import json
import statistics

import numpy as np
import pytest
import tensorflow as tf
from absl.testing import flagsaver

from conftest import ROOT, last_line, load_benchmark, run_command
from sparse_gen_tf import serving

SCRIPT = f"{ROOT}/benchmarks/device_check.py"
comparison = load_benchmark("step_comparison")
TINY = comparison.SETUPS["tiny"]
CHECKS = {"step abp float32", "step abp mixed_bfloat16", "step cooperative float32",
          "cpu reference", "compare abp float32 with the CPU",
          "compare abp mixed_bfloat16 with the CPU",
          "compare cooperative float32 with the CPU", "export and serve"}


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    output = tmp_path_factory.mktemp("device_check") / "report.json"
    result = run_command(SCRIPT, "--allow_cpu", "--tiny", "--repeats=3", "--warmup=1",
                         f"--output={output}", timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    assert last_line(result.stdout).startswith("device_check.py: all 8 checks passed on "
                                                "/CPU:0")
    return json.loads(output.read_text())


@pytest.mark.slow
def test_every_check_is_present_and_passes(report):
    assert report["checks"] == {name: True for name in CHECKS}
    assert report["passed"] is True


@pytest.mark.slow
def test_the_report_says_where_it_ran_and_with_what(report):
    assert report["device"]["type"] == "CPU" and report["device"]["name"] == "/CPU:0"
    assert report["tensorflow"] == tf.__version__
    assert report["tensor_float_32"] is False  # float32 means IEEE float32
    # On a CPU the mixed policy is bfloat16, which it has arithmetic for.
    assert report["precisions"] == ["float32", "mixed_bfloat16"]
    assert report["mixed_precisions_chosen_by"] == "the default on a CPU"
    setup = report["setup"]
    assert setup["name"] == "tiny" and setup["batch_size"] == TINY.batch_size
    assert setup["generator"]["topk"] == list(TINY.generator.topk)


@pytest.mark.slow
def test_each_step_is_timed_under_xla_as_the_median_of_its_repeats(report):
    assert set(report["steps"]) == {"abp_float32", "abp_mixed_bfloat16",
                                    "cooperative_float32"}
    for name, step in report["steps"].items():
        assert len(step["steps_s"]) == 3 and min(step["steps_s"]) > 0, name
        assert step["median_s"] == statistics.median(step["steps_s"])
        assert step["first_call_s"] > 0  # the compiling call, timed apart
        assert step["path"].startswith("XLA") and np.isfinite(step["loss"])


@pytest.mark.slow
def test_each_step_is_compared_with_the_cpus_part_by_part(report):
    assert report["cpu_reference"]["error"] is None
    generator = [f"generator_{i}" for i in range(6)]  # FC and two deconvs: kernel, bias
    descriptor = [f"descriptor_{i}" for i in range(8)]  # three convs and the score
    expected_parts = {"abp_float32": ["chains", *generator],
                      "abp_mixed_bfloat16": ["chains", *generator],
                      "cooperative_float32": ["chains", *descriptor, *generator]}
    for name, result in report["comparisons"].items():
        parts = result["parts"]
        assert sorted(parts) == sorted(expected_parts.pop(name))
        assert parts["chains"]["shape"] == [TINY.batch_size, TINY.generator.latent_dim]
        assert parts["generator_0"]["shape"] == [TINY.generator.latent_dim, 2 * 2 * 8]
        precision = name.split("_", 1)[1]
        tolerances = comparison.TOLERANCES[precision]
        assert result["median weight"]["passed"]
        for part, values in parts.items():
            assert values["passed"], (name, part)
            if part == "chains":
                assert values["rms_relative_diff"] <= tolerances["chains"][1]
            # Every part but the descriptor's score bias, whose gradient cancels in
            # mean f(revised) - mean f(observed), was moved by the step.
            assert (values["max_abs_change"] > 0) == (part != "descriptor_7"), (name, part)
    assert not expected_parts
    # On the CPU the float32 steps are the CPU's own step; the mixed one is not.
    assert report["comparisons"]["abp_float32"]["parts"]["chains"]["max_abs_diff"] == 0
    assert report["comparisons"]["abp_mixed_bfloat16"]["parts"]["chains"]["max_abs_diff"] > 0


@pytest.mark.slow
def test_every_signature_is_served_with_the_described_shapes(report):
    export = report["export"]
    assert export["passed"] and set(export["signatures"]) == set(serving.SIGNATURES)
    batch, size = export["batch"], TINY.generator.image_size
    for name, served in export["signatures"].items():
        assert served["finite"] and served["shapes"] == served["expected_shapes"], name
        image = served["shapes"].get("image", served["shapes"].get("reconstruction"))
        assert image == [batch, size, size, 3]
        assert served["shapes"]["mask_1"] == [batch, 2, 2, 8]
    assert report["export"]["signatures"]["reconstruct"]["shapes"]["z"] == [batch, 4]


@pytest.mark.slow
def test_without_a_gpu_it_stops_in_one_line_unless_allowed_the_cpu(tmp_path):
    output = tmp_path / "report.json"
    result = run_command(SCRIPT, f"--output={output}", timeout=300)
    assert result.returncode != 0 and "Traceback" not in result.stderr
    line = last_line(result.stderr)
    assert line.startswith("device_check.py: error: TensorFlow sees no GPU"), line
    assert "--allow_cpu" in line
    assert not output.exists()


def test_compare_fails_a_step_that_is_skipped_wrong_or_not_finite():
    rng = np.random.default_rng(0)
    start = {"chains": rng.standard_normal([8, 4]),
             **{f"generator_{i}": rng.standard_normal(n) for i, n in enumerate((9, 3, 5))}}
    reference = {key: value + 0.1 * rng.standard_normal(value.shape)
                 for key, value in start.items()}

    def verdict(ours, precision="float32"):
        return comparison.compare(ours, reference, start, precision)["passed"]

    def off(fraction, keys=reference):  # reference moved by fraction of its change
        return {key: value + (fraction * (value - start[key]) if key in keys else 0)
                for key, value in reference.items()}

    assert verdict(reference) and verdict(reference, "mixed_bfloat16")
    assert not verdict(start) and not verdict(start, "mixed_bfloat16")  # skipped
    assert not verdict(off(-2.0), "mixed_float16")  # a step the wrong way
    # 3% of the change off is float error for a mixed step, not for a float32 one.
    assert not verdict(off(0.03)) and verdict(off(0.03), "mixed_bfloat16")
    # One weight of three 120% off (the output bias of a mixed step near a fit) fails
    # float32 only; the chains 20% off fail both.
    assert not verdict(off(1.2, ["generator_2"])) and verdict(off(1.2, ["generator_2"]),
                                                              "mixed_bfloat16")
    assert not verdict(off(0.2, ["chains"]), "mixed_bfloat16")
    nan = {**reference, "chains": np.where(np.eye(8, 4) > 0, np.nan, reference["chains"])}
    assert not verdict(nan, "mixed_bfloat16")


def test_a_failed_check_fails_the_run_and_still_writes_the_report(monkeypatch, tmp_path):
    device_check = load_benchmark("device_check")
    report = {"device": {"name": "/GPU:0", "description": "a GPU"}, "passed": False,
              "checks": {"step abp float32": True, "export and serve": False}}
    monkeypatch.setattr(device_check, "check_device", lambda *args: report)
    output = tmp_path / "report.json"
    with flagsaver.flagsaver():
        device_check.FLAGS.unparse_flags()
        device_check.FLAGS(["device_check.py", "--allow_cpu", f"--output={output}"])
        with pytest.raises(SystemExit) as stopped:
            device_check.main(["device_check.py"])
    assert stopped.value.code == (f"device_check.py: 1 of 2 checks failed on /GPU:0 (a "
                                  f"GPU): export and serve; details in {output}")
    assert json.loads(output.read_text()) == report
