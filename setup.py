"""CGD fine-grained image retrieval as a TFX pipeline. Install with the pins: pip install -c constraints.txt -e ."""
from setuptools import find_packages, setup

setup(
    name="cgd-retrieval",
    version="0.1.0",
    description="Fine-grained image retrieval (CGD: cars, birds, products) as a production TFX pipeline",
    python_requires=">=3.10,<3.11",
    packages=find_packages(include=["core*", "search*", "pipeline*", "cli*", "components*", "trainer*",
                                    "serving*", "kubeflow*"]),
    package_data={
        "core": ["config.yaml"],
        "components": ["example_gen/schema.pbtxt"],
        "serving": ["deploy/*", "deploy/**/*"],
        "kubeflow": ["Dockerfile"],
    },
    install_requires=[
        "tfx[kfp]",
        "tensorflow",
        "tf-keras",
        "tensorflow-transform",
        "apache-beam[gcp]",
        "tensorflow-datasets",
        "tensorflow-serving-api",
        "kfp",
        "kfp-pipeline-spec",
        # Its protos (KubernetesExecutorConfig) build the KFP platform spec: GPU node pool, volumes.
        "kfp-kubernetes",
        "protobuf",
        "numpy",
        "pyarrow",
        "pillow",
        "scipy",
        "scikit-learn",
        "faiss-cpu",  # the gallery index: exact and approximate search (#25)
        "pyyaml",
        "croniter",  # validates the Kubeflow recurring-run schedule
        "psutil",  # local_runner.py reads `tfx run create`'s pipeline name
    ],
    extras_require={"test": ["pytest"]},
    entry_points={"console_scripts": ["cgd=cli.main:main"]},
)
