"""Sampling: one driver over a small backend protocol (the counterpart of ``training``).

Modules
-------
protocol  ``SampleBackend``, ``ChainSpec``, ``GuideSpec``: what a backend provides
driver    ``sample``, ``progressive``, ``interpolate`` and ``load_run``, for any backend
          (``ddpm_core.app.backend_api`` binds them into a backend's ``api``)
chains    the chain's respaced schedule and the checks of a request's arguments
requests  the class labels and guidance scales of a request
"""
