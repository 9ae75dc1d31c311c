"""The offline-GPU path (checkpoints/bundle.py): the bundle's contents and budget, the one way to pack (old parts
replaced, links never packed, what does not fit named), unpack's checks (nothing written unless every member
of every part is a plain file with a safe path, from one pack), the deadline stop and its resume, and, marked
slow, the whole path on CPU: bundle -> offline run.sh -> parts -> unpack -> manifest, and a cut run resumed by
a second bundle."""
import importlib.util
import io
import json
import os
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
ZOO = ROOT / "checkpoints" / "zoo.py"
WHEELS = next((p for p in (ROOT.parent / "shared" / "wheels-py312", ROOT / "wheels") if p.is_dir()), None)


def load_zoo(root: Path):
    spec = importlib.util.spec_from_file_location("zoo_for_bundle_test", ZOO)
    zoo = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(zoo)
    zoo.set_root(root)
    return zoo


def zoo_cli(root: Path, *args, timeout=900, **kw):
    return subprocess.run([sys.executable, str(ZOO), *args, "--root", str(root)], capture_output=True, text=True,
                          timeout=timeout, **kw)


def fake_model(root: Path, name: str, payload: bytes = b"w" * 1000, recipe: str = "tiny") -> None:
    """A checkpoint pair and its evaluation, as `pack` sees them (the bytes are not a real model)."""
    ck = root / "checkpoints" / "mnist"
    ck.mkdir(parents=True, exist_ok=True)
    (ck / f"{name}.safetensors").write_bytes(payload)
    (ck / f"{name}.json").write_text(json.dumps({"format": "csae-checkpoint/1", "weights": f"{name}.safetensors",
                                                 "recipe": recipe}))
    ev = root / "results" / "eval" / "mnist"
    ev.mkdir(parents=True, exist_ok=True)
    (ev / f"{name}.json").write_text(json.dumps({"accuracy": 0.5}))


def members(part: Path) -> set[str]:
    with tarfile.open(part) as tar:
        return set(tar.getnames())


def test_pack_replaces_old_parts_and_never_packs_links(tmp_path):
    root, out = tmp_path / "zoo", tmp_path / "out"
    fake_model(root, "csae-b0.04")
    outside = tmp_path / "secret.json"
    outside.write_text(json.dumps({"format": "csae-checkpoint/1", "weights": "x"}))
    (root / "checkpoints" / "mnist" / "linked.json").symlink_to(outside)
    out.mkdir()
    (out / "zoo-part0.tar.gz").write_bytes(b"an old pack")
    (out / "zoo-part7.tar.gz").write_bytes(b"an old pack's last part")
    assert zoo_cli(root, "pack", "--out", str(out)).returncode == 0
    parts = sorted(out.iterdir())
    assert [p.name for p in parts] == ["zoo-part0.tar.gz"]  # the old parts are gone, not mixed in
    assert members(parts[0]) == {"zoo-pack.json", "checkpoints/mnist/csae-b0.04.json",
                                 "checkpoints/mnist/csae-b0.04.safetensors", "results/eval/mnist/csae-b0.04.json"}


def test_pack_names_what_does_not_fit(tmp_path, capsys):
    zoo = load_zoo(tmp_path)
    for i in range(3):
        fake_model(tmp_path, f"m{i}", b"x" * 3000)
    b = zoo._bundle_module()
    written = b.pack_parts(b.pack_units(zoo), tmp_path, tmp_path / "out", part_bytes=4000, max_parts=2)
    assert len(written) == 2 and all(p.stat().st_size <= 4000 for p in written)
    assert "LEFT OUT" in capsys.readouterr().out


def test_unpack_places_files_and_refuses_two_packs(tmp_path):
    src, dst, out1, out2 = (tmp_path / n for n in ("src", "dst", "p1", "p2"))
    fake_model(src, "csae-b0.04", b"old weights")
    assert zoo_cli(src, "pack", "--out", str(out1)).returncode == 0
    fake_model(src, "csae-b0.04", b"retrained weights")
    assert zoo_cli(src, "pack", "--out", str(out2)).returncode == 0
    mixed = zoo_cli(dst, "unpack", str(out2 / "zoo-part0.tar.gz"), str(out1 / "zoo-part0.tar.gz"))
    assert mixed.returncode == 2 and "different packs" in mixed.stderr and not (dst / "checkpoints").exists()
    ok = zoo_cli(dst, "unpack", str(out2 / "zoo-part0.tar.gz"))
    assert ok.returncode == 0, ok.stderr
    assert (dst / "checkpoints" / "mnist" / "csae-b0.04.safetensors").read_bytes() == b"retrained weights"
    assert (dst / "results" / "eval" / "mnist" / "csae-b0.04.json").is_file()


def _tar(path: Path, entries) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for name, kind in entries:
            info = tarfile.TarInfo(name)
            if kind == "link":
                info.type, info.linkname = tarfile.SYMTYPE, "/etc/passwd"
                tar.addfile(info)
            else:
                info.size = 2
                tar.addfile(info, io.BytesIO(b"{}"))
    return path


@pytest.mark.parametrize("bad", [("../../escaped.json", "file"), ("/tmp/abs.json", "file"),
                                 ("checkpoints/mnist/x.json", "link"), ("csae_core/evil.py", "file"),
                                 ("checkpoints/../../escaped.json", "file")])
def test_unpack_refuses_unsafe_members_and_writes_nothing(tmp_path, bad):
    good = _tar(tmp_path / "good.tar.gz", [("checkpoints/mnist/ok.json", "file")])
    evil = _tar(tmp_path / "evil.tar.gz", [("results/eval/mnist/ok.json", "file"), bad])
    root = tmp_path / "root"
    root.mkdir()
    r = zoo_cli(root, "unpack", str(good), str(evil))
    assert r.returncode == 2 and r.stderr.startswith("error: ") and len(r.stderr.strip().splitlines()) == 1
    assert list(root.rglob("*")) == [] and not list(tmp_path.parent.glob("escaped*"))


def test_bundle_holds_code_data_wheels_and_resume_states_within_budget(tmp_path):
    if WHEELS is None:
        pytest.skip("no wheels-py312 folder beside the checkout")
    from csae_core.checkpoint import save_tensors
    import torch

    run = tmp_path / "zoo" / "runs" / "zoo" / "tiny" / "mnist" / "csae-b0.02"
    save_tensors(run / "train_state.safetensors", {"model.w": torch.zeros(3)},
                 metadata={"epoch": 1, "train": {"epochs": 2}})
    (run / "log.jsonl").write_text("{}\n")
    (run / "junk.txt").write_text("not part of a resume state")
    only = ["--only", "mnist/csae-b0.02", "mnist/basenet"]
    r = zoo_cli(tmp_path / "zoo", "bundle", "--out", str(tmp_path / "b"), "--recipe", "tiny", "--wheels", str(WHEELS),
                *only)
    assert r.returncode == 0, r.stderr
    b = tmp_path / "b"
    info = json.loads((b / "BUNDLE.json").read_text())
    assert info["jobs"] == [["mnist", "csae", 0.02, 0], ["mnist", "basenet", 0.0, 0]]
    assert info["resumed"] == ["mnist/csae-b0.02"]
    assert (b / "runs/zoo/tiny/mnist/csae-b0.02/train_state.safetensors").is_file()
    assert not (b / "runs/zoo/tiny/mnist/csae-b0.02/junk.txt").exists()
    assert os.access(b / "run.sh", os.X_OK) and (b / "csae_core" / "fast_step.py").is_file()
    assert sorted(p.name for p in (b / "data" / "mnist").iterdir())[0].endswith(".gz")
    assert not (b / "data" / "fashion-mnist").exists()
    assert [p.name for p in b.rglob("*.safetensors")] == ["train_state.safetensors"]  # no shipped weights
    assert len(list((b / "wheels").glob("*.whl"))) >= 3
    over = zoo_cli(tmp_path / "zoo", "bundle", "--out", str(tmp_path / "b2"), "--recipe", "tiny", "--wheels",
                   str(WHEELS), "--budget-mib", "5", *only)
    assert over.returncode == 2 and "budget" in over.stderr and not (tmp_path / "b2").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".b2")]  # no half-made bundle left


def test_deadline_stops_after_an_epoch_and_the_rerun_resumes(tmp_path):
    zoo = load_zoo(tmp_path)
    env = dict(recipe="tiny", device="cpu", threads=1)
    first = zoo.train_one("mnist", "csae", 0.02, 0, stop_at=time.time(), **env)
    assert "stopped for the deadline after epoch 1/2" in first
    run = tmp_path / "runs" / "zoo" / "tiny" / "mnist" / "csae-b0.02"
    assert (run / "train_state.safetensors").is_file() and not (tmp_path / "checkpoints").exists()
    epoch1 = json.loads((run / "log.jsonl").read_text().splitlines()[0])
    assert "accuracy" in zoo.train_one("mnist", "csae", 0.02, 0, **env)
    meta = json.loads((tmp_path / "checkpoints" / "mnist" / "csae-b0.02.json").read_text())
    assert [h["epoch"] for h in meta["history"]] == [1, 2] and meta["history"][0] == epoch1  # resumed, not redone


def _python_like_the_loaned_machine(tmp: Path) -> str:
    """A fresh venv that sees this environment's packages (torch, pip, pytest, PyWavelets) except what the lent
    GPU machine lacks and the bundle brings: pytorch-wavelets and setuptools. This interpreter has them, so a
    run.sh that imported csae_core before installing them passed here and failed on the H200."""
    import sysconfig

    venv = tmp / "venv-like-loan"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    py = venv / "bin" / "python"
    site = Path(subprocess.check_output([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                                        text=True).strip())
    visible = tmp / "visible-site"
    visible.mkdir()
    hidden = ("pytorch_wavelets", "setuptools", "pkg_resources", "_distutils_hack", "__editable__", "csae")
    for p in Path(sysconfig.get_paths()["purelib"]).iterdir():
        if not p.name.lower().startswith(hidden) and p.suffix != ".pth":
            (visible / p.name).symlink_to(p)
    (site / "visible.pth").write_text(f"{visible}\n")
    gone = subprocess.run([str(py), "-c", "import pytorch_wavelets"], capture_output=True)
    assert gone.returncode != 0  # the premise: the bundle must install it
    return str(py)


def _run_bundle(b: Path, out: Path, *args) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(PIP_NO_INDEX="1", CSAE_DATA_DIR="", OMP_NUM_THREADS="1",
               PYTHON=_python_like_the_loaned_machine(out.parent / f"py-{out.name}"))
    r = subprocess.run(["bash", "run.sh", "--device", "cpu", "--out", str(out), *args], cwd=b, env=env,
                       capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    return r


@pytest.mark.slow  # two offline runs of a bundle's run.sh (install, tests, throughput, training, pack): minutes
def test_whole_path_offline_then_a_cut_run_resumed_by_a_second_bundle(tmp_path):
    if WHEELS is None:
        pytest.skip("no wheels-py312 folder beside the checkout")
    home = tmp_path / "clone"  # stands for the checkout here: checkpoints/, results/, runs/
    bundle = lambda name: zoo_cli(home, "bundle", "--out", str(tmp_path / name), "--recipe", "tiny", "--wheels",
                                  str(WHEELS), "--only", "mnist/csae-b0.02", "mnist/basenet")
    assert bundle("b1").returncode == 0
    # Loan 1 is cut at once: the first model trains one epoch, then its resume state is packed.
    r1 = _run_bundle(tmp_path / "b1", tmp_path / "p1", "--deadline-s", "0", "--grace-s", "600")
    assert "installed pytorch_wavelets" in r1.stdout and f"csae_core from {tmp_path / 'b1'}" in r1.stdout
    assert "throughput csae" in r1.stdout and "stopped for the deadline after epoch 1/2" in r1.stdout
    parts = list((tmp_path / "p1").iterdir())
    assert 1 <= len(parts) <= 8 and all(p.stat().st_size <= 16 * 2**20 for p in parts)
    assert zoo_cli(home, "unpack", *map(str, parts)).returncode == 0
    assert (home / "runs/zoo/tiny/mnist/csae-b0.02/train_state.safetensors").is_file()
    # Loan 2 resumes it from the second bundle and finishes both models.
    assert bundle("b2").returncode == 0
    assert json.loads((tmp_path / "b2" / "BUNDLE.json").read_text())["resumed"] == ["mnist/csae-b0.02"]
    r2 = _run_bundle(tmp_path / "b2", tmp_path / "p2", "--deadline-s", "600")
    u = zoo_cli(home, "unpack", *map(str, (tmp_path / "p2").iterdir()))
    assert u.returncode == 0, u.stderr
    meta = json.loads((home / "checkpoints/mnist/csae-b0.02.json").read_text())
    assert meta["recipe"] == "tiny" and [h["epoch"] for h in meta["history"]] == [1, 2]
    first = json.loads((home / "runs/zoo/tiny/mnist/csae-b0.02/log.jsonl").read_text().splitlines()[0])
    assert meta["history"][0]["seconds"] == first["seconds"]  # epoch 1 came from loan 1, not retrained
    assert list((home / "results" / "loans").glob("*-cpu.json"))
    assert zoo_cli(home, "manifest").returncode == 0
    rows = json.loads((home / "checkpoints" / "manifest.json").read_text())
    assert {(r["model"], r["epoch"], r["recipe"]) for r in rows} == {("csae", 2, "tiny"), ("basenet", 2, "tiny")}


def test_jobs_share_the_gpu_by_the_busy_fraction_the_loan_measured():
    """On the H200 (results/loans/, 2026-11-30) a CSAE job kept the GPU 97 % busy and Basenet / CSAE_encoder
    42 %: CSAE jobs run one at a time (two side by side would each take twice as long, and neither might
    finish in the loan), the small kinds two at a time; a fixed --jobs N overrides the shares."""
    spec = importlib.util.spec_from_file_location("bundle_for_test", ROOT / "checkpoints" / "bundle.py")
    bundle = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bundle)
    report = json.loads(next((ROOT / "results" / "loans").glob("*-cuda.json")).read_text())
    csae, small = bundle.gpu_share(report, "csae"), bundle.gpu_share(report, "basenet")
    assert csae > 0.9 and 0.3 < small < 0.5
    assert bundle.gpu_share(report, "no-such-kind") == 1.0  # unmeasured: alone
    assert bundle.admit([], csae, 0)  # something always runs
    assert not bundle.admit([csae], csae, 0) and not bundle.admit([csae], small, 0)
    assert bundle.admit([small], small, 0) and not bundle.admit([small, small], small, 0)
    assert bundle.admit([csae, csae], csae, 3) and not bundle.admit([csae] * 3, csae, 3)
