"""Command line: ``python -m recsys_dagster.core.train --config train.json`` trains one
model from a warehouse file and writes its weights (see the package docstring)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from recsys_dagster.core.train import __doc__ as PACKAGE_DOC
from recsys_dagster.core.train.config import TrainConfig
from recsys_dagster.core.train.loop import train
from recsys_dagster.core.train.weights import save_weights


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m recsys_dagster.core.train", description=PACKAGE_DOC,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True, help="JSON file: warehouse, output, train")
    args = parser.parse_args(argv)
    spec = json.loads(Path(args.config).read_text())
    from recsys_dagster.core.training_data import load_training_data

    config = TrainConfig.from_dict(spec.get("train", {}))
    data = load_training_data(spec["warehouse"], config)
    out = Path(spec.get("output", "data/models/cli/model.pt"))
    result = train(data, config, checkpoint_path=out.with_suffix(".ckpt"),
                   on_epoch=lambda r: print(json.dumps(r)))
    sha = save_weights(out, result, data)
    print(json.dumps({"output": str(out), "sha256": sha, "best_epoch": result.best_epoch,
                      "valid": result.best_valid, "test": result.test}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
