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
        q.add_argument("--namespace",
                       help="multi-user Kubeflow: your profile namespace, where the experiment "
                            "and runs go (default: kubeflow.namespace; credentials come from "
                            "KF_PIPELINES_SA_TOKEN_PATH, KF_PIPELINES_TOKEN or "
                            "KF_PIPELINES_COOKIE)")

    def vertex_args(q):  # kubeflow.target: vertex; each flag wins over its config key
        q.add_argument("--project", help="Vertex AI: Google Cloud project (default: "
                       "kubeflow.vertex_project)")
        q.add_argument("--location", help="Vertex AI: region (default: kubeflow.vertex_location)")
        q.add_argument("--service-account", help="Vertex AI: service account the steps run as "
                       "(default: kubeflow.vertex_service_account)")

    s = sub.add_parser("submit", help="start one run of a compiled pipeline")
    client_args(s)
    vertex_args(s)
    s.add_argument("--run-name", help="run name (default: pipeline name and UTC time)")
    s.set_defaults(func=submit_command)

    r = sub.add_parser(
        "schedule", help="create a recurring run (cron) of a compiled pipeline",
        description="Standard 5-field cron ('0 3 * * 0': Sundays 03:00) is converted to "
                    "KFP's 6-field form (seconds first); Vertex AI takes it as is, with an "
                    "optional 'TZ=Area/City ' prefix. One run at a time, no catch-up.")
    client_args(r)
    vertex_args(r)
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
    """Check the host and the pipeline file, then make the client (no network before).

    Returns (client, experiment, the loaded pipeline package). A failure to reach or use
    the API is one line naming the host and what to check (kubeflow/client.py api_error):
    no warnings, no traceback.

    Multi-user Kubeflow (healthz says multi_user, asked only when the credential or the
    namespace is missing) refuses every call without an identity and every experiment
    without a namespace: both are checked here, so the user gets one line saying what to set
    instead of KFP's refusal of the first call.
    """
    import os
    import re

    from core.config import K8S_NAMESPACE_PATTERN
    from core.errors import CliError

    host = (args.host or cfg.kubeflow.host or "").strip()
    if not host:
        raise CliError("no Kubeflow Pipelines host: pass --host URL or set 'kubeflow.host' "
                       "in the config")
    if not os.path.isfile(args.pipeline):
        raise CliError(f"--pipeline {args.pipeline} does not exist (create it with "
                       "`cgd kubeflow compile`)")
    from kubeflow.client import is_multi_user, load_pipeline_file, make_client
    from kubeflow.credentials import CREDENTIAL_VARIABLES
    from cli.noise import quiet_kfp_client

    # The file is checked before anything is sent: kfp.Client asks healthz when it is made.
    package = load_pipeline_file(args.pipeline)
    namespace = (getattr(args, "namespace", None) or cfg.kubeflow.namespace or "").strip()
    if namespace and not re.fullmatch(K8S_NAMESPACE_PATTERN, namespace):
        raise CliError(f"--namespace {namespace!r} is not a Kubernetes namespace (lowercase "
                       "letters, digits and '-', at most 63)")
    quiet_kfp_client(verbose=getattr(args, "verbose", False))
    client, credential = make_client(host, namespace)
    namespace = namespace or client.get_user_namespace()  # kfp's: the pod's own namespace
    if (not credential or not namespace) and is_multi_user(client):
        if not credential:
            raise CliError(f"Kubeflow Pipelines at {host} is multi-user and needs your "
                           f"identity: set {CREDENTIAL_VARIABLES} (kubeflow/README.md)")
        raise CliError(f"Kubeflow Pipelines at {host} is multi-user: pass --namespace "
                       "NAMESPACE or set 'kubeflow.namespace' in the config (your Kubeflow "
                       "profile namespace)")
    if namespace:
        log.info("kubeflow: namespace %s", namespace)
    return client, args.experiment or cfg.pipeline.name, package


def submit_command(args: argparse.Namespace) -> int:
    from core.config import load_config
    from kubeflow import client as kfp_client

    cfg = load_config(args.config)
    if cfg.kubeflow.target == "vertex":
        return _vertex_submit(args, cfg)
    client, experiment, package = _client_and_experiment(args, cfg)
    result = kfp_client.submit(client, package, experiment, args.run_name,
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
    if cfg.kubeflow.target == "vertex":
        return _vertex_schedule(args, cfg, cron)
    kfp_cron = kfp_client.to_kfp_cron(cron)  # a bad cron fails before any client call
    client, experiment, package = _client_and_experiment(args, cfg)
    job_name = args.job_name or f"{cfg.pipeline.name}-retrain"
    result = kfp_client.schedule(client, package, experiment, job_name, cron,
                                 default_root=cfg.kubeflow.pipeline_root)
    job_id = getattr(result, "recurring_run_id", None)
    log.info("kubeflow schedule: %s runs on KFP cron '%s' (from '%s') in experiment %s%s",
             job_name, kfp_cron, cron, experiment,
             f" (recurring run {job_id})" if job_id else "")
    return 0


# ------------------------------------------------------------------ kubeflow.target: vertex

def _vertex_target(args: argparse.Namespace, cfg):
    """The Vertex AI project, region and service account; KFP-only flags are ignored."""
    from kubeflow import vertex

    ignored = [flag for flag, value in (("--host", args.host), ("--experiment", args.experiment))
               if value]
    if ignored:
        log.warning("kubeflow: %s not used with kubeflow.target: vertex (KFP only)",
                    " and ".join(ignored))
    return vertex.vertex_target(cfg.kubeflow, args.project, args.location,
                                args.service_account)


def _vertex_submit(args: argparse.Namespace, cfg) -> int:
    from kubeflow import vertex

    target = _vertex_target(args, cfg)
    job = vertex.submit(target, args.pipeline, args.run_name,
                        default_root=cfg.kubeflow.pipeline_root)
    log.info("kubeflow submit: %s submitted to Vertex AI Pipelines as %s", args.pipeline,
             job.resource_name)
    return 0


def _vertex_schedule(args: argparse.Namespace, cfg, cron: str) -> int:
    from kubeflow import vertex

    vertex_cron = vertex.to_vertex_cron(cron)  # a bad cron fails before anything else
    target = _vertex_target(args, cfg)
    job_name = args.job_name or f"{cfg.pipeline.name}-retrain"
    created = vertex.schedule(target, args.pipeline, cron, job_name,
                              default_root=cfg.kubeflow.pipeline_root)
    log.info("kubeflow schedule: %s runs on Vertex AI cron '%s' (from '%s') as %s", job_name,
             vertex_cron, cron, created.resource_name)
    return 0
