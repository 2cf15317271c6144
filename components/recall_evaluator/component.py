"""RecallEvaluator: retrieval metrics of the candidate (and baseline) model; blesses or not.

Inputs: the raw eval-split Examples and the candidate Model. The baseline is
the model in production: the newest version in ``serving_model_dir``, read at
run time (production.py), the same on every orchestrator.
Outputs: a ModelBlessing the stock Pusher honours, and a ModelEvaluation
directory with metrics.json, verdict.txt, rankings.png and rankings.html.
"""

from __future__ import annotations

import json

from tfx import types
from tfx.dsl.components.base import base_beam_component, executor_spec
from tfx.types import standard_artifacts
from tfx.types import standard_component_specs as keys
from tfx.types.component_spec import ChannelParameter, ExecutionParameter

from components.recall_evaluator import constants, driver, executor
from core.names import CODE_FINGERPRINT_KEY


class RecallEvaluatorSpec(types.ComponentSpec):
    PARAMETERS = {
        # The evaluator section of the config (EvaluatorConfig) as JSON: all the executor
        # reads of the config. The eval split and the production model's directory come
        # as their own parameters.
        constants.EVALUATOR_JSON_KEY: ExecutionParameter(type=str),
        CODE_FINGERPRINT_KEY: ExecutionParameter(type=str),
        constants.EVAL_SPLIT_KEY: ExecutionParameter(type=str),
        constants.SERVING_MODEL_DIR_KEY: ExecutionParameter(type=str),
    }
    # TFX's own channel names, as the stock Evaluator's: the Pusher and TFX's Kubeflow
    # container treat this component as an evaluator (executor.Executor).
    INPUTS = {
        keys.EXAMPLES_KEY: ChannelParameter(type=standard_artifacts.Examples),
        keys.MODEL_KEY: ChannelParameter(type=standard_artifacts.Model),
    }
    OUTPUTS = {
        keys.BLESSING_KEY: ChannelParameter(type=standard_artifacts.ModelBlessing),
        keys.EVALUATION_KEY: ChannelParameter(type=standard_artifacts.ModelEvaluation),
    }


class RecallEvaluator(base_beam_component.BaseBeamComponent):
    SPEC_CLASS = RecallEvaluatorSpec
    # A Beam executor spec because the executor subclasses the stock Evaluator's
    # (see executor.Executor); the metrics themselves do not use Beam.
    EXECUTOR_SPEC = executor_spec.BeamExecutorSpec(executor.Executor)
    DRIVER_CLASS = driver.ProductionModelDriver

    def __init__(self, examples, model, evaluator_config: dict, serving_model_dir: str,
                 code_fingerprint: str = "", eval_split: str = "eval"):
        """``evaluator_config``: the evaluator section (``dataclasses.asdict`` of an
        EvaluatorConfig); ``serving_model_dir``: ``<serving_dir>/<model_name>``."""
        super().__init__(spec=RecallEvaluatorSpec(**{
            keys.EXAMPLES_KEY: examples, keys.MODEL_KEY: model,
            constants.SERVING_MODEL_DIR_KEY: serving_model_dir,
            constants.EVALUATOR_JSON_KEY: json.dumps(evaluator_config, sort_keys=True),
            CODE_FINGERPRINT_KEY: code_fingerprint, constants.EVAL_SPLIT_KEY: eval_split,
            keys.BLESSING_KEY: types.Channel(type=standard_artifacts.ModelBlessing),
            keys.EVALUATION_KEY: types.Channel(type=standard_artifacts.ModelEvaluation)}))
