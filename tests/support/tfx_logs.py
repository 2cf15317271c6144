"""Lines copied from real runs' out/demo/logs/tfx.log (TFX 1.16, local orchestrator, Beam
DirectRunner in multi_processing mode), shared by tests/cli/test_console.py (what the
console shows of them) and tests/cli/test_demo.py (a stand-in tfx CLI printing them)."""


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
