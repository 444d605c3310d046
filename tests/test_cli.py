"""The ``ledit`` command's errors: one line, ``ledit <command>: error: <what and how to fix>``, exit status 2 for a
bad command line and 1 for a failure while running, and a traceback only with --debug or LEDIT_DEBUG=1.

BAD_COMMAND_LINES is the table of docs/errors.md: every case there is run here, in-process through ``main`` (the
console entry point, the same code path as the installed command), and a few through a real ``python -m ledit``
subprocess. Nothing here needs a checkpoint or data: the checks run before any file is read.
"""

import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from ledit.arguments import UsageError
from ledit.cli import DEBUG_ENV, SUBCOMMANDS, main, run

# (command line, exit status, a piece of the one-line message)
BAD_COMMAND_LINES = [
    ([], 2, "usage: ledit <command>"),
    (["smaple"], 2, "ledit: error: unknown command 'smaple'; commands: demo, sample,"),
    (["sample"], 2, "the following arguments are required: --ckpt (see `ledit sample --help`)"),
    (["sample", "--ckpt", "c.pt", "--cfg-scale", "nan"], 2, "argument --cfg-scale: 'nan' is not a finite number"),
    (["sample", "--ckpt", "c.pt", "--cfg-scale", "-3"], 2,
     "argument --cfg-scale: must be a number >= 1 (1 = no guidance"),
    (["sample", "--ckpt", "c.pt", "--cfg-scale", "0"], 2, "argument --cfg-scale: must be a number >= 1"),
    (["sample", "--ckpt", "c.pt", "--height", "0"], 2, "argument --height: must be a whole number >= 1, got 0"),
    (["sample", "--ckpt", "c.pt", "--width", "-16"], 2, "argument --width: must be a whole number >= 1, got -16"),
    (["sample", "--ckpt", "c.pt", "--output", "x.gif"], 2, "argument --output: 'x.gif': the file format follows"),
    (["sample", "--ckpt", "c.pt", "--model-kwargs", "[1,2]"], 2, "'[1,2]' is a JSON list, not an object"),
    (["sample", "--ckpt", "c.pt", "--model", "LEDiT-XXL/2"], 2, "argument --model: unknown model 'LEDiT-XXL/2'"),
    (["sample", "--ckpt", "c.pt", "--num-sampling-steps", "0"], 2, "argument --num-sampling-steps: must be"),
    (["sample", "--ckpt", "c.pt", "--sampler", "ddim", "--num-sampling-steps", "1001"], 2,
     "--sampler ddim --num-sampling-steps 1001: timestep_respacing='ddim1001': no integer stride"),
    (["sample", "--ckpt", "c.pt", "--seed", "-1"], 2, "argument --seed: must be a seed in [0, 4294967295]"),
    (["sample", "--ckpt", "c.pt", "--nrow", "0"], 2, "argument --nrow: must be a whole number >= 1"),
    (["sample", "--ckpt", "c.pt", "--class-labels", "-1"], 2, "argument --class-labels: must be a whole number >= 0"),
    (["sample", "--ckpt", "c.pt", "--device", "gpu"], 2, "argument --device: 'gpu' is not a device"),
    (["sample", "--ckpt", "c.pt", "--timestep-shift", "0"], 2, "--timestep-shift must be 'auto'"),
    (["sample", "--ckpt", "c.pt", "--guidance-interval", "0.7,0.1"], 2, "--guidance-interval 0.7,0.1: need 0 <="),
    (["sample-ddp", "--ckpt", "c.pt", "--per-proc-batch-size", "0"], 2, "argument --per-proc-batch-size: must be"),
    (["sample-ddp", "--ckpt", "c.pt", "--num-fid-samples", "0"], 2, "argument --num-fid-samples: must be"),
    (["train", "--data-path", "d", "--global-batch-size", "0"], 2, "argument --global-batch-size: must be a whole"),
    (["train", "--data-path", "d", "--ckpt-every", "0"], 2, "argument --ckpt-every: must be a whole number >= 1"),
    (["train", "--data-path", "d", "--log-every", "0"], 2, "argument --log-every: must be a whole number >= 1"),
    (["train", "--data-path", "d", "--max-steps", "0"], 2, "argument --max-steps: must be a whole number >= 1"),
    (["train", "--data-path", "d", "--ema-decay", "2"], 2, "argument --ema-decay: must be a number in [0, 1], got 2"),
    (["train", "--data-path", "d", "--lr", "-0.5"], 2, "argument --lr: must be a number >= 0"),
    (["train", "--data-path", "d", "--multi-dilation-prob", "1.5"], 2,
     "argument --multi-dilation-prob: must be a number in [0, 1]"),
    (["train", "--data-path", "d", "--num-workers", "-1"], 2, "argument --num-workers: must be a whole number >= 0"),
    (["train", "--data-path", "d", "--image-size", "-16"], 2, "argument --image-size: must be a whole number >= 1"),
    (["train", "--data-path", "d", "--model-kwargs", "[1,2]"], 2, "argument --model-kwargs: '[1,2]' is a JSON list"),
    (["train", "--data-path", "d", "--check-images", "deep"], 2, "argument --check-images: invalid choice: 'deep'"),
    (["train"], 2, "--data-path is required (a latent-shard folder or an ImageFolder)"),
    (["train", "--data-path", "d", "--model-kwargs", '{"depth": 2}'], 2,
     "--model-kwargs sets depth, which --model LEDiT-XL/2 fixes: for a custom size pass --model LEDiT with all of "
     "depth, hidden_size, patch_size, num_heads, e.g. --model LEDiT --model-kwargs '{\"depth\": 12, "),
    (["train", "--data-path", "d", "--model-kwargs", '{"dept": 2}'], 2, "unexpected keyword argument 'dept'"),
    (["train", "--data-path", "d", "--model", "DiT-S/2", "--multi-dilation-prob", "0.2"], 2,
     "--multi-dilation-prob applies to LEDiT models, not --model DiT-S/2"),
    (["train", "--data-path", "d", "--device", "cuda"], 1, "--device cuda:0: "),
    (["train", "--data-path", "d", "--init-from-dit", "DiT-XL-2-256x256.pt"], 1,
     "--init-from-dit 'DiT-XL-2-256x256.pt' does not exist"),
    (["sample", "--ckpt", "missing.pt"], 1, "--ckpt 'missing.pt' does not exist"),
    (["extract-latents", "--data-path", "d", "--features-path", "f", "--batch-size", "0"], 2,
     "argument --batch-size: must be a whole number >= 1"),
    (["extract-latents", "--data-path", "d", "--features-path", "f", "--shard-size", "0"], 2,
     "argument --shard-size: must be"),
    (["extract-latents", "--data-path", "d", "--features-path", "f", "--vae", "none", "--device", "cpu"], 2,
     "extract-latents needs a VAE"),
    (["convert-dit", "--ckpt", "c.pt", "--output", "x.safetensors"], 2, "argument --output: 'x.safetensors': the "
     "file format follows the extension; use .pt or .pth"),
    (["diffusers"], 2, "the following arguments are required: {export,import}"),
    (["diffusers", "export", "--ckpt", "c.pt", "--output", "out", "--scheduler", "ddpm"], 2,
     "--scheduler and --id2label belong to a pipeline: pass --vae"),
    (["diffusers", "import", "--folder", "f", "--output", "x.safetensors"], 2, "use .pt or .pth"),
    (["diffusers", "import", "--folder", "f", "--output", "x.pt", "--model-kwargs", "[1]"], 2,
     "argument --model-kwargs: '[1]' is a JSON list"),
    (["fid"], 2, "pass a sample set and exactly one reference"),
    (["fid", "s.npz", "r.npz", "--num-samples", "0"], 2, "argument --num-samples: must be a whole number >= 1"),
    (["fid", "s.npz", "r.npz", "--metrics", "fid,kid"], 2, "argument --metrics: 'fid,kid': unknown kid; choose"),
    (["fid", "s.npz", "r.npz", "--output", "results.csv"], 2, "argument --output: 'results.csv': the file format"),
    (["fid", "--build-ref-stats", "images"], 2, "--build-ref-stats needs --ref-stats OUT.npz"),
    (["fid", "s.npz", "r.npz", "--height", "512"], 2, "--height applies only with --build-ref-stats"),
    (["fid", "s.npz", "--ref-stats", "stats.txt"], 2, "argument --ref-stats: 'stats.txt': the file format"),
    (["bench", "--suites", "attention,nope"], 2, "argument --suites: 'attention,nope': unknown nope"),
    (["bench", "--threads", "0"], 2, "argument --threads: must be a whole number >= 1"),
    (["bench", "--repeats", "0"], 2, "argument --repeats: must be a whole number >= 1"),
    (["bench", "--device", "tpu"], 2, "argument --device: invalid choice: 'tpu'"),
    (["info", "--verbose"], 2, "unrecognized arguments: --verbose"),
]


def one_line_error(capsys, argv):
    """(exit status, the single stderr line) of ``ledit <argv>``, checking that stderr is one line."""
    with pytest.raises(SystemExit) as exited:
        main(argv)
    err = capsys.readouterr().err
    assert "Traceback" not in err, err
    lines = err.strip().splitlines()
    assert argv == [] or len(lines) == 1, err
    return exited.value.code, lines[0] if argv else err


@pytest.mark.parametrize("argv, status, message", BAD_COMMAND_LINES, ids=[" ".join(c[0]) or "-" for c in
                                                                          BAD_COMMAND_LINES])
def test_bad_command_lines_get_one_line_and_the_right_status(capsys, tmp_path, monkeypatch, argv, status, message):
    monkeypatch.chdir(tmp_path)  # nothing may be written: checked below
    code, line = one_line_error(capsys, argv)
    assert code == status, line
    assert message in line, line
    if argv:
        command = argv[0] if argv[0] in SUBCOMMANDS else None
        assert line.startswith(f"ledit {command}: error: " if command else "ledit: error: "), line
    assert not any(tmp_path.iterdir())


def test_a_torch_version_without_cuda_says_so(capsys, monkeypatch):
    monkeypatch.setattr(torch.version, "cuda", None)
    code, line = one_line_error(capsys, ["fid", "s.npz", "r.npz", "--device", "cuda:1"])
    assert code == 1
    assert f"--device cuda:1: this torch {torch.__version__} is a CPU-only build; install a CUDA build" in line


def test_runtime_failures_are_one_line_with_status_1(capsys, tmp_path):
    garbage = tmp_path / "garbage.pt"
    garbage.write_text("not a checkpoint\n" * 10)
    code, line = one_line_error(capsys, ["sample", "--ckpt", str(garbage), "--vae", "none"])
    assert code == 1 and f"cannot read checkpoint '{garbage}': truncated, corrupt or not" in line
    bad_npz = tmp_path / "bad.npz"
    bad_npz.write_bytes(os.urandom(100))
    code, line = one_line_error(capsys, ["fid", str(bad_npz), str(bad_npz), "--metrics", "swd"])
    assert code == 1 and f"'{bad_npz}' is not a readable .npz archive (BadZipFile" in line
    empty = tmp_path / "empty.npz"
    np.savez(empty, arr_0=np.zeros((0, 8, 8, 3), np.uint8))
    code, line = one_line_error(capsys, ["fid", str(empty), str(empty), "--metrics", "swd"])
    assert code == 1 and f"'{empty}' holds no images" in line
    code, line = one_line_error(capsys, ["fid", str(tmp_path / "missing.npz"), str(empty), "--metrics", "swd"])
    assert code == 1 and "is neither an .npz file nor an image folder" in line


def test_an_unexpected_error_names_its_type_and_the_debug_switch(capsys, monkeypatch):
    def broken(args):
        raise KeyError("args")

    import ledit.info

    monkeypatch.setattr(ledit.info, "main", broken)
    code, line = one_line_error(capsys, ["info"])
    assert code == 1 and line == f"ledit info: error: KeyError: 'args' (--debug or {DEBUG_ENV}=1 shows the traceback)"
    with pytest.raises(KeyError):
        main(["info", "--debug"])
    with pytest.raises(KeyError):
        main(["--debug", "info"])
    monkeypatch.setenv(DEBUG_ENV, "1")
    with pytest.raises(KeyError):
        main(["info"])


def test_an_error_in_a_dataloader_worker_shows_the_worker_s_error(capsys, monkeypatch):
    message = ("Caught ValueError in DataLoader worker process 1.\nOriginal Traceback (most recent call last):\n"
               '  File "x.py", line 1, in f\nValueError: cannot read image \'a.png\' (OSError: truncated)')

    def broken(args):
        raise ValueError(message)

    import ledit.info

    monkeypatch.setattr(ledit.info, "main", broken)
    _, line = one_line_error(capsys, ["info"])
    assert line == ("ledit info: error: ValueError: cannot read image 'a.png' (OSError: truncated) (ValueError in "
                    "DataLoader worker process 1)")


def test_ctrl_c_is_one_line_with_status_130(capsys, monkeypatch):
    def interrupted(args):
        raise KeyboardInterrupt

    import ledit.info

    monkeypatch.setattr(ledit.info, "main", interrupted)
    assert one_line_error(capsys, ["info"]) == (130, "ledit info: interrupted")


def test_help_exits_0_and_run_raises_instead_of_exiting(capsys):
    main(["--help"])
    assert "commands:" in capsys.readouterr().out
    with pytest.raises(UsageError, match=r"argument --cfg-scale: 'nan' is not a finite number \(see `ledit sample"):
        run(["sample", "--ckpt", "c.pt", "--cfg-scale", "nan"])


def ledit_process(*argv, env=None):
    return subprocess.run([sys.executable, "-m", "ledit", *argv], capture_output=True, text=True, timeout=300,
                          env={**os.environ, **(env or {})})


def test_the_installed_command_prints_one_line_and_exits_2_or_1(tmp_path):
    done = ledit_process("sample", "--ckpt", "c.pt", "--cfg-scale", "nan")
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr == ("ledit sample: error: argument --cfg-scale: 'nan' is not a finite number (see `ledit "
                           "sample --help`)\n")
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"\x80\x02}q\x00X\x01")  # a pickle cut off mid-write
    done = ledit_process("sample", "--ckpt", str(garbage), "--vae", "none", "--device", "cpu")
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert done.stderr.startswith(f"ledit sample: error: cannot read checkpoint '{garbage}'")
    assert len(done.stderr.splitlines()) == 1
    done = ledit_process()
    assert done.returncode == 2 and done.stderr.startswith("usage: ledit <command>")


def test_debug_and_the_environment_variable_show_the_traceback(tmp_path):
    garbage = tmp_path / "garbage.pt"
    garbage.write_text("garbage")
    for done in (ledit_process("sample", "--ckpt", str(garbage), "--vae", "none", "--debug"),
                 ledit_process("sample", "--ckpt", str(garbage), "--vae", "none", env={DEBUG_ENV: "1"})):
        assert done.returncode == 1
        assert "Traceback (most recent call last)" in done.stderr and "CheckpointError" in done.stderr
