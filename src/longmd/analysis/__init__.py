"""Metrics and plots for evaluating potentials beyond single-frame force errors (issue 5).

Pure functions on arrays and tensors; ``longmd evaluate`` runs the models and calls them.

- :mod:`~longmd.analysis.force_errors`: MEPA (the training loss's definition), force/energy MAE and RMSE
- :mod:`~longmd.analysis.structure`: RDF and partial RDFs, distance histogram h(r), their errors
- :mod:`~longmd.analysis.stability`: stability time and reason, tracked pair distances, sustained events
- :mod:`~longmd.analysis.neighborhood`: Jaccard similarity of neighbour sets at offsets k
- :mod:`~longmd.analysis.transport`: MSD, diffusion, Nernst-Einstein conductivity, Arrhenius fits
- :mod:`~longmd.analysis.drift`: NVE energy drift and speed
- :mod:`~longmd.analysis.plots`: PNG figures

Submodules are not imported here, so importing the torch-only MEPA does not pull in matplotlib.
"""
