"""Framework-free interchange (NumPy only).

Weights across backends (safetensors, torch <-> flax layout), diffusers folders and configs.
"""
