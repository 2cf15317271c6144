"""cli/console.py: what a person sees of the tfx CLI's output, and of a failure.

Fast: the filter (progress_line, progress_lines, find_failure, failure_summary) is fed
lines copied from real runs' out/demo/logs/tfx.log (TFX 1.16, local orchestrator, Beam
DirectRunner in multi_processing mode; the ones tests/cli/test_demo.py shares are in
tests/support/tfx_logs.py).
"""
import textwrap

import pytest

from cli import console
from tests.support.tfx_logs import CREATE_LOG, SOURCE_FAILURE_LOG, log_lines

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
