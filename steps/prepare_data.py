"""prepare_data: draw the disjoint, stratified, seeded train/validation/test/gate samples and log them."""
from __future__ import annotations

import argparse

from agnews import params, vocab
from agnews.data import handoff
from agnews.runs import lifecycle


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = params.StepParser(description=__doc__)
    params.add_data_arguments(parser)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    with lifecycle.step_run(vocab.PREPARE_DATA, vocab.PREPARE_DATA):
        args = parse_args(argv)
        handoff.prepare_splits(args.data, params.sample_sizes(args), args.seed, params.data_options(args))


if __name__ == "__main__":
    params.run_and_exit(main)
