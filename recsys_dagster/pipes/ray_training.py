"""The Ray job ``gnn_model`` launches in ``ray`` mode (dagster-ray's ``PipesRayJobClient``):

    python -m recsys_dagster.pipes.ray_training

It runs on the cluster as the job's driver, reads the job spec and the Ray options from the
Pipes extras, trains with Ray Train (:func:`recsys_dagster.core.train.distributed.train_on_ray`:
DDP workers, each on its share of every global batch) and reports the run back to the
asset's materialization through Pipes (log lines and metadata). Weights and the per-epoch
history stay in the job folder, from which the asset builds the model version and the
MLflow run exactly as after a local run.
"""

from __future__ import annotations

import time


def main() -> None:
    from dagster_pipes import open_dagster_pipes

    from recsys_dagster.core.train.distributed import train_on_ray

    with open_dagster_pipes() as pipes:
        job, ray_options = pipes.get_extra("job"), pipes.get_extra("ray")
        pipes.log.info(f"Ray Train: {ray_options['num_workers']} worker(s), {ray_options['cpus_per_worker']} CPU and "
                       f"{ray_options['gpus_per_worker']} GPU each; job folder {job['job_dir']}")
        t0 = time.perf_counter()
        out = train_on_ray(job, **ray_options)
        steps = out["step_losses"]
        pipes.log.info(f"Ray Train finished: {out['epochs_run']} epochs, {len(steps)} steps, best epoch "
                       f"{out['best_epoch']}, valid ndcg@10 {out['best_valid']['ndcg@10']:.4f}")
        pipes.report_asset_materialization(metadata={
            "ray_world_size": out["world_size"], "ray_steps": len(steps),
            "ray_final_step_loss": round(steps[-1], 6) if steps else 0.0,
            "ray_train_seconds": round(time.perf_counter() - t0, 2),
            "ray_job_dir": job["job_dir"]})


if __name__ == "__main__":
    main()
