"""`python tests/pause_at_checkpoint.py STEP MARKER_DIR <experiments.main flags>`: the
trainer's command line, except that when the run reaches the checkpoint of STEP every
process waits for its earlier checkpoints to be written, meets the others, writes
MARKER_DIR/paused.<process index> and sleeps, before saving STEP, so a test can kill all of
them mid-run (tests/test_multiprocess.py). Not a test module: pytest collects test_*.py."""
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import app  # noqa: E402  pylint: disable=g-import-not-at-top

from experiments import checkpointing, main  # noqa: E402  pylint: disable=g-import-not-at-top

PAUSE_AT, MARKER_DIR = int(sys.argv[1]), sys.argv[2]
_save = checkpointing.Checkpointer.save


def _pausing_save(self, step, *args, **kwargs):
  if step == PAUSE_AT:
    import jax  # pylint: disable=g-import-not-at-top
    from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
    self.wait()
    multihost_utils.sync_global_devices('paused before a checkpoint')
    with open(os.path.join(MARKER_DIR, f'paused.{jax.process_index()}'), 'w') as f:
      f.write(str(step))
    time.sleep(3600)
  return _save(self, step, *args, **kwargs)


checkpointing.Checkpointer.save = _pausing_save

if __name__ == '__main__':
  sys.argv = [sys.argv[0]] + sys.argv[3:]
  app.run(main.main, flags_parser=main.parse_flags)
