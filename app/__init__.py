"""The application around the mathematics: training runs, run directories, files, the command.

``ddpm_core`` (the folder ``ddpm_core/``) is the paper's mathematics on the array API;
``ddpm_core.models`` describes networks; ``ddpm_core.backends`` holds framework code. This
package (the folder ``app/``) is everything a user runs: see docs/ARCHITECTURE.md.

Subpackages
-----------
run         a run's options, directory and files (atomic writes, lock, checks on read)
training    the one training loop over ``TrainBackend``
sampling    the one sampling driver over ``SampleBackend``
evaluation  the framework-neutral parts of ``ddpm eval`` (bound, FID/KID, classify)
cli         the ``ddpm`` command
backend_api a backend's ``api``: the driver and ``eval bpd`` bound to it (module)
"""
