"""notebooks/explore_a_run.ipynb, executed by Jupyter's own executor (nbclient) on a tiny
pixelcnn_digits run and a 2-unit sweep, so the notebook cannot rot: every cell runs, and
its outputs say what they should (samples drawn, the test set scored as the trainer scored
it, the curve plotted, the sweep's units listed)."""
import io
import json
import math
import os
import re
import sys

import pytest

from experiments import launch
from tests.conftest import REPO

nbclient = pytest.importorskip('nbclient')
nbformat = pytest.importorskip('nbformat')
pytest.importorskip('ipykernel')
pytest.importorskip('matplotlib')

NOTEBOOK = os.path.join(REPO, 'notebooks', 'explore_a_run.ipynb')

# Ten steps of pixelcnn_digits:tiny, an evaluation at steps 5 and 10, two learning rates.
SWEEP_CONFIG = '''
from configs import pixelcnn_digits


def get_config(arg=None):
  c = pixelcnn_digits.get_config('tiny')
  c.train.num_steps = 10
  c.train.log_every = 2
  c.train.eval_every = 5
  c.train.sample_at_end = False
  return c


def sweep_lr():
  for lr in (1e-3, 3e-3):
    yield {'optimizer.learning_rate': lr}
'''


def _text(cell) -> str:
  return ''.join(o.get('text', '') for o in cell.outputs if o.output_type == 'stream')


def _images(cell) -> list:
  return [o for o in cell.outputs
          if o.output_type in ('display_data', 'execute_result') and 'image/png' in o.data]


def test_notebook_is_committed_without_outputs_and_has_a_parameters_cell():
  nb = nbformat.read(NOTEBOOK, as_version=4)
  nbformat.validate(nb)
  code = [c for c in nb.cells if c.cell_type == 'code']
  assert all(not c.outputs and c.execution_count is None for c in code)
  params = [c for c in code if 'parameters' in c.metadata.get('tags', [])]
  assert len(params) == 1
  assert 'DGM_NOTEBOOK_WORKDIR' in params[0].source
  assert 'DGM_NOTEBOOK_SWEEP_ROOT' in params[0].source


def test_notebook_runs_on_a_tiny_run_and_sweep(tmp_path, monkeypatch):
  monkeypatch.chdir(REPO)
  # The units and the kernel: one CPU device (not the suite's 8 simulated ones), and XLA's
  # optimization passes off (they cost more than they save on a tiny model).
  monkeypatch.delenv('XLA_FLAGS', raising=False)
  monkeypatch.delenv('MPLBACKEND', raising=False)    # the kernel's inline backend
  monkeypatch.setenv('JAX_DISABLE_MOST_OPTIMIZATIONS', '1')
  cfg = tmp_path / 'digits_lr.py'
  cfg.write_text(SWEEP_CONFIG)
  root = tmp_path / 'sweeps'
  units = launch.expand(str(cfg), ['lr'], str(root))
  result = launch.run_local(units, str(cfg), parallel=2, env=dict(os.environ),
                            out=io.StringIO())
  assert result == {'learning_rate=0.001': 'done', 'learning_rate=0.003': 'done'}, [
      open(u.workdir + '.log').read()[-2000:] for u in units]
  # The run the notebook explores is one of the sweep's units: a whole pixelcnn_digits
  # run of its own (checkpoints, metrics.jsonl, config history).
  workdir = units[1].workdir
  with open(os.path.join(workdir, 'metrics.jsonl')) as f:
    records = [json.loads(line) for line in f]
  logged = [r for r in records if 'eval/nll' in r][-1]
  assert logged['step'] == 10

  monkeypatch.setenv('DGM_NOTEBOOK_WORKDIR', workdir)
  monkeypatch.setenv('DGM_NOTEBOOK_SWEEP_ROOT', str(root))
  nb = nbformat.read(NOTEBOOK, as_version=4)
  # The kernel is the interpreter running this test (jupyter_client starts a 'python'
  # kernelspec with sys.executable): the last cell says which one it is.
  nb.cells.append(nbformat.v4.new_code_cell('import sys\nprint(sys.executable)',
                                            id='which-python'))
  client = nbclient.NotebookClient(nb, kernel_name='python3', timeout=180,
                                   startup_timeout=120,
                                   resources={'metadata': {'path': REPO}})
  client.execute()   # raises CellExecutionError, with the traceback, if a cell fails
  cells = {c.id: c for c in nb.cells}
  assert not [o for c in nb.cells if c.cell_type == 'code' for o in c.outputs
              if o.output_type == 'error']
  assert _text(cells['which-python']).strip() == sys.executable

  assert f'{workdir}: pixelcnn on digits, step 10' in _text(cells['load'])
  assert len(_images(cells['samples'])) == 1

  m = re.search(r'(\d+) test images \(test\): ([\d.]+) nats/example, ([\d.]+) bits/dim',
                _text(cells['score']))
  assert m, _text(cells['score'])
  count, nll, bpd = int(m.group(1)), float(m.group(2)), float(m.group(3))
  assert count == 297
  assert math.isfinite(bpd) and 0 < bpd < 8
  assert bpd == pytest.approx(nll / (64 * math.log(2)), rel=1e-3)
  # The notebook scores the test set as the trainer's evaluation did at the same step.
  assert nll == pytest.approx(logged['eval/nll'], rel=1e-4)

  assert 'eval/nll at step 5' in _text(cells['curve'])
  assert len(_images(cells['curve'])) == 1
  summary = _text(cells['summary'])
  for unit in result:
    assert re.search(rf'{re.escape(unit)}\s+done\s+10\b', summary), summary
  assert 'override:optimizer.learning_rate' in summary and 'eval/bits_per_dim' in summary
  assert len(_images(cells['sweep_plot'])) == 1
