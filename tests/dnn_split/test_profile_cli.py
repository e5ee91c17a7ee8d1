"""``cutedge profile``: the --list-cuts JSON schema, measured and estimated profiles that load
with ``controller.profiles.load_model``, one-line errors, and the built-in model profiles."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from controller.profiles import load_board, load_model
from cutedge.cli import main
from dnn_split.partition import partition

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
sys.path.insert(0, str(HERE))

TINY = ["--model", "tiny_split_models:tiny", "--input-shape", "3,16,16"]
needs_gpu = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def cli(capsys, *args: str) -> tuple[int, str, str]:
    rc = main(list(args))
    out, err = capsys.readouterr()
    return rc, out, err


def cli_proc(*args: str) -> subprocess.CompletedProcess:
    """A real ``python -m cutedge`` process (to see exit status and the whole stderr)."""
    env = dict(
        os.environ,
        PYTHONPATH=os.pathsep.join([str(HERE), str(REPO), os.environ.get("PYTHONPATH", "")]),
    )
    return subprocess.run(
        [sys.executable, "-m", "cutedge", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


# -- --list-cuts ---------------------------------------------------------------------------


def test_list_cuts_json_schema(capsys):
    rc, out, err = cli(capsys, "profile", *TINY, "--list-cuts", "--json")
    assert rc == 0
    cuts = json.loads(out)
    assert isinstance(cuts, list) and len(cuts) >= 4
    for i, c in enumerate(cuts):
        assert isinstance(c["name"], str) and c["name"]
        assert (
            isinstance(c["bytes"], int)
            and isinstance(c["tensors"], int)
            and isinstance(c["offered"], bool)
        )
        assert c["index"] == i
        assert c["tensors"] == len(c["crossing"]) >= 1
        assert c["bytes"] == sum(4 * math.prod(t["shape"]) for t in c["crossing"])
        assert c["head_flops"] + c["tail_flops"] == cuts[-1]["head_flops"]
    assert (
        cuts[0]["name"] == "input"
        and cuts[0]["bytes"] == 3 * 16 * 16 * 4
        and cuts[0]["head_flops"] == 0
    )
    assert cuts[-1]["offered"] and cuts[-1]["name"] == "fc" and cuts[-1]["bytes"] == 40
    assert any(c["tensors"] == 2 for c in cuts)  # the skip connection
    dropped = sum(not c["offered"] for c in cuts)
    assert dropped > 0 and f"{dropped} dropped" in err
    assert "random weights (seed 0)" in err


def test_list_cuts_with_compression_reports_bytes_and_error(capsys):
    rc, out, _ = cli(capsys, "profile", *TINY, "--list-cuts", "--json", "--compress", "int8")
    assert rc == 0
    cuts = json.loads(out)
    for c in cuts:
        assert c["compression"] == "int8"
        assert c["bytes"] == c["uncompressed_bytes"] // 4 + 8 * c["tensors"]
        if c["offered"]:
            assert 0 < c["max_abs_error"] < 1
        else:
            assert c["max_abs_error"] is None


def test_list_cuts_table(capsys):
    rc, out, _ = cli(capsys, "profile", *TINY, "--list-cuts")
    assert rc == 0
    lines = out.splitlines()
    assert lines[0].split()[:2] == ["cut", "name"] and "input" in lines[1]


# -- profiles ------------------------------------------------------------------------------


def test_measured_profile_loads(tmp_path, capsys):
    path = tmp_path / "tiny.yaml"
    rc, out, err = cli(
        capsys, "profile", *TINY, "--repeats", "3", "--warmup", "1", "--out", str(path)
    )
    assert rc == 0, err
    assert "timing" in err and f"wrote {path}" in err
    prof = load_model(path)
    assert prof.model == "tiny_split_models:tiny" and prof.input_shape == (3, 16, 16)
    assert prof.provenance["method"] == "measured"
    assert (
        "(cpu, " in prof.provenance["device"]
        and prof.provenance["edge_device"] == prof.provenance["device"]
    )
    assert prof.provenance["torch"] == str(torch.__version__) and prof.provenance["date"]
    offered = prof.offered
    assert offered[0].head_s == 0 and offered[0].tail_s > 0
    assert offered[-1].tail_s == 0 and offered[-1].head_s > 0
    assert all(c.head_s > 0 and c.tail_s > 0 for c in offered[1:-1])
    assert prof.result_bytes == 40
    raw = yaml.safe_load(path.read_text())
    candidates = len(
        partition("tiny_split_models:tiny", (3, 16, 16), announce=lambda line: None).cuts
    )
    assert raw["dropped_cuts"] + len(raw["cuts"]) == candidates and raw["dropped_cuts"] > 0
    assert [c["index"] for c in raw["cuts"]][0] == 0 and raw["cuts"][-1]["index"] == candidates - 1


def test_measured_profile_with_all_cuts_keeps_the_dropped_ones(tmp_path, capsys):
    path = tmp_path / "all.yaml"
    rc, _, err = cli(
        capsys,
        "profile",
        *TINY,
        "--repeats",
        "1",
        "--warmup",
        "0",
        "--all-cuts",
        "--out",
        str(path),
    )
    assert rc == 0, err
    prof = load_model(path)
    assert any(not c.offered for c in prof.cuts) and len(prof.offered) < len(prof.cuts)
    assert all(c.head_s > 0 for c in prof.cuts[1:])
    assert "dropped_cuts" not in yaml.safe_load(path.read_text())


def test_estimated_profile_uses_the_reference_board_and_edge(tmp_path, capsys):
    path = tmp_path / "est.yaml"
    rc, _, err = cli(
        capsys,
        "profile",
        "--model",
        "resnet18",
        "--input-shape",
        "3,64,64",
        "--estimate",
        "--out",
        str(path),
    )
    assert rc == 0, err
    prof = load_model(path)
    board = load_board("jetson-tx2")
    prov = prof.provenance
    assert prov["method"] == "flops-estimate" and prov["board"] is None
    assert "10 TFLOP/s" in prov["edge_device"] and "jetson-tx2" in prov["device"]
    for c in prof.offered:
        assert c.head_s == pytest.approx(float(board.time_at_max_s(c.head_flops)), rel=1e-5)
        assert c.tail_s == pytest.approx(c.tail_flops / 10e12, rel=1e-5)
    # resnet18 at 64x64: offered cuts as in the partitioner
    part = partition("resnet18", (3, 64, 64), announce=lambda line: None)
    assert [c.name for c in prof.offered] == [c.name for c in part.offered]
    assert [c.bytes for c in prof.offered] == [c.bytes for c in part.offered]


def test_estimate_with_compression_writes_wire_bytes_and_error(tmp_path, capsys):
    path = tmp_path / "int8.yaml"
    rc, _, err = cli(
        capsys, "profile", *TINY, "--estimate", "--compress", "int8", "--out", str(path)
    )
    assert rc == 0, err
    prof = load_model(path)
    assert prof.provenance["compression"] == "int8"
    assert prof.offered[0].bytes == 3 * 16 * 16 + 8
    raw = yaml.safe_load(path.read_text())
    assert all(c["max_abs_error"] >= 0 for c in raw["cuts"])


def test_built_in_model_profiles_are_current():
    """configs/models/*.yaml come from scripts/make_model_profiles.py and match the partitioner."""
    for name in ("resnet50", "mobilenet_v2", "vgg16"):
        prof = load_model(name)
        assert "scripts/make_model_profiles.py" in prof.provenance["generator"]
        assert prof.provenance["method"] == "flops-estimate" and prof.input_shape == (3, 224, 224)
    for name in ("resnet50", "mobilenet_v2"):
        part = partition(name, (3, 224, 224), announce=lambda line: None)
        got = [(c.name, c.bytes, c.head_flops, c.tail_flops) for c in load_model(name).offered]
        assert got == [
            (c.name, c.bytes, float(c.head_flops), float(c.tail_flops)) for c in part.offered
        ]


# -- errors --------------------------------------------------------------------------------


def _one_error_line(proc: subprocess.CompletedProcess) -> str:
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, proc.stderr
    return errors[0]


def test_untraceable_model_is_one_error_line():
    proc = cli_proc(
        "profile",
        "--model",
        "tiny_split_models:untraceable",
        "--input-shape",
        "3,8,8",
        "--list-cuts",
    )
    line = _one_error_line(proc)
    assert (
        "tiny_split_models:untraceable: torch.fx cannot trace module 'post.1' (Gate.forward)"
        in line
    )
    assert "if x.mean() > 0:" in line


def test_unknown_model_is_one_error_line():
    line = _one_error_line(cli_proc("profile", "--model", "resnet5000", "--list-cuts"))
    assert "unknown model 'resnet5000'" in line


@pytest.mark.parametrize(
    "args,message",
    [
        (["--input-shape", "3,x,16", "--list-cuts"], "--input-shape: input shape '3,x,16'"),
        (["--json"], "--json goes with --list-cuts"),
        (["--list-cuts", "--estimate"], "do not go together"),
        (
            ["--weights", "/nonexistent/w.pt", "--list-cuts"],
            "/nonexistent/w.pt: weights file not found",
        ),
        (["--estimate", "--board", "no-such-board"], "no such board"),
        (
            ["--model", "googlenet", "--input-shape", "3,8,8", "--list-cuts"],
            "googlenet: running it on input shape [3, 8, 8] failed at node 'maxpool3'",
        ),
    ],
)
def test_bad_arguments_are_one_error_line(capsys, args, message):
    rc, out, err = cli(capsys, "profile", "--model", "tiny_split_models:tiny", *args)
    assert rc == 2 and out == ""
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and message in errors[0], err


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_cuda_without_a_gpu_is_one_error_line(capsys):
    rc, _, err = cli(capsys, "profile", *TINY, "--device", "cuda")
    assert rc == 2 and "error: --device cuda: no CUDA device" in err


# -- GPU -----------------------------------------------------------------------------------


@pytest.mark.gpu
@needs_gpu
@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_cuda_profile_loads(tmp_path, capsys, dtype):
    path = tmp_path / f"cuda-{dtype}.yaml"
    rc, _, err = cli(
        capsys,
        "profile",
        "--model",
        "resnet18",
        "--input-shape",
        "3,64,64",
        "--device",
        "cuda",
        "--dtype",
        dtype,
        "--repeats",
        "5",
        "--out",
        str(path),
    )
    assert rc == 0, err
    prof = load_model(path)
    assert prof.provenance["method"] == "measured" and "(cuda)" in prof.provenance["device"]
    assert prof.dtype == dtype
    assert all(c.head_s > 0 for c in prof.offered[1:]) and all(
        c.tail_s > 0 for c in prof.offered[:-1]
    )
    if dtype == "float16":
        assert prof.offered[0].bytes == 3 * 64 * 64 * 2


@pytest.mark.gpu
@needs_gpu
def test_cuda_split_is_exact():
    part = partition("resnet50", (3, 64, 64), announce=lambda line: None).to("cuda")
    x = part.example_input(batch=2).cuda()
    with torch.inference_mode():
        ref = part.model(x)
        for c in part.offered:
            torch.testing.assert_close(part.run_split(c, x), ref, rtol=1e-5, atol=1e-5)


def test_gpu_clock_is_read_from_a_jetson_devfreq_tree(tmp_path):
    """The TX2 layout of boards/jetson.md section 2.1: of_node name gp10b, cur_freq in Hz."""
    from dnn_split.profile import read_gpu_clock_hz

    other = tmp_path / "2200000.emc" / "device" / "of_node"
    other.mkdir(parents=True)
    (other / "name").write_text("emc\x00")
    (tmp_path / "2200000.emc" / "cur_freq").write_text("1866000000\n")
    gpu = tmp_path / "17000000.gp10b"
    (gpu / "device" / "of_node").mkdir(parents=True)
    (gpu / "device" / "of_node" / "name").write_text("gp10b\x00")
    (gpu / "cur_freq").write_text("1300500000\n")
    assert read_gpu_clock_hz(torch.device("cuda"), sysfs=tmp_path) == 1_300_500_000
    assert read_gpu_clock_hz(torch.device("cpu"), sysfs=tmp_path) is None
