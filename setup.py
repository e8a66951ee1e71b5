"""dgm-jax: deep generative models in JAX/Flax."""
from setuptools import find_packages, setup

setup(
    name='dgm-jax',
    version='0.1.0',
    description='Deep generative models in JAX/Flax: autoregressive, latent-variable, flows.',
    license='Apache-2.0',
    long_description=open('README.md').read() if __import__('os').path.exists('README.md') else '',
    long_description_content_type='text/markdown',
    python_requires='>=3.10',
    packages=find_packages(include=['autoreg*', 'latent*', 'flows*', 'experiments*',
                                    'configs*', 'benchmarks*', 'quality*']),
    # Lower bounds are the versions the test suite ran on (2026-11); upper bounds guard
    # against API changes in the next minor release.
    install_requires=[
        'jax>=0.10,<0.11',
        'flax>=0.12,<0.13',
        'optax>=0.2.8,<0.3',
        'orbax-checkpoint>=0.12,<0.13',
        'tensorflow-datasets>=4.9.9,<5',
        'grain>=0.2.18,<0.3',
        'absl-py>=2.1,<3',
        'ml-collections>=1.0,<2',
        'numpy>=1.26,<3',
        'pillow>=10,<14',
        'tensorboardX>=2.6,<3',     # TensorBoard event files without TensorFlow
        'scikit-learn>=1.3,<2',     # ships the 8x8 digits of the offline demo
    ],
    extras_require={
        # ruff: the linter CI runs (`ruff check .`, configured in ruff.toml). pytest-xdist:
        # pytest's own plugin for running tests in parallel processes (`-n 2`: one per core;
        # the suite is compile-bound and single-threaded per test, 21 -> 11 min on 2 cores).
        # nbclient, nbformat, ipykernel: Jupyter's own standard notebook executor, file
        # format and Python kernel, for tests/test_notebook.py, which runs
        # notebooks/explore_a_run.ipynb on a tiny run so it cannot rot; matplotlib: the
        # standard plotting library the notebook draws with.
        'test': ['pytest>=8,<10', 'pytest-xdist>=3.6,<4', 'chex>=0.1.90,<0.2',
                 'ruff>=0.17.6,<0.18', 'nbclient>=0.10,<0.12', 'nbformat>=5.10,<6',
                 'ipykernel>=6.29,<8', 'matplotlib>=3.8,<4'],
        # To open the notebooks in Jupyter: pip install -e '.[notebook]'; jupyter lab.
        'notebook': ['jupyterlab>=4,<5', 'ipykernel>=6.29,<8', 'matplotlib>=3.8,<4'],
        'bench': ['torch>=2.4,<2.15'],
        'tf': ['tensorflow>=2.16', 'importlib_resources'],
    },
)
