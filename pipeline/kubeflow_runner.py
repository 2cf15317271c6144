"""The pipeline for Kubeflow Pipelines and Vertex AI: ``create_pipeline`` with Kubeflow's settings.

The composition root for Kubeflow, as local_runner.py is for the tfx CLI: it
builds the same TFX pipeline (pipeline/definition.py) with the Kubeflow root,
Beam args and checkpoint root, and hands it to kubeflow/compiler.py, which
knows nothing of the definition.
"""

from __future__ import annotations

from core.config import Config
from kubeflow import compiler


def kubeflow_pipeline(cfg: Config):
    """The TFX pipeline of ``cfg`` as it runs on Kubeflow (not yet compiled)."""
    from pipeline import definition

    compiler.check_pipeline_name(cfg)
    root = compiler.check_pipeline_root(cfg)
    tfx_pipeline = definition.create_pipeline(
        cfg, beam_pipeline_args=list(cfg.kubeflow.beam_args), root=root,
        local_metadata=False, checkpoint_root=compiler.checkpoint_root(root))
    return compiler.prepare_pipeline(tfx_pipeline, cfg)


def compile_for_kubeflow(cfg: Config, image: str | None, output_path: str) -> dict:
    """`cgd kubeflow compile`: write ``output_path``; return the PipelineJob."""
    image = compiler.resolve_image(cfg, image)  # before the slow TFX import
    return compiler.compile_pipeline(kubeflow_pipeline(cfg), cfg, image, output_path)
