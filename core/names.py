"""Names shared across packages: one definition each (features, signatures, keys, files).

A name used by two components, or by a component and the serving side, lives here;
a name private to one module stays in it.
"""

# Raw tf.Example features (RetrievalExampleGen writes them, Transform and the evaluator read them).
IMAGE_KEY = "image"              # encoded JPEG/PNG bytes
LABEL_KEY = "label"              # 0-based class id (raw and transformed)
# The class's name (raw and transformed). Its identity across runs: a folder dataset's
# label ids move when the split changes, its class names do not.
CLASS_NAME_KEY = "class_name"
IMAGE_ID_KEY = "image_id"
BBOX_KEY = "bbox"                # float [4]: ymin, xmin, ymax, xmax, normalised
EVAL_ROLE_KEY = "eval_role"      # "query" | "gallery" | "" (all-vs-all): In-shop's protocol
# Transformed feature: serialized uint8 [S, S, 3] (components/preprocessing/image_ops.serialize_images).
TRANSFORMED_IMAGE_KEY = "image_u8"

# The exported SavedModel's contract (trainer/export.py writes it; serving and the evaluator read it).
SERVING_SIGNATURE = "serving_default"   # encoded image bytes -> embedding
PIXELS_SIGNATURE = "pixels"             # uint8 [N, H, W, 3] -> embedding
IMAGES_INPUT = "images"
PIXELS_INPUT = "pixels"
EMBEDDING_OUTPUT = "embedding"
LOGITS_OUTPUT = "logits"                # the training model's auxiliary head only
# In the SavedModel's assets.extra/: how images must look for it (crop protocol, sizes).
CONTRACT_FILE = "contract.json"
# The contract's key for the classes the model has seen: {"train": [class names],
# "valid": [class names], "digest": sha256}. The evaluator compares production's with the
# current eval classes (components/recall_evaluator/class_overlap.py).
CONTRACT_CLASSES_KEY = "seen_classes"

# The Trainer's custom_config (pipeline/definition.py writes it, trainer/task.py reads it).
TRAINER_JOB_KEY = "trainer_job"          # core.config.TrainerJob.to_dict()
CHECKPOINT_ROOT_KEY = "checkpoint_root"  # "" = no resumable checkpoints
# A hash of the component's source: in the Transform's and the Trainer's custom_config and
# as the RecallEvaluator's execution parameter, so that a code change reruns it. Cache key
# only, nobody reads it (pipeline/definition.code_fingerprint).
CODE_FINGERPRINT_KEY = "code_fingerprint"

# Transform's custom_config (pipeline/definition.py writes it; tft_module.py and
# transform_executor.py read it).
TRANSFORM_JOB_KEY = "transform_job"      # core.config.TransformJob.to_dict()

# Written by the Trainer into its model run directory, read by the demo and the tests.
VALIDATION_FILE = "validation.json"

# Ranking losses by config name (trainer/losses.py implements exactly these).
LOSSES = (
    "batch_hard", "batch_hard_soft", "hap2s_exp", "hap2s_poly", "semi_hard",
    "lifted", "npairs", "angular", "contrastive",
)

# data.dataset values: the datasets read from their original files (components/datasets/).
DATASETS = ("cars196", "cub200", "sop", "inshop", "folder")

# The four files of the Cars196 release (TFDS cars196).
CARS196_FILES = (
    "cars_train.tgz",
    "cars_test.tgz",
    "car_devkit.tgz",
    "cars_test_annos_withlabels.mat",
)

# The gallery index (#25). search/index.py builds and loads it; the pipeline writes it into
# the pushed SavedModel (<SavedModel>/assets.extra/INDEX_DIR/) and the search service reads
# it from there. The catalogue (search/catalogue.py) lives in
# <serving_dir>/<model_name>/CATALOGUE_DIR/, outside the version directories, so it
# survives pushes and restarts.
INDEX_DIR = "gallery_index"
CATALOGUE_DIR = "catalogue"
# gallery_index.kind values (core/config.py checks them, search/index.py builds them).
GALLERY_INDEX_KINDS = ("auto", "exact", "hnsw", "ivf_flat", "ivf_pq", "ivf_sq8", "ivf_sq6")
# gallery_index.gallery: the eval split; any other value is a folder or CSV path.
EVAL_GALLERY = "eval"
