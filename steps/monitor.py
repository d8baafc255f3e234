"""monitor: read the predict runs of one model version (default: the champion), draw each statistic over time
against the reference band, write monitor.md (the verdict per batch and what to do) and tag the version with its
latest health."""
from __future__ import annotations

import argparse
import logging
import tempfile
from pathlib import Path

import mlflow
import pandas as pd

from agnews import hardware, params, values, vocab
from agnews.errors import PipelineError
from agnews.monitoring import alarms, batches, checks, plots, references, report
from agnews.runs import lifecycle

log = logging.getLogger("steps.monitor")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = params.StepParser(description=__doc__)
    parser.add_argument("--model_uri", default="models:/agnews-classifier@champion")
    parser.add_argument("--since", default="", help="a date (2026-11-30, UTC) or a predict run id; empty: all runs")
    parser.add_argument("--alpha", type=values.open_fraction("alpha"), default=checks.ALPHA,
                        help="the reference band holds 1 - alpha of batches drawn like the reference")
    parser.add_argument("--persist", type=lambda v: values.whole(v, "persist", 1), default=checks.PERSIST,
                        help="flagged batches in a row before an alarm (retrain advice); "
                             "see agnews/monitoring/alarms.py")
    return parser.parse_args(argv)


def run_monitor(args: argparse.Namespace) -> str:
    model_uri = args.model_uri.strip()
    lifecycle.log_params({"model_uri": model_uri, "since": args.since, "alpha": args.alpha, "persist": args.persist})
    name, version = batches.registered(model_uri)
    start, since_text = batches.since_ms(args.since, name, version)
    lifecycle.set_run_name(f"monitor {name} v{version}")
    mlflow.set_tags({vocab.REGISTERED_MODEL: name, vocab.MODEL_VERSION: version})
    runs = batches.predict_runs(name, version, start)
    if not runs:
        raise PipelineError(f"no finished predict runs of {name} v{version} ({since_text}); run "
                            f"`mlflow run . -e predict -P input=<file> -P model_uri=models:/{name}/{version}` first, "
                            "or pass an earlier -P since")
    table = batches.batch_table(runs)
    table["alarm"] = alarms.alarms(table["health"].tolist(),
                                   args.persist)  # the window rule (agnews/monitoring/alarms.py)
    table["in_alarm"] = alarms.in_alarm(table["health"].tolist(), args.persist)
    reference_run = next((r for r in reversed(table["reference_run_id"].tolist()) if r), "")
    reference = references.load_reference(reference_run) if reference_run else None
    if reference is None:
        raise PipelineError(f"the predict runs of {name} v{version} were not checked against a reference (the model "
                            "cannot be traced to a train run); evaluate it, then predict again")
    new_rows = batches.new_rows(table)  # everything read before anything is logged
    run_id = mlflow.active_run().info.run_id
    retrain = batches.retrain(name, version, new_rows, run_id, reference.labels)
    caption = (f"drawn by -e monitor run {run_id[:12]}, {pd.Timestamp.now(tz='UTC'):%Y-%m-%d %H:%M} UTC\n"
               f"on {hardware.cpu_description()}")
    for path in plots.monitor_plots(table, reference, f"{name} v{version}", args.alpha, caption):
        lifecycle.log_plot(path)
    latest = table.iloc[-1]
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "monitor.md").write_text(report.markdown(table, reference, f"{name} v{version}",
                                                                      since_text, new_rows, retrain, args.alpha,
                                                                      args.persist))
        table.drop(columns=["time"]).assign(time=table["time"].astype(str)).to_csv(Path(tmp) / "batches.csv",
                                                                                    index=False)
        if retrain is not None:
            retrain.rows.to_csv(Path(tmp) / "retrain_rows.csv", index=False)
            if len(retrain.to_label):
                retrain.to_label.to_csv(Path(tmp) / "to_label.csv", index=False)
        mlflow.log_artifacts(tmp, "monitoring")
    alarm = report.alarm_summary(table, args.persist)
    mlflow.log_metrics({"batches": len(table), "alarms": int(table["alarm"].sum()),
                        **{f"batches_{s}": int((table["health"] == s).sum()) for s in checks.STATUSES}})
    mlflow.set_tags({vocab.HEALTH: latest["health"], vocab.HEALTH_RUN_ID: latest["run_id"],
                     vocab.HEALTH_ALARM: alarm[:5000]})
    batches.tag_version(name, version, latest, alarm)  # last: nothing else can fail after the registry write
    log.info("%d predict batches of %s v%s; latest %s; %s", len(table), name, version, latest["health"], alarm)
    return str(latest["health"])


def main(argv: list[str] | None = None) -> None:
    with lifecycle.step_run(vocab.MONITOR, vocab.MONITOR, plots=True):
        run_monitor(parse_args(argv))


if __name__ == "__main__":
    params.run_and_exit(main)
