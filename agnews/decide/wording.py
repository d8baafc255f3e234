"""The sentences report.md says about the gate decision and the cost frontier, computed from their numbers: which
version, on which rows, the lead and its interval against `min_improvement`, int8 accepted or not, the latency
budget, and whether timings taken on different machines are comparable."""
from __future__ import annotations

import logging
from collections.abc import Callable

import pandas as pd

from agnews import stats, vocab
from agnews.decide import report

log = logging.getLogger(__name__)


# --- the promotion decision ---

def _model_version(decision: dict, role: str) -> str:
    """`version 5 (distilbert)` from candidate_/incumbent_ keys; `the candidate` when the version is missing."""
    version, model = decision.get(f"{role}_version"), decision.get(f"{role}_model")
    who = f" ({model})" if report._fmt(model) not in (report.DASH, "") else ""
    return (f"the {role}" if report._fmt(version) in (report.DASH, "") else f"version {report._version(version)}") + who


def _gate_scope(decision: dict) -> str:
    rows, excluded = report._num(decision.get("gate_rows")), report._num(decision.get("gate_excluded"))
    scope = f"on {int(rows)} gate rows" if rows is not None else "on the gate rows"
    notes = []
    if excluded:
        notes.append(f"{int(excluded)} excluded because either model trained, validated or distilled on them")
    elif excluded == 0:
        notes.append("none excluded")
    k, level = report._num(decision.get("gate_decision_number")), report._num(decision.get("gate_confidence"))
    if k is not None and level is not None:  # error-rate spending: every decision on these rows narrows alpha
        notes.append(f"decision {int(k)} made on these gate rows, so a {level:.2%} interval")
    return scope + (f" ({'; '.join(notes)})" if notes else "")


def _gate_numbers(decision: dict, incumbent: str) -> str:
    """`...lead over version 3 is 0.012 [-0.004, 0.030] (macro F1 0.91 vs 0.90 on the gate rows; McNemar p ...)`."""
    delta = report._ci(decision.get("gate_delta_f1_macro"), decision.get("gate_delta_ci_low"),
                decision.get("gate_delta_ci_high"), 3)
    text = f"{_gate_scope(decision)} the candidate's macro F1 lead over {incumbent} is {delta}"
    extras = []
    cand, inc = (report._num(decision.get("candidate_gate_f1_macro")),
                 report._num(decision.get("incumbent_gate_f1_macro")))
    if cand is not None and inc is not None:
        extras.append(f"macro F1 {cand:.3f} vs {inc:.3f} on the gate rows")
    if report._num(decision.get("gate_mcnemar_p")) is not None:
        extras.append(f"McNemar {report._p_is(decision['gate_mcnemar_p'])}")
    return text + (f" ({'; '.join(extras)})" if extras else "")


def _lower_end(decision: dict, min_improvement: float) -> tuple[bool | None, str]:
    """Whether the gate interval's lower end clears min_improvement, and the clause saying so."""
    low = report._num(decision.get("gate_delta_ci_low"))
    if low is None:
        return None, f"its lower end is missing, so it cannot be shown above min_improvement {min_improvement:.3f}"
    above = low > min_improvement
    return above, f"its lower end {low:.3f} is {'' if above else 'not '}above min_improvement {min_improvement:.3f}"


def _gated(decision: dict, min_improvement: float, promoted: bool) -> str:
    """promoted / kept_incumbent: the gate numbers, the rule's verdict on them, and who holds which alias."""
    candidate, incumbent = _model_version(decision, "candidate"), _model_version(decision, "incumbent")
    above, clause = _lower_end(decision, min_improvement)
    if above is not None and above != promoted:  # the words follow the numbers; flag a record that disagrees
        log.warning("decision %s disagrees with its gate numbers (%s)", decision.get("decision"), clause)
        clause += ", which disagrees with the recorded decision"
    outcome = (f"{candidate} takes `champion` from {incumbent}" if promoted
               else f"{incumbent} keeps `champion` and {candidate} gets `challenger`")
    return f"{_gate_numbers(decision, incumbent)}; {clause}, so {outcome}."


def _first_champion(decision: dict, min_improvement: float) -> str:
    return (f"there was no `champion` yet, so {_model_version(decision, 'candidate')} takes `champion` "
            "without a gate comparison.")


def _already_champion(decision: dict, min_improvement: float) -> str:
    return (f"the candidate {_model_version(decision, 'candidate')} is the incumbent's own version, "
            "already `champion`; nothing changed.")


def _over_budget(decision: dict, min_improvement: float) -> str:
    reason = str(decision.get("reason") or "no model fits the latency budget")
    return f"{_model_version(decision, 'candidate')} is not promoted: {reason}."


_WORDING: dict[str, Callable[[dict, float], str]] = {
    vocab.FIRST_CHAMPION: _first_champion,
    vocab.PROMOTED: lambda d, m: _gated(d, m, promoted=True),
    vocab.KEPT_INCUMBENT: lambda d, m: _gated(d, m, promoted=False),
    vocab.ALREADY_CHAMPION: _already_champion,
    vocab.OVER_BUDGET: _over_budget,
    vocab.UNDECIDED: lambda d, m: (f"{_model_version(d, 'candidate')} is not compared: "
                                   f"{d.get('reason') or 'no gate rows'}."),
}


# --- serving cost ---

_COST_HEADER = ["model", "variant", "computes in", "version", "test_f1_macro [95% CI]", "val_f1_macro", "p50 ms",
                "p95 ms", "texts/s (batch 32)", "size MB", "peak MB", "Pareto"]


def frontier_table(costs: pd.DataFrame) -> str:
    rows = [[str(r["model"]), str(r["variant"]), str(r.get("compute") or report.DASH),
             report._version(r.get("registered_version")),
             report._metric_ci(r, "test_f1_macro"),
             report._fmt(r["val_f1_macro"]), report._fmt(r["latency_p50_ms"], 2), report._fmt(r["latency_p95_ms"], 2),
             report._fmt(r["throughput_per_s"], 0), report._fmt(r["model_size_mb"], 1),
             report._fmt(r["peak_memory_mb"], 0),
             "yes" if r.get("pareto") else ""] for r in costs.sort_values("latency_p50_ms").to_dict("records")]
    return report._markdown_table(_COST_HEADER, rows)


def _int8_lines(costs: pd.DataFrame) -> list[str]:
    """int8 against its own fp32 model on the same test rows: the paired difference and whether it is significant."""
    lines = []
    for r in costs[costs["variant"] == "int8"].to_dict("records"):
        if report._num(r.get("delta_f1_macro")) is None:
            continue
        low, high = report._num(r.get("delta_ci_low")), report._num(r.get("delta_ci_high"))
        significant = stats.excludes_zero(low, high)
        agreement = report._num(r.get("agreement"))
        lines.append(f"- **{r['model']}** int8 vs fp32 on the test rows: Δ macro F1 "
                     f"{report._ci(r['delta_f1_macro'], low, high, 4)}, McNemar {report._p_is(r.get('mcnemar_p'))}: "
                     f"{'significant' if significant else 'not significant'}"
                     + (f"; same label on {agreement:.1%} of rows" if agreement is not None else "") + ".")
    return lines + [""] if lines else []


def _budget_sentence(costs: pd.DataFrame, budget: float) -> str:
    picked = costs[costs["budget_pick"]] if "budget_pick" in costs else costs.iloc[:0]  # comparison.frontier's pick
    if picked.empty:
        return (f"No model or variant fits the latency budget of {budget:g} ms (p50 at batch 1); "
                "none can be promoted for it.")
    pick = picked.iloc[0]
    return (f"Within the latency budget of {budget:g} ms (p50 at batch 1), the best by validation macro F1 is "
            f"**{pick['model']} ({pick['variant']})** with {report._fmt(pick['val_f1_macro'])} at "
            f"{report._fmt(pick['latency_p50_ms'], 2)} ms; its test macro F1 is "
            f"{report._metric_ci(pick.to_dict(), 'test_f1_macro')} "
            "(reported only). The deploy pick may differ from the champion: only fp32 train runs go through the "
            "gate, and the gate may keep the incumbent.")


def _conditions_sentence(costs: pd.DataFrame) -> str:
    """Where the latencies come from; timings under different conditions are said to be not comparable."""
    where = [str(c) for c in costs.get("latency_measured_by", pd.Series(dtype=str)).dropna() if str(c)]
    by_compare = sorted({w for w in where if w.startswith("compare on ")})
    if by_compare:
        return f"Timed again for the latency budget by {by_compare[0]}: every row alike."
    conditions = sorted({w.split(" on ", 1)[-1] for w in where})
    if len(conditions) <= 1:
        return "Timed by each model's own evaluate run" + (f" on {conditions[0]}." if conditions else ".")
    return ("Timed by each model's own evaluate run, on different machines or thread counts (" +
            "; ".join(conditions) + "): **not comparable** as they stand; a latency budget (-P latency_budget_ms) "
            "times them again alike.")


def _cost_section(costs: pd.DataFrame | None, budget: float) -> list[str]:
    if costs is None or costs.empty:
        return []
    lines = ["## Serving cost", "",
             "After warm-up: latency at batch 1 over 100 test texts, throughput at batch 32, peak memory the model "
             "added to the process, size of the logged model. `Pareto`: no other row is both at least as fast and "
             "at least as accurate on test.", "", _conditions_sentence(costs), "", frontier_table(costs)]
    lines += _int8_lines(costs)
    if budget:
        lines += [_budget_sentence(costs, budget), ""]
    return lines


def decision_sentence(decision: dict, min_improvement: float = 0.0) -> str:
    """The promotion outcome and why, written from the gate's record (any branch, any missing key)."""
    name = str(decision.get("decision", "unknown"))
    wording = _WORDING.get(name)
    if wording is None:
        return (f"`{name}`: not a known decision ({', '.join(report.DECISIONS)}); "
                "the registry aliases are not described.")
    return f"`{name}`: {wording(decision, min_improvement)}"


def _decision_section(decision: dict, min_improvement: float) -> list[str]:
    return ["## Promotion decision", "",
            f"Rule: the candidate takes `champion` only if the lower end of its gate interval (candidate minus "
            f"incumbent macro F1) is above min_improvement {min_improvement:.3f}; otherwise the incumbent keeps "
            "`champion` and the candidate gets `challenger`. The k-th decision on one gate sample uses a "
            "1 - 0.05/2^(k-1) interval, so all decisions on those rows together promote a model that is not better "
            "with at most 5% chance.", "",
            decision_sentence(decision, min_improvement), ""]
