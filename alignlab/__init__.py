"""alignlab: alignment objectives as Lightning modules, composed with Hydra.

Entry point: `python -m alignlab`. Pure math: `alignlab.losses`. Modules: `alignlab.methods`.
"""
__version__ = "0.1.0"
