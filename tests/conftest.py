"""Suite-wide settings.

``make test`` runs two pytest-xdist workers on a 2-core machine; each worker and every subprocess
a test starts uses one intra-op thread, because oversubscribed OpenMP threads spin-wait and make
small torch evaluations tens of times slower.
"""

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

import torch  # noqa: E402

torch.set_num_threads(1)
