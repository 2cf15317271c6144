"""The one-line summary that ends every pipeline run, and the retrain loop's lines."""
from __future__ import annotations

import json
import logging
import os

import pytest

from pipeline import run as run_lib
from pipeline.summary import RunState, run_summary
from tests.conftest import small_config


def write_evaluation(cfg, artifact_id, metrics):
    path = os.path.join(cfg.pipeline.root, cfg.pipeline.name, "RecallEvaluator", "evaluation",
                        str(artifact_id))
    os.makedirs(path)
    with open(os.path.join(path, "metrics.json"), "w") as f:
        json.dump(metrics, f)


def new_dir(*parts):
    os.makedirs(os.path.join(*parts))


def test_a_run_that_trained_and_pushed_says_so(tmp_path):
    cfg = small_config(tmp_path, tmp_path)
    before = RunState.now(cfg)
    new_dir(cfg.pipeline.root, cfg.pipeline.name, "Trainer", "model", "7")
    write_evaluation(cfg, 9, {
        "candidate": {"recall@1": 0.6}, "baseline": {"recall@1": 0.5},
        "difference": {"intervals": {"recall@1": [0.02, 0.18]}},
        "reason": "BLESSED: Recall@1 0.6000 vs production 0.5000: ..."})
    new_dir(cfg.pipeline.serving_dir, "cgd", "1700000000")
    line = run_summary(cfg, before)
    assert line == ("pipeline cgd-test: trained; Recall@1 0.6000 vs production 0.5000 "
                    "(+0.1000 [+0.0200, +0.1800]): BLESSED; pushed version 1700000000; "
                    "serving version 1700000000")


def test_a_cached_rerun_says_nothing_was_trained_or_pushed(tmp_path):
    cfg = small_config(tmp_path, tmp_path)
    new_dir(cfg.pipeline.root, cfg.pipeline.name, "Trainer", "model", "7")
    new_dir(cfg.pipeline.serving_dir, "cgd", "1700000000")
    before = RunState.now(cfg)
    write_evaluation(cfg, 11, {"candidate": {"recall@1": 0.6},
                               "reason": "ALREADY SERVING: the candidate is ..."})
    line = run_summary(cfg, before)
    assert line == ("pipeline cgd-test: Trainer cached (no training); Recall@1 0.6000: "
                    "ALREADY SERVING; nothing pushed; serving version 1700000000")


def test_every_zero_is_refused():
    with pytest.raises(ValueError, match="longer than zero"):
        run_lib.parse_interval("0s")


def test_retrain_ends_each_run_with_one_line_and_a_failure_is_not_finished(caplog, tmp_path):
    cfg = small_config(tmp_path, tmp_path)
    outcomes = iter([RuntimeError("Cars196 source directory /x does not exist"),
                     "pipeline cgd-test: trained; ...; serving version 1"])

    def run(_cfg):
        outcome = next(outcomes)
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    caplog.set_level(logging.INFO, logger="cgd")
    ok = run_lib.retrain_every(cfg, 1.0, max_runs=2, run=run, sleep=lambda s: None)
    lines = [r.getMessage() for r in caplog.records if r.name == "cgd"]
    assert ok == 1
    assert lines == [
        "retrain: run 1 FAILED: RuntimeError: Cars196 source directory /x does not exist; "
        "next run in 1 s",
        "retrain: run 2 finished: pipeline cgd-test: trained; ...; serving version 1"]


@pytest.mark.slow
def test_a_failing_pipeline_run_ends_in_one_line_naming_the_fix_and_the_log(tmp_path, capsys):
    import yaml

    from cli.main import main

    source = tmp_path / "cars196"
    source.mkdir()
    (source / "cars_train.tgz").write_bytes(b"")
    cfg = small_config(tmp_path, source)
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump(cfg.to_dict()))
    assert main(["pipeline", "run", "--config", str(config)]) == 1
    out, err = capsys.readouterr()
    [error] = err.strip().splitlines()
    log_path = os.path.join(os.path.dirname(cfg.pipeline.root), "logs", "cgd-test.log")
    assert error.startswith("cgd pipeline run: error: pipeline cgd-test failed")
    assert "in component RetrievalExampleGen: Cars196SourceError" in error
    assert error.endswith(f"full log: {log_path}")
    assert "is missing cars_test.tgz" in out  # the component's own message, on the console
    assert "Traceback" not in out + err
    assert "Traceback" in open(log_path).read()  # the details are in the log
