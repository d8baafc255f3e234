"""Screenshots of `mlflow ui` for the README: the newest `main` run tree expanded, and a comparison plot.

    python tools/ui_screenshot.py --store sqlite:///$PWD/mlflow.db --out docs

Starts `mlflow ui` on 127.0.0.1 against the store, drives headless Chromium (Debian's `chromium`, through
Playwright's Python API; `pip install playwright`, no browser download needed) and writes
`ui_run_tree.png` and `ui_plot_artifact.png`."""
from __future__ import annotations

import argparse
import logging
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import mlflow

log = logging.getLogger("ui_screenshot")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _serve(store: str, port: int) -> subprocess.Popen:
    server = subprocess.Popen([str(Path(sys.executable).with_name("mlflow")), "ui", "--backend-store-uri", store,
                               "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2)
            return server
        except OSError:
            time.sleep(1)
    server.terminate()
    raise SystemExit("error: mlflow ui did not answer /health in 120 s")


def _main_run(store: str, run_id: str = ""):
    """The given `main` run (default: the newest) and its compare child."""
    client = mlflow.MlflowClient(store)
    experiment = client.get_experiment_by_name("agnews-classification")
    if experiment is None:
        raise SystemExit(f"error: no agnews-classification experiment in {store}; run `mlflow run .` first")
    query = f"attributes.run_id = '{run_id}'" if run_id else "tags.`agnews.step` = 'main'"
    runs = client.search_runs([experiment.experiment_id], query, order_by=["attributes.start_time DESC"], max_results=1)
    if not runs:
        raise SystemExit(f"error: no main run {run_id} in {store}; run `mlflow run .` first")
    compare = client.search_runs([experiment.experiment_id], f"tags.`mlflow.parentRunId` = '{runs[0].info.run_id}' "
                                 "and tags.`agnews.step` = 'compare'", max_results=1)
    return experiment.experiment_id, runs[0], compare[0] if compare else None


def _close_assistant(page) -> None:
    """MLflow 3 opens an assistant side panel; it covers a third of the page."""
    close = page.get_by_role("button", name="Close")
    if close.count():
        close.first.click()


def shoot(store: str, out: Path, run_id: str = "") -> list[Path]:
    from playwright.sync_api import sync_playwright

    experiment_id, main, compare = _main_run(store, run_id)
    port = _free_port()
    server = _serve(store, port)
    base = f"http://127.0.0.1:{port}/#/experiments/{experiment_id}"
    out.mkdir(parents=True, exist_ok=True)
    shots = []
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
            page = browser.new_page(viewport={"width": 1600, "height": 900})
            page.goto(f"{base}/runs")
            row = page.locator(f"span.ag-cell-value:has(a[href$='/runs/{main.info.run_id}'])")
            row.wait_for(timeout=60_000)
            _close_assistant(page)
            row.locator("button").first.click()  # the "+" that expands the parent's child runs
            page.get_by_text("prepare_data", exact=True).first.wait_for(timeout=30_000)
            page.wait_for_timeout(1500)
            shots.append(out / "ui_run_tree.png")
            page.screenshot(path=str(shots[-1]))
            if compare is not None:
                page.goto(f"{base}/runs/{compare.info.run_id}/artifacts/plots/comparison_f1.png")
                page.wait_for_selector("img", timeout=60_000)
                _close_assistant(page)
                page.wait_for_timeout(2000)
                shots.append(out / "ui_plot_artifact.png")
                page.screenshot(path=str(shots[-1]))
            browser.close()
    finally:
        server.terminate()
        server.wait(timeout=30)
    return shots


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--store", default=f"sqlite:///{Path.cwd() / 'mlflow.db'}")
    parser.add_argument("--out", type=Path, default=Path("docs"))
    parser.add_argument("--main_run_id", default="", help="the main run to show; default: the newest")
    args = parser.parse_args()
    for path in shoot(args.store, args.out, args.main_run_id):
        log.info("wrote %s", path)


if __name__ == "__main__":
    main()
