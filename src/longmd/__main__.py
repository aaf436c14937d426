"""``python -m longmd`` (also what ``torchrun -m longmd`` runs)."""

import sys

from longmd.cli import main

sys.exit(main())
