"""User errors of the Lightning-based commands end as one ``error:`` line on stderr and exit status 2, without a
traceback (``--verbose`` adds it); third-party console noise is hidden unless asked for (issue 16, items 13-14)."""

from __future__ import annotations

import io
import logging
import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

from runkit.console import NoiseFilteredStream, quiet_third_party, strip_verbose, verbose_requested
from runkit.entry import OptionError, stage_main

REPO = Path(__file__).resolve().parents[1]


def _run(stage: str, *args: str, tmp_path: Path) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", stage, "fit", *args, "--trainer.accelerator", "cpu",
           "--trainer.default_root_dir", str(tmp_path / "run")]
    env = {k: v for k, v in os.environ.items() if k != "BRAINFORGE_LOG_LEVEL"}
    return subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)


def _assert_one_line_error(res: subprocess.CompletedProcess, *names: str) -> None:
    assert res.returncode == 2, res.stderr[-3000:]
    assert "Traceback" not in res.stderr + res.stdout
    errors = [line for line in res.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, res.stderr[-3000:]
    for name in names:
        assert name in errors[0], errors[0]


@pytest.mark.slow
def test_tokenizer_fit_missing_shards(tmp_path) -> None:
    res = _run("tokenizer", "--data.train", "/nonexistent", tmp_path=tmp_path)
    _assert_one_line_error(res, "/nonexistent")
    assert "litlogger" not in res.stdout + res.stderr  # Lightning's tip is noise


@pytest.mark.slow
def test_finetune_fit_missing_task(tmp_path) -> None:
    res = _run("finetune", "--data.path", "/nonexistent.csv", "--model.baseline", "eegnet", tmp_path=tmp_path)
    _assert_one_line_error(res, "/nonexistent.csv")


@pytest.mark.slow
def test_finetune_fit_without_backbone(tmp_path, fixtures) -> None:
    res = _run("finetune", "--data.path", str(fixtures / "demo_task.csv"), tmp_path=tmp_path)
    _assert_one_line_error(res, "--model.backbone")


def test_stage_main_reports_user_errors_and_verbose_adds_the_traceback(capsys, monkeypatch) -> None:
    monkeypatch.setenv("BRAINFORGE_LOG_LEVEL", "WARNING")  # recorded, so what strip_verbose sets is undone
    monkeypatch.setattr(sys, "stdout", sys.stdout)  # stage_main's quiet_third_party wraps it: undone after the test

    class StageError(Exception):
        pass

    def fail(error: Exception):
        def run_cli(args):
            raise error
        return run_cli

    def tools(args):
        return 0

    assert stage_main(["fit"], "doc", (), tools, fail(StageError("no shards at\n  /x")), lambda: (StageError,)) == 2
    err = capsys.readouterr().err
    assert err == "error: no shards at /x\n"
    assert stage_main(["fit"], "doc", (), tools, fail(OptionError("--model.backbone is required"))) == 2
    assert capsys.readouterr().err == "error: --model.backbone is required\n"
    with pytest.raises(RuntimeError):  # not a user error: the traceback stays
        stage_main(["fit"], "doc", (), tools, fail(RuntimeError("bug")), lambda: (StageError,))
    assert stage_main(["fit", "--verbose"], "doc", (), tools, fail(StageError("bad")), lambda: (StageError,)) == 2
    err = capsys.readouterr().err
    assert "Traceback" in err and err.endswith("error: bad\n")


def test_verbose_flag_and_environment(monkeypatch) -> None:
    monkeypatch.setenv("BRAINFORGE_LOG_LEVEL", "WARNING")  # recorded, so what strip_verbose sets is undone
    assert not verbose_requested(["fit"])
    assert verbose_requested(["fit", "--verbose"])
    assert strip_verbose(["fit", "--verbose", "-c", "x.yaml"]) == ["fit", "-c", "x.yaml"]
    assert verbose_requested([])  # strip_verbose passed it on to child processes through the environment
    monkeypatch.setenv("BRAINFORGE_LOG_LEVEL", "warning")
    assert not verbose_requested([])
    monkeypatch.setenv("BRAINFORGE_LOG_LEVEL", "DEBUG")
    assert verbose_requested([])


def test_noise_is_filtered_and_our_output_kept(monkeypatch) -> None:
    out = io.StringIO()
    stream = NoiseFilteredStream(out)
    print("Create an account on https://lightning.ai/ to optimize your data faster", file=stream)
    print("Setting multiprocessing start_method to spawn. ", file=stream)
    print("wrote 12 windows", file=stream)
    stream.write("progress 50%")
    stream.flush()
    assert out.getvalue() == "wrote 12 windows\nprogress 50%"

    monkeypatch.setattr(sys, "stdout", sys.stdout)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        quiet_third_party()
        warnings.warn("Found 3 module(s) in eval mode at the start of training.", UserWarning, stacklevel=1)
        warnings.warn("Your `IterableDataset` has `__len__` defined. In combination with ...", UserWarning, stacklevel=1)
        warnings.warn("our own warning", UserWarning, stacklevel=1)
    assert [str(w.message) for w in caught] == ["our own warning"]
    record = logging.LogRecord("lightning.pytorch.utilities.rank_zero", logging.INFO, "", 0,
                               "💡 Tip: For seamless cloud logging and experiment tracking, try litlogger", None, None)
    assert not logging.getLogger("lightning.pytorch.utilities.rank_zero").filter(record)
