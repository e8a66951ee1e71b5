"""Training harness: input pipelines, the trainer, checkpoints, evaluation and sampling."""


def load_run(workdir: str, step: int | None = None):
  """Loads a run from its workdir: the latest checkpoint, or `step` (see
  experiments.run.load_run)."""
  from experiments.run import load_run as _load_run
  return _load_run(workdir, step)
