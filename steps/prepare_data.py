"""prepare_data: draw the disjoint, stratified, seeded train/validation/test/gate samples and log them."""
from __future__ import annotations

import argparse

from agnews import cli, tracking, vocab


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = cli.StepParser(description=__doc__)
    cli.add_data_arguments(parser)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    with tracking.step_run(vocab.PREPARE_DATA, vocab.PREPARE_DATA):
        args = parse_args(argv)
        tracking.prepare_splits(args.data, cli.sample_sizes(args), args.seed, cli.data_options(args))


if __name__ == "__main__":
    cli.run_and_exit(main)
