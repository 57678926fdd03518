"""A run: its options, its directory and the files in it (``run.json``, weights, state, log,
lock, outputs), written atomically and checked on read. See docs/run-directory.md.

Modules
-------
options         ``TrainOptions``, their validation and resolution against a preset
rundir          the run directory: paths, ``run.json``, the schedule it records
schema          what ``run.json`` holds and its checks
state_file      the training-state file (both backends' format)
resume          what ``--resume`` reads back and checks
lock            the run directory's lock
atomic          atomic file writes and the clean-up of their temporaries
integrity       hashes of the weight files, finite checks of what is written
outputs         output paths: what may be written, what must not be overwritten
images          uint8 conversion, grids, PNG and NPZ files
splits          the images a run's data holds for evaluation and interpolation
classifier_run  a classifier's run directory
"""
