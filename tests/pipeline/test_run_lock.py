"""One run of a pipeline at a time (pipeline/run_lock.py), through the lock itself and through
`cgd pipeline run`, `cgd retrain`, `tfx run create` and `tfx pipeline create`; and
`cgd retrain` saying when a run took longer than the interval."""
import logging
import os
import signal
import socket
import subprocess
import sys
import textwrap

import pytest
import yaml

from pipeline import run as run_lib
from pipeline import run_lock
from tests.conftest import UNTRAINED, small_config
from tests.support.paths import REPO_ROOT

ROOT = str(REPO_ROOT)
BIN = os.path.dirname(sys.executable)

# A process that takes the pipeline's lock, says so, and holds it until its stdin closes.
HOLDER = textwrap.dedent("""
    import logging, sys
    from core.config import load_config
    from pipeline import run_lock
    logging.basicConfig(level=logging.INFO, stream=sys.stdout, format="%(message)s")
    cfg = load_config(sys.argv[1])
    lock = run_lock.acquire(cfg, wait=sys.argv[2] == "wait", command=sys.argv[3])
    print("acquired", flush=True)
    sys.stdin.readline()
    lock.release()
""")


def write_config(tmp_path, name="cgd-lock", **sections):
    source = tmp_path / "cars196"
    source.mkdir(exist_ok=True)
    cfg = small_config(tmp_path, source, pipeline={"name": name}, **sections)
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(cfg.to_dict()))
    return cfg, str(path)


def start_holder(config_path, wait=False, command="holder --of the lock"):
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, config_path,
                             "wait" if wait else "now", command], cwd=ROOT,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    return proc


def hold(config_path, command="holder --of the lock"):
    proc = start_holder(config_path, command=command)
    assert proc.stdout.readline().strip() == "acquired"
    return proc


def stop(proc):
    if proc.poll() is None:
        proc.stdin.close()
        proc.wait(timeout=60)


@pytest.fixture
def config(tmp_path):
    return write_config(tmp_path)


@pytest.mark.slow
def test_a_second_run_refuses_in_one_line_naming_the_running_one(config):
    cfg, path = config
    holder = hold(path)
    try:
        with pytest.raises(run_lock.PipelineRunning) as refused:
            run_lock.acquire(cfg, hint="add --wait")
        message = str(refused.value)
        assert "\n" not in message
        assert message.startswith("pipeline cgd-lock is already running: ")
        assert f"pid {holder.pid} on host {socket.gethostname()}, started " in message
        assert "`holder --of the lock`" in message and "add --wait" in message
        assert run_lock.lock_path(cfg) in message
    finally:
        stop(holder)
    run_lock.acquire(cfg).release()  # released: the next run goes ahead


@pytest.mark.slow
def test_with_wait_a_second_run_waits_until_the_first_is_released(config):
    cfg, path = config
    holder = hold(path)
    waiter = start_holder(path, wait=True, command="waiter")
    try:
        line = waiter.stdout.readline()
        assert "pipeline cgd-lock is already running: " in line
        assert f"pid {holder.pid} " in line and line.rstrip().endswith("waiting for it to finish")
        assert waiter.poll() is None  # still waiting while the first holds the lock
        stop(holder)
        assert waiter.stdout.readline().strip() == "acquired"
        with pytest.raises(run_lock.PipelineRunning, match=f"pid {waiter.pid} .*`waiter`"):
            run_lock.acquire(cfg)
    finally:
        stop(holder)
        stop(waiter)


@pytest.mark.slow
def test_a_lock_left_by_a_killed_run_is_taken_over_and_said_so(config, caplog):
    cfg, path = config
    holder = hold(path)
    os.kill(holder.pid, signal.SIGKILL)
    holder.wait(timeout=60)
    caplog.set_level(logging.INFO, logger="cgd")
    with run_lock.acquire(cfg):
        [warning] = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert f"the previous run (pid {holder.pid} on host " in warning
    assert "ended without releasing its lock" in warning and "takes it over" in warning
    caplog.clear()
    run_lock.acquire(cfg).release()  # after a clean release: nothing to say
    assert not [r for r in caplog.records if r.levelno == logging.WARNING]


@pytest.mark.slow
def test_a_runner_child_holds_the_lock_its_cgd_parent_hands_down(config):
    cfg, path = config
    child = textwrap.dedent("""
        import sys
        from core.config import load_config
        from pipeline import run_lock
        try:
            run_lock.acquire(load_config(sys.argv[1]), command="child")
            print("held")
        except run_lock.PipelineRunning as e:
            print("refused:", e)
    """)
    with run_lock.acquire(cfg, command="parent") as lock:
        handed = subprocess.run(
            [sys.executable, "-c", child, path], cwd=ROOT, capture_output=True, text=True,
            env=dict(os.environ, **{run_lock.LOCK_FD_ENV: str(lock.fd)}), pass_fds=(lock.fd,))
        assert handed.stdout.strip() == "held", handed.stderr
        alone = subprocess.run([sys.executable, "-c", child, path], cwd=ROOT,
                               capture_output=True, text=True)
        assert alone.stdout.startswith("refused: pipeline cgd-lock is already running: "
                                       f"pid {os.getpid()} "), alone.stderr


def test_the_lock_lives_in_the_pipeline_root_or_next_to_ml_metadata_for_a_url_root(tmp_path):
    from pipeline.definition import pipeline_root
    cfg, _ = write_config(tmp_path)
    assert os.path.dirname(run_lock.lock_path(cfg)) == pipeline_root(cfg)
    other, _ = write_config(tmp_path, name="cgd-other")
    assert run_lock.lock_path(other) != run_lock.lock_path(cfg)  # one lock per pipeline
    on_gcs = cfg.replace(pipeline={"root": "gs://bucket/pipelines"})
    assert os.path.dirname(run_lock.lock_path(on_gcs)) == str(tmp_path)  # metadata.sqlite's
    assert "cgd-lock" in os.path.basename(run_lock.lock_path(on_gcs))


def component_dirs(cfg):
    from pipeline.definition import pipeline_root
    root = pipeline_root(cfg)
    return [d for d in os.listdir(root) if not d.startswith(".")] if os.path.isdir(root) else []


@pytest.mark.slow
def test_cgd_pipeline_run_refuses_in_one_line_before_any_component_runs(config, capsys):
    from cli.main import main as cgd
    cfg, path = config
    holder = hold(path)
    try:
        assert cgd(["pipeline", "run", "--config", path]) == 1
    finally:
        stop(holder)
    out, err = capsys.readouterr()
    [line] = err.splitlines()
    assert line.startswith("cgd pipeline run: error: pipeline cgd-lock is already running: "
                           f"pid {holder.pid} ")
    assert "add --wait to wait for it" in line
    assert "==> pipeline" not in out and "Component" not in out  # the runner never started
    assert component_dirs(cfg) == []


@pytest.mark.slow
def test_cgd_retrain_skips_a_run_while_another_run_holds_the_lock(config, caplog):
    from cli.main import main as cgd
    cfg, path = config
    holder = hold(path)
    caplog.set_level(logging.INFO, logger="cgd")
    try:
        assert cgd(["retrain", "--config", path, "--every", "1s", "--max-runs", "1"]) == 1
    finally:
        stop(holder)
    [line] = [r.getMessage() for r in caplog.records if r.getMessage().startswith("retrain:")]
    assert line.startswith("retrain: run 1 skipped: pipeline cgd-lock is already running: "
                           f"pid {holder.pid} ")
    assert component_dirs(cfg) == []


@pytest.mark.slow
def test_tfx_run_create_takes_the_lock_and_tfx_pipeline_create_does_not(config, tmp_path):
    cfg, path = config
    env = dict(os.environ, CGD_CONFIG=path, LOCAL_HOME=str(tmp_path / "tfx_home"),
               TF_USE_LEGACY_KERAS="1")
    tfx = os.path.join(BIN, "tfx")
    holder = hold(path)
    try:
        # Recording the pipeline while it runs: allowed, and the lock stays the holder's.
        created = subprocess.run(
            [tfx, "pipeline", "create", "--engine", "local", "--pipeline_path",
             os.path.join(ROOT, "pipeline", "local_runner.py")],
            env=env, cwd=ROOT, capture_output=True, text=True, timeout=600)
        assert created.returncode == 0, created.stderr[-3000:]
        with pytest.raises(run_lock.PipelineRunning, match=f"pid {holder.pid} "):
            run_lock.acquire(cfg)

        refused = subprocess.run(
            [tfx, "run", "create", "--engine", "local", "--pipeline_name", "cgd-lock"],
            env=env, cwd=ROOT, capture_output=True, text=True, timeout=600)
    finally:
        stop(holder)
    assert refused.returncode != 0
    # The tfx CLI's output goes through the digest (cli/tfx_cli.py), onto stdout.
    [line] = [l for l in (refused.stdout + refused.stderr).splitlines()
              if l.startswith("error:")]
    assert line.startswith(f"error: pipeline cgd-lock is already running: pid {holder.pid} ")
    assert component_dirs(cfg) == []


@pytest.mark.slow
def test_two_concurrent_cgd_pipeline_runs_train_and_push_once(sample_data, tmp_path):
    """The issue's case: a second `cgd pipeline run` of one pipeline, started while the first
    runs (a cron entry overlapping a manual run), is refused; one training, at most one push."""
    source = sample_data.out_dir
    cfg = small_config(tmp_path, source, pipeline={"name": "cgd-twice"}, trainer=UNTRAINED)
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(cfg.to_dict()))
    cgd = [os.path.join(BIN, "cgd"), "pipeline", "run", "--config", str(path)]
    env = dict(os.environ, TF_USE_LEGACY_KERAS="1")
    first = subprocess.Popen(cgd, env=env, cwd=ROOT, stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True)
    first_out = [first.stdout.readline()]
    assert first_out[0].startswith("==> pipeline cgd-twice"), first_out  # it holds the lock
    second = subprocess.run(cgd, env=env, cwd=ROOT, capture_output=True, text=True, timeout=300)
    first_out += first.stdout.readlines()
    assert first.wait(timeout=900) == 0, "".join(first_out)[-3000:]

    assert second.returncode == 1
    [line] = second.stderr.splitlines()
    assert line.startswith("cgd pipeline run: error: pipeline cgd-twice is already running: "
                           f"pid {first.pid} ")
    assert "Component" not in second.stdout
    assert sum("Component Trainer: running" in l for l in first_out) == 1
    summary = first_out[-1]
    assert summary.startswith("pipeline cgd-twice: trained;"), summary
    serving = os.path.join(cfg.pipeline.serving_dir, "cgd")
    pushed = os.listdir(serving) if os.path.isdir(serving) else []
    assert len(pushed) == (1 if "pushed version" in summary else 0), (pushed, summary)
    run_lock.acquire(cfg).release()  # both done: the lock is free and was released cleanly


def test_retrain_says_when_a_run_took_longer_than_the_interval(tmp_path, caplog):
    cfg = small_config(tmp_path, tmp_path)
    now = [0.0]
    durations = iter([95.0, 10.0, 5.0])
    sleeps = []

    def run(_cfg):
        now[0] += next(durations)
        return "pipeline cgd-test: trained"

    caplog.set_level(logging.INFO, logger="cgd")
    ok = run_lib.retrain_every(cfg, 60.0, max_runs=3, run=run, sleep=sleeps.append,
                               clock=lambda: now[0])
    assert ok == 3
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings == ["retrain: run 1 took 95 s, longer than the interval (60 s): the next "
                        "run starts now (runs never overlap; a longer --every avoids this)"]
    assert sleeps == [0.0, 50.0]  # run 2 started at once; run 3 on the interval again
