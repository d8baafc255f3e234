"""serve: answer MLflow's scoring protocol over HTTP with a logged or registered model (default: the champion),
batching concurrent requests into one forward pass (agnews/serving/server.py). Follows the alias (a moved alias is
loaded beside the old version and switched to between batches), can shadow another alias, and logs the traffic in
health windows that `-e monitor` reads with the predict runs. SIGTERM drains the requests in flight, then exits 0."""
from __future__ import annotations

import argparse
import contextlib
import functools
import logging

from agnews import hardware, params, values
from agnews.errors import PipelineError
from agnews.runs import lifecycle
from agnews.serving import classifiers, variants

log = logging.getLogger("steps.serve")


def _whole(name: str, minimum: int):
    return lambda value: values.whole(value, name, minimum)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = params.StepParser(description=__doc__)
    parser.add_argument("--model_uri", default="models:/agnews-classifier@champion",
                        help="models:/<name>@<alias>, models:/<name>/<version> or runs:/<run id>/model; an alias is "
                             "followed (see alias_poll_s)")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0: every interface)")
    parser.add_argument("--port", type=_whole("port", 0), default=8080, help="TCP port to listen on")
    parser.add_argument("--precision", type=hardware.precision, default="auto",
                        help="auto: bf16 where the CPU or GPU runs it natively, else fp32")
    parser.add_argument("--variant", default="fp32", choices=variants.VARIANTS,
                        help="fp32: the model as trained (in --precision); int8: its int8 ONNX variant, the version "
                             "evaluate registered beside it or the one it accepted (for every version the alias moves "
                             "to)")
    parser.add_argument("--max_batch", type=_whole("max_batch", 1), default=32,
                        help="most rows scored in one forward pass (whole requests are never split)")
    parser.add_argument("--max_wait_ms", type=_whole("max_wait_ms", 0), default=5,
                        help="longest a request waits for others to join its batch, in milliseconds")
    parser.add_argument("--max_queue", type=_whole("max_queue", 1), default=256,
                        help="requests waiting beyond this many are answered 503 with Retry-After")
    parser.add_argument("--max_body_mb", type=_whole("max_body_mb", 1), default=1,
                        help="larger request bodies are answered 413")
    parser.add_argument("--alias_poll_s", type=values.non_negative("alias_poll_s"), default=30,
                        help="seconds between looks at the alias of a models:/<name>@<alias> URI; when it moves, the "
                             "new version is loaded beside the old and served from the next batch; 0: never")
    parser.add_argument("--shadow", default="",
                        help="an alias (e.g. challenger) whose version also scores every batch, off the response "
                             "path: agreement (and accuracy on labelled requests) in /health, /metrics and each health "
                             "window; empty: no shadow")
    parser.add_argument("--window_rows", type=_whole("window_rows", 0), default=200,
                        help="a health window closes at this many served rows (or after window_s) and is checked and "
                             "logged as a run -e monitor reads; 0: no health windows")
    parser.add_argument("--window_s", type=values.positive("window_s"), default=300,
                        help="longest a health window stays open, in seconds (fewer than the monitor's min_batch rows: "
                             "logged as too_small)")
    parser.add_argument("--log_inputs", type=values.boolean("log_inputs"), default=False,
                        help="log the served texts with each health window; false: only statistics and predictions")
    return parser.parse_args(argv)


def serve(args: argparse.Namespace) -> None:
    from agnews.serving import follow, predict, server

    model_uri = args.model_uri.strip()
    shadow_alias = args.shadow.strip()
    resolved = classifiers.registered_version(model_uri)  # PipelineError when the alias does not resolve
    if shadow_alias and resolved is None:
        raise PipelineError(f"-P shadow={shadow_alias} needs a registered model_uri (models:/<name>@<alias>), not "
                            f"{model_uri}; drop -P shadow or serve a registered version")
    load_uri = f"models:/{resolved[0]}/{resolved[1]}" if resolved else model_uri
    task = predict.model_task(load_uri)
    load = _variant_loader(args.variant, functools.partial(classifiers.load, precision=args.precision,
                                                          batch_size=args.max_batch))
    if args.variant != "fp32" and resolved is None:
        raise PipelineError(f"-P variant={args.variant} needs a registered model_uri (models:/<name>@<alias> or "
                            f"models:/<name>/<version>), not {model_uri}")
    source = follow.Follower(model_uri, load, args.alias_poll_s)
    observers, shadow = _observers(args, resolved[0] if resolved else "", load, source)
    with contextlib.ExitStack() as stack:
        stack.callback(source.stop)  # also when the first load fails, or the server never starts
        source.start()
        model = source.current().model
        app = server.create_app(max_batch=args.max_batch, max_wait_ms=args.max_wait_ms, max_queue=args.max_queue,
                                max_body_bytes=args.max_body_mb * 2**20, task=task, source=source,
                                observers=observers)
        log.info("serving %s (%s, %s) on http://%s:%d%s%s", load_uri, model.variant, getattr(model, "precision", ""),
                 args.host, args.port, f"; shadow: {shadow}" if shadow else "",
                 f"; health windows of {args.window_rows} rows or {args.window_s:g}s" if args.window_rows else "")
        stack.callback(app.state.stop)  # idempotent after uvicorn's shutdown: the open window gets its last try
        server.run(app, args.host, args.port)


def _variant_loader(variant: str, load):
    """`load`, for the variant's model of each registered version the follower asks for (models:/<name>/<version>);
    a version without that variant fails its load, which the follower logs and counts (the old one keeps serving)."""
    def load_variant(uri: str):
        version = classifiers.registered_version(uri)  # the follower asks for pinned versions: no registry call
        return load(variants.variant_uri(*version, variant) if version else uri)

    return load_variant


def _observers(args: argparse.Namespace, name: str, load, source) -> tuple[tuple, str]:
    """(the shadow scorer and the health windows, as asked; the shadow's URI or "")."""
    from agnews.monitoring import serving_windows
    from agnews.serving import follow, shadow, windows

    found, shadow_uri, scorer = [], "", None
    if args.shadow.strip():
        shadow_uri = f"models:/{name}@{args.shadow.strip()}"
        scorer = shadow.Shadow(follow.Follower(shadow_uri, load, args.alias_poll_s, required=False, what="shadow"))
        found.append(scorer)
    if args.window_rows:
        found.append(windows.Windows(serving_windows.sink(), args.window_rows, args.window_s, args.log_inputs,
                                     shadow=scorer))
    return tuple(found), shadow_uri


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
