"""NumPy's and SciPy's BLAS on one thread while torch keeps its own threads.

NumPy and SciPy ship their own OpenBLAS, whose thread pool knows nothing of torch's OpenMP
pool: with both at two threads on two cores, each small NumPy product after a torch op waits
for cores that torch's threads still spin on. The NumPy work of this package is small
matrices (the cold items' ridge: warm items x a few hundred features; the explanation
protocol's re-scoring), so one BLAS thread loses nothing and the contention goes. Measured
on ML-100K, the evaluation of one model version (2 cores, torch at 2 threads; identical
rows): content-map tuning 10.5 -> 2.1 s, the explanation protocol 56.0 + 23.8 -> 17.4 + 7.7 s,
all protocols one after another 234 -> 158 s. ``threadpoolctl`` (what scikit-learn uses for
the same problem) sets the limit and restores it afterwards; torch's pool is not touched.
"""

from __future__ import annotations

import functools


def one_blas_thread(fn):
    """Run ``fn`` with NumPy's and SciPy's BLAS limited to one thread (restored after)."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        from threadpoolctl import threadpool_limits

        with threadpool_limits(limits=1, user_api="blas"):
            return fn(*args, **kwargs)

    return wrapper
