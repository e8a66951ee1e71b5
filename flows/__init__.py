"""Invertible models (NICE, Real NVP, Glow, MAF/IAF). See the issues for what lands here."""
