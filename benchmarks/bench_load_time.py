"""Load time of the code location (what `dagster dev` and every run process pay) against
the reference `import dagster` measured in the same run, each in a fresh interpreter.

    python -m benchmarks.bench_load_time [--repeats 5]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

from benchmarks.common import ROOT, median, print_table, write_json

HEAVY = ("torch", "transformers", "torch_geometric", "sentence_transformers", "mlflow")

_PROBE = """
import json, sys, time
t0 = time.perf_counter()
import {module}
t1 = time.perf_counter()
{extra}
print(json.dumps({{"import_s": t1 - t0, "total_s": time.perf_counter() - t0,
                  "heavy": sorted(m for m in {heavy!r} if m in sys.modules)}}))
"""


def probe(module: str, extra: str = "") -> dict:
    code = _PROBE.format(module=module, extra=extra, heavy=HEAVY)
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    cases = {
        "import dagster (reference)": ("dagster", ""),
        "code location (definitions + job/schedule/sensor resolution)": (
            "recsys_dagster.definitions",
            "d = recsys_dagster.definitions.defs; d.get_repository_def().get_all_jobs()"),
    }
    results = {}
    for name, (module, extra) in cases.items():
        runs = [probe(module, extra) for _ in range(args.repeats)]
        results[name] = {"median_s": median([r["total_s"] for r in runs]),
                         "runs_s": [round(r["total_s"], 3) for r in runs], "heavy_imported": runs[-1]["heavy"]}
    ref = results["import dagster (reference)"]["median_s"]
    rows = [{"case": k, "median s": v["median_s"], "x reference": v["median_s"] / ref,
             "heavy modules loaded": ",".join(v["heavy_imported"]) or "none"} for k, v in results.items()]
    print_table(rows, f"code location load time (median of {args.repeats} fresh interpreters)")
    write_json("load_time", {"repeats": args.repeats, "results": results,
                             "ratio_to_import_dagster": results[list(cases)[1]]["median_s"] / ref})


if __name__ == "__main__":
    main()
