"""Autoregressive models: masked and causal convolutions, output distributions, samplers."""
