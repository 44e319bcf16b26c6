"""The self-contained evaluation protocols in worker processes, while protocol A runs in
the caller's (:func:`recsys_dagster.core.evaluation.evaluate_protocols`).

Why processes: training on 2 cores does not use two threads well. Measured on ML-100K
(seconds per epoch, one thread against two): MF 0.40 / 0.35, LightGCN 0.69 / 0.55,
KGTextGNN 2.76 / 1.83. Two one-thread processes therefore do more work than one process
with two threads, and the cold-item protocol (its own main model to train) is independent
of protocol A (the stored model, the kept peers).

A worker is a fresh interpreter (``python -m recsys_dagster.core.protocol_worker JOB OUT``):
it never re-runs the caller's ``__main__`` as a spawned ``multiprocessing`` child does,
and never forks a process whose OpenMP pool is already running. The job and the result are
our own objects pickled in a private temporary folder and read back by the same code.
"""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
import tempfile
from pathlib import Path


class ProtocolWorkers:
    """``names`` run in ``processes - 1`` workers (dealt round-robin, each worker's in order).

    The caller's torch threads ``T`` are shared out: each process gets ``T // processes``
    (at least one). The caller gets its own back once every worker has exited (checked at
    each :meth:`step`, which the caller runs at each logged step), and at :meth:`close`."""

    def __init__(self, names: list[str], tables, config, processes: int):
        import torch

        self.threads = torch.get_num_threads()
        share = max(1, self.threads // processes)
        self.folder = tempfile.TemporaryDirectory(prefix="recsys-protocols-")
        root = Path(self.folder.name)
        n_workers = max(1, min(processes - 1, len(names)))
        env = {**os.environ, "OMP_NUM_THREADS": str(share), "MKL_NUM_THREADS": str(share),
               "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}  # the caller's imports
        self.workers, self.where = [], {}
        for w in range(n_workers):
            mine = names[w::n_workers]
            job, out, log = root / f"job{w}.pkl", root / f"result{w}.pkl", root / f"log{w}.txt"
            with open(job, "wb") as f:
                pickle.dump({"names": mine, "tables": tables, "config": config, "threads": share}, f, protocol=5)
            with open(log, "w") as f:
                proc = subprocess.Popen([sys.executable, "-m", __name__, str(job), str(out)], env=env, stdout=f,
                                        stderr=subprocess.STDOUT)
            self.workers.append((proc, out, log))
            self.where.update({n: w for n in mine})
        self.results: dict = {}
        torch.set_num_threads(share)
        self.restored = False

    def step(self) -> None:
        """Give the caller its threads back once every worker has exited."""
        if not self.restored and all(proc.poll() is not None for proc, _, _ in self.workers):
            self._restore()

    def _restore(self) -> None:
        import torch

        torch.set_num_threads(self.threads)
        self.restored = True

    def result(self, name: str, log):
        """Protocol ``name``'s ``(prefix, ProtocolResult)`` or None (waits for its worker, whose
        log lines go to ``log`` once, when its first result is asked for)."""
        w = self.where[name]
        if w not in self.results:
            proc, out, log_file = self.workers[w]
            code = proc.wait()
            names = [n for n, v in self.where.items() if v == w]
            lines = log_file.read_text().splitlines()
            log(f"the worker process of protocols {names} exited with status {code}; its log:")
            for line in lines:
                log(line)
            if code != 0 or not out.is_file():
                raise RuntimeError(f"the worker running protocols {names} exited with status {code}: "
                                   f"{' | '.join(lines[-5:])}")
            with open(out, "rb") as f:
                self.results[w] = pickle.load(f)
        return self.results[w][name]

    def close(self) -> None:
        """Stop workers still running (the caller failed), give the threads back, remove the folder."""
        for proc, _, _ in self.workers:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        self._restore()
        self.folder.cleanup()


def main(argv: list[str] | None = None) -> int:
    job_path, out_path = argv if argv is not None else sys.argv[1:]
    with open(job_path, "rb") as f:
        job = pickle.load(f)
    import torch

    from recsys_dagster.core.evaluation import self_contained_protocol

    torch.set_num_threads(job["threads"])
    results = {n: self_contained_protocol(n, job["tables"], job["config"], lambda m: print(m, flush=True)) for n in job["names"]}
    tmp = f"{out_path}.tmp"
    with open(tmp, "wb") as f:
        pickle.dump(results, f, protocol=5)
    os.replace(tmp, out_path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
