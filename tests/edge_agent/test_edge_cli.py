"""``cutedge edge`` and ``cutedge keys``: a bad argument is one error line, never a traceback."""

from __future__ import annotations

import os
import stat

import pytest
import torch
import zmq
from edge_tinynet import MODEL

from cutedge.cli import main
from wire.curve import load_key_file

TINY = f"{MODEL}@3x16x16"


def run(args, capsys):
    rc = main(args)
    out = capsys.readouterr()
    assert "Traceback" not in out.err
    return rc, out.out, out.err


@pytest.fixture
def keys(tmp_path, capsys):
    assert run(["keys", "--out", str(tmp_path), "--name", "edge"], capsys)[0] == 0
    assert run(["keys", "--out", str(tmp_path / "clients"), "--name", "dev"], capsys)[0] == 0
    (tmp_path / "empty").mkdir()
    return tmp_path


@pytest.mark.parametrize(
    "args, message",
    [
        (["--bind", "localhost:5555"], "expected tcp://ADDR:PORT"),
        (["--bind", "tcp://127.0.0.1:70000"], "outside 0..65535"),
        (["--bind", "tcp://127.0.0.1:0", "--workers", "0"], "--workers"),
        (["--bind", "tcp://127.0.0.1:0", "--max-message-bytes", "100"], "--max-message-bytes"),
        (["--bind", "tcp://127.0.0.1:0", "--max-batch", "0"], "--max-batch"),
        (["--bind", "tcp://127.0.0.1:0", "--max-batch", "5000"], "--max-batch"),
        (["--bind", "tcp://127.0.0.1:0", "--max-wait-ms", "-1"], "--max-wait-ms"),
        (["--bind", "tcp://127.0.0.1:0", "--max-wait-ms", "2000"], "--max-wait-ms"),
        (["--bind", "tcp://127.0.0.1:0", "--max-request-batch", "0"], "--max-request-batch"),
        (["--bind", "tcp://127.0.0.1:0", "--models", "nosuchmodel"], "unknown model 'nosuchmodel'"),
        (["--bind", "tcp://127.0.0.1:0", "--models", "a b"], "model id 'a b'"),
        (["--bind", "tcp://127.0.0.1:0", "--models", f"{TINY},{TINY}"], "given twice"),
        (["--bind", "tcp://127.0.0.1:0", "--models", f"{MODEL}@3xfoo"], "input shape"),
        (["--bind", "tcp://127.0.0.1:0", "--models", TINY, "--input-shape", "0"], "--input-shape"),
        (
            ["--bind", "tcp://127.0.0.1:0", "--models", TINY, "--weights", "nofile"],
            "expected MODEL=FILE",
        ),
        (
            ["--bind", "tcp://127.0.0.1:0", "--models", TINY, "--weights", "other=w.pt"],
            "not among --models",
        ),
        (
            [
                "--bind",
                "tcp://127.0.0.1:0",
                "--models",
                TINY,
                "--weights",
                f"{MODEL}=/nonexistent/w.pt",
            ],
            "weights file not found",
        ),
        (
            ["--bind", "tcp://127.0.0.1:0", "--models", TINY, "--max-message-bytes", "4096"],
            "smaller than one request",
        ),
        # an exposed edge without CURVE or an address list is refused, naming the way out
        (["--bind", "tcp://0.0.0.0:0", "--models", TINY], "--insecure to serve anyone"),
        (["--bind", "tcp://*:0", "--models", TINY], "reachable from other machines with CURVE off"),
        (["--bind", "tcp://127.0.0.1:0", "--allow", "10.0.0.300"], "--allow '10.0.0.300'"),
        (["--bind", "tcp://127.0.0.1:0", "--allow", "host.example"], "expected an IP address"),
        (["--bind", "tcp://127.0.0.1:0", "--max-connections", "0"], "--max-connections"),
        (["--bind", "tcp://127.0.0.1:0", "--models", TINY, "--pool-workers", "3"], "--pool-workers sets up a pool"),
        (["--bind", "tcp://127.0.0.1:0", "--models", TINY, "--pool-attempts", "2"], "--pool-attempts sets up a pool"),
        (["--bind", "tcp://127.0.0.1:0", "--target-utilisation", "0"], "--target-utilisation"),
        (["--bind", "tcp://127.0.0.1:0", "--target-utilisation", "1.5"], "--target-utilisation"),
    ],
)
def test_bad_edge_arguments(args, message, capsys):
    rc, _, err = run(["edge", *args], capsys)
    assert rc == 2
    assert message in err


@pytest.mark.parametrize(
    "curve_args, message",
    [
        (lambda d: ["--curve-secret", str(d / "edge.key_secret")], "go together"),
        (lambda d: ["--curve-clients", str(d / "clients")], "go together"),
        (
            lambda d: [
                "--curve-secret",
                str(d / "nope.key_secret"),
                "--curve-clients",
                str(d / "clients"),
            ],
            "key file not found",
        ),
        (
            lambda d: [
                "--curve-secret",
                str(d / "edge.key"),
                "--curve-clients",
                str(d / "clients"),
            ],
            "no secret key",
        ),
        (
            lambda d: [
                "--curve-secret",
                str(d / "edge.key_secret"),
                "--curve-clients",
                str(d / "empty"),
            ],
            "no client public keys",
        ),
        (
            lambda d: [
                "--curve-secret",
                str(d / "edge.key_secret"),
                "--curve-clients",
                str(d / "missing"),
            ],
            "folder not found",
        ),
    ],
)
def test_bad_curve_arguments(keys, curve_args, message, capsys):
    rc, _, err = run(
        ["edge", "--bind", "tcp://127.0.0.1:0", "--models", TINY, *curve_args(keys)], capsys
    )
    assert rc == 2 and message in err
    assert err.startswith("error:") and err.count("\n") == 1


def test_port_in_use_is_one_error_line(capsys):
    ctx = zmq.Context()
    s = ctx.socket(zmq.ROUTER)
    port = s.bind_to_random_port("tcp://127.0.0.1")
    try:
        rc, _, err = run(["edge", "--bind", f"tcp://127.0.0.1:{port}", "--models", TINY], capsys)
    finally:
        s.close(linger=0)
        ctx.term()
    assert rc == 2
    assert f"error: --bind tcp://127.0.0.1:{port}: cannot bind" in err


@pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA GPU is present")
def test_cuda_without_a_gpu_is_refused(capsys):
    rc, _, err = run(
        ["edge", "--bind", "tcp://127.0.0.1:0", "--models", TINY, "--device", "cuda"], capsys
    )
    assert rc == 2 and "--device cuda: no CUDA GPU" in err


def test_keys_command(tmp_path, capsys):
    rc, out, _ = run(["keys", "--out", str(tmp_path / "k"), "--name", "board7"], capsys)
    assert rc == 0 and "board7.key" in out
    sec = tmp_path / "k" / "board7.key_secret"
    assert stat.S_IMODE(os.stat(sec).st_mode) == 0o600
    public, secret = load_key_file(sec, need_secret=True)
    assert len(public) == 40 and secret is not None
    rc, _, err = run(["keys", "--out", str(tmp_path / "k"), "--name", "board7"], capsys)
    assert rc == 2 and "already exists (pass --force" in err
    rc, _, _ = run(["keys", "--out", str(tmp_path / "k"), "--name", "board7", "--force"], capsys)
    assert rc == 0 and load_key_file(sec, need_secret=True)[0] != public
    rc, _, err = run(["keys", "--out", str(tmp_path / "k"), "--name", "../x"], capsys)
    assert rc == 2 and "key name" in err
    afile = tmp_path / "file"
    afile.write_text("x")
    rc, _, err = run(["keys", "--out", str(afile)], capsys)
    assert rc == 2 and "is a file" in err
