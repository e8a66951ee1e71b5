"""Model registry: config.model_name -> Flax module class; config.model -> its arguments."""
from __future__ import annotations

import dataclasses
import importlib

import flax.linen as nn

from experiments.errors import UserError

# name -> 'module:Class'. Imported lazily so one family's import errors don't break others.
MODELS = {
    'pixelcnn': 'autoreg.pixelcnn:PixelCNN',
    'gated_pixelcnn': 'autoreg.gated_pixelcnn:GatedPixelCNN',
    'pixelrnn': 'autoreg.pixelrnn:PixelRNN',
    'wavenet': 'autoreg.wavenet:WaveNet',
    'bytenet': 'autoreg.bytenet:ByteNet',
    'char_rnn': 'autoreg.char_rnn:CharRNN',
    'seq2seq': 'autoreg.seq2seq:Seq2Seq',
    'vpn': 'autoreg.vpn:VPN',
    'vae': 'latent.vae:VAE',
    'm2': 'latent.m2:M2',
    'pixelvae': 'latent.pixelvae:PixelVAE',
    'sbn': 'latent.sbn:SBN',
    'darn': 'latent.darn:DARN',
    'gumbel_vae': 'latent.gumbel:GumbelVAE',
    'gan': 'latent.gan:GAN',
    'vaegan': 'latent.vaegan:VAEGAN',
    'nice': 'flows.nice:NICE',
    'realnvp': 'flows.realnvp:RealNVP',
    'glow': 'flows.glow:Glow',
    'maf': 'flows.maf:MAFModel',
    'mnist_classifier': 'quality.classifier:MNISTClassifier',
}


class ConfigError(UserError, ValueError):
  """A config that names something that does not exist."""


def model_class(name: str) -> type[nn.Module]:
  if name not in MODELS:
    raise ConfigError(f'Unknown config.model_name={name!r}; registered models: '
                      f'{", ".join(sorted(MODELS))} (experiments/models.py).')
  module, cls = MODELS[name].split(':')
  return getattr(importlib.import_module(module), cls)


def build_model(name: str, kwargs: dict) -> nn.Module:
  """`Model(**config.model)`, with an error naming any argument the model does not take."""
  cls = model_class(name)
  fields = {f.name for f in dataclasses.fields(cls) if f.init and f.name not in ('parent', 'name')}
  unknown = sorted(set(kwargs) - fields)
  if unknown:
    raise ConfigError(f'config.model has {", ".join(unknown)}, which {cls.__name__} does not '
                      f'take. Its arguments: {", ".join(sorted(fields))}.')
  return cls(**kwargs)
