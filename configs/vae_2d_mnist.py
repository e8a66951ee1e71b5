"""A VAE with a 2-dimensional z on dynamically binarized MNIST, for pictures: the learned
2-D manifold (Kingma & Welling 2014, arXiv 1312.6114, Fig. 4: the decoder's means over a
20 x 20 grid of the prior's quantiles) and the test set's encodings scattered by label
(latent/vae.py, experiments/latent_pictures.py).

  DGM_DATA_DIR=../shared/data python -m experiments.main \
      --config=configs/vae_2d_mnist.py --workdir=runs/vae_2d

MLP encoder and decoder with two tanh layers of 500 units (the paper's MNIST networks had
one hidden layer of 500), Bernoulli decoder, ELBO with the analytic KL. At the end of
training (and with --mode=sample) samples/ holds manifold_step_N.png,
latent_scatter_step_N.png, reconstructions_step_N.png, interpolations_step_N.png and
sample_means_step_N.png. The evaluation reports the importance-sampled NLL with k = 500.
Result: see the README's model table.
"""
from configs import common


def get_config(arg: str | None = None):
  c = common.base_config()
  c.model_name = 'vae'
  c.model.image_shape = (28, 28, 1)
  c.model.num_levels = 2
  c.model.latent_dims = (2,)
  c.model.hidden_dims = ((500, 500),)
  c.model.likelihood = 'bernoulli'
  c.model.activation = 'tanh'
  c.model.objective = 'elbo'
  c.model.num_samples = 1
  c.model.eval_num_samples = 500
  c.model.eval_chunk_size = 100

  c.data.name = 'binarized_mnist'
  c.data.batch_size = 128
  c.data.eval_batch_size = 200

  c.optimizer.learning_rate = 1e-3
  c.optimizer.warmup_steps = 100
  c.train.num_steps = 8000
  c.train.log_every = 500
  c.train.checkpoint_every = 2000
  c.train.num_samples = 64

  if arg == 'tiny':
    c.model.hidden_dims = ((16,),)
    c.model.eval_num_samples = 10
    c.model.eval_chunk_size = 10
    c.data.batch_size = 16
    c.data.eval_batch_size = 128
    c.data.eval_split = 'test[:256]'
    c.optimizer.warmup_steps = 1
    c.train.num_steps = 4
    c.train.log_every = 1
    c.train.checkpoint_every = 4
    c.train.num_samples = 8
  elif arg:
    raise ValueError(f'Unknown preset {arg!r}; presets: tiny.')
  return c
