"""serve: answer MLflow's scoring protocol over HTTP with a logged or registered model (default: the champion),
batching concurrent requests into one forward pass (agnews/serving/server.py). Loads the model once; SIGTERM drains the
requests in flight, then exits 0."""
from __future__ import annotations

import argparse
import logging

from agnews import hardware, params, values
from agnews.errors import PipelineError
from agnews.runs import lifecycle
from agnews.serving import classifiers

log = logging.getLogger("steps.serve")


def _whole(name: str, minimum: int):
    return lambda value: values.whole(value, name, minimum)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = params.StepParser(description=__doc__)
    parser.add_argument("--model_uri", default="models:/agnews-classifier@champion",
                        help="models:/<name>@<alias>, models:/<name>/<version> or runs:/<run id>/model; an alias is "
                             "resolved once, at start")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0: every interface)")
    parser.add_argument("--port", type=_whole("port", 0), default=8080, help="TCP port to listen on")
    parser.add_argument("--precision", type=hardware.precision, default="auto",
                        help="auto: bf16 where the CPU or GPU runs it natively, else fp32")
    parser.add_argument("--max_batch", type=_whole("max_batch", 1), default=32,
                        help="most rows scored in one forward pass (whole requests are never split)")
    parser.add_argument("--max_wait_ms", type=_whole("max_wait_ms", 0), default=5,
                        help="longest a request waits for others to join its batch, in milliseconds")
    parser.add_argument("--max_queue", type=_whole("max_queue", 1), default=256,
                        help="requests waiting beyond this many are answered 503 with Retry-After")
    parser.add_argument("--max_body_mb", type=_whole("max_body_mb", 1), default=1,
                        help="larger request bodies are answered 413")
    return parser.parse_args(argv)


def serve(args: argparse.Namespace) -> None:
    from agnews.serving import predict, server

    model_uri = args.model_uri.strip()
    resolved = classifiers.registered_version(model_uri)  # PipelineError when the alias does not resolve
    load_uri = f"models:/{resolved[0]}/{resolved[1]}" if resolved else model_uri
    task = predict.model_task(load_uri)
    with classifiers.load(load_uri, precision=args.precision, batch_size=args.max_batch) as model:
        info = {"model_uri": model_uri, "registered_model": resolved[0] if resolved else "",
                "version": resolved[1] if resolved else ""}
        app = server.create_app(lambda: model, args.max_batch, args.max_wait_ms, args.max_queue,
                                args.max_body_mb * 2**20, task=task, info=info)
        log.info("serving %s (%s, %s) on http://%s:%d", load_uri, model.variant, getattr(model, "precision", ""),
                 args.host, args.port)
        server.run(app, args.host, args.port)


def main(argv: list[str] | None = None) -> None:
    try:
        lifecycle.setup()
        args = parse_args(argv)
        hardware.configure_threads()
        serve(args)
    except PipelineError as exc:
        raise SystemExit(f"error: {exc}") from None


if __name__ == "__main__":
    params.run_and_exit(main)
