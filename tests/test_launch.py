"""Config sweeps (experiments/launch.py): expansion into named units, the Slurm and TPU
launchers' scripts, a local sweep that resumes and skips finished units, and summaries."""
import csv
import io
import os

import pytest

from experiments import launch
from tests.conftest import REPO

IWAE = 'configs/iwae_binarized_mnist.py:tiny'


def test_sweeps_expand_to_deterministic_named_workdirs(tmp_path):
  units = launch.expand(os.path.join(REPO, IWAE), ['objective', 'k'], str(tmp_path))
  assert len(units) == 6
  assert [u.name for u in units][:3] == ['objective=elbo,num_samples=1',
                                         'objective=elbo,num_samples=5',
                                         'objective=elbo,num_samples=50']
  assert units[4].workdir == str(tmp_path / 'iwae_binarized_mnist_tiny' / 'objective+k' /
                                 'objective=iwae,num_samples=5')
  again = launch.expand(os.path.join(REPO, IWAE), ['objective', 'k'], str(tmp_path))
  assert [u.workdir for u in again] == [u.workdir for u in units]
  assert len(launch.expand(os.path.join(REPO, IWAE), [], str(tmp_path))) == 12  # sweep()
  cmd = units[4].command(IWAE, 'python')
  assert cmd[-2:] == ['--config.model.objective=iwae', '--config.model.num_samples=5']
  layers = launch.expand(os.path.join(REPO, IWAE), ['layers'], str(tmp_path))[1]
  assert '--config.model.hidden_dims=((200, 200), (100, 100))' in layers.command(IWAE)


def test_unknown_sweeps_and_keys_are_one_error_line(tmp_path, capsys):
  assert launch.main([f'--config={os.path.join(REPO, IWAE)}', '--sweep=nope',
                      f'--root={tmp_path}']) == 2
  assert 'defines no sweep_nope(); its sweeps: k, layers, objective, sweep' in (
      capsys.readouterr().err)
  bad = tmp_path / 'bad.py'
  bad.write_text('from configs import iwae_binarized_mnist as b\n'
                 'def get_config(arg=None):\n  return b.get_config("tiny")\n'
                 'def sweep_x():\n  yield {"model.no_such_field": 1}\n')
  with pytest.raises(launch.SweepError, match='model.no_such_field'):
    launch.expand(str(bad), ['x'], str(tmp_path))


def test_slurm_array_script_and_tpu_lines(tmp_path):
  units = launch.expand(os.path.join(REPO, IWAE), ['k'], str(tmp_path))
  script = launch.slurm_script(units, IWAE)
  assert '#SBATCH --array=0-2' in script and 'case "$SLURM_ARRAY_TASK_ID" in' in script
  assert script.count(' ;;') == 3 and '--config.model.num_samples=50' in script
  lines = launch.tpu_commands(units, IWAE, 'my-tpu', 'us-central2-b')
  assert len(lines) == 3 and all('--worker=all' in x and 'distributed=True' in x
                                 for x in lines)


def test_a_local_sweep_runs_pinned_units_resumes_and_summarizes(tmp_path, data_dir,
                                                                 monkeypatch):
  monkeypatch.chdir(REPO)
  monkeypatch.setenv('DGM_DATA_DIR', data_dir)
  cfg = tmp_path / 'sweepcfg.py'
  cfg.write_text('from configs import iwae_binarized_mnist as b\n'
                 'def get_config(arg=None):\n  return b.get_config("tiny")\n'
                 'def sweep_k():\n'
                 '  yield {"model.num_samples": 1}\n'
                 '  yield {"model.num_samples": 3}\n'
                 '  yield {"model.num_samples": 0}   # refused by validation: exit 2\n')
  root = tmp_path / 'root'
  units = launch.expand(str(cfg), ['k'], str(root))
  out = io.StringIO()
  result = launch.run_local(units, str(cfg), parallel=2, out=out)
  assert result == {'num_samples=1': 'done', 'num_samples=3': 'done',
                    'num_samples=0': 'failed'}
  assert 'done 2 (skipped 0), running 0, failed 1, waiting 0 of 3' in out.getvalue()
  assert 'num_samples' in open(units[2].workdir + '.log').read()
  # Launched again: the finished units are skipped, the failed one is tried again.
  out = io.StringIO()
  launch.run_local(units, str(cfg), parallel=2, out=out)
  assert 'skipped 2' in out.getvalue()
  rows = launch.summarize(str(root))
  by_unit = {r['unit']: r for r in rows}
  assert by_unit['num_samples=0']['status'] == 'failed'
  assert by_unit['num_samples=3']['status'] == 'done'
  assert by_unit['num_samples=3']['eval/nll'] > 0 and by_unit['num_samples=3']['last_step'] == 5
  md, path_csv = launch.write_summary(rows, str(root))
  assert '| sweepcfg/k | num_samples=1 | done |' in open(md).read()
  with open(path_csv) as f:
    assert len(list(csv.DictReader(f))) == 3
  png = launch.plot(rows, 'eval/nll', 'model.num_samples', str(root / 'summary.png'))
  assert png and os.path.getsize(png) > 0


def test_every_sweep_in_the_configs_expands_to_keys_its_config_has(tmp_path):
  import glob  # pylint: disable=g-import-not-at-top
  found = 0
  for path in sorted(glob.glob(os.path.join(REPO, 'configs', '*.py'))):
    module, _, _ = launch.load_config_module(path)
    names = [n[len('sweep_'):] for n in dir(module) if n.startswith('sweep_')]
    names += ['sweep'] if hasattr(module, 'sweep') else []
    for name in names:
      assert launch.expand(path, [name], str(tmp_path)), (path, name)
      found += 1
  assert found >= 5


def test_every_sweep_unit_is_a_valid_config_that_builds_its_model(tmp_path):
  """Each unit's overrides, applied as the trainer's --config.KEY=VALUE flags would apply
  them, pass validation and give model arguments the model takes (e.g. the flows' depth,
  coupling and permutation rows)."""
  import glob  # pylint: disable=g-import-not-at-top

  from experiments.models import build_model  # pylint: disable=g-import-not-at-top
  from experiments.validation import validate_config  # pylint: disable=g-import-not-at-top
  built = 0
  for path in sorted(glob.glob(os.path.join(REPO, 'configs', '*.py'))):
    module, _, _ = launch.load_config_module(path)
    names = [n[len('sweep_'):] for n in dir(module) if n.startswith('sweep_')]
    names += ['sweep'] if hasattr(module, 'sweep') else []
    for name in names:
      for unit in launch.expand(path, [name], str(tmp_path)):
        config = module.get_config(None)
        config.update_from_flattened_dict(unit.overrides)
        validate_config(config)
        build_model(config.model_name, config.model.to_dict())
        built += 1
  assert built >= 40
