"""`cgd kubeflow compile | submit | schedule`: the pipeline on Kubeflow Pipelines (v2)."""

from __future__ import annotations

import argparse
import json
import logging

log = logging.getLogger("cgd")


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "kubeflow", help="compile, submit and schedule the pipeline on Kubeflow Pipelines",
        description="The same pipeline for Kubeflow Pipelines (v2): compiled by TFX's "
                    "KubeflowV2DagRunner, run in our image (kubeflow/Dockerfile).")
    sub = p.add_subparsers(dest="kubeflow_command", metavar="ACTION")

    c = sub.add_parser(
        "compile", help="compile the pipeline into a KFP PipelineJob file",
        description="Writes a PipelineJob (.json) or PipelineSpec (.yaml). Pipeline root "
                    "kubeflow.pipeline_root, Beam args kubeflow.beam_args, Trainer resources "
                    "kubeflow.gpus/gpu_limit_resource/memory/cpu.")
    c.add_argument("--config", help="YAML config (default: the packaged defaults)")
    c.add_argument("--image", help="container image for every step (default: kubeflow.image)")
    c.add_argument("--output", default="pipeline.json",
                   help="output file, .json (PipelineJob) or .yaml (PipelineSpec + platform "
                        "spec) (default pipeline.json)")
    c.set_defaults(func=compile_command)

    def client_args(q):
        q.add_argument("--config", help="YAML config (default: the packaged defaults)")
        q.add_argument("--pipeline", required=True,
                       help="compiled file from `cgd kubeflow compile`")
        q.add_argument("--host", help="KFP API endpoint (default: kubeflow.host)")
        q.add_argument("--experiment", help="KFP experiment (default: pipeline.name)")

    s = sub.add_parser("submit", help="start one run of a compiled pipeline")
    client_args(s)
    s.add_argument("--run-name", help="run name (default: pipeline name and UTC time)")
    s.set_defaults(func=submit_command)

    r = sub.add_parser(
        "schedule", help="create a recurring run (cron) of a compiled pipeline",
        description="Standard 5-field cron ('0 3 * * 0': Sundays 03:00) is converted to "
                    "KFP's 6-field form (seconds first). One run at a time, no catch-up.")
    client_args(r)
    r.add_argument("--cron", help="cron expression (default: kubeflow.schedule_cron)")
    r.add_argument("--job-name", help="recurring run name (default: <pipeline.name>-retrain)")
    r.set_defaults(func=schedule_command)

    p.set_defaults(func=lambda args: p.print_help() or 2)


def compile_command(args: argparse.Namespace) -> int:
    from core.config import load_config
    from kubeflow import compiler
    from pipeline.kubeflow_runner import compile_for_kubeflow

    cfg = load_config(args.config)
    job = compile_for_kubeflow(cfg, args.image, args.output)
    spec = job["pipelineSpec"]
    image = compiler.resolve_image(cfg, args.image)
    log.info("kubeflow compile: wrote %s: pipeline %s, %d tasks, image %s, root %s",
             args.output, spec["pipelineInfo"]["name"], len(spec["root"]["dag"]["tasks"]),
             image, job["runtimeConfig"].get("gcsOutputDirectory"))
    trainer = spec["deploymentSpec"]["executors"].get("Trainer_executor", {})
    log.info("kubeflow compile: Trainer resources %s",
             json.dumps(trainer.get("container", {}).get("resources", {}), sort_keys=True))
    return 0


def _client_and_experiment(args: argparse.Namespace, cfg):
    """Check the host and the pipeline file, then make the client (no network before)."""
    import os

    from core.errors import CliError

    host = (args.host or cfg.kubeflow.host or "").strip()
    if not host:
        raise CliError("no Kubeflow Pipelines host: pass --host URL or set 'kubeflow.host' "
                       "in the config")
    if not os.path.isfile(args.pipeline):
        raise CliError(f"--pipeline {args.pipeline} does not exist (create it with "
                       "`cgd kubeflow compile`)")
    from kubeflow.client import make_client

    return make_client(host), args.experiment or cfg.pipeline.name


def submit_command(args: argparse.Namespace) -> int:
    from core.config import load_config
    from kubeflow import client as kfp_client

    cfg = load_config(args.config)
    client, experiment = _client_and_experiment(args, cfg)
    result = kfp_client.submit(client, args.pipeline, experiment, args.run_name,
                               default_root=cfg.kubeflow.pipeline_root)
    run_id = getattr(result, "run_id", None)
    log.info("kubeflow submit: %s started in experiment %s%s", args.pipeline, experiment,
             f" (run {run_id})" if run_id else "")
    return 0


def schedule_command(args: argparse.Namespace) -> int:
    from core.config import load_config
    from core.errors import CliError
    from kubeflow import client as kfp_client

    cfg = load_config(args.config)
    cron = args.cron or cfg.kubeflow.schedule_cron
    if not cron:
        raise CliError("no schedule: pass --cron \"MIN HOUR DOM MONTH DOW\" or set "
                       "'kubeflow.schedule_cron' in the config")
    kfp_cron = kfp_client.to_kfp_cron(cron)  # a bad cron fails before any client call
    client, experiment = _client_and_experiment(args, cfg)
    job_name = args.job_name or f"{cfg.pipeline.name}-retrain"
    result = kfp_client.schedule(client, args.pipeline, experiment, job_name, cron,
                                 default_root=cfg.kubeflow.pipeline_root)
    job_id = getattr(result, "recurring_run_id", None)
    log.info("kubeflow schedule: %s runs on KFP cron '%s' (from '%s') in experiment %s%s",
             job_name, kfp_cron, cron, experiment,
             f" (recurring run {job_id})" if job_id else "")
    return 0
