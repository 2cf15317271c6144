"""RecallEvaluator: retrieval metrics of the candidate (and baseline) model; blesses or not.

Inputs: the raw eval-split Examples, the candidate Model, optionally the
latest blessed Model (Resolver with LatestBlessedModelStrategy).
Outputs: a ModelBlessing the stock Pusher honours, and a ModelEvaluation
directory with metrics.json, verdict.txt, rankings.png and rankings.html.
"""

from __future__ import annotations

import json

from tfx import types
from tfx.dsl.components.base import base_beam_component, executor_spec
from tfx.types import standard_artifacts
from tfx.types.component_spec import ChannelParameter, ExecutionParameter

from components.recall_evaluator import executor


class RecallEvaluatorSpec(types.ComponentSpec):
    PARAMETERS = {
        # Config.to_dict() as JSON: the evaluator, transform and data sections are used.
        "config_json": ExecutionParameter(type=str),
        "eval_split": ExecutionParameter(type=str),
    }
    INPUTS = {
        "examples": ChannelParameter(type=standard_artifacts.Examples),
        "model": ChannelParameter(type=standard_artifacts.Model),
        "baseline_model": ChannelParameter(type=standard_artifacts.Model, optional=True),
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

    def __init__(self, examples, model, config: dict, baseline_model=None,
                 eval_split: str = "eval"):
        super().__init__(spec=RecallEvaluatorSpec(
            examples=examples, model=model, baseline_model=baseline_model,
            config_json=json.dumps(config, sort_keys=True), eval_split=eval_split,
            blessing=types.Channel(type=standard_artifacts.ModelBlessing),
            evaluation=types.Channel(type=standard_artifacts.ModelEvaluation)))
