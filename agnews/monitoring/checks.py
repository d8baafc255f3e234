"""Monitoring the batches a model classifies: the reference (how the model saw its validation and test rows, kept
once per model), the tests that compare a batch with it, and the verdict (`Health`).

A batch is `drift` when one of the statistics below differs from the reference at the family-wise level `alpha`
(Holm's correction over the statistics tested, so a batch drawn like the reference is flagged with probability at
most `alpha` whatever the dependence between the statistics), `degraded` when it carries labels and its accuracy is
below the model's test interval beyond sampling noise, `too_small` under `min_batch` rows (nothing tested: the
tests have too little power and the chi-square approximation fails), else `ok`.

Over many batches one flagged batch is not yet an alarm: agnews.monitoring.alarms holds the window rule."""
from __future__ import annotations

import logging
from collections import Counter
from dataclasses import asdict, dataclass, field

import numpy as np
from scipy import stats as scipy_stats

from agnews import metrics, stats, vocab

log = logging.getLogger(__name__)

ALPHA = 0.01  # family-wise per batch: the false-alarm rate on batches drawn like the reference (benchmark)
MIN_BATCH = 30  # fewer rows: no test (expected chi-square counts under 5 for 4+ classes, KS with no power)
LOW_CONFIDENCE = 0.5  # a prediction whose top-class probability is below this counts as unsure
MANY_PIECES = 3  # a word the tokenizer cuts into at least this many pieces is one it barely knows
MIN_EXPECTED = 5  # chi-square cells with fewer expected batch rows are pooled (the textbook rule)
# Decimals kept in reference.json; a batch's values are rounded the same way before a test, or rounding alone would
# separate two samples of one distribution (ties broken one way, a near-constant confidence shifted).
CONFIDENCE_DECIMALS, SHARE_DECIMALS = 6, 4
STATUSES = ("ok", "drift", "degraded", "too_small", "unknown")
FLAGGED = ("drift", "degraded")  # a tested batch that failed a test
UNTESTED = ("too_small", "unknown")  # no verdict: neither extends nor breaks a run of flagged batches
PERSIST = 2  # consecutive flagged batches before an alarm (the window rule, see the module's docstring)

# statistic -> (the test that decides it, what the plotted value is)
STATISTICS: dict[str, tuple[str, str]] = {
    "label_mix": ("chi-square test of homogeneity, batch vs reference predicted-label counts "
                  "(scipy.stats.chi2_contingency; cells under 5 expected rows pooled)",
                  "total variation distance of the predicted-label mix from the reference's"),
    "confidence": ("two-sample Kolmogorov-Smirnov on the top-class probability (scipy.stats.ks_2samp)",
                   "mean top-class probability"),
    "low_confidence": ("one-sided Fisher exact test on the share of rows below low_confidence "
                       "(scipy.stats.fisher_exact, alternative=greater)",
                       "share of rows whose top-class probability is below low_confidence"),
    "length": ("two-sample Kolmogorov-Smirnov on tokens per text (scipy.stats.ks_2samp)", "mean tokens per text"),
    "unknown_tokens": ("one-sided Mann-Whitney U on the per-text share of [UNK] tokens "
                       "(scipy.stats.mannwhitneyu, alternative=greater)", "mean share of [UNK] tokens per text"),
    "split_words": (f"one-sided Mann-Whitney U on the per-text share of tokens in words cut into >= {MANY_PIECES} "
                    "pieces (scipy.stats.mannwhitneyu, alternative=greater)",
                    f"mean share of tokens in words cut into >= {MANY_PIECES} pieces"),
    "embedding": ("largest per-dimension z of the batch's mean pooled embedding against the reference mean "
                  "(two-sample standard error from the reference std), Bonferroni over the dimensions "
                  "(scipy.stats.norm)", "RMS distance of the batch mean embedding from the reference mean, in "
                                        "reference standard deviations"),
}


@dataclass
class Profile:
    """What the model made of each text of a batch (input order)."""

    probabilities: np.ndarray  # (rows, classes)
    length: np.ndarray  # tokens per text, untruncated, without special tokens
    unknown: np.ndarray  # share of [UNK] tokens per text
    split: np.ndarray | None  # share of tokens in words cut into >= MANY_PIECES pieces; None: slow tokenizer
    embeddings: np.ndarray | None  # mean-pooled last hidden layer; None: the variant has no hidden states

    @property
    def predicted(self) -> np.ndarray:
        return self.probabilities.argmax(axis=1)

    @property
    def confidence(self) -> np.ndarray:
        return self.probabilities.max(axis=1)


def profile(model, texts: list[str], progress: bool = False) -> Profile:
    """One pass of the model (logits and, where it has them, pooled hidden states) plus its tokenizer's counts."""
    logits, embeddings = model.logits_and_embeddings(texts, progress)
    length, unknown, split = token_stats(model.tokenizer_for_monitoring, texts)
    return Profile(metrics.probabilities(logits), length, unknown, split, embeddings)


def token_stats(tokenizer, texts: list[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """(tokens per text, share of [UNK] per text, share of tokens in words cut into many pieces or None).
    Untruncated: a text longer than the model reads still counts its full length."""
    import transformers

    verbosity = transformers.logging.get_verbosity()
    transformers.logging.set_verbosity_error()  # "longer than the maximum" is the point here, not a problem
    try:
        encoded = tokenizer(texts, add_special_tokens=False, truncation=False)
    finally:
        transformers.logging.set_verbosity(verbosity)
    unk, fast = tokenizer.unk_token_id, bool(getattr(encoded, "is_fast", False))
    length = np.array([len(ids) for ids in encoded["input_ids"]], dtype=np.int64)
    unknown = np.array([sum(t == unk for t in ids) / len(ids) if ids else 0.0 for ids in encoded["input_ids"]])
    if not fast:  # word boundaries need a fast tokenizer: skip the statistic rather than guess
        return length, unknown, None
    split = np.zeros(len(texts))
    for i, n in enumerate(length):
        pieces = Counter(w for w in encoded.word_ids(i) if w is not None)
        split[i] = sum(c for c in pieces.values() if c >= MANY_PIECES) / n if n else 0.0
    return length, unknown, split


# --- the reference ------------------------------------------------------------------------------------------------

@dataclass
class Reference:
    """A model's reference, small enough for a JSON artifact (~40 KB for 1000 rows): per-text values for the
    distribution tests, only mean and spread of the embeddings."""

    labels: list[str]
    predicted_counts: list[int]
    confidence: list[float]
    length: list[int]
    unknown: list[float]
    split: list[float] | None
    embedding_mean: list[float] | None
    embedding_std: list[float] | None
    test_accuracy: float | None = None
    test_accuracy_ci: list[float] | None = None  # Wilson 95% interval on the test rows (degraded's bar)
    source: str = ""
    variant: str = ""  # fp32 (the transformers pipeline) or int8 (the ONNX variant) that saw the rows
    precision: str = ""  # fp32 or bf16 (autocast) for the pipeline; "" for int8 or a reference older than the field

    @property
    def rows(self) -> int:
        return len(self.confidence)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> "Reference":
        known = {k: values.get(k) for k in cls.__dataclass_fields__}
        return cls(**known)


def build_reference(seen: Profile, labels: tuple[str, ...], test_labels: np.ndarray | None = None,
                    test_predicted: np.ndarray | None = None, source: str = "", variant: str = "",
                    precision: str = "") -> Reference:
    """The reference from a profile of held-out rows (validation + test); the test accuracy and its bootstrap
    interval when their labels and predictions are given."""
    counts = np.bincount(seen.predicted, minlength=len(labels))
    accuracy = interval = None
    if test_labels is not None and test_predicted is not None and len(test_labels):
        right = int(np.sum(np.asarray(test_labels) == np.asarray(test_predicted)))
        accuracy = right / len(test_labels)
        # Wilson, not the percentile bootstrap: a model right on every test row gets a real interval, not [1, 1]
        ci = scipy_stats.binomtest(right, len(test_labels)).proportion_ci(stats.CONFIDENCE, method="wilson")
        interval = [float(ci.low), float(ci.high)]
    has_embeddings = seen.embeddings is not None and len(seen.embeddings) > 1
    return Reference(
        labels=list(labels), predicted_counts=counts.tolist(),
        confidence=np.round(seen.confidence, CONFIDENCE_DECIMALS).tolist(), length=seen.length.tolist(),
        unknown=np.round(seen.unknown, SHARE_DECIMALS).tolist(),
        split=None if seen.split is None else np.round(seen.split, SHARE_DECIMALS).tolist(),
        embedding_mean=seen.embeddings.mean(axis=0).round(6).tolist() if has_embeddings else None,
        embedding_std=seen.embeddings.std(axis=0, ddof=1).round(6).tolist() if has_embeddings else None,
        test_accuracy=accuracy, test_accuracy_ci=interval, source=source, variant=variant, precision=precision)


# --- the tests -----------------------------------------------------------------------------------------------------

@dataclass
class Check:
    """One statistic of one batch: its plotted value, the reference's, the test's statistic and p-values."""

    statistic: str
    value: float
    reference: float
    test_statistic: float = float("nan")
    p: float = float("nan")
    p_holm: float = float("nan")
    drifted: bool = False
    note: str = ""  # why it was not tested, when it was not

    @property
    def test(self) -> str:
        return STATISTICS[self.statistic][0]


def _label_mix(batch: np.ndarray, reference: np.ndarray) -> tuple[float, float, float, float]:
    """(TVD, 0, chi-square, p): counts per class; cells the batch would expect under 5 rows of are pooled."""
    n, ref_share = batch.sum(), reference / reference.sum()
    tvd = 0.5 * float(np.abs(batch / n - ref_share).sum())
    order = np.argsort(ref_share)  # pool the rarest classes first
    cells, pooled_b, pooled_r = [], 0, 0
    for k in order:
        if (pooled_r + reference[k]) / reference.sum() * n < MIN_EXPECTED and k != order[-1]:
            pooled_b, pooled_r = pooled_b + batch[k], pooled_r + reference[k]
            continue
        cells.append((batch[k] + pooled_b, reference[k] + pooled_r))
        pooled_b = pooled_r = 0
    table = np.array(cells).T
    table = table[:, table.sum(axis=0) > 0]
    if table.shape[1] < 2:  # one class left on both sides: nothing to compare
        return tvd, 0.0, 0.0, 1.0
    result = scipy_stats.chi2_contingency(table, correction=False)
    return tvd, 0.0, float(result.statistic), float(result.pvalue)


def _ks(batch: np.ndarray, reference: np.ndarray) -> tuple[float, float, float, float]:
    result = scipy_stats.ks_2samp(batch, reference)
    return float(np.mean(batch)), float(np.mean(reference)), float(result.statistic), float(result.pvalue)


def _greater(batch: np.ndarray, reference: np.ndarray) -> tuple[float, float, float, float]:
    """Mann-Whitney U, batch stochastically greater; identical constant values on both sides: p = 1."""
    values = (float(np.mean(batch)), float(np.mean(reference)))
    if np.ptp(np.concatenate([batch, reference])) == 0:
        return (*values, 0.0, 1.0)
    result = scipy_stats.mannwhitneyu(batch, reference, alternative="greater")
    return (*values, float(result.statistic), float(result.pvalue))


def _low_confidence(batch: np.ndarray, reference: np.ndarray, threshold: float) -> tuple[float, float, float, float]:
    low_b, low_r = int((batch < threshold).sum()), int((reference < threshold).sum())
    table = [[low_b, len(batch) - low_b], [low_r, len(reference) - low_r]]
    result = scipy_stats.fisher_exact(table, alternative="greater")
    return low_b / len(batch), low_r / len(reference), float(result.statistic), float(result.pvalue)


def _embedding(batch: np.ndarray, mean: np.ndarray, std: np.ndarray, reference_rows: int
               ) -> tuple[float, float, float, float]:
    """(RMS distance in reference stds, 0, max |z|, Bonferroni p): z per dimension with the two-sample standard
    error s * sqrt(1/n + 1/N) (the reference mean is itself an estimate); constant dimensions are left out."""
    keep = std > 0
    shift = (batch.mean(axis=0) - mean)[keep] / std[keep]
    z = shift / np.sqrt(1 / len(batch) + 1 / reference_rows)
    top = float(np.abs(z).max()) if len(z) else 0.0
    p = min(1.0, len(z) * 2 * float(scipy_stats.norm.sf(top))) if len(z) else 1.0
    return float(np.sqrt(np.mean(shift ** 2))) if len(z) else 0.0, 0.0, top, p


def _checks(reference: Reference, batch: Profile, low_confidence: float) -> list[Check]:
    """Every statistic's values and raw p-value; those that cannot be computed say why."""
    ref = {k: np.asarray(v, dtype=float) for k, v in (("confidence", reference.confidence),
                                                     ("length", reference.length), ("unknown", reference.unknown))}
    counts = np.bincount(batch.predicted, minlength=len(reference.labels))
    confidence = np.round(batch.confidence, CONFIDENCE_DECIMALS)
    unknown = np.round(batch.unknown, SHARE_DECIMALS)
    split = None if batch.split is None else np.round(batch.split, SHARE_DECIMALS)
    out = [
        Check("label_mix", *_label_mix(counts, np.asarray(reference.predicted_counts))),
        Check("confidence", *_ks(confidence, ref["confidence"])),
        Check("low_confidence", *_low_confidence(confidence, ref["confidence"], low_confidence)),
        Check("length", *_ks(batch.length.astype(float), ref["length"])),
        Check("unknown_tokens", *_greater(unknown, ref["unknown"])),
    ]
    if split is not None and reference.split is not None:
        out.append(Check("split_words", *_greater(split, np.asarray(reference.split, dtype=float))))
    else:
        out.append(Check("split_words", float("nan"), float("nan"), note="not tested: the tokenizer gives no word "
                                                                         "boundaries (a slow tokenizer)"))
    if batch.embeddings is not None and reference.embedding_mean is not None:
        out.append(Check("embedding", *_embedding(batch.embeddings, np.asarray(reference.embedding_mean),
                                                  np.asarray(reference.embedding_std), reference.rows)))
    else:
        out.append(Check("embedding", float("nan"), 0.0, note="not tested: the int8 ONNX variant outputs logits "
                                                              "only (no hidden states), or the reference has none"))
    return out


@dataclass
class Health:
    """The verdict on one batch, with the checks behind it."""

    status: str
    reasons: list[str]
    rows: int
    checks: list[Check] = field(default_factory=list)
    accuracy: float | None = None
    accuracy_upper: float | None = None  # one-sided (1 - alpha) Wilson upper bound of the batch accuracy
    reference_accuracy_low: float | None = None
    alpha: float = ALPHA
    min_batch: int = MIN_BATCH
    reference: str = ""  # which reference the batch was tested against (and why, when not an exact match)

    def metrics(self) -> dict[str, float]:
        """monitor_<statistic> (the plotted value), _reference, _statistic, _p, _p_holm, _drifted per statistic."""
        out: dict[str, float] = {"monitor_rows": float(self.rows)}
        for c in self.checks:
            out.update({f"monitor_{c.statistic}": c.value, f"monitor_{c.statistic}_reference": c.reference,
                        f"monitor_{c.statistic}_statistic": c.test_statistic, f"monitor_{c.statistic}_p": c.p,
                        f"monitor_{c.statistic}_p_holm": c.p_holm, f"monitor_{c.statistic}_drifted": float(c.drifted)})
        if self.accuracy_upper is not None:
            out["monitor_accuracy_upper"] = self.accuracy_upper
        return {k: v for k, v in out.items() if np.isfinite(v)}

    def tags(self) -> dict[str, str]:
        tests = {vocab.monitor_test(c.statistic): (c.test + (f"; {c.note}" if c.note else ""))[:5000]
                 for c in self.checks}
        return {vocab.HEALTH: self.status, vocab.HEALTH_REASONS: "; ".join(self.reasons)[:5000], **tests}

    def to_dict(self) -> dict:
        values = asdict(self)
        for check, c in zip(values["checks"], self.checks):
            check["test"] = c.test
        return values


def check(reference: Reference, batch: Profile, true_labels: np.ndarray | None = None, alpha: float = ALPHA,
          min_batch: int = MIN_BATCH, low_confidence: float = LOW_CONFIDENCE) -> Health:
    """The batch's verdict against the reference: values always; tests only from `min_batch` rows."""
    rows = len(batch.probabilities)
    checks = _checks(reference, batch, low_confidence)
    health = Health("ok", [], rows, checks, alpha=alpha, min_batch=min_batch)
    if true_labels is not None:
        health.accuracy = float(np.mean(batch.predicted == np.asarray(true_labels)))
    if rows < min_batch:
        for c in checks:
            c.p = c.test_statistic = float("nan")
            c.note = c.note or f"not tested: {rows} rows < min_batch {min_batch}"
        health.status = "too_small"
        health.reasons = [f"{rows} rows < min_batch={min_batch}: too few to test; values logged, no verdict"]
        return health
    for c, adjusted in zip(checks, stats.holm([c.p for c in checks])):
        c.p_holm = adjusted
        c.drifted = bool(np.isfinite(adjusted) and adjusted <= alpha)
    health.reasons = [f"{c.statistic}: {c.value:.4g} vs reference {c.reference:.4g} (Holm p={c.p_holm:.2g})"
                      for c in checks if c.drifted]
    if health.reasons:
        health.status = "drift"
    degraded = _degraded(health, reference, true_labels, batch, alpha)
    if degraded:
        health.status = "degraded"
        health.reasons.insert(0, degraded)
    return health


def _degraded(health: Health, reference: Reference, true_labels, batch: Profile, alpha: float) -> str:
    """The reason, when the batch's accuracy is below the model's test interval even at its optimistic end: the
    one-sided (1 - alpha) Wilson upper bound of the batch accuracy under the interval's lower end."""
    if true_labels is None or not reference.test_accuracy_ci:
        return ""
    right = int(np.sum(batch.predicted == np.asarray(true_labels)))
    upper = scipy_stats.binomtest(right, len(batch.predicted)).proportion_ci(1 - 2 * alpha, method="wilson").high
    health.accuracy_upper, health.reference_accuracy_low = float(upper), float(reference.test_accuracy_ci[0])
    if upper >= reference.test_accuracy_ci[0]:
        return ""
    return (f"accuracy {health.accuracy:.3f} (upper {1 - alpha:.0%} bound {upper:.3f}) below the model's test "
            f"interval low end {reference.test_accuracy_ci[0]:.3f}")


def band(reference: Reference, statistic: str, rows: int, alpha: float = ALPHA, draws: int = 400,
         low_confidence: float = LOW_CONFIDENCE, seed: int = 0) -> tuple[float, float]:
    """Where the plotted value of a batch of `rows` rows drawn like the reference falls with probability
    1 - alpha (per statistic, uncorrected): resampled from the reference's per-text values; the embedding's is the
    normal approximation with the dimensions taken as independent."""
    rng = np.random.default_rng(seed)
    rows = max(int(rows), 1)
    if statistic == "embedding":
        if not reference.embedding_std:
            return float("nan"), float("nan")
        dims = int(np.sum(np.asarray(reference.embedding_std) > 0))
        high = np.sqrt((1 / rows + 1 / reference.rows) * scipy_stats.chi2.ppf(1 - alpha, dims) / dims)
        return 0.0, float(high)
    if statistic == "label_mix":
        counts = np.asarray(reference.predicted_counts, dtype=float)
        share = counts / counts.sum()
        values = 0.5 * np.abs(rng.multinomial(rows, share, size=draws) / rows - share).sum(axis=1)
        return 0.0, float(np.quantile(values, 1 - alpha))
    source = {"confidence": reference.confidence, "low_confidence": reference.confidence, "length": reference.length,
              "unknown_tokens": reference.unknown, "split_words": reference.split}[statistic]
    if source is None:
        return float("nan"), float("nan")
    sample = np.asarray(source, dtype=float)[rng.integers(0, reference.rows, size=(draws, rows))]
    values = (sample < low_confidence).mean(axis=1) if statistic == "low_confidence" else sample.mean(axis=1)
    return float(np.quantile(values, alpha / 2)), float(np.quantile(values, 1 - alpha / 2))
