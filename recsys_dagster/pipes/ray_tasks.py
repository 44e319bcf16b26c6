"""The Ray job of a block map (:mod:`recsys_dagster.core.parallel`): item text encoding and
the top-K scoring of every user in ``ray`` mode, launched by the assets through Dagster
Pipes (dagster-ray's ``PipesRayJobClient``):

    python -m recsys_dagster.pipes.ray_tasks

It reads the job folder named in the Pipes extras, runs one Ray task per block and writes
the results back to the folder; its log lines and metadata reach the asset through Pipes.
"""

from __future__ import annotations

import time


def main() -> None:
    from dagster_pipes import open_dagster_pipes

    from recsys_dagster.core.parallel import run_map_job

    with open_dagster_pipes() as pipes:
        job = pipes.get_extra("job")
        pipes.log.info(f"Ray tasks: {job['fn']} over {job['blocks']} block(s); job folder {job['job_dir']}")
        t0 = time.perf_counter()
        tasks = run_map_job(job)
        pipes.report_asset_materialization(metadata={"ray_tasks": tasks,
                                                      "ray_task_seconds": round(time.perf_counter() - t0, 2)})


if __name__ == "__main__":
    main()
