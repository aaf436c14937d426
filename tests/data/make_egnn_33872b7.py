"""Run at commit 33872b7 from the repository root: reference numbers of the old EGNN (egnn_33872b7.json) and a
model file written by the old save_model (egnn_33872b7.pt), for tests/test_potential.py."""
import json
import sys

import torch

sys.path.insert(0, "tests")
from longmd.models.base import predict  # noqa: E402
from longmd.models.egnn import EGNN  # noqa: E402
from longmd.models.io import save_model  # noqa: E402
from test_egnn import graph_of, random_periodic  # noqa: E402

torch.manual_seed(0)
model = EGNN.from_preset("small", [1, 6, 8], seed=5).double()
model.set_reference_energies({1: -1.5, 6: -7.25, 8: -4.0})
model.set_scale(0.7)
params = {k: [float(v.sum()).hex(), float(v.flatten()[0]).hex(), float(v.flatten()[-1]).hex()]
          for k, v in model.state_dict().items()}
g = graph_of([random_periodic(6, 1), random_periodic(5, 3)], cutoff=5.0)
p = predict(model, g)
out = {"params": params, "energy": [float(e).hex() for e in p.energy],
       "forces": [[float(x).hex() for x in row] for row in p.forces.tolist()]}
tiny = EGNN([1, 8], hidden=4, n_rff=3, n_layers=1, cutoff=3.0, seed=2).double()
tiny.set_reference_energies({1: -1.25, 8: -3.5})
tiny.set_scale(0.5)
save_model(tiny, "tests/data/egnn_33872b7.pt", metadata={"made_by": "longmd 33872b7 save_model"})
rp = random_periodic(5, 4)
rp.numbers[:] = [1, 8, 1, 8, 1]
gt = graph_of([rp], cutoff=3.0)
pt = predict(tiny, gt)
forces = [[float(x).hex() for x in r] for r in pt.forces.tolist()]
out["old_file"] = {"energy": float(pt.energy[0]).hex(), "forces": forces}
with open("tests/data/egnn_33872b7.json", "w") as f:
    json.dump(out, f, indent=0)
