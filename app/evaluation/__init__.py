"""The framework-neutral parts of ``ddpm eval``.

Modules
-------
bound     the bound in bits/dim (eq. 5) and the rate-distortion table (Figure 5)
fid       FID and KID against the training split, with the held-out floor
classify  class accuracy, confusion and the MNIST Inception Score of a classifier's output
"""
