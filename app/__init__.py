"""The application around the mathematics: training runs, run directories, files, the command.

``ddpm_core`` (the folder ``ddpm_core/``) is the paper's mathematics on the array API;
``ddpm_core.models`` describes networks; ``ddpm_core.backends`` holds framework code. This
package (the folder ``app/``) is everything a user runs: see docs/ARCHITECTURE.md.

Modules
-------
options   ``TrainOptions``, their validation and resolution against a preset
atomic    atomic file writes and the clean-up of their temporaries
rundir    the run directory: paths, run.json, the schedule it records
seeding   what depends only on ``(seed, step)``: stream seeds, data order, flips, timesteps
images    uint8 conversion, grids, PNG and NPZ files
logs      the CSV log and the progress line
chains    sampler chains and the sources of interpolations
trainer   the one training loop, over a small backend protocol
evaluation  framework-neutral parts of ``ddpm eval``
cli       the ``ddpm`` command
"""
