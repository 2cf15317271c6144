"""Names the RecallEvaluator's component, driver and executor share (one definition each)."""

# Execution parameters.
# The evaluator section of the config (core.config.EvaluatorConfig) as JSON: all it reads.
EVALUATOR_JSON_KEY = "evaluator_json"
# The code fingerprint's key is core.names.CODE_FINGERPRINT_KEY, shared with the Transform
# and the Trainer; the channel keys are TFX's own (tfx.types.standard_component_specs).
EVAL_SPLIT_KEY = "eval_split"
# <serving_dir>/<model_name>: where the model in production is read (production.py).
SERVING_MODEL_DIR_KEY = "serving_model_dir"
# Set by the local driver (driver.py) so that a change of the production model
# changes the evaluator's cache key; never set on Kubeflow, where the task is not cached.
PRODUCTION_FINGERPRINT_KEY = "production_fingerprint"
