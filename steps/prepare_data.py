"""prepare_data: draw the disjoint, stratified, seeded train/validation/test/gate samples and log them."""
from __future__ import annotations

import argparse

import mlflow

from agnews import cache, cli, tracking
from agnews.data import SampleSizes, class_counts, sample_splits


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = cli.StepParser(description=__doc__)
    cli.add_data_arguments(parser)
    return parser.parse_args(argv)


def sizes(args: argparse.Namespace) -> SampleSizes:
    return SampleSizes(args.train_size, args.val_size, args.test_size, args.gate_size)


def prepare(args: argparse.Namespace) -> dict:
    """Sample the splits and log them (artifacts, dataset inputs, params, duplicate counts) into the active run."""
    sample = sample_splits(args.data, sizes(args), args.seed)
    tracking.log_params({"data": args.data, "train_size": args.train_size, "val_size": args.val_size,
                         "test_size": args.test_size, "gate_size": args.gate_size, "seed": args.seed})
    tracking.log_params({f"{split}_count_{name.replace('/', '_')}": n
                         for split, frame in sample.splits.items() for name, n in class_counts(frame).items()})
    mlflow.set_tag(cache.INPUT_TAG, cache.input_digest(args.data))
    mlflow.log_metrics({"rows_read": sample.rows_read, "duplicates_removed": sample.duplicates_removed,
                        "conflicting_label_rows_removed": sample.conflicts_removed})
    tracking.log_splits(sample.splits)
    return sample.splits


def main(argv: list[str] | None = None) -> None:
    with tracking.step_run("prepare_data", "prepare_data"):
        prepare(parse_args(argv))


if __name__ == "__main__":
    main()
