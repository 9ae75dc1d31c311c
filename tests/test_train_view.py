"""The Train view (pages/train.py) driven by AppTest on the tiny recipe and the fixture data (50 training
images): start, live progress, stop (the last finished epoch kept), resume (exactly), the model joining the
other views, delete; a killed job shows as failed with its log, and is never listed as a model; the queue."""
from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from app import registry, train_ui, training_jobs, training_plan

ROOT = Path(__file__).resolve().parents[1]
PAGE = ROOT / "pages" / "train.py"
EPOCHS = 15  # tiny epochs (~0.5 s each): long enough to press Stop in the middle


@pytest.fixture
def user(app_env, tmp_path, monkeypatch):
    folder = tmp_path / "user_models"
    monkeypatch.setenv("CSAE_USER_MODELS_DIR", str(folder))
    monkeypatch.setenv("CSAE_ALLOW_TRAINING", "1")
    monkeypatch.setenv("CSAE_TRAIN_THREADS", "1")
    monkeypatch.setitem(training_plan.RECIPES["tiny"], "train",
                        dict(training_plan.RECIPES["tiny"]["train"], epochs=EPOCHS, batch_size=4))
    # The speed figure is measured once per machine (a subprocess); a known one keeps this test from measuring.
    speeds = {training_plan.speed_key(training_plan.Plan(dataset="mnist", recipe=r)): 100.0 for r in RECIPES_SHOWN}
    folder.mkdir()
    (folder / "speed.json").write_text(json.dumps(speeds))
    yield folder
    for job in training_jobs.all_jobs():  # nothing left running after a failed assert
        if job.get("state") in training_jobs.ACTIVE and job.get("pid"):
            try:
                os.killpg(job["pid"], signal.SIGKILL)
            except OSError:
                pass


RECIPES_SHOWN = ("quick", "tiny")


def open_train() -> AppTest:
    at = AppTest.from_file(str(PAGE), default_timeout=60).run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def wait_for(what, timeout: float = 120.0, every: float = 0.2):
    deadline = time.monotonic() + timeout
    while not (value := what()):
        assert time.monotonic() < deadline, f"timed out waiting for {what.__doc__ or what}"
        time.sleep(every)
    return value


def the_job(job_id: str) -> dict:
    return next(j for j in training_jobs.all_jobs() if j["id"] == job_id)


def start_tiny(at: AppTest, beta: float = 0.3) -> str:
    at.selectbox(key="train_recipe").set_value("tiny")
    at.number_input(key="train_beta").set_value(beta)
    at.run()
    at.button(key="train_start").click().run()
    assert not at.exception and not at.error, [e.value for e in list(at.exception) + list(at.error)]
    return training_jobs.all_jobs()[-1]["id"]


def test_start_progress_stop_resume_and_delete(user):
    at = open_train()
    assert "Estimated time" in " ".join(c.value for c in at.caption)  # from the (seeded) measured images/s
    job_id = start_tiny(at)
    assert the_job(job_id)["state"] == "running"
    other_tab = open_train()  # a new session (a reopened tab) reattaches: the job, its bar and its Stop
    assert other_tab.button(key=f"stop_{job_id}") and other_tab.get("progress")
    wait_for(lambda: training_jobs.history(job_id))
    at.run()
    bar = at.get("progress")[0]
    assert 0 < bar.value <= 100 and "epoch" in bar.text
    # The curves: lines from inside the epochs (the tiny recipe writes them every 0.05 s) and per-epoch points.
    assert training_jobs.steps(job_id), "the trainer's progress lines"
    chart = json.loads(at.get("plotly_chart")[0].proto.spec)
    assert {t.get("legendgroup") for t in chart["data"]} == {"live", "epoch"}

    at.button(key=f"stop_{job_id}").click().run()
    wait_for(lambda: the_job(job_id)["state"] == "stopped")
    before = training_jobs.history(job_id)
    assert 1 <= len(before) < EPOCHS, "Stop ends the run after its last finished epoch"
    assert (training_jobs.run_dir(job_id) / "train_state.safetensors").is_file()
    assert registry.scan_user() == [], "a stopped job is not a model"

    at.run()
    at.button(key=f"resume_{job_id}").click().run()
    wait_for(lambda: the_job(job_id)["state"] == "done")
    after = training_jobs.history(job_id)
    assert [r["epoch"] for r in after] == list(range(1, EPOCHS + 1))
    # A stop that lands after an epoch's log line but before its resume state redoes that epoch on resume (the
    # save order: log, checkpoint, then state); the redo repeats its numbers exactly, only its timings differ.
    untimed = lambda rs: [{k: v for k, v in r.items() if k not in ("seconds", "images_per_s")} for r in rs]  # noqa: E731
    assert untimed(after[:len(before)]) == untimed(before), "Resume continues the run exactly"
    assert training_jobs.strips(job_id)[-1][0] == EPOCHS  # the last epoch's validation strip

    [model] = registry.scan_user()
    assert (model.beta, model.epoch, model.recipe, model.user) == (0.3, EPOCHS, "tiny", True)
    assert model.label == "your CSAE β=0.3" and f"epoch {EPOCHS} of {EPOCHS}, tiny recipe" in model.long_label
    assert json.loads(Path(model.path).read_text())["weights_dtype"] == "float16"
    at.run()
    assert "your CSAE β=0.3" in set(at.dataframe[0].value["model"])

    # It joins the explorer: Reconstructions' β slider offers its β.
    app = AppTest.from_file(str(ROOT / "app" / "explorer.py"), default_timeout=60).run()
    app.switch_page("../pages/reconstructions.py").run()
    assert not app.exception, [e.value for e in app.exception]
    slider = app.select_slider(key="recon_beta_mnist")
    assert 0.3 in slider.options or "0.3" in slider.options
    slider.set_value(0.3).run()
    assert not app.exception, [e.value for e in app.exception]
    assert any(f"Epoch {EPOCHS} of {EPOCHS}, tiny recipe" in c.value for c in app.caption), "its real epoch and recipe"

    # Latent space, Open set and Letters (every view with a model picker) can select it.
    app.switch_page("../pages/latent_space.py").run()
    assert any("your CSAE β=0.3" in o for o in app.selectbox(key="latent_model").options)
    app.switch_page("../pages/open_set.py").run()
    assert not app.exception, [e.value for e in app.exception]
    assert any("your CSAE β=0.3" in o for o in app.multiselect(key="openset_models_mnist").options)
    app.switch_page("../pages/letters.py").run()
    assert not app.exception, [e.value for e in app.exception]
    assert any("your CSAE β=0.3" in o for o in app.selectbox(key="letters_verdict_model").options)

    at.button(key=f"delete_{job_id}").click().run()
    assert registry.scan_user() == [] and training_jobs.all_jobs() == []
    assert not training_jobs.run_dir(job_id).exists() and not list((user / "models").glob("*"))


def test_a_killed_job_fails_with_its_log_and_the_queue_moves_on(user):
    at = open_train()
    first = start_tiny(at)
    second = start_tiny(at, beta=0.1)
    assert the_job(second)["state"] == "queued"
    at.run()
    assert any("Place in the queue: 1" in c.value for c in at.caption)

    pid = wait_for(lambda: the_job(first).get("pid"))
    wait_for(lambda: "starting" in training_jobs.log_tail(first))
    os.killpg(pid, signal.SIGKILL)  # the runner and its trainer, as an OOM kill or a reboot would
    time.sleep(0.5)
    at.run()
    job = the_job(first)
    assert job["state"] == "failed" and "killed" in job["error"]
    assert any("Failed" in e.value for e in at.error)
    assert any("starting" in c.value for c in at.code), "the last lines of its log are shown"
    assert registry.scan_user() == [], "a failed job is never a model"
    # The queue moves on: the next job starts once the dead one is noticed.
    wait_for(lambda: the_job(second)["state"] == "running")
    training_jobs.stop(second)
    wait_for(lambda: the_job(second)["state"] == "stopped")
    assert registry.scan_user() == []


def test_the_view_offers_no_start_when_served_beyond_this_machine(user, monkeypatch):
    from streamlit import config

    monkeypatch.delenv(training_jobs.ALLOW_ENV)
    before = config.get_option("server.address")
    config.set_option("server.address", "0.0.0.0")
    try:
        at = open_train()
    finally:
        config.set_option("server.address", before)
    assert at.button(key="train_start").disabled
    assert any("Training from the browser is off" in w.value for w in at.warning)


def test_training_is_off_when_the_server_listens_beyond_this_machine(monkeypatch):
    monkeypatch.delenv(training_jobs.ALLOW_ENV, raising=False)
    assert training_jobs.training_allowed("localhost")[0] and training_jobs.training_allowed("127.0.0.1")[0]
    on, why = training_jobs.training_allowed("0.0.0.0")
    assert not on and "CSAE_ALLOW_TRAINING=1" in why
    assert not training_jobs.training_allowed(None)[0]  # Streamlit's default: every interface
    monkeypatch.setenv(training_jobs.ALLOW_ENV, "1")
    assert training_jobs.training_allowed("0.0.0.0")[0]


@pytest.mark.parametrize("change, words", [
    (dict(beta=0.6), "β must be"), (dict(beta=-0.1), "β must be"), (dict(latent_dim=100_000), "latent size"),
    (dict(latent_dim=1), "latent size"), (dict(recipe="paper"), "needs a CUDA GPU"), (dict(kind="gan"), "model kind"),
])
def test_settings_out_of_bounds_are_refused(change, words):
    plan = training_plan.Plan(dataset="mnist", **change)
    with pytest.raises(Exception, match=words):
        training_plan.check(plan, cuda=False)


def test_image_steps_are_capped(monkeypatch):
    monkeypatch.setenv(training_plan.MAX_IMAGE_STEPS_ENV, "1000")
    with pytest.raises(Exception, match="over this server's cap"):
        training_plan.check(training_plan.Plan(dataset="mnist", recipe="quick"), cuda=False)


def test_the_quick_preset_is_the_recipe_search_pick():
    plan = training_plan.Plan(dataset="mnist", recipe="quick")
    args = training_plan.train_args(plan)
    assert training_plan.image_steps(plan) == 55_000
    for flag, value in [("--lr", "0.05"), ("--schedule", "cosine"), ("--batch-size", "128"), ("--warmup-steps", "100")]:
        assert args[args.index(flag) + 1] == value
    assert "--nesterov" in args and "--recipe" in args
    # The flags are the library's own: they parse into its configs.
    from csae_core.cli import build_parser, train_configs

    tcfg, mcfg = train_configs(build_parser().parse_args(["train", *args]))
    assert (tcfg.epochs * tcfg.epoch_images, tcfg.nesterov, mcfg.beta) == (55_000, True, 0.02)


def test_disk_cap_refuses_a_new_job_and_names_the_oldest(user, monkeypatch):
    monkeypatch.setenv(training_jobs.MAX_MB_ENV, "1")
    (user / "models").mkdir()
    (user / "models" / "big.bin").write_bytes(b"\0" * 2 * 1024**2)
    with pytest.raises(Exception, match="the cap is 1 MB"):
        training_jobs.start(training_plan.Plan(dataset="mnist", recipe="tiny"), cuda=False)
    assert training_jobs.all_jobs() == []


def write_lines(path: Path, records: list, torn: str = "") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in records) + torn)


def test_the_bar_and_curves_move_within_an_epoch(user):
    """Between epoch ends, the progress bar, its ETA and the curves come from the trainer's progress lines: an
    epoch of the quick preset is ~50 s on 2 cores, and the curves must move at least every 10 s."""
    job = {"id": "j1", "state": "running", "epochs": 5, "started": 1000.0}
    run = training_jobs.run_dir("j1")
    write_lines(run / "log.jsonl", [{"epoch": 1, "loss1": 0.5, "loss2": 0.1, "val_accuracy": 0.9, "seconds": 50}])
    line = dict(time=1001.0, epoch=2, steps=86, epoch_images=11_000, images_per_s=200.0, loss1=0.3, loss2=0.08,
                train_accuracy=0.95)
    earlier = [dict(line, epoch=1, images=n, time=999.0) for n in (2750, 5500, 8250)]
    write_lines(run / "progress.jsonl", [*earlier, dict(line, images=5500)], torn='{"epoch": 2, "ima')
    fraction, text = training_jobs.progress(job)
    assert fraction == pytest.approx((1 + 0.5) / 5)
    assert "epoch 2 of 5: 50%" in text and "200 images/s" in text
    assert "ETA 3 min" in text  # (4 * 11,000 - 5,500) images at 200 images/s: 192 s
    assert [training_jobs.epochs_done(r) for r in training_jobs.steps("j1")] == [0.25, 0.5, 0.75, 1.5]

    # After a stop and a resume, epoch 2 is redone: its new lines replace the old ones they repeat, and the old
    # attempt's line (written before this start) does not move the bar.
    write_lines(run / "progress.jsonl", [*earlier, dict(line, images=5500), dict(line, images=2750, time=1002.0)])
    assert [training_jobs.epochs_done(r) for r in training_jobs.steps("j1")] == [0.25, 0.5, 0.75, 1.25]
    assert training_jobs.progress(dict(job, started=2000.0))[0] == pytest.approx(1 / 5)

    fig = train_ui.curves(training_jobs.history("j1"), training_jobs.steps("j1"))
    live = [t for t in fig.data if t.legendgroup == "live"]
    assert [t.yaxis for t in live] == ["y", "y2", "y3"]  # Loss1, Loss2 and training accuracy all move
    assert list(live[0].x) == [0.25, 0.5, 0.75, 1.25]


def user_model(app_env, job_id: str, mtime: float | None = None) -> None:
    """models/<job_id>, as a runner exports one (a fixture checkpoint's model)."""
    from csae_core.checkpoint import load_checkpoint, save_checkpoint

    ck = load_checkpoint(app_env["checkpoints"] / "mnist" / "csae-b0.04", check_manifest=False)
    meta = {k: v for k, v in ck.meta.items() if k not in ("format", "model", "weights", "weights_sha256",
                                                         "weights_dtype", "centroids")}
    save_checkpoint(training_jobs.model_stem(job_id), ck.model, meta, half=True)
    if mtime is not None:
        os.utime(training_jobs.model_stem(job_id).with_suffix(".json"), (mtime, mtime))


def test_a_runner_killed_after_writing_the_model_leaves_no_model(user, app_env):
    """Killed between writing models/<id> and recording the job as done: the job is failed, and its model goes."""
    user_model(app_env, "j2")
    assert len(registry.scan_user()) == 1
    dead = 2**22 + 7  # above the default pid_max: no such process
    training_jobs._write({"id": "j2", "state": "exporting", "pid": dead, "created": 1.0, "epochs": 2,
                          "plan": {"kind": "csae", "beta": 0.3}})
    [job] = training_jobs.all_jobs()
    assert job["state"] == "failed" and "killed" in job["error"]
    assert registry.scan_user() == [] and not list((user / "models").glob("j2.*"))


def test_the_estimate_is_measured_on_this_machine_once(user):
    """Before Start: images/s timed in a separate process (a few steps of the chosen model), kept for next time."""
    plan = training_plan.Plan(dataset="mnist", recipe="tiny")
    cache = user / "speed-fresh.json"
    speed = training_plan.measured_speed(plan, cache)
    assert speed > 0 and json.loads(cache.read_text()) == {training_plan.speed_key(plan): speed}
    assert training_plan.measured_speed(plan, cache) == speed  # read back, not measured again
    assert training_plan.estimate_seconds(plan, speed) > training_plan.image_steps(plan) / speed


def test_models_are_offered_for_deletion_oldest_first(user, app_env):
    user_model(app_env, "20261130-090000-aaaaaa", mtime=time.time() - 3600)
    user_model(app_env, "20261201-090000-bbbbbb")
    training_jobs._write({"id": "20261201-090000-bbbbbb", "state": "done", "created": time.time(), "epochs": 2,
                          "plan": {"kind": "csae", "beta": 0.04}})
    at = open_train()
    assert Path(at.selectbox(key="train_delete_model").value).stem == "20261130-090000-aaaaaa"  # offered first
    assert list(at.dataframe[0].value["file"]) == ["20261130-090000-aaaaaa.json", "20261201-090000-bbbbbb.json"]
    at.button(key="train_delete_model_button").click().run()  # the oldest, whose job file is gone
    assert [Path(e.path).stem for e in registry.scan_user()] == ["20261201-090000-bbbbbb"]
    at.button(key="train_delete_model_button").click().run()  # then the newer one, with its job
    assert registry.scan_user() == [] and training_jobs.all_jobs() == []
    training_jobs.delete("../escape")  # not a job id: nothing happens


def test_the_estimate_is_measured_on_the_gpu_the_job_will_use(user, monkeypatch):
    calls = []
    monkeypatch.setattr(training_plan, "cuda_available", lambda: True)
    monkeypatch.setattr(training_plan.subprocess, "run", lambda cmd, **kw: calls.append(cmd) or
                        training_plan.subprocess.CompletedProcess(cmd, 0, "9000.0\n", ""))
    cache = user / "speed-gpu.json"
    assert training_plan.measured_speed(training_plan.Plan(dataset="mnist"), cache) == 9000.0
    assert calls[-1][-1] == "cuda" and list(json.loads(cache.read_text())) == ["csae/40/32//cuda"]
    training_plan.measured_speed(training_plan.Plan(dataset="mnist", device="cpu"), cache)
    assert calls[-1][-1] == "cpu"
