"""Names the GalleryIndexer's component, driver and executor share (one definition each).

The serving model dir's and the eval split's keys are the RecallEvaluator's
(components/recall_evaluator/constants.py): one definition of each.
"""

# Execution parameters.
# The gallery_index section of the config (core.config.GalleryIndexConfig) as JSON: all it
# reads of the config.
GALLERY_INDEX_JSON_KEY = "gallery_index_json"
# Set by the local driver (driver.py): the catalogue's last sequence number and the state of
# a gallery folder or CSV, which live outside anything TFX's cache key sees.
GALLERY_STATE_KEY = "gallery_state"

# Output channels. TFX wants argument names unique across inputs and outputs, so the
# indexed copy of the candidate cannot be called `model` as the input is.
INDEXED_MODEL_KEY = "indexed_model"

# In the evaluation output.
METRICS_FILE = "metrics.json"
VERDICT_FILE = "verdict.txt"
