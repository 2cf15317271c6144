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
from tfx.types.component_spec import ChannelParameter, ExecutionParameter

from components.recall_evaluator import constants, driver, executor


class RecallEvaluatorSpec(types.ComponentSpec):
    PARAMETERS = {
        # Config.to_dict() as JSON: the evaluator, transform and data sections are used.
        constants.EVALUATOR_JSON_KEY: ExecutionParameter(type=str),
        constants.CODE_FINGERPRINT_KEY: ExecutionParameter(type=str),
        constants.EVAL_SPLIT_KEY: ExecutionParameter(type=str),
        constants.SERVING_MODEL_DIR_KEY: ExecutionParameter(type=str),
    }
    INPUTS = {
        "examples": ChannelParameter(type=standard_artifacts.Examples),
        "model": ChannelParameter(type=standard_artifacts.Model),
    }
    OUTPUTS = {
        "blessing": ChannelParameter(type=standard_artifacts.ModelBlessing),
        "evaluation": ChannelParameter(type=standard_artifacts.ModelEvaluation),
    }


class RecallEvaluator(base_beam_component.BaseBeamComponent):
    SPEC_CLASS = RecallEvaluatorSpec
    # A Beam executor spec because the executor subclasses the stock Evaluator's
    # (see executor.Executor); the metrics themselves do not use Beam.
    EXECUTOR_SPEC = executor_spec.BeamExecutorSpec(executor.Executor)
    DRIVER_CLASS = driver.ProductionModelDriver

    def __init__(self, examples, model, evaluator_config: dict, serving_model_dir: str,
                 code_fingerprint: str = "", eval_split: str = "eval"):
        super().__init__(spec=RecallEvaluatorSpec(
            examples=examples, model=model, serving_model_dir=serving_model_dir,
            evaluator_json=json.dumps(evaluator_config, sort_keys=True),
            code_fingerprint=code_fingerprint, eval_split=eval_split,
            blessing=types.Channel(type=standard_artifacts.ModelBlessing),
            evaluation=types.Channel(type=standard_artifacts.ModelEvaluation)))
