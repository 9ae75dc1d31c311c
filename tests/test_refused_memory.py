"""Issue 16: a refused input costs at most 200 MB. Importing torch alone costs ~220 MB, so every refusal of the
CLI and of checkpoints/zoo.py must come before torch is imported: the train flags are checked by torch-free
dataclasses (csae_core/model.py, csae_core/train_config.py), zoo.py's arguments before anything imports torch.
Each case runs in a fresh interpreter (this one has torch loaded already) and reports its exit code, whether
torch got imported, its peak memory and its stderr."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.skipif(not Path("/proc/self/status").is_file(), reason="reads VmHWM from /proc")
ROOT = Path(__file__).resolve().parents[1]
PEAK_MB = 200

CHILD = """
import io, json, re, sys
from contextlib import redirect_stderr
err = io.StringIO()
with redirect_stderr(err):
    try:
        if {zoo!r}:
            import importlib.util
            spec = importlib.util.spec_from_file_location("zoo", {zoo_path!r})
            zoo = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(zoo)
            rc = zoo.cli({argv!r})
        else:
            from csae_core import cli
            rc = cli.main({argv!r})
    except SystemExit as e:  # argparse's refusals
        rc = e.code
# VmHWM, not ru_maxrss: that keeps the forking parent's (this test process's, torch loaded) across exec.
hwm_kb = int(re.search(r"VmHWM:\\s+(\\d+)", open("/proc/self/status").read()).group(1))
print(json.dumps({{"rc": rc, "torch": "torch" in sys.modules, "stderr": err.getvalue(), "peak_mb": hwm_kb / 1024}}))
"""

CLI_CASES = [
    ["train", "--image-size", "512"],
    ["train", "--widths", "4096", "4096", "4096", "4096", "--latent-dim", "4096"],
    ["train", "--wavelet", "foo"],
    ["train", "--epochs", "-1"],
    ["train", "--lr", "nan"],
    ["train", "--model", "nosuch"],
    ["train", "--compile", "fastest"],
    ["train", "--beta", "2"],
    ["sample", "x.json", "--n", "0", "--out", "x.png"],
    ["openset", "x.json", "--unknown", "mnist", "--threads", "-1"],
    ["evaluate", "no/such.json"],
    ["sample", "no/such.json", "--out", "x.png"],
    ["reconstruct", "no/such.json", "a.png", "--out", "x.png"],
    ["openset", "no/such.json", "--unknown", "mnist"],
    ["export", "no/such.json", "--out", "y"],
]
ZOO_CASES = [
    ["train", "--recipe", "tiny", "--datasets", "nosuch"],
    ["train", "--threads", "-2"],
    ["train", "--jobs", "0"],
    ["train", "--models", "nosuch"],
    ["table", "--root", "{root}"],  # a malformed manifest.json
    ["manifest", "--root", "{root}"],  # a checkpoint JSON that lacks what the manifest records
]


def refuse(argv: list[str], zoo: bool, cwd: Path) -> dict:
    code = CHILD.format(zoo=zoo, zoo_path=str(ROOT / "checkpoints" / "zoo.py"), argv=argv)
    r = subprocess.run([sys.executable, "-c", code], cwd=cwd, capture_output=True, text=True, timeout=120,
                       env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT), "CSAE_DATA_DIR": str(cwd / "data")})
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout.strip().splitlines()[-1])


@pytest.fixture
def broken_root(tmp_path):
    from csae_core.checkpoint import FORMAT

    (tmp_path / "checkpoints" / "mnist").mkdir(parents=True)
    (tmp_path / "checkpoints" / "manifest.json").write_text('{"rows": ')
    (tmp_path / "checkpoints" / "mnist" / "x.json").write_text(json.dumps({"format": FORMAT}))
    return tmp_path


@pytest.mark.parametrize("argv,zoo", [(a, False) for a in CLI_CASES] + [(a, True) for a in ZOO_CASES],
                         ids=[("cli " if i < len(CLI_CASES) else "zoo ") + " ".join(a)
                              for i, a in enumerate(CLI_CASES + ZOO_CASES)])
def test_a_refused_input_is_one_line_without_torch_and_under_200_mb(argv, zoo, broken_root):
    out = refuse([a.format(root=broken_root) for a in argv], zoo, broken_root)
    lines = out["stderr"].strip().splitlines()
    assert out["rc"] == 2 and len(lines) == 1 and lines[0].startswith("error: "), out
    assert not out["torch"], f"refused only after importing torch: {out}"
    assert out["peak_mb"] <= PEAK_MB, out


def test_parsing_every_train_flag_imports_no_torch(tmp_path):
    """The valid path too: the train command's flags parse into the configs with torch still unimported."""
    code = ("import sys\nfrom csae_core.cli import build_parser, train_configs\n"
            "a = build_parser().parse_args(['train', '--model', 'cvae', '--widths', '8', '16', '--epochs', '2'])\n"
            "t, m = train_configs(a)\nprint(m.kind, m.widths, t.epochs, 'torch' in sys.modules)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                       env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT)})
    assert r.stdout.split() == ["cvae", "(8,", "16)", "2", "False"], r.stderr
