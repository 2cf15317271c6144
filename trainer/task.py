"""TFX Trainer entry point: ``run_fn(fn_args)`` (``trainer.task.run_fn``).

Trains the CGD model on P x K batches of the transformed 'train' split with
ranking loss + auxiliary classification loss; selects the model and stops
early on Recall@1 of the held-out 'valid' classes (never the eval classes);
checkpoints every epoch and resumes a killed run; writes TensorBoard logs to
the model run directory; exports the serving SavedModel.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import tempfile

import numpy as np
import tensorflow as tf
import tf_keras

from components.preprocessing import image_ops
from core.config import TrainerJob
from core.names import (CHECKPOINT_ROOT_KEY, EMBEDDING_OUTPUT, LOGITS_OUTPUT, TRAINER_JOB_KEY,
                        VALIDATION_FILE)
from trainer import export, losses, sampler
from trainer.model import build_model, embedding_model

log = logging.getLogger(__name__)
STEP_DECAY_AT = (0.6, 0.8)  # fractions of training where the step schedule divides by 10


# ------------------------------------------------------------------ environment

def choose_strategy() -> tf.distribute.Strategy:
    """MultiWorkerMirrored from TF_CONFIG, Mirrored on several GPUs, else the default."""
    tf_config = json.loads(os.environ.get("TF_CONFIG", "{}") or "{}")
    workers = tf_config.get("cluster", {}).get("worker", [])
    if len(workers) + len(tf_config.get("cluster", {}).get("chief", [])) > 1:
        return tf.distribute.MultiWorkerMirroredStrategy()
    if len(tf.config.list_physical_devices("GPU")) > 1:
        return tf.distribute.MirroredStrategy()
    return tf.distribute.get_strategy()


def is_chief() -> bool:
    task = json.loads(os.environ.get("TF_CONFIG", "{}") or "{}").get("task", {})
    return task.get("type") in (None, "chief") or (
        task.get("type") == "worker" and task.get("index") == 0
        and "chief" not in json.loads(os.environ["TF_CONFIG"]).get("cluster", {}))


def set_precision(mode: str) -> str:
    on = mode == "on" or (mode == "auto" and bool(tf.config.list_physical_devices("GPU")))
    policy = "mixed_float16" if on else "float32"
    tf_keras.mixed_precision.set_global_policy(policy)
    return policy


# ------------------------------------------------------------------ training parts

def classification_loss(num_classes: int, label_smoothing: float):
    """Softmax cross-entropy with label smoothing on logits already divided by tau.

    A plain function (not a Keras Loss object, whose reductions are refused
    under tf.distribute strategies): mean over the batch.
    """
    def loss(labels, logits):
        labels = tf.reshape(tf.cast(labels, tf.int32), [-1])
        targets = tf.one_hot(labels, num_classes) * (1.0 - label_smoothing) + (
            label_smoothing / num_classes)
        return tf.reduce_mean(tf.nn.softmax_cross_entropy_with_logits(
            targets, tf.cast(logits, tf.float32)))
    return loss


def learning_rate_schedule(t):
    """The learning rate of a TrainerConfig ``t``: a float or a Keras schedule of the step."""
    total = t.epochs * t.steps_per_epoch
    if t.lr_schedule == "cosine":
        return tf_keras.optimizers.schedules.CosineDecay(t.learning_rate, total)
    if t.lr_schedule == "step":  # x0.1 at 60% and 80% of training, as leftthomas/CGD
        return tf_keras.optimizers.schedules.PiecewiseConstantDecay(
            [int(total * STEP_DECAY_AT[0]), int(total * STEP_DECAY_AT[1])],
            [t.learning_rate, t.learning_rate * 0.1, t.learning_rate * 0.01])
    return t.learning_rate


def make_optimizer(t) -> tf_keras.optimizers.Optimizer:
    """The optimizer of a TrainerConfig ``t`` with its learning-rate schedule."""
    lr = learning_rate_schedule(t)
    if t.optimizer == "sgd":
        return tf_keras.optimizers.SGD(lr, momentum=0.9)
    return tf_keras.optimizers.Adam(lr)


def compile_for_training(model: tf_keras.Model, t, num_classes: int) -> None:
    """Compile as training does: the ranking loss on the embedding plus the weighted
    classification loss on the logits, the trainer's optimizer and speed switches."""
    model.compile(
        optimizer=make_optimizer(t),
        loss={EMBEDDING_OUTPUT: losses.bind_loss(t.loss),
              LOGITS_OUTPUT: classification_loss(num_classes, t.label_smoothing)},
        loss_weights={EMBEDDING_OUTPUT: 1.0, LOGITS_OUTPUT: t.classification_loss_weight},
        jit_compile=t.jit_compile, steps_per_execution=t.steps_per_execution)


class ValidationRecall(tf_keras.callbacks.Callback):
    """Recall@1 on the held-out classes each epoch; keeps the best weights, stops early.

    Selection uses only the 'valid' split (training classes held out from the
    classification head), never the eval classes. With ``state_dir`` the best
    epoch so far (weights, Recall@1, history) is saved there as it improves, so a
    resumed run still selects among the epochs trained before the interruption.
    With ``keep_last`` the model is the last epoch's instead of the best one's
    (trainer.model_selection: last); Recall@1 is still measured, logged and used
    for early stopping.
    """

    def __init__(self, valid: sampler.ImageSet, patience: int, batch_size: int = 64,
                 state_dir: str | None = None, input_size: int = 0,
                 no_stop_before_epoch: int = 0, keep_last: bool = False):
        super().__init__()
        self.keep_last = keep_last
        self.valid = valid
        self.patience = patience
        # Validation sees the centre view, as evaluation and serving do.
        self.input_size = input_size
        # Early stopping waits for the first learning-rate drop (a plateau before it is
        # what the drop is for).
        self.no_stop_before_epoch = no_stop_before_epoch
        self.batch_size = batch_size
        self.state_dir = state_dir
        self.best = -1.0
        self.best_epoch = -1
        self.best_weights = None
        self.history: list[float] = []

    def recall_at_1(self) -> float:
        from components.recall_evaluator.metrics import recall_at_k
        images = self.valid.images
        if self.input_size and self.input_size < images.shape[1]:
            images = image_ops.center_crop(images, self.input_size).numpy()
        embeddings = self.model.predict(images.astype(np.float32),
                                        batch_size=self.batch_size, verbose=0)[EMBEDDING_OUTPUT]
        return float(recall_at_k(embeddings, self.valid.labels, ks=(1,))[1])

    def _state_files(self):
        return (os.path.join(self.state_dir, "best.json"),
                os.path.join(self.state_dir, "best_weights.npz"))

    @staticmethod
    def completed_epochs(state_dir: str | None) -> int:
        """Epochs a resumed training already did (0 when starting afresh)."""
        meta = state_dir and os.path.join(state_dir, "best.json")
        if not meta or not tf.io.gfile.exists(meta):
            return 0
        with tf.io.gfile.GFile(meta) as f:
            return len(json.load(f)["history"])

    def _save_state(self, weights: bool = True):
        if not self.state_dir or not is_chief() or self.best_weights is None:
            return
        meta, weights_file = self._state_files()
        tf.io.gfile.makedirs(self.state_dir)
        if weights:
            buffer = io.BytesIO()  # zip needs a seekable file; GFile is write-only
            np.savez(buffer, *self.best_weights)
            with tf.io.gfile.GFile(weights_file + ".partial", "wb") as f:
                f.write(buffer.getvalue())
            tf.io.gfile.rename(weights_file + ".partial", weights_file, overwrite=True)
        with tf.io.gfile.GFile(meta, "w") as f:  # written last: marks the state complete
            json.dump({"best": self.best, "best_epoch": self.best_epoch,
                       "history": self.history, "untrained": self.untrained}, f)

    def _load_state(self) -> bool:
        if not self.state_dir or not tf.io.gfile.exists(self._state_files()[0]):
            return False
        meta, weights = self._state_files()
        with tf.io.gfile.GFile(meta) as f:
            state = json.load(f)
        with tf.io.gfile.GFile(weights, "rb") as f:
            arrays = np.load(io.BytesIO(f.read()))
        self.best_weights = [arrays[f"arr_{i}"] for i in range(len(arrays.files))]
        self.best, self.best_epoch = state["best"], state["best_epoch"]
        self.history, self.untrained = state["history"], state["untrained"]
        log.info("resumed model selection: best epoch %d so far (validation Recall@1 %.4f)",
                 self.best_epoch + 1, self.best)
        return True

    def on_train_begin(self, logs=None):
        if self._load_state():
            return
        self.untrained = self.recall_at_1()
        log.info("validation Recall@1 before training: %.4f (%d images)", self.untrained,
                 len(self.valid))

    def on_epoch_end(self, epoch, logs=None):
        r1 = self.recall_at_1()
        self.history.append(r1)
        if logs is not None:
            logs["val_recall@1"] = r1
        improved = r1 > self.best
        if improved:
            self.best, self.best_epoch = r1, epoch
            self.best_weights = self.model.get_weights()
        self._save_state(weights=improved)  # history every epoch: where to resume the stream
        log.info("epoch %d/%d: loss %.4f, validation Recall@1 %.4f%s", epoch + 1,
                 self.params.get("epochs", 0), (logs or {}).get("loss", float("nan")), r1,
                 " (best)" if improved else "")
        if (self.patience and epoch + 1 >= self.no_stop_before_epoch
                and epoch - self.best_epoch >= self.patience):
            log.info("early stopping: no Recall@1 improvement for %d epochs", self.patience)
            self.model.stop_training = True

    @property
    def selected_epoch(self) -> int:
        """0-based epoch whose weights the model has after training."""
        return len(self.history) - 1 if self.keep_last else self.best_epoch

    def on_train_end(self, logs=None):
        if self.keep_last and self.history:
            log.info("kept the last epoch %d (validation Recall@1 %.4f; best epoch %d, %.4f)",
                     len(self.history), self.history[-1], self.best_epoch + 1, self.best)
        elif self.best_weights is not None:
            self.model.set_weights(self.best_weights)
            log.info("restored the best epoch %d (validation Recall@1 %.4f)",
                     self.best_epoch + 1, self.best)
        if self.state_dir and is_chief() and tf.io.gfile.exists(self.state_dir):
            tf.io.gfile.rmtree(self.state_dir)  # training finished: nothing to resume


def check_selection_split(job: TrainerJob, labels) -> None:
    """Refuses a held-out 'valid' split that cannot select a model; warns without one.

    With fewer than ``job.min_valid_classes`` classes (one class: every neighbour is a
    match, every epoch scores Recall@1 1.0) or ``job.min_valid_queries`` queries with a
    match, "the best epoch" would be noise. Ingestion checks this too; the Trainer checks
    the split it is given (e.g. by a hand-built pipeline).
    """
    if not job.validation_classes:
        log.warning("no held-out classes (data.validation_classes: 0): model selection and "
                    "early stopping use the training classes, so they are optimistic")
        return
    classes, counts = np.unique(np.asarray(labels), return_counts=True)
    queries = int(counts[counts >= 2].sum())
    if classes.size < job.min_valid_classes or queries < job.min_valid_queries:
        raise ValueError(
            f"the validation split ('valid', data.validation_classes "
            f"{job.validation_classes}) has {classes.size} class(es) and {queries} queries "
            f"with a match; model selection needs at least {job.min_valid_classes} classes "
            f"(evaluator.min_eval_classes) and {job.min_valid_queries} queries "
            "(evaluator.min_queries): change data.validation_classes, or set it to 0 to "
            "select on the training classes")


def checkpoint_dir(root: str, job: TrainerJob, train_files) -> str:
    """A stable directory per (trainer job, training data): a rerun after a kill resumes."""
    key = json.dumps({"job": job.to_dict(), "files": sorted(train_files)}, sort_keys=True)
    return os.path.join(root, hashlib.sha256(key.encode()).hexdigest()[:16])


def train(job: TrainerJob, train_files, valid_files, model_run_dir: str,
          backup_dir: str | None = None, cache_dir: str | None = None):
    """Build and fit the model; returns (keras model, ValidationRecall callback).

    The training split is held in memory when it fits in
    ``trainer.sampler_memory_budget_mb``, else streamed from a local cache under
    ``cache_dir`` (default: the system temp dir, ``TMPDIR``), removed when training
    completes (kept after a failure: a rerun reuses it). The classification head has
    one output per distinct class id of the training split, in sorted order.
    """
    # MultiWorkerMirroredStrategy must exist before any other TensorFlow op runs.
    strategy = choose_strategy()
    t = job.trainer
    tf_keras.utils.set_random_seed(t.seed)
    stored = job.transform.image_size
    size = t.input_size or stored  # the model's input: a crop of the stored image
    # The selection split first: refused before the (larger) training split is read.
    valid_set = sampler.load_image_set(valid_files, stored)
    check_selection_split(job, valid_set.labels)
    train_set = sampler.open_training_set(train_files, stored, t.sampler_memory_budget_mb,
                                          cache_dir)
    crop = size if size < stored else 0
    selection_dir = backup_dir and backup_dir + "-selection"
    # A resumed run continues the P x K and augmentation streams where it stopped.
    start_step = ValidationRecall.completed_epochs(selection_dir) * t.steps_per_epoch
    # The head's classes come from the data (any dataset's numbering): class id ->
    # its position among the split's sorted distinct ids (for a contiguous range, the
    # id minus the first one).
    classes = np.unique(train_set.labels)
    num_classes = len(classes)
    log.info("training on %d images of %d classes, validating on %d images of %d classes",
             len(train_set), num_classes, len(valid_set), len(np.unique(valid_set.labels)))
    policy = set_precision(t.mixed_precision)
    if t.freeze_batchnorm and t.backbone_weights == "none":
        log.warning("trainer.freeze_batchnorm with a randomly initialised backbone freezes "
                    "identity BatchNorm statistics; it is meant for pretrained weights")
    log.info("strategy %s with %d replica(s), precision %s", type(strategy).__name__,
             strategy.num_replicas_in_sync, policy)

    def replica_dataset(context=None):
        # Every replica draws its own P x K batches (seed per input pipeline), so
        # each replica's loss sees whole classes: never split a P x K batch.
        pipeline_id = context.input_pipeline_id if context else 0
        return sampler.pk_dataset(train_set, t.classes_per_batch, t.images_per_class,
                                  t.seed + 1000 * pipeline_id, t.random_crop, t.random_flip,
                                  crop_size=crop, start_step=start_step, classes=classes,
                                  hue_rotation=t.class_hue_rotation)

    if strategy.num_replicas_in_sync > 1:
        dataset = strategy.distribute_datasets_from_function(replica_dataset)
    else:
        dataset = replica_dataset()
    with strategy.scope():
        model = build_model(t, num_classes, size)
        compile_for_training(model, t, num_classes)
    first_drop = (int(np.ceil(t.epochs * STEP_DECAY_AT[0])) if t.lr_schedule == "step" else 0)
    validation = ValidationRecall(valid_set, t.early_stopping_patience, state_dir=selection_dir,
                                  input_size=crop, no_stop_before_epoch=first_drop,
                                  keep_last=t.model_selection == "last")
    callbacks = [validation, tf_keras.callbacks.TensorBoard(log_dir=model_run_dir)]
    if backup_dir:
        if tf.io.gfile.exists(backup_dir) and tf.io.gfile.listdir(backup_dir):
            log.info("resuming an interrupted training from the checkpoint in %s", backup_dir)
        # Saved every epoch, restored on restart, removed when training completes.
        callbacks.append(tf_keras.callbacks.BackupAndRestore(backup_dir))
    model.fit(dataset, epochs=t.epochs, steps_per_epoch=t.steps_per_epoch,
              callbacks=callbacks, verbose=2)
    train_set.release()  # the streaming cache; after a failure it stays for the rerun
    tf_keras.mixed_precision.set_global_policy("float32")
    return model, validation


def export_model(model, job: TrainerJob, tft_output, serving_model_dir: str,
                 train_files=None, valid_files=None) -> None:
    """Export; with the splits' files, the contract names the classes trained and validated on."""
    target = serving_model_dir if is_chief() else tempfile.mkdtemp()
    seen = None
    if train_files is not None and valid_files is not None:
        train_names = export.split_class_names(train_files)
        valid_names = export.split_class_names(valid_files)
        if train_names is None or valid_names is None:
            log.warning("the transformed examples carry no class names: the model's contract "
                        "cannot say which classes it has seen")
        else:
            seen = export.seen_classes_entry(train_names, valid_names)
    export.export_saved_model(embedding_model(model), tft_output, target,
                              job.transform.image_size, job.transform.pad_value,
                              job.trainer.input_size, job.transform.crop, seen_classes=seen)
    log.info("exported SavedModel to %s", target)


def write_validation_summary(validation: ValidationRecall, run_dir: str) -> None:
    """``<run_dir>/validation.json``: Recall@1 untrained, per epoch, and the selected epoch."""
    with tf.io.gfile.GFile(os.path.join(run_dir, VALIDATION_FILE), "w") as f:
        json.dump({"untrained_recall@1": validation.untrained,
                   "recall@1_per_epoch": validation.history,
                   "best_epoch": validation.best_epoch + 1,
                   "selected_epoch": validation.selected_epoch + 1,
                   "best_recall@1": validation.best}, f, indent=1)


def run_fn(fn_args) -> None:
    """TFX Trainer entry: ``custom_config`` holds the TrainerJob and the checkpoint root."""
    import tensorflow_transform as tft

    logging.getLogger().setLevel(logging.INFO)
    job = TrainerJob.from_dict(fn_args.custom_config[TRAINER_JOB_KEY])
    backup = None
    if fn_args.custom_config.get(CHECKPOINT_ROOT_KEY):
        backup = checkpoint_dir(fn_args.custom_config[CHECKPOINT_ROOT_KEY], job,
                                fn_args.train_files)
    model, validation = train(job, fn_args.train_files, fn_args.eval_files,
                              fn_args.model_run_dir, backup)
    export_model(model, job, tft.TFTransformOutput(fn_args.transform_output),
                 fn_args.serving_model_dir, fn_args.train_files, fn_args.eval_files)
    write_validation_summary(validation, fn_args.model_run_dir)
