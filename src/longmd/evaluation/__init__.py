"""``longmd evaluate``: every model (longmd or any ASE calculator) under one protocol, beyond force errors.

Parts: ``rollout`` (the DT paper's rollout test), ``frames`` (single-frame errors), ``stability`` (long runs,
h(r), RDFs, tracked distances, events), ``jaccard`` (neighbourhood smoothness of the reference),
``transport`` (MSD, D, conductivity, Arrhenius; off by default), ``drift`` and ``speed``. See
docs/evaluation.md. Only ``longmd.cli`` (and the demo) import this package.
"""

from longmd.evaluation.cli import evaluate_cli, evaluate_run, load_models
from longmd.evaluation.core import evaluate, parse_parts
from longmd.evaluation.options import DEFAULT_PARTS, PARTS, EvalOptions, TrackedPair, paper_scale

__all__ = ["DEFAULT_PARTS", "PARTS", "EvalOptions", "TrackedPair", "evaluate", "evaluate_cli", "evaluate_run",
           "load_models", "paper_scale", "parse_parts"]
