"""Training: the one loop over a small backend protocol, and what it needs.

Modules
-------
protocol          ``TrainBackend``: what a backend provides to the loop; the learning rate
trainer           the one training loop (``train``)
tasks             the diffusion task: data, shapes, initial weights
batches           the batches of a step
seeding           what depends only on ``(seed, step)``: stream seeds, data order, flips, timesteps
logs              the CSV log and the progress line
classifier_train  the classifier's training (the guidance classifier and ``eval classify``)
"""
