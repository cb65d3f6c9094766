import os
import sys

# numpy is used for dedup keys only; OpenBLAS's idle worker threads would compete with the
# build's own processes for the cores.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

from .cli import main  # noqa: E402

sys.exit(main())
