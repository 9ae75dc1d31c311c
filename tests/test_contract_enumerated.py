"""The CLI contract by enumeration (issue 16), not by hand-listed cases.

Every subcommand of `python -m csae_core` and of `checkpoints/zoo.py`, every argument each one has (the
train flags are generated from TrainConfig and ModelConfig, so a new field is probed without touching this
file), each driven with every odd value: 0, negative, huge, NaN, empty, /dev/zero, a FIFO, a directory.
The rest of the command line is valid and small (a tiny fixture model and dataset). Each case must end
with exit code 0 or 2, a one-line error on 2, no traceback, within CASE_SECONDS, and raise the process's
peak memory by at most MAX_RSS_GROWTH_MB.

The default run probes `train` up to the start of training (train() itself is replaced by a stub that
only builds the model, so the suite stays fast); `-m slow` runs the real training too.
"""
from __future__ import annotations

import argparse
import contextlib
import io
import os
import resource
import signal
import stat
import traceback
from pathlib import Path
from unittest import mock

import numpy as np
import pytest
import torch
from PIL import Image

from csae_core import cli
from reliability_counts import record

ROOT = Path(__file__).resolve().parents[1]
CASE_SECONDS = 60
MAX_RSS_GROWTH_MB = 200
ODD = ("0", "-1", "1" + "0" * 30, "nan", "", "ZERO", "FIFO", "DIR")  # ZERO: /dev/zero (see `env`)


def _run_main(main, argv) -> tuple[int, str]:
    """(exit code, stderr) of main(argv) in this process; an escaping exception counts as a traceback."""
    err = io.StringIO()

    def timeout(*_):
        raise TimeoutError(f"no answer in {CASE_SECONDS} s")

    old = signal.signal(signal.SIGALRM, timeout)
    signal.alarm(CASE_SECONDS)
    threads = torch.get_num_threads()
    try:
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(err):
            try:
                code = main(argv)
            except SystemExit as e:
                code = e.code if isinstance(e.code, int) else 1
            except BaseException:  # noqa: BLE001 - what the contract forbids
                traceback.print_exc()
                code = 1
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)
        torch.set_num_threads(threads)  # --threads changes it process-wide
    return code, err.getvalue()


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def check(main, argv: list[str], what: str) -> None:
    before = _peak_mb()
    code, err = _run_main(main, argv)
    record("bad inputs tried (round 2)", 1)
    lines = err.strip().splitlines()
    assert "Traceback" not in err and "Segmentation" not in err, f"{what}: {err[-1500:]}"
    assert code in (0, 2), f"{what}: exit {code}: {err[-800:]}"
    if code == 2:
        assert lines and "error" in lines[-1], f"{what}: exit 2 without an error line: {err[-800:]}"
        assert not lines[-1].startswith(" "), f"{what}: {err[-800:]}"
    grown = _peak_mb() - before
    assert grown <= MAX_RSS_GROWTH_MB, f"{what}: peak memory grew by {grown:.0f} MB"


def _subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


def _probed(sub: argparse.ArgumentParser) -> list[argparse.Action]:
    """The arguments that take a value (flags with nargs != 0 and positionals)."""
    return [a for a in sub._actions if not isinstance(a, argparse._HelpAction) and a.nargs != 0
            and not isinstance(a, argparse.BooleanOptionalAction)]


def _name(a: argparse.Action) -> str:
    return a.option_strings[-1] if a.option_strings else a.dest


def _argv(command: str, base: dict, sub: argparse.ArgumentParser, override: tuple[str, str] | None) -> list[str]:
    """`command` with the valid base values, one argument's value replaced by `override`."""
    values = dict(base)
    if override:
        values[override[0]] = [override[1]]
    argv = [command]
    for a in sub._actions:  # positionals in parser order
        if not a.option_strings and a.dest in values:
            argv += values[a.dest]
    for key, v in values.items():
        if key.startswith("-"):
            argv += [key, *v]
    return argv


@pytest.fixture(scope="module")
def env(app_fixture, tmp_path_factory):
    d = tmp_path_factory.mktemp("enumerated")
    (d / "DIR").mkdir()
    os.mkfifo(d / "FIFO")
    # As root a write through a regressed atomic write would replace /dev/zero for the whole machine (it
    # happened once): root probes its own copy of the device instead.
    zero = "/dev/zero"
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        zero = str(d / "zero")
        try:
            os.mknod(zero, 0o666 | stat.S_IFCHR, os.makedev(1, 5))
        except OSError:  # no CAP_MKNOD: a FIFO stands in (also not a regular file)
            os.mkfifo(zero)
    a = np.full((64, 64), 255, np.uint8)
    a[10:50, 28:36] = 0
    Image.fromarray(a).save(d / "letter.png")
    return {"tmp": d, "zero": zero, "ck": str(app_fixture["checkpoints"] / "mnist" / "csae-b0.04.json"),
            "data": str(app_fixture["data"]), "zoo_root": d / "zoo-root"}


def _odd(value: str, env) -> str:
    if value == "ZERO":
        return env["zero"]
    return str(env["tmp"] / value) if value in ("FIFO", "DIR") else value


def assert_still_a_device(env) -> None:
    assert not stat.S_ISREG(os.stat(env["zero"]).st_mode), f"{env['zero']} was replaced by a file"


def cli_bases(env) -> dict[str, dict]:
    t, ck, dd = env["tmp"], env["ck"], env["data"]
    return {
        "pedcc": {"--classes": ["3"], "--dim": ["3"], "--iters": ["5"]},
        "data": {"action": ["check"], "--data-dir": [dd]},
        "train": {"--dataset": ["mnist"], "--data-dir": [dd], "--out": [str(t / "run")], "--epochs": ["1"],
                  "--epoch-images": ["16"], "--batch-size": ["16"], "--test-images": ["16"],
                  "--stats-images": ["16"], "--widths": ["8", "8", "8", "8"], "--no-progress": []},
        "evaluate": {"checkpoint": [ck], "--data-dir": [dd], "--limit": ["20"]},
        "sample": {"checkpoint": [ck], "--n": ["2"], "--out": [str(t / "s.png")]},
        "reconstruct": {"checkpoint": [ck], "images": [str(t / "letter.png")], "--out": [str(t / "r.png")]},
        "export": {"checkpoint": [ck], "--out": [str(t / "exported")]},
        "openset": {"checkpoint": [ck], "--unknown": ["emnist-letters"], "--data-dir": [dd], "--limit": ["20"],
                    "--threads": ["1"]},
    }


def _stub_train(cfg, mcfg, resume=False, progress=True, log=None):
    """What the default run checks of train: config validation and building the model, not the epochs."""
    from csae_core.model import build_model

    build_model(mcfg)
    return Path(cfg.out) / "last"


def _variants(sub: argparse.ArgumentParser, base: dict) -> list[dict]:
    """`base` once per choice of each positional with choices (`data download` as well as `data check`)."""
    out = [base]
    for a in sub._actions:
        if not a.option_strings and a.choices and a.dest in base:
            out = [{**b, a.dest: [str(c)]} for b in out for c in a.choices]
    return out


def _cases(parser, bases, env):
    """(command, valid base arguments, argument probed, odd value) for every subcommand, every choice of its
    positionals, every argument that takes a value, and every odd value; the base alone first."""
    for command, sub in _subcommands(parser).items():
        # A subcommand added later is probed too: from an empty command line, or --root in a scratch folder.
        bases.setdefault(command, {"--root": [str(env["zoo_root"])]}
                         if any("--root" in a.option_strings for a in sub._actions) else {})
        for base in _variants(sub, bases[command]):
            yield command, base, None, None
            for action in _probed(sub):
                for value in ODD:
                    yield command, base, _name(action), _odd(value, env)


def _cli_cases(env):
    return list(_cases(cli.build_parser(), cli_bases(env), env))


@pytest.fixture(autouse=True)
def _quiet(monkeypatch, env):
    monkeypatch.chdir(env["tmp"])  # a relative --out such as "0" lands here, not in the repository
    monkeypatch.setenv("CSAE_DATA_URL", "http://127.0.0.1:9/")  # any download attempt fails at once
    monkeypatch.setattr("csae_core.download.RETRIES", 0)  # (a refused connection is otherwise retried for ~3 s)
    monkeypatch.delenv("CSAE_DATA_SHA256", raising=False)
    monkeypatch.delenv("CSAE_DEBUG", raising=False)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")


def _enumerate_cli(env, real_train: bool) -> int:
    bases = cli_bases(env)
    parser = cli.build_parser()
    n = 0
    patch = contextlib.nullcontext() if real_train else mock.patch("csae_core.train.train", _stub_train)
    with patch:
        for command, base, flag, value in _cases(parser, bases, env):
            if real_train and command != "train":
                continue
            sub = _subcommands(parser)[command]
            argv = _argv(command, base, sub, (flag, value) if flag else None)
            check(cli.main, argv, " ".join(repr(a) for a in argv))
            n += 1
    assert_still_a_device(env)
    return n


def test_every_cli_subcommand_and_argument_with_odd_values(env):
    n = _enumerate_cli(env, real_train=False)
    generated = {f.name for f in __import__("dataclasses").fields(__import__("csae_core.train").train.TrainConfig)}
    train_flags = {a.dest.split(".", 1)[1] for a in _subcommands(cli.build_parser())["train"]._actions
                   if a.dest.startswith("train.")}
    assert generated <= train_flags  # every TrainConfig field is a flag, and was probed above
    assert n > 400
    assert [c[1]["action"][0] for c in _cli_cases(env) if c[0] == "data" and c[2] is None] == ["download", "check"]


@pytest.mark.slow  # real (tiny) training runs for every train flag and odd value: a few minutes
def test_train_with_odd_values_for_real(env):
    assert _enumerate_cli(env, real_train=True) > 200


# ---------------------------------------------------------------- checkpoints/zoo.py

class _Got(Exception):
    pass


def zoo_module():
    import importlib.util

    spec = importlib.util.spec_from_file_location("zoo_enumerated", ROOT / "checkpoints" / "zoo.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def zoo_parser(zoo) -> argparse.ArgumentParser:
    """The parser zoo.main builds (captured at parse time, so zoo.py needs no hook for this test)."""
    got = {}

    def grab(self, args=None, namespace=None):
        got["parser"] = self
        raise _Got

    with mock.patch.object(argparse.ArgumentParser, "parse_args", grab):
        with contextlib.suppress(_Got):
            zoo.main([])
    return got["parser"]


def zoo_bases(env) -> dict[str, dict]:
    root = str(env["zoo_root"])
    return {
        # --only names no model: nothing is trained whatever the other values are
        "train": {"--recipe": ["tiny"], "--only": ["none/none"], "--root": [root], "--data-dir": [env["data"]]},
        "manifest": {"--root": [root], "--data-dir": [env["data"]]},
        "table": {"--root": [root]},
        "pack": {"--out": [str(env["tmp"] / "packed")], "--root": [root]},
    }


def test_every_zoo_subcommand_and_argument_with_odd_values(env):
    zoo = zoo_module()
    (env["zoo_root"] / "checkpoints").mkdir(parents=True, exist_ok=True)
    (env["zoo_root"] / "checkpoints" / "manifest.json").write_text("[]")
    bases = zoo_bases(env)
    parser = zoo_parser(zoo)
    n = 0
    for command, base, flag, value in _cases(parser, bases, env):
        argv = _argv(command, base, _subcommands(parser)[command], (flag, value) if flag else None)
        check(zoo.cli, argv, "zoo.py " + " ".join(repr(a) for a in argv))
        n += 1
    assert_still_a_device(env)
    assert n > 50
