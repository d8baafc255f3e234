"""prepare_data: draw the disjoint, stratified, seeded train/validation/test samples and log them."""
from __future__ import annotations

import argparse

from agnews import tracking
from agnews.data import DEFAULT_DATA, SampleSizes, class_counts, sample_splits
from steps import whole


def add_data_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", default=DEFAULT_DATA, help="hf:<dataset id>, or a local CSV/Parquet path")
    parser.add_argument("--train_size", type=whole, default=1000)
    parser.add_argument("--val_size", type=whole, default=500)
    parser.add_argument("--test_size", type=whole, default=500)
    parser.add_argument("--seed", type=whole, default=42)


def prepare(args: argparse.Namespace) -> dict:
    """Sample the splits and log them (artifacts, dataset inputs, params) into the active run."""
    splits = sample_splits(args.data, SampleSizes(args.train_size, args.val_size, args.test_size), args.seed)
    tracking.log_params({"data": args.data, "train_size": args.train_size, "val_size": args.val_size,
                       "test_size": args.test_size, "seed": args.seed})
    tracking.log_params({f"{split}_count_{name.replace('/', '_')}": n
                       for split, frame in splits.items() for name, n in class_counts(frame).items()})
    tracking.log_splits(splits)
    return splits


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    add_data_arguments(parser)
    args = parser.parse_args(argv)
    tracking.setup()
    with tracking.step_run("prepare_data", "prepare_data"):
        prepare(args)


if __name__ == "__main__":
    main()
