"""`cgd demo`'s console output: what it shows of the tfx CLI's output, and of a failure.

Fast: the filter (cli/demo.py: progress_line, progress_lines, failure_summary)
is fed lines copied from real runs' out/demo/logs/tfx.log (TFX 1.16, local
orchestrator, Beam DirectRunner in multi_processing mode), and run_tfx_cli runs
a stand-in for the tfx CLI that prints them.

Any dataset (the end of the file): what the demo refuses before the pipeline, where its
search takes queries and gallery, and one whole `cgd demo` on configs/demo-sop.yaml with a
few training steps (a module fixture: the only pipeline run of this file).
"""
import os
import sys
import textwrap
from types import SimpleNamespace

import pytest

from core.errors import CliError
from cli import console, demo
from tests.support.paths import REPO_ROOT


def log_lines(text: str) -> list[str]:
    """Lines as the tfx CLI's stdout gives them (with their newlines)."""
    return text.lstrip("\n").splitlines(keepends=True)


# `tfx pipeline create`: TF's import noise, the tfx CLI's own lines.
CREATE_LOG = log_lines(r'''
2026-11-23 02:15:55.970013: E external/local_xla/xla/stream_executor/cuda/cuda_fft.cc:479] Unable to register cuFFT factory: Attempting to register factory for plugin cuFFT when one has already been registered
2026-11-23 02:15:56.040561: E external/local_xla/xla/stream_executor/cuda/cuda_dnn.cc:10575] Unable to register cuDNN factory: Attempting to register factory for plugin cuDNN when one has already been registered
2026-11-23 02:15:56.040641: E external/local_xla/xla/stream_executor/cuda/cuda_blas.cc:1442] Unable to register cuBLAS factory: Attempting to register factory for plugin cuBLAS when one has already been registered
/work/main/.venv/lib/python3.10/site-packages/google/api_core/_python_version_support.py:246: FutureWarning: You are using a non-supported Python version (3.10.13). Google will not post any further updates to google.api_core supporting this Python version. Please upgrade to the latest Python version, or at least Python 3.11, and then update google.api_core.
  warnings.warn(message, FutureWarning)
CLI
Creating pipeline
INFO:absl:Excluding no splits because exclude_splits is not set.
INFO:absl:Excluding no splits because exclude_splits is not set.
Pipeline "cgd-demo" created successfully.
''')

# `tfx run create`, a successful run (a selection of its 5000 lines, in order): absl/Beam/TF
# noise, TensorFlow's shutdown traceback in the middle of Transform, Keras' fit output.
SUCCESS_LOG = log_lines(r'''
CLI
Creating a run for pipeline: cgd-demo
2026-11-23 02:16:27.176602: E external/local_xla/xla/stream_executor/cuda/cuda_fft.cc:479] Unable to register cuFFT factory: Attempting to register factory for plugin cuFFT when one has already been registered
2026-11-23 02:16:27.201671: E external/local_xla/xla/stream_executor/cuda/cuda_dnn.cc:10575] Unable to register cuDNN factory: Attempting to register factory for plugin cuDNN when one has already been registered
2026-11-23 02:16:27.201872: E external/local_xla/xla/stream_executor/cuda/cuda_blas.cc:1442] Unable to register cuBLAS factory: Attempting to register factory for plugin cuBLAS when one has already been registered
/work/main/.venv/lib/python3.10/site-packages/google/api_core/_python_version_support.py:246: FutureWarning: You are using a non-supported Python version (3.10.13). Google will not post any further updates to google.api_core supporting this Python version. Please upgrade to the latest Python version, or at least Python 3.11, and then update google.api_core.
  warnings.warn(message, FutureWarning)
INFO:absl:Excluding no splits because exclude_splits is not set.
INFO:absl:Excluding no splits because exclude_splits is not set.
INFO:absl:Using deployment config:
 executor_specs {
  key: "RetrievalExampleGen"
  value {
    beam_executable_spec {
      python_executor_spec {
        class_path: "components.example_gen.executor.Executor"
INFO:absl:Component RetrievalExampleGen is running.
INFO:absl:Running launcher for node_info {
  type {
    name: "components.example_gen.component.RetrievalExampleGen"
INFO:absl:Going to run a new execution 1
WARNING:apache_beam.runners.portability.local_job_service:Worker: severity: WARN timestamp {   seconds: 1795400221   nanos: 352052450 } message: "skipping corrupt image cars_test/00091.jpg: UnidentifiedImageError: cannot identify image file <_io.BytesIO object at 0x7f39530d1940>" instruction_id: "bundle_10" transform_id: "ReadAndEncode/ParDo(_ReadAndEncode)" log_location: "/work/main/components/example_gen/executor.py:102" thread: "Thread-13" 
WARNING:apache_beam.runners.portability.local_job_service:Worker: severity: WARN timestamp {   seconds: 1795400222   nanos: 154593229 } message: "skipping corrupt image cars_train/00091.jpg: OSError: image file is truncated (2 bytes not processed)" instruction_id: "bundle_9" transform_id: "ReadAndEncode/ParDo(_ReadAndEncode)" log_location: "/work/main/components/example_gen/executor.py:102" thread: "Thread-12" 
WARNING:apache_beam.runners.portability.local_job_service:Worker: severity: WARN timestamp {   seconds: 1795400222   nanos: 362250328 } message: "Couldn\'t find python-snappy so the implementation of _TFRecordUtil._masked_crc32c is not as fast as it could be." instruction_id: "bundle_15" transform_id: "WriteSplit[train]/Write/Write/WriteImpl/WriteBundles" log_location: "/work/main/.venv/lib/python3.10/site-packages/apache_beam/io/tfrecordio.py:59" thread: "Thread-12" 
WARNING:apache_beam.runners.portability.local_job_service:Worker: severity: WARN timestamp {   seconds: 1795400222   nanos: 376499652 } message: "Couldn\'t find python-snappy so the implementation of _TFRecordUtil._masked_crc32c is not as fast as it could be." instruction_id: "bundle_16" transform_id: "WriteSplit[train]/Write/Write/WriteImpl/WriteBundles" log_location: "/work/main/.venv/lib/python3.10/site-packages/apache_beam/io/tfrecordio.py:59" thread: "Thread-13" 
INFO:absl:Examples generated.
INFO:absl:Component RetrievalExampleGen is finished.
INFO:absl:Component ImportSchemaGen is running.
INFO:absl:Running launcher for node_info {
INFO:absl:Going to run a new execution 2
INFO:absl:Component ImportSchemaGen is finished.
INFO:absl:Component StatisticsGen is running.
INFO:absl:Going to run a new execution 3
INFO:absl:Component StatisticsGen is finished.
INFO:absl:Component Transform is running.
INFO:absl:Going to run a new execution 4
INFO:absl:udf_utils.get_fn {'module_file': None, 'module_path': None, 'preprocessing_fn': 'components.preprocessing.tft_module.preprocessing_fn'} 'preprocessing_fn'
WARNING:apache_beam.runners.portability.local_job_service:Worker: severity: WARN timestamp {   seconds: 1795400282   nanos: 891883850 } message: "Couldn\'t find python-snappy so the implementation of _TFRecordUtil._masked_crc32c is not as fast as it could be." instruction_id: "bundle_251" transform_id: "TFXIOReadAndDecode[AnalysisIndex0]/RawRecordBeamSource/ReadRawRecords/ReadFromTFRecord[0]/Read/SDFBoundedSourceReader/ParDo(SDFBoundedSourceDoFn)/Process" log_location: "/work/main/.venv/lib/python3.10/site-packages/apache_beam/io/tfrecordio.py:59" thread: "Thread-13" 
Exception ignored in: <function AtomicFunction.__del__ at 0x7f0752eb39a0>
Traceback (most recent call last):
  File "/work/main/.venv/lib/python3.10/site-packages/tensorflow/python/eager/polymorphic_function/atomic_function.py", line 291, in __del__
TypeError: 'NoneType' object is not subscriptable
INFO:absl:Cleaning up stateless execution info.
INFO:absl:Execution 4 succeeded.
INFO:absl:Component Transform is finished.
INFO:absl:Component ExampleValidator is running.
INFO:absl:Going to run a new execution 5
INFO:absl:Component ExampleValidator is finished.
INFO:absl:Component Trainer is running.
INFO:absl:Going to run a new execution 6
INFO:absl:udf_utils.get_fn {'train_args': '{\n  "num_steps": 360,\n  "splits": [\n    "train"\n  ]\n}', 'run_fn': 'trainer.task.run_fn', 'custom_config': '{"checkpoint_root": "/work/main/out/demo/pipelines/cgd-demo/Trainer/.checkpoints", "code": "c2c736851892ebc6", "trainer_job": {"first_class": 1, "num_classes": 9, "trainer": {"angular_degrees": 45.0, "backbone": "small", "backbone_weights": "none", "checkpoint_path": "", "classes_per_batch": 6, "classification_loss_weight": 1.0, "descriptors": "SG", "early_stopping_patience": 4, "embedding_dim": 128, "epochs": 12, "freeze_batchnorm": false, "gem_p": 3.0, "gem_trainable": false, "hap2s_alpha": 10.0, "hap2s_sigma": 0.5, "imagenet_weights_path": "/root/.keras/models/resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5", "images_per_class": 4, "label_smoothing": 0.1, "learning_rate": 0.001, "loss": "batch_hard", "lr_schedule": "constant", "margin": 0.1, "mixed_precision": "auto", "model": "cgd", "optimizer": "adam", "random_crop": true, "random_flip": true, "remove_last_stride": true, "seed": 42, "steps_per_epoch": 30, "temperature": 0.5}, "transform": {"image_size": 64, "pad_value": [0, 0, 0]}}}', 'eval_args': '{\n  "splits": [\n    "valid"\n  ]\n}'} 'run_fn'
INFO:absl:Training model.
INFO:trainer.task:training on 90 images of 9 classes, validating on 30 images of 3 classes
INFO:trainer.task:strategy _DefaultDistributionStrategy with 1 replica(s), precision float32
INFO:trainer.task:validation Recall@1 before training: 0.3333 (30 images)
WARNING: All log messages before absl::InitializeLog() is called are written to STDERR
W0000 00:00:1795400311.043539   18728 op_level_cost_estimator.cc:699] Error in PredictCost() for the op: op: "CropAndResize" attr { key: "T" value { type: DT_FLOAT } } attr { key: "extrapolation_value" value { f: 0 } } attr { key: "method" value { s: "bilinear" } } inputs { dtype: DT_FLOAT shape { dim { size: 24 } dim { size: 64 } dim { size: 64 } dim { size: 3 } } } inputs { dtype: DT_FLOAT shape { dim { size: -2 } dim { size: 4 } } } inputs { dtype: DT_INT32 shape { dim { size: -2 } } } inputs { dtype: DT_INT32 shape { dim { size: 2 } } } device { type: "CPU" vendor: "AuthenticAMD" model: "241" frequency: 2445 num_cores: 2 environment { key: "cpu_instruction_set" value: "AVX SSE, SSE2, SSE3, SSSE3, SSE4.1, SSE4.2" } environment { key: "eigen" value: "3.4.90" } l1_cache_size: 32768 l2_cache_size: 524288 l3_cache_size: 268435456 memory_size: 268435456 } outputs { dtype: DT_FLOAT shape { dim { size: -2 } dim { size: -11 } dim { size: -12 } dim { size: 3 } } }
Epoch 1/12
INFO:trainer.task:epoch 1/12: loss 1.9781, validation Recall@1 0.5000 (best)
INFO:absl:Sharding callback duration: 300
30/30 - 26s - loss: 1.9781 - embedding_loss: 0.1785 - logits_loss: 1.7996 - val_recall@1: 0.5000 - 26s/epoch - 883ms/step
Epoch 2/12
INFO:trainer.task:epoch 2/12: loss 1.0984, validation Recall@1 0.3667
INFO:absl:Sharding callback duration: 272
30/30 - 3s - loss: 1.0984 - embedding_loss: 0.1281 - logits_loss: 0.9702 - val_recall@1: 0.3667 - 3s/epoch - 106ms/step
Epoch 3/12
INFO:trainer.task:epoch 3/12: loss 0.9198, validation Recall@1 0.4667
INFO:absl:Sharding callback duration: 267
30/30 - 4s - loss: 0.9198 - embedding_loss: 0.1088 - logits_loss: 0.8110 - val_recall@1: 0.4667 - 4s/epoch - 132ms/step
Epoch 4/12
INFO:trainer.task:epoch 4/12: loss 0.8010, validation Recall@1 0.5000
INFO:absl:Sharding callback duration: 303
30/30 - 5s - loss: 0.8010 - embedding_loss: 0.0935 - logits_loss: 0.7076 - val_recall@1: 0.5000 - 5s/epoch - 165ms/step
Epoch 5/12
INFO:trainer.task:epoch 5/12: loss 0.7255, validation Recall@1 0.4333
INFO:trainer.task:early stopping: no Recall@1 improvement for 4 epochs
INFO:absl:Sharding callback duration: 230
30/30 - 7s - loss: 0.7255 - embedding_loss: 0.0908 - logits_loss: 0.6347 - val_recall@1: 0.4333 - 7s/epoch - 238ms/step
INFO:trainer.task:restored the best epoch 1 (validation Recall@1 0.5000)
INFO:tensorflow:struct2tensor is not available.
INFO:tensorflow:struct2tensor is not available.
INFO:tensorflow:tensorflow_decision_forests is not available.
INFO:tensorflow:tensorflow_decision_forests is not available.
INFO:tensorflow:tensorflow_text is not available.
INFO:tensorflow:tensorflow_text is not available.
INFO:absl:Function `serve_images` contains input name(s) resource with unsupported characters which will be renamed to cgd_small_sg_embedding_spoc_fc_matmul_readvariableop_resource in the SavedModel.
INFO:absl:Function `serve_pixels` contains input name(s) resource with unsupported characters which will be renamed to cgd_small_sg_embedding_spoc_fc_matmul_readvariableop_resource in the SavedModel.
INFO:absl:Sharding callback duration: 76
INFO:absl:Sharding callback duration: 131
INFO:tensorflow:Assets written to: /work/main/out/demo/pipelines/cgd-demo/Trainer/model/6/Format-Serving/assets
INFO:tensorflow:Assets written to: /work/main/out/demo/pipelines/cgd-demo/Trainer/model/6/Format-Serving/assets
INFO:absl:Writing fingerprint to /work/main/out/demo/pipelines/cgd-demo/Trainer/model/6/Format-Serving/fingerprint.pb
INFO:trainer.task:exported SavedModel to /work/main/out/demo/pipelines/cgd-demo/Trainer/model/6/Format-Serving
INFO:absl:Training complete. Model written to /work/main/out/demo/pipelines/cgd-demo/Trainer/model/6/Format-Serving. ModelRun written to /work/main/out/demo/pipelines/cgd-demo/Trainer/model_run/6
INFO:absl:Cleaning up stateless execution info.
INFO:absl:Component Trainer is finished.
INFO:absl:Component RecallEvaluator is running.
INFO:absl:Going to run a new execution 7
INFO:components.recall_evaluator.executor:RecallEvaluator: production model none yet (the first model is judged on the threshold alone)
INFO:components.recall_evaluator.executor:RecallEvaluator: 60 images of 6 classes in split 'eval'
INFO:components.recall_evaluator.executor:embedded 60/60 eval images
INFO:components.recall_evaluator.executor:RecallEvaluator: BLESSED: Recall@1 0.3167 meets the threshold 0.0000; no blessed baseline yet (first model)
INFO:absl:Cleaning up stateless execution info.
INFO:absl:Component RecallEvaluator is finished.
INFO:absl:Component Pusher is running.
INFO:absl:Going to run a new execution 8
INFO:absl:Component Pusher is finished.
''')

# `tfx run create` failing in RetrievalExampleGen: the source directory lacks a file.
# TensorFlow's shutdown traceback (an AtomicFunction.__del__ at interpreter exit, as in
# the successful run's Transform) follows the component's error.
SOURCE_FAILURE_LOG = log_lines(r'''
CLI
Creating a run for pipeline: cgd-demo-fail
INFO:absl:Component RetrievalExampleGen is running.
INFO:absl:Running launcher for node_info {
INFO:absl:Going to run a new execution 1
INFO:absl:Attempting to infer TFX Python dependency for beam
INFO:absl:Copying all content from install dir /work/main/.venv/lib/python3.10/site-packages/tfx to temp dir /tmp/tmp72tk7_z7/build/tfx
INFO:absl:Generating a temp setup file at /tmp/tmp72tk7_z7/build/tfx/setup.py
INFO:absl:Creating temporary sdist package, logs available at /tmp/tmp72tk7_z7/build/tfx/setup.log
INFO:absl:Added --extra_package=/tmp/tmp72tk7_z7/build/tfx/dist/tfx_ephemeral-1.16.0.tar.gz to beam args
INFO:absl:Generating examples.
INFO:absl:Creating temp directory at /tmp/demo_fail/out/pipelines/cgd-demo-fail/RetrievalExampleGen/.system/executor_execution/1/.temp/1/
INFO:absl:MetadataStore with DB connection initialized
ERROR:absl:Execution 1 failed.
INFO:absl:Cleaning up stateless execution info.
Traceback (most recent call last):
  File "/work/main/pipeline/local_runner.py", line 30, in <module>
    run()
  File "/work/main/pipeline/local_runner.py", line 25, in run
    tfx.orchestration.LocalDagRunner().run(create_pipeline(cfg))
  File "/work/main/.venv/lib/python3.10/site-packages/tfx/orchestration/portable/tfx_runner.py", line 124, in run
    return self.run_with_ir(pipeline_pb, run_options=run_options_pb, **kwargs)
  File "/work/main/.venv/lib/python3.10/site-packages/tfx/orchestration/local/local_dag_runner.py", line 109, in run_with_ir
    component_launcher.launch()
  File "/work/main/.venv/lib/python3.10/site-packages/tfx/orchestration/portable/launcher.py", line 613, in launch
    executor_output = self._run_executor(execution_info)
  File "/work/main/.venv/lib/python3.10/site-packages/tfx/orchestration/portable/launcher.py", line 487, in _run_executor
    executor_output = self._executor_operator.run_executor(execution_info)
  File "/work/main/.venv/lib/python3.10/site-packages/tfx/orchestration/portable/beam_executor_operator.py", line 112, in run_executor
    return python_executor_operator.run_with_executor(execution_info, executor)
  File "/work/main/.venv/lib/python3.10/site-packages/tfx/orchestration/portable/python_executor_operator.py", line 84, in run_with_executor
    result = executor.Do(
  File "/work/main/components/example_gen/executor.py", line 176, in Do
    super().Do(input_dict, output_dict, exec_properties)
  File "/work/main/.venv/lib/python3.10/site-packages/tfx/components/example_gen/base_example_gen_executor.py", line 279, in Do
    example_splits = self.GenerateExamplesByBeam(pipeline, exec_properties)
  File "/work/main/components/example_gen/executor.py", line 134, in GenerateExamplesByBeam
    for record in tfds_source.iter_records(source_dir, work_dir):
  File "/work/main/components/datasets/cars196/source.py", line 178, in iter_records
    files = check_source_dir(source_dir)
  File "/work/main/components/datasets/cars196/source.py", line 51, in check_source_dir
    raise Cars196SourceError(
components.datasets.cars196.source.Cars196SourceError: Cars196 source directory /tmp/demo_fail/src is missing cars_test_annos_withlabels.mat. Expected the four files cars_train.tgz, cars_test.tgz, car_devkit.tgz, cars_test_annos_withlabels.mat; found: car_devkit.tgz, cars_test.tgz, cars_train.tgz
Exception ignored in: <function AtomicFunction.__del__ at 0x7f0752eb39a0>
Traceback (most recent call last):
  File "/work/main/.venv/lib/python3.10/site-packages/tensorflow/python/eager/polymorphic_function/atomic_function.py", line 291, in __del__
TypeError: 'NoneType' object is not subscriptable
Error while running "/work/main/.venv/bin/python /work/main/pipeline/local_runner.py" 
''')

# `tfx run create` failing inside a Beam worker (data.on_corrupt_image: fail): Beam
# relays the worker's error, then raises RuntimeError with the worker's traceback in it.
BEAM_FAILURE_LOG = log_lines(r'''
CLI
Creating a run for pipeline: cgd-demo-fail2
INFO:absl:Component RetrievalExampleGen is running.
INFO:absl:Running launcher for node_info {
INFO:absl:Going to run a new execution 1
2026-11-23 02:23:21.707687: E external/local_xla/xla/stream_executor/cuda/cuda_dnn.cc:10575] Unable to register cuDNN factory: Attempting to register factory for plugin cuDNN when one has already been registered
2026-11-23 02:23:21.707758: E external/local_xla/xla/stream_executor/cuda/cuda_blas.cc:1442] Unable to register cuBLAS factory: Attempting to register factory for plugin cuBLAS when one has already been registered
ERROR:apache_beam.runners.portability.local_job_service:Worker: severity: ERROR timestamp {   seconds: 1795400613   nanos: 971375465 } message: "corrupt image cars_test/00091.jpg: UnidentifiedImageError: cannot identify image file <_io.BytesIO object at 0x7fc3f4b543b0> (set data.on_corrupt_image: skip to skip it) [while running \'ReadAndEncode/ParDo(ReadAndEncode)\']\nTraceback (most recent call last):\n  File \"apache_beam/runners/common.py\", line 1495, in apache_beam.runners.common.DoFnRunner.process\n  File \"apache_beam/runners/common.py\", line 687, in apache_beam.runners.common.SimpleInvoker.invoke_process\n  File \"apache_beam/runners/common.py\", line 1671, in apache_beam.runners.common._OutputHandler.handle_process_outputs\n  File \"/work/main/components/example_gen/examples.py\", line 78, in process\n    raise CorruptImageError(\ncomponents.example_gen.examples.CorruptImageError: corrupt image cars_test/00091.jpg: UnidentifiedImageError: cannot identify image file <_io.BytesIO object at 0x7fc3f4b543b0> (set data.on_corrupt_image: skip to skip it)" trace: "Traceback (most recent call last):\n  File \"apache_beam/runners/common.py\", line 1495, in apache_beam.runners.common.DoFnRunner.process\n  File \"apache_beam/runners/common.py\", line 687, in apache_beam.runners.common.SimpleInvoker.invoke_process\n  File \"apache_beam/runners/common.py\", line 1671, in apache_beam.runners.common._OutputHandler.handle_process_outputs\n  File \"/work/main/components/example_gen/examples.py\", line 78, in process\n    raise CorruptImageError(\ncomponents.example_gen.examples.CorruptImageError: corrupt image cars_test/00091.jpg: UnidentifiedImageError: cannot identify image file <_io.BytesIO object at 0x7fc3f4b543b0> (set data.on_corrupt_image: skip to skip it)\n" instruction_id: "bundle_10" transform_id: "ReadAndEncode/ParDo(ReadAndEncode)" log_location: "/work/main/.venv/lib/python3.10/site-packages/apache_beam/runners/worker/bundle_processor.py:237" thread: "Thread-14" 
Traceback (most recent call last):
  File "apache_beam/runners/common.py", line 1495, in apache_beam.runners.common.DoFnRunner.process
  File "apache_beam/runners/common.py", line 687, in apache_beam.runners.common.SimpleInvoker.invoke_process
  File "apache_beam/runners/common.py", line 1671, in apache_beam.runners.common._OutputHandler.handle_process_outputs
  File "/work/main/components/example_gen/examples.py", line 78, in process
    raise CorruptImageError(
components.example_gen.examples.CorruptImageError: corrupt image cars_test/00091.jpg: UnidentifiedImageError: cannot identify image file <_io.BytesIO object at 0x7fc3f4b543b0> (set data.on_corrupt_image: skip to skip it)

During handling of the above exception, another exception occurred:

Traceback (most recent call last):
  File "apache_beam/runners/worker/operations.py", line 263, in apache_beam.runners.worker.operations.SingletonElementConsumerSet.receive
  File "apache_beam/runners/worker/operations.py", line 950, in apache_beam.runners.worker.operations.DoOperation.process
  File "apache_beam/runners/worker/operations.py", line 951, in apache_beam.runners.worker.operations.DoOperation.process
  File "apache_beam/runners/common.py", line 1497, in apache_beam.runners.common.DoFnRunner.process
  File "apache_beam/runners/common.py", line 1607, in apache_beam.runners.common.DoFnRunner._reraise_augmented
  File "apache_beam/runners/common.py", line 1495, in apache_beam.runners.common.DoFnRunner.process
  File "apache_beam/runners/common.py", line 687, in apache_beam.runners.common.SimpleInvoker.invoke_process
  File "apache_beam/runners/common.py", line 1671, in apache_beam.runners.common._OutputHandler.handle_process_outputs
  File "/work/main/components/example_gen/examples.py", line 78, in process
    raise CorruptImageError(
components.example_gen.examples.CorruptImageError: corrupt image cars_test/00091.jpg: UnidentifiedImageError: cannot identify image file <_io.BytesIO object at 0x7fc3f4b543b0> (set data.on_corrupt_image: skip to skip it) [while running 'ReadAndEncode/ParDo(ReadAndEncode)']

ERROR:absl:Execution 1 failed.
INFO:absl:Cleaning up stateless execution info.
Traceback (most recent call last):
  File "/work/main/pipeline/local_runner.py", line 30, in <module>
    run()
  File "/work/main/pipeline/local_runner.py", line 25, in run
    tfx.orchestration.LocalDagRunner().run(create_pipeline(cfg))
  File "/work/main/.venv/lib/python3.10/site-packages/tfx/orchestration/portable/tfx_runner.py", line 124, in run
    return self.run_with_ir(pipeline_pb, run_options=run_options_pb, **kwargs)
  File "/work/main/.venv/lib/python3.10/site-packages/tfx/orchestration/local/local_dag_runner.py", line 109, in run_with_ir
    component_launcher.launch()
  File "/work/main/.venv/lib/python3.10/site-packages/tfx/orchestration/portable/launcher.py", line 613, in launch
    executor_output = self._run_executor(execution_info)
  File "/work/main/.venv/lib/python3.10/site-packages/tfx/orchestration/portable/launcher.py", line 487, in _run_executor
    executor_output = self._executor_operator.run_executor(execution_info)
  File "/work/main/.venv/lib/python3.10/site-packages/tfx/orchestration/portable/beam_executor_operator.py", line 112, in run_executor
    return python_executor_operator.run_with_executor(execution_info, executor)
  File "/work/main/.venv/lib/python3.10/site-packages/tfx/orchestration/portable/python_executor_operator.py", line 84, in run_with_executor
    result = executor.Do(
  File "/work/main/components/example_gen/executor.py", line 103, in Do
    super().Do(input_dict, output_dict, exec_properties)
  File "/work/main/.venv/lib/python3.10/site-packages/tfx/components/example_gen/base_example_gen_executor.py", line 278, in Do
    with self._make_beam_pipeline() as pipeline:
  File "/work/main/.venv/lib/python3.10/site-packages/apache_beam/pipeline.py", line 620, in __exit__
    self.result = self.run()
  File "/work/main/.venv/lib/python3.10/site-packages/apache_beam/pipeline.py", line 594, in run
    return self.runner.run_pipeline(self, self._options)
  File "/work/main/.venv/lib/python3.10/site-packages/apache_beam/runners/direct/direct_runner.py", line 128, in run_pipeline
    return runner.run_pipeline(pipeline, options)
  File "/work/main/.venv/lib/python3.10/site-packages/apache_beam/runners/portability/fn_api_runner/fn_runner.py", line 195, in run_pipeline
    self._latest_run_result = self.run_via_runner_api(
  File "/work/main/.venv/lib/python3.10/site-packages/apache_beam/runners/portability/fn_api_runner/fn_runner.py", line 221, in run_via_runner_api
    return self.run_stages(stage_context, stages)
  File "/work/main/.venv/lib/python3.10/site-packages/apache_beam/runners/portability/fn_api_runner/fn_runner.py", line 468, in run_stages
    bundle_results = self._execute_bundle(
  File "/work/main/.venv/lib/python3.10/site-packages/apache_beam/runners/portability/fn_api_runner/fn_runner.py", line 793, in _execute_bundle
    self._run_bundle(
  File "/work/main/.venv/lib/python3.10/site-packages/apache_beam/runners/portability/fn_api_runner/fn_runner.py", line 1032, in _run_bundle
    result, splits = bundle_manager.process_bundle(
  File "/work/main/.venv/lib/python3.10/site-packages/apache_beam/runners/portability/fn_api_runner/fn_runner.py", line 1463, in process_bundle
    for result, split_result in executor.map(execute, zip(part_inputs,  # pylint: disable=bad-option-value
  File "/root/.pyenv/versions/3.10.13/lib/python3.10/concurrent/futures/_base.py", line 621, in result_iterator
    yield _result_or_cancel(fs.pop())
  File "/root/.pyenv/versions/3.10.13/lib/python3.10/concurrent/futures/_base.py", line 319, in _result_or_cancel
    return fut.result(timeout)
  File "/root/.pyenv/versions/3.10.13/lib/python3.10/concurrent/futures/_base.py", line 458, in result
    return self.__get_result()
  File "/root/.pyenv/versions/3.10.13/lib/python3.10/concurrent/futures/_base.py", line 403, in __get_result
    raise self._exception
  File "/work/main/.venv/lib/python3.10/site-packages/apache_beam/utils/thread_pool_executor.py", line 37, in run
    self._future.set_result(self._fn(*self._fn_args, **self._fn_kwargs))
  File "/work/main/.venv/lib/python3.10/site-packages/apache_beam/runners/portability/fn_api_runner/fn_runner.py", line 1455, in execute
    return bundle_manager.process_bundle(
  File "/work/main/.venv/lib/python3.10/site-packages/apache_beam/runners/portability/fn_api_runner/fn_runner.py", line 1398, in process_bundle
    raise RuntimeError(result.error)
RuntimeError: Traceback (most recent call last):
  File "apache_beam/runners/common.py", line 1495, in apache_beam.runners.common.DoFnRunner.process
  File "apache_beam/runners/common.py", line 687, in apache_beam.runners.common.SimpleInvoker.invoke_process
  File "apache_beam/runners/common.py", line 1671, in apache_beam.runners.common._OutputHandler.handle_process_outputs
  File "/work/main/components/example_gen/examples.py", line 78, in process
    raise CorruptImageError(
components.example_gen.examples.CorruptImageError: corrupt image cars_train/00091.jpg: OSError: image file is truncated (2 bytes not processed) (set data.on_corrupt_image: skip to skip it)

During handling of the above exception, another exception occurred:

Traceback (most recent call last):
  File "/work/main/.venv/lib/python3.10/site-packages/apache_beam/runners/worker/sdk_worker.py", line 311, in _execute
    response = task()
  File "/work/main/.venv/lib/python3.10/site-packages/apache_beam/runners/worker/sdk_worker.py", line 386, in <lambda>
    lambda: self.create_worker().do_instruction(request), request)
  File "/work/main/.venv/lib/python3.10/site-packages/apache_beam/runners/worker/sdk_worker.py", line 656, in do_instruction
    return getattr(self, request_type)(
  File "/work/main/.venv/lib/python3.10/site-packages/apache_beam/runners/worker/sdk_worker.py", line 694, in process_bundle
    bundle_processor.process_bundle(instruction_id))
  File "/work/main/.venv/lib/python3.10/site-packages/apache_beam/runners/worker/bundle_processor.py", line 1119, in process_bundle
    input_op_by_transform_id[element.transform_id].process_encoded(
  File "/work/main/.venv/lib/python3.10/site-packages/apache_beam/runners/worker/bundle_processor.py", line 237, in process_encoded
    self.output(decoded_value)
  File "apache_beam/runners/worker/operations.py", line 567, in apache_beam.runners.worker.operations.Operation.output
  File "apache_beam/runners/worker/operations.py", line 569, in apache_beam.runners.worker.operations.Operation.output
  File "apache_beam/runners/worker/operations.py", line 260, in apache_beam.runners.worker.operations.SingletonElementConsumerSet.receive
  File "apache_beam/runners/worker/operations.py", line 263, in apache_beam.runners.worker.operations.SingletonElementConsumerSet.receive
  File "apache_beam/runners/worker/operations.py", line 950, in apache_beam.runners.worker.operations.DoOperation.process
  File "apache_beam/runners/worker/operations.py", line 951, in apache_beam.runners.worker.operations.DoOperation.process
  File "apache_beam/runners/common.py", line 1497, in apache_beam.runners.common.DoFnRunner.process
  File "apache_beam/runners/common.py", line 1586, in apache_beam.runners.common.DoFnRunner._reraise_augmented
  File "apache_beam/runners/common.py", line 1495, in apache_beam.runners.common.DoFnRunner.process
  File "apache_beam/runners/common.py", line 687, in apache_beam.runners.common.SimpleInvoker.invoke_process
  File "apache_beam/runners/common.py", line 1681, in apache_beam.runners.common._OutputHandler.handle_process_outputs
  File "apache_beam/runners/common.py", line 1794, in apache_beam.runners.common._OutputHandler._write_value_to_tag
  File "apache_beam/runners/worker/operations.py", line 263, in apache_beam.runners.worker.operations.SingletonElementConsumerSet.receive
  File "apache_beam/runners/worker/operations.py", line 950, in apache_beam.runners.worker.operations.DoOperation.process
  File "apache_beam/runners/worker/operations.py", line 951, in apache_beam.runners.worker.operations.DoOperation.process
  File "apache_beam/runners/common.py", line 1497, in apache_beam.runners.common.DoFnRunner.process
  File "apache_beam/runners/common.py", line 1586, in apache_beam.runners.common.DoFnRunner._reraise_augmented
  File "apache_beam/runners/common.py", line 1495, in apache_beam.runners.common.DoFnRunner.process
  File "apache_beam/runners/common.py", line 687, in apache_beam.runners.common.SimpleInvoker.invoke_process
  File "apache_beam/runners/common.py", line 1681, in apache_beam.runners.common._OutputHandler.handle_process_outputs
  File "apache_beam/runners/common.py", line 1794, in apache_beam.runners.common._OutputHandler._write_value_to_tag
  File "apache_beam/runners/worker/operations.py", line 263, in apache_beam.runners.worker.operations.SingletonElementConsumerSet.receive
  File "apache_beam/runners/worker/operations.py", line 950, in apache_beam.runners.worker.operations.DoOperation.process
  File "apache_beam/runners/worker/operations.py", line 951, in apache_beam.runners.worker.operations.DoOperation.process
  File "apache_beam/runners/common.py", line 1497, in apache_beam.runners.common.DoFnRunner.process
  File "apache_beam/runners/common.py", line 1607, in apache_beam.runners.common.DoFnRunner._reraise_augmented
  File "apache_beam/runners/common.py", line 1495, in apache_beam.runners.common.DoFnRunner.process
  File "apache_beam/runners/common.py", line 687, in apache_beam.runners.common.SimpleInvoker.invoke_process
  File "apache_beam/runners/common.py", line 1671, in apache_beam.runners.common._OutputHandler.handle_process_outputs
  File "/work/main/components/example_gen/examples.py", line 78, in process
    raise CorruptImageError(
components.example_gen.examples.CorruptImageError: corrupt image cars_train/00091.jpg: OSError: image file is truncated (2 bytes not processed) (set data.on_corrupt_image: skip to skip it) [while running 'ReadAndEncode/ParDo(ReadAndEncode)']

Error while running "/work/main/.venv/bin/python /work/main/pipeline/local_runner.py" 
''')

# The same records in absl's format (absl's handler, as in a KFP container) and in cgd's.
ABSL_FORMAT_LOG = log_lines(r'''
I1123 02:09:10.905123 139871 local_dag_runner.py:105] Component Trainer is running.
I1123 02:09:10.912345 139871 launcher.py:440] Going to run a new execution 6
I1123 02:09:31.101237 139871 task.py:202] training on 90 images of 9 classes, validating on 30 images of 3 classes
W0000 00:00:1795400311.043539   18728 op_level_cost_estimator.cc:699] Error in PredictCost() for the op: op: "CropAndResize" attr { key: "T" value { type: DT_FLOAT } }
I1123 02:09:57.480112 139871 task.py:168] epoch 1/12: loss 1.9781, validation Recall@1 0.5000 (best)
I1123 02:09:57.480441 139871 callbacks.py:231] Sharding callback duration: 300
02:10:01 WARNING trainer.task: trainer.freeze_batchnorm with a randomly initialised backbone freezes identity BatchNorm statistics; it is meant for pretrained weights
I1123 02:10:40.000012 139871 local_dag_runner.py:110] Component Trainer is finished.
''')

# A rerun: unchanged components are served from the cache (tfx/orchestration/portable/launcher.py).
CACHED_LOG = log_lines(r'''
INFO:absl:Component ImportSchemaGen is running.
INFO:absl:Running launcher for node_info {
  type {
    name: "tfx.components.schema_gen.import_schema_gen.component.ImportSchemaGen"
INFO:absl:MetadataStore with DB connection initialized
INFO:absl:A cached execution 10 is used.
INFO:absl:Component ImportSchemaGen is finished.
INFO:absl:Component Trainer is running.
INFO:absl:Going to run a new execution 14
INFO:trainer.task:epoch 1/12: loss 1.9781, validation Recall@1 0.5000 (best)
INFO:absl:Component Trainer is finished.
''')

EPOCHS = [
    "epoch 1/12: loss 1.9781, validation Recall@1 0.5000 (best)",
    "epoch 2/12: loss 1.0984, validation Recall@1 0.3667",
    "epoch 3/12: loss 0.9198, validation Recall@1 0.4667",
    "epoch 4/12: loss 0.8010, validation Recall@1 0.5000",
    "epoch 5/12: loss 0.7255, validation Recall@1 0.4333",
]


def components(*names: str) -> list[str]:
    return [f"Component {name}: {state}" for name in names for state in ("running", "finished")]


def test_successful_run_shows_components_training_and_our_messages_whole():
    shown = list(console.progress_lines(CREATE_LOG + SUCCESS_LOG))
    assert shown == [
        'Pipeline "cgd-demo" created successfully.',
        "Component RetrievalExampleGen: running",
        "warning: skipping corrupt image cars_test/00091.jpg: UnidentifiedImageError: cannot "
        "identify image file <_io.BytesIO object at 0x7f39530d1940>",
        "warning: skipping corrupt image cars_train/00091.jpg: OSError: image file is truncated "
        "(2 bytes not processed)",
        "Component RetrievalExampleGen: finished",
        *components("ImportSchemaGen", "StatisticsGen", "Transform", "ExampleValidator"),
        "Component Trainer: running",
        "training on 90 images of 9 classes, validating on 30 images of 3 classes",
        "strategy _DefaultDistributionStrategy with 1 replica(s), precision float32",
        "validation Recall@1 before training: 0.3333 (30 images)",
        *EPOCHS[:4],
        EPOCHS[4],
        "early stopping: no Recall@1 improvement for 4 epochs",
        "restored the best epoch 1 (validation Recall@1 0.5000)",
        "exported SavedModel to /work/main/out/demo/pipelines/cgd-demo/Trainer/model/6/"
        "Format-Serving",
        "Component Trainer: finished",
        "Component RecallEvaluator: running",
        "RecallEvaluator: production model none yet (the first model is judged on the "
        "threshold alone)",
        "RecallEvaluator: 60 images of 6 classes in split 'eval'",
        "embedded 60/60 eval images",
        "RecallEvaluator: BLESSED: Recall@1 0.3167 meets the threshold 0.0000; no blessed "
        "baseline yet (first model)",
        "Component RecallEvaluator: finished",
        *components("Pusher"),
    ]


def test_shown_lines_are_whole_messages_of_the_output():
    """Each shown line is a complete message of one output line, its log prefix removed."""
    messages = {console.parse_line(line).message for line in SUCCESS_LOG}
    for shown in console.progress_lines(SUCCESS_LOG):
        if shown.startswith(("Component ", "warning: skipping")):
            continue  # rewritten on purpose; checked above
        assert shown in messages
        assert not shown.startswith(("INFO:", "WARNING:", "I1123"))


@pytest.mark.parametrize("line", [
    # TensorFlow's import noise
    "2026-11-23 02:15:55.970013: E external/local_xla/xla/stream_executor/cuda/cuda_fft.cc:479] "
    "Unable to register cuFFT factory: Attempting to register factory for plugin cuFFT when one "
    "has already been registered",
    "/work/main/.venv/lib/python3.10/site-packages/google/api_core/_python_version_support.py:246:"
    " FutureWarning: You are using a non-supported Python version (3.10.13).",
    "  warnings.warn(message, FutureWarning)",
    # the tfx CLI's chatter, absl records of TFX, Beam workers' records of Beam
    "CLI", "Creating a run for pipeline: cgd-demo",
    "INFO:absl:Excluding no splits because exclude_splits is not set.",
    "INFO:absl:Training complete. Model written to /work/main/out/demo/pipelines/cgd-demo/Trainer/"
    "model/6/Format-Serving. ModelRun written to /work/main/out/demo/pipelines/cgd-demo/Trainer/"
    "model_run/6",
    "INFO:tensorflow:Assets written to: /work/main/out/demo/pipelines/cgd-demo/Trainer/model/6/"
    "Format-Serving/assets",
    *[line for line in SUCCESS_LOG if "python-snappy" in line],
    # Keras' own fit output and the grappler's "Error in PredictCost()"
    "Epoch 1/12",
    "30/30 - 26s - loss: 1.9781 - embedding_loss: 0.1785 - logits_loss: 1.7996 - val_recall@1: "
    "0.5000 - 26s/epoch - 883ms/step",
    *[line for line in SUCCESS_LOG if "PredictCost" in line],
    # TensorFlow's shutdown traceback
    "Exception ignored in: <function AtomicFunction.__del__ at 0x7f0752eb39a0>",
    "Traceback (most recent call last):",
    '  File "/work/main/.venv/lib/python3.10/site-packages/tensorflow/python/eager/'
    'polymorphic_function/atomic_function.py", line 291, in __del__',
    "TypeError: 'NoneType' object is not subscriptable",
])
def test_noise_is_not_shown(line):
    assert console.progress_line(line + "\n") is None
    assert list(console.progress_lines([line + "\n"])) == []


def test_no_traceback_and_no_noise_in_a_successful_run():
    shown = "\n".join(console.progress_lines(CREATE_LOG + SUCCESS_LOG))
    for noise in ("Traceback", "TypeError", "Exception ignored", "cuFFT", "FutureWarning",
                  "apache_beam", "log_location", "absl", "PredictCost", "Epoch 1/12", "30/30"):
        assert noise not in shown
    assert console.find_failure(SUCCESS_LOG).error == []  # the shutdown traceback is no error


def test_absl_and_cgd_prefixes_are_stripped():
    assert list(console.progress_lines(ABSL_FORMAT_LOG)) == [
        "Component Trainer: running",
        "training on 90 images of 9 classes, validating on 30 images of 3 classes",
        "epoch 1/12: loss 1.9781, validation Recall@1 0.5000 (best)",
        "warning: trainer.freeze_batchnorm with a randomly initialised backbone freezes "
        "identity BatchNorm statistics; it is meant for pretrained weights",
        "Component Trainer: finished",
    ]


def test_a_cached_component_is_one_line():
    assert list(console.progress_lines(CACHED_LOG)) == [
        "Component ImportSchemaGen: cached",
        "Component Trainer: running",
        EPOCHS[0],
        "Component Trainer: finished",
    ]


def test_failure_summary_names_the_component_error_and_the_log():
    log_path = "/work/main/out/demo/logs/tfx.log"
    assert console.failure_summary(SOURCE_FAILURE_LOG, log_path) == textwrap.dedent("""\
        error in component RetrievalExampleGen:
          components.datasets.cars196.source.Cars196SourceError: Cars196 source directory \
/tmp/demo_fail/src is missing cars_test_annos_withlabels.mat. Expected the four files \
cars_train.tgz, cars_test.tgz, car_devkit.tgz, cars_test_annos_withlabels.mat; found: \
car_devkit.tgz, cars_test.tgz, cars_train.tgz
        full log: /work/main/out/demo/logs/tfx.log""").replace("\n", "\n    ").join(["    ", ""])
    # Live, the failing component shows as failed, and nothing of its traceback.
    assert list(console.progress_lines(SOURCE_FAILURE_LOG)) == [
        "Component RetrievalExampleGen: running", "Component RetrievalExampleGen: failed"]


def test_failure_summary_of_a_beam_worker_error_is_the_workers_exception():
    failure = console.find_failure(BEAM_FAILURE_LOG)
    assert failure.component == "RetrievalExampleGen"
    assert failure.error == [
        "components.example_gen.examples.CorruptImageError: corrupt image cars_train/00091.jpg: "
        "OSError: image file is truncated (2 bytes not processed) (set data.on_corrupt_image: "
        "skip to skip it) [while running 'ReadAndEncode/ParDo(ReadAndEncode)']"]
    assert console.exception_name(failure.error) == "CorruptImageError"
    summary = console.failure_summary(BEAM_FAILURE_LOG, "out/demo/logs/tfx.log")
    assert "RuntimeError" not in summary and "Traceback" not in summary
    assert summary.splitlines()[-1] == "    full log: out/demo/logs/tfx.log"


def test_failure_summary_without_a_python_exception_shows_the_last_line():
    killed = [line for line in SUCCESS_LOG if "epoch 2/12" in line][0]  # in the middle of training
    lines = SUCCESS_LOG[:SUCCESS_LOG.index(killed)] + ["Killed\n"]
    assert console.failure_summary(lines, "tfx.log").splitlines() == [
        "    error in component Trainer:",
        "      (no Python exception in the output; its last line: Killed)",
        "    full log: tfx.log"]


FAKE_TFX = """\
import sys
if sys.argv[1] == "pipeline":
    sys.stdout.write(open(sys.argv[2]).read())
else:
    sys.stdout.write(open(sys.argv[3]).read())
    sys.exit(1)
"""


@pytest.fixture
def fake_tfx(tmp_path, monkeypatch):
    """The tfx CLI replaced by a script printing the create/run logs above; the run fails."""
    script, create, run = tmp_path / "tfx.py", tmp_path / "create.log", tmp_path / "run.log"
    script.write_text(FAKE_TFX)
    create.write_text("".join(CREATE_LOG))
    run.write_text("".join(SOURCE_FAILURE_LOG))
    monkeypatch.setattr(demo, "tfx_command", lambda *args: [
        sys.executable, str(script), args[0], str(create), str(run)])
    return tmp_path


@pytest.mark.slow
def test_run_tfx_cli_prints_progress_and_the_error_then_raises(fake_tfx, capsys):
    cfg = SimpleNamespace(pipeline=SimpleNamespace(root=str(fake_tfx / "pipelines"),
                                                   name="cgd-demo"))
    log_path = fake_tfx / "logs" / "tfx.log"
    with pytest.raises(CliError) as raised:
        demo.run_tfx_cli(cfg, str(fake_tfx / "demo.yaml"), str(log_path))
    assert str(raised.value) == (
        f"`tfx run create` failed (exit 1) in component RetrievalExampleGen: Cars196SourceError; "
        f"full log: {log_path}")
    console = capsys.readouterr().out.splitlines()
    assert [line.split(" --")[0] for line in console[:5]] == [
        "    $ tfx pipeline create", '    Pipeline "cgd-demo" created successfully.',
        "    $ tfx run create", "    Component RetrievalExampleGen: running",
        "    Component RetrievalExampleGen: failed"]
    assert console[5] == "    error in component RetrievalExampleGen:"
    assert console[6].startswith("      components.datasets.cars196.source.Cars196SourceError: ")
    assert console[7:] == [f"    full log: {log_path}"]
    logged = log_path.read_text()
    assert "".join(SOURCE_FAILURE_LOG) in logged and "".join(CREATE_LOG) in logged


def demo_config(path, work, source, dataset="cars196", data=None, trainer=None, **sections):
    """A demo config file at ``path`` with its work directory ``work`` (absolute paths)."""
    import yaml
    text = {"pipeline": {"name": "cgd-demo", "root": f"{work}/pipelines",
                         "metadata_path": f"{work}/metadata.sqlite",
                         "serving_dir": f"{work}/serving"},
            "data": {"dataset": dataset, "source_dir": str(source), **(data or {})},
            "trainer": dict(trainer or {}), **sections}
    path.write_text(yaml.safe_dump(text))
    return path


# A Cars196 sample of 4 classes x 4 images that the demo's own checks accept.
SMALL_CARS196 = dict(data={"train_classes": [1, 2], "eval_classes": [3, 4],
                           "validation_classes": 0},
                     trainer={"classes_per_batch": 2}, evaluator={"min_queries": 4})


@pytest.mark.slow
def test_cgd_demo_failure_is_one_error_line(fake_tfx, capsys):
    from cli import main as cli
    from components.datasets.cars196.sample import make_sample_data
    source = fake_tfx / "cars196"
    make_sample_data(source, num_classes=4, images_per_class=4, seed=0)
    config = demo_config(fake_tfx / "demo.yaml", fake_tfx / "out", source, **SMALL_CARS196)
    assert cli.main(["demo", "--config", str(config)]) == 1
    out, err = capsys.readouterr()
    assert err.splitlines() == [
        "cgd demo: error: `tfx run create` failed (exit 1) in component RetrievalExampleGen: "
        f"Cars196SourceError; full log: {fake_tfx}/out/logs/tfx.log"]
    assert "Traceback" not in out
    assert "Cars196SourceError: Cars196 source directory" in out
    assert f"    using the cars196 files in {source}" in out.splitlines()


@pytest.mark.slow
def test_demo_search_names_each_image_by_archive_and_member(tmp_path):
    """The archives number their members alike (cars_train/00003.jpg and cars_test/00003.jpg
    are different cars): the query and every hit are named by archive and member."""
    from components.datasets.cars196.sample import make_sample_data
    from core.config import load_config
    source = tmp_path / "cars196"
    make_sample_data(source, num_classes=4, images_per_class=4, seed=0)
    config = demo_config(tmp_path / "demo.yaml", tmp_path / "work", source, **SMALL_CARS196)
    cfg = load_config(config)
    splits = demo.split_records(cfg, str(tmp_path / "work"))
    gallery, queries, origins = demo.gallery_and_queries(cfg, str(tmp_path / "work"),
                                                         splits["eval"])
    assert [c for _, c, _ in queries] == [3, 4]
    assert all(o.startswith("cars_train.tgz:cars_train/") and o.endswith(".jpg")
               for _, _, o in queries)
    assert sorted(origins) == sorted(p.name for p in (tmp_path / "work" / "gallery").iterdir())
    assert all(o.startswith("cars_test.tgz:cars_test/") for o in origins.values())
    assert {name[:9] for name in origins} == {"class003_", "class004_"}

    query = ("/x/00003.jpg", 3, "cars_train.tgz:cars_train/00003.jpg")
    hits = [(1, 0.1, "/g/class004_00007.jpg"), (2, 0.2, "/g/class003_00003.jpg")]
    lines = demo.search_lines(query, hits, {"class004_00007.jpg": "cars_test.tgz:cars_test/00007.jpg",
                                            "class003_00003.jpg": "cars_test.tgz:cars_test/00003.jpg"},
                              gallery_size=8, skipped=1)
    assert lines == [
        "    query cars_train.tgz:cars_train/00003.jpg (class 3, not in the gallery); top 2 of 8 "
        "gallery images from cars_test.tgz (1 unreadable skipped):",
        "    1. 0.1000  class004_00007.jpg (from cars_test.tgz:cars_test/00007.jpg)",
        "    2. 0.2000  class003_00003.jpg (from cars_test.tgz:cars_test/00003.jpg)  <- same class"]


def test_readme_where_outputs_go_lists_what_the_demo_writes_itself():
    """Every path the demo joins onto its work directory (out/demo/) is in the README's table."""
    import re
    from pathlib import Path
    root = REPO_ROOT
    written = set(re.findall(r'os\.path\.join\(work, "([^"]+)"\)', (root / "cli" / "demo.py").read_text()))
    assert {"parse", "gallery", "gallery.index.npz"} <= written
    readme = root.joinpath("README.md").read_text()
    table = readme[readme.index("### Where outputs go"):readme.index("## Real Cars196")]
    for name in written:
        assert f"`out/demo/{name}" in table, name


# --- any dataset: the refusals (before any work), the queries, one whole demo on SOP ---


@pytest.fixture
def no_tfx(monkeypatch):
    """The tfx CLI must not be reached: a refusal comes before the pipeline."""
    def refuse(*args):
        raise AssertionError(f"the demo ran `tfx {' '.join(args)}`")
    monkeypatch.setattr(demo, "tfx_command", refuse)


def refusal(config, capsys) -> str:
    from cli import main as cli
    assert cli.main(["demo", "--config", str(config)]) == 1
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    [line] = err.splitlines()
    assert line.startswith("cgd demo: error: ")
    return line[len("cgd demo: error: "):]


def test_demo_refuses_missing_real_data_in_one_line_and_keeps_what_was_written(
        tmp_path, no_tfx, capsys):
    """A source_dir outside the work directory is real data: the demo never writes a
    sample there, and says which key and which files."""
    work, real = tmp_path / "out", tmp_path / "data" / "sop"
    (work / "serving").mkdir(parents=True)
    (work / "serving" / "kept.txt").write_text("an earlier demo's output")
    config = demo_config(tmp_path / "demo-sop.yaml", work, real, dataset="sop")
    message = refusal(config, capsys)
    assert message.startswith("data.source_dir: ") and f"{real} does not exist" in message
    assert "Stanford_Online_Products.zip" in message and str(work) in message
    assert not real.exists()
    assert (work / "serving" / "kept.txt").read_text() == "an earlier demo's output"


def test_demo_refuses_a_non_empty_directory_without_the_files(tmp_path, no_tfx, capsys):
    """Inside the work directory too, the demo writes a sample only into a new or empty
    directory: it never overwrites or mixes with files already there."""
    work = tmp_path / "out"
    source = work / "inshop_sample"
    source.mkdir(parents=True)
    (source / "img.zip").write_bytes(b"a partial download")
    config = demo_config(tmp_path / "demo-inshop.yaml", work, source, dataset="inshop")
    message = refusal(config, capsys)
    assert message.startswith(f"data.source_dir: ") and "list_eval_partition.txt" in message
    assert sorted(p.name for p in source.iterdir()) == ["img.zip"]
    assert (source / "img.zip").read_bytes() == b"a partial download"


def test_demo_refuses_unreadable_real_data_naming_the_file(tmp_path, no_tfx, capsys):
    real = tmp_path / "data" / "sop"
    real.mkdir(parents=True)
    (real / "Stanford_Online_Products.zip").write_bytes(b"an interrupted download")
    config = demo_config(tmp_path / "demo-sop.yaml", tmp_path / "out", real, dataset="sop")
    message = refusal(config, capsys)
    assert message.startswith(f"data.source_dir {real}: Stanford_Online_Products.zip: ")
    assert (real / "Stanford_Online_Products.zip").read_bytes() == b"an interrupted download"


@pytest.mark.slow
@pytest.mark.parametrize("change, key", [
    # 9 training classes (12 minus 3 held out) cannot fill a batch of 12 classes.
    ({"trainer": {"classes_per_batch": 12}}, "trainer.classes_per_batch is 12"),
    # The eval split's 60 queries (6 classes x 10) cannot reach 1000.
    ({"evaluator": {"min_queries": 1000}}, "evaluator.min_queries 1000"),
])
def test_demo_refuses_a_split_it_cannot_train_or_judge_before_the_pipeline(
        tmp_path, no_tfx, capsys, change, key):
    work = tmp_path / "out"
    config = demo_config(tmp_path / "demo-cub200.yaml", work, work / "cub200_sample",
                         dataset="cub200", data={"train_classes": [1, 12],
                                                 "eval_classes": [13, 18],
                                                 "validation_classes": 3},
                         trainer=change.get("trainer"),
                         **{k: v for k, v in change.items() if k != "trainer"})
    message = refusal(config, capsys)
    assert key in message
    assert (work / "cub200_sample" / "CUB_200_2011.tgz").exists()  # the sample is kept
    assert not (work / "pipelines").exists()


def test_demo_refuses_spans(tmp_path, no_tfx, capsys):
    config = demo_config(tmp_path / "demo.yaml", tmp_path / "out", tmp_path / "out" / "src",
                         data={"file_pattern": "span-{SPAN}/*"})
    assert refusal(config, capsys).startswith("data.file_pattern is 'span-{SPAN}/*'")
    assert not (tmp_path / "out" / "src").exists()


def _image(path, ok=True):
    from PIL import Image
    path.parent.mkdir(parents=True, exist_ok=True)
    if ok:
        Image.new("RGB", (8, 8), (200, 10, 10)).save(path)
    else:
        path.write_bytes(b"not an image")
    return str(path)


@pytest.mark.parametrize("kind", ["roles", "files", "none"])
def test_demo_queries_follow_the_datasets_own_roles_and_are_never_in_the_gallery(
        tmp_path, kind):
    """In-shop: its query images; a class-range dataset: the eval classes' original train
    files (its test files are the gallery); otherwise one image per class taken out."""
    from components.datasets.records import record
    rows = []
    for class_id in range(4):
        for n in range(3):
            role = ("query" if n == 0 else "gallery") if kind == "roles" else ""
            source_split = {"roles": role, "files": "train" if n == 0 else "test",
                            "none": ""}[kind]
            ok = not (class_id == 0 and n < 2)  # class 0's first two images are corrupt
            rows.append(record(_image(tmp_path / f"c{class_id}_{n}.jpg", ok), f"c{class_id}_{n}",
                               class_id, f"class {class_id}", source_split=source_split,
                               eval_role=role))
    queries, gallery = demo.queries_and_gallery(rows)
    ids = [q["image_id"] for q in queries]
    if kind == "none":
        assert ids == ["c0_2", "c1_0", "c2_0"]  # class 0: its first decodable image
    else:
        assert ids == ["c1_0", "c2_0", "c3_0"]  # class 0's only query candidate is corrupt
    assert not {q["image_id"] for q in queries} & {g["image_id"] for g in gallery}
    if kind == "none":
        assert len(queries) + len(gallery) == len(rows)
    else:  # the gallery is exactly the gallery-role / test-file images
        assert sorted(g["image_id"] for g in gallery) == sorted(
            f"c{c}_{n}" for c in range(4) for n in (1, 2))


# configs/demo-sop.yaml with a handful of training steps: the pipeline's mechanics for a
# dataset other than Cars196, not its Recall (the shipped config trains 600 steps).
SOP_STEPS = {"epochs": 2, "steps_per_epoch": 5}


@pytest.fixture(scope="module")
def sop_demo(tmp_path_factory):
    """One `cgd demo` on configs/demo-sop.yaml (work directory in tmp): (config, console)."""
    import contextlib
    import io
    from pathlib import Path

    import yaml

    from cli import main as cli
    from core.config import load_config
    root = tmp_path_factory.mktemp("sop_demo")
    shipped = yaml.safe_load((REPO_ROOT / "configs"
                              / "demo-sop.yaml").read_text())
    shipped["pipeline"].update(root=f"{root}/out/pipelines",
                               metadata_path=f"{root}/out/metadata/metadata.sqlite",
                               serving_dir=f"{root}/out/serving")
    shipped["data"]["source_dir"] = f"{root}/out/sop_sample"
    shipped["trainer"].update(SOP_STEPS)
    config = root / "demo-sop.yaml"
    config.write_text(yaml.safe_dump(shipped))
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = cli.main(["demo", "--config", str(config)])
    assert code == 0, out.getvalue() + err.getvalue()
    return load_config(config), out.getvalue().splitlines()


@pytest.mark.slow
def test_sop_demo_runs_every_step_and_names_the_dataset(sop_demo):
    cfg, lines = sop_demo
    steps = [line for line in lines if line.startswith("==> ")]
    assert [s.split(" ")[1] for s in steps] == ["1/5", "2/5", "3/5", "4/5", "5/5", "summary"]
    assert steps[0] == f"==> 1/5 data: sop in {cfg.data.source_dir}"
    assert f"    writing sop sample data (18 classes, 10 images each, 2 corrupt) to " \
           f"{cfg.data.source_dir}" in lines
    assert steps[1].startswith("==> 2/5 pipeline cgd-demo-sop on sop through the tfx CLI")
    assert "    Component Pusher: finished" in lines
    assert any(line.startswith("    verdict: BLESSED") for line in lines)


@pytest.mark.slow
def test_sop_demo_searches_the_eval_products_with_a_query_outside_the_gallery(sop_demo):
    import numpy as np
    cfg, lines = sop_demo
    work = os.path.dirname(cfg.pipeline.root)
    [header] = [line for line in lines if line.startswith("    query ")]
    query = header.split()[1]
    assert query.startswith("Stanford_Online_Products.zip:Stanford_Online_Products/")
    gallery = sorted(os.listdir(os.path.join(work, "gallery")))
    # The sample's 18 products: 1-9 train (Ebay_train.txt), 10-18 test; the search's
    # gallery holds test products only, 10 images each (and corrupt ones) minus 3 queries.
    assert {int(name[5:8]) for name in gallery} == set(range(10, 19))
    assert len(gallery) >= 9 * 10 - 3
    assert f"top 8 of {len(gallery) - int(header.split('(')[-1].split()[0])} gallery " \
           f"images from Stanford_Online_Products.zip" in header
    hits = lines[lines.index(header) + 1:lines.index(header) + 9]
    assert [h.split(".")[0].strip() for h in hits] == [str(r) for r in range(1, 9)]
    assert all(query not in hit for hit in hits)
    index = np.load(os.path.join(work, "gallery.index.npz"))
    assert len(index["paths"]) == len(gallery) - int(header.split("(")[-1].split()[0])


@pytest.mark.slow
def test_sop_demo_evaluates_all_vs_all_and_draws_the_ranking_picture(sop_demo):
    import json
    cfg, lines = sop_demo
    [picture] = [line for line in lines if line.startswith("    ranking picture: ")]
    png = picture.split(": ", 1)[1].split(" ")[0]
    assert os.path.getsize(png) > 0
    metrics = json.load(open(os.path.join(os.path.dirname(png), "metrics.json")))
    assert metrics["protocol"] == "all-vs-all"
    assert metrics["candidate"]["num_queries"] > 0
    served = [line for line in lines if line.startswith("    served: ")][0]
    version = served.split(" version ")[1].split()[0]
    assert os.path.isdir(os.path.join(cfg.pipeline.serving_dir, cfg.serving.model_name, version))
