import re

import pandas as pd
import pytest
from conftest import REAL_TEST_CSV

from agnews.data import LABELS, SampleSizes, class_counts, clean_text, sample_splits
from agnews.errors import PipelineError


def test_clean_text_undoes_corpus_escapes():
    raw = "Wall St. Bears Claw Back Into the Black (Reuters) Reuters - Short-sellers, Wall Street #39;s dwindling\\band"
    assert clean_text(raw) == ("Wall St. Bears Claw Back Into the Black (Reuters) Reuters - Short-sellers, "
                               "Wall Street's dwindling band")
    assert clean_text("Oil at US #36;46 a barrel") == "Oil at US$46 a barrel"
    assert clean_text("AT&amp;T says quot;hello quot; &lt;b&gt;") == 'AT&T says "hello " <b>'


def test_local_agnews_csv_gives_disjoint_stratified_seeded_splits(fixture_csv):
    sizes = SampleSizes(train=80, validation=40, test=40)
    splits = sample_splits(str(fixture_csv), sizes, seed=7)
    assert {k: len(v) for k, v in splits.items()} == {"train": 80, "validation": 40, "test": 40}
    for frame in splits.values():
        assert set(frame["label"]) == {0, 1, 2, 3}
        assert not frame["text"].str.contains(r"\\|#39;", regex=True).any()
    assert class_counts(splits["train"]) == dict.fromkeys(LABELS, 20)  # stratified: exactly balanced
    again = sample_splits(str(fixture_csv), sizes, seed=7)
    other = sample_splits(str(fixture_csv), sizes, seed=8)
    assert all(again[k].equals(splits[k]) for k in splits)
    assert not other["train"].equals(splits["train"])


def test_real_csv_splits_are_disjoint_rows():
    splits = sample_splits(str(REAL_TEST_CSV), SampleSizes(1000, 500, 500), seed=42)
    keys = [set(frame["text"]) for frame in splits.values()]
    assert [len(k) for k in keys] == [1000, 500, 500]  # real headlines are unique
    assert not (keys[0] & keys[1] or keys[0] & keys[2] or keys[1] & keys[2])
    assert class_counts(splits["validation"]) == dict.fromkeys(LABELS, 125)


def test_text_label_parquet_and_csv(tmp_path):
    frame = pd.DataFrame({"text": [f"row {i} text" for i in range(40)], "label": [i % 4 for i in range(40)]})
    frame.to_parquet(tmp_path / "d.parquet")
    frame.to_csv(tmp_path / "d.csv", index=False)
    for path in (tmp_path / "d.parquet", tmp_path / "d.csv"):
        splits = sample_splits(str(path), SampleSizes(20, 8, 8), seed=1)
        rows = pd.concat(splits.values())
        assert len(rows) == 36 and rows["text"].is_unique  # disjoint
        assert (rows["label"] == rows["text"].map(lambda t: int(t.split()[1]) % 4)).all()  # labels kept with text


@pytest.mark.parametrize("content, message", [
    ("text,category\nhello,1\n", "lacks column(s) ['label']"),
    ("text,label\nhello,1\nworld,7\n", "row 2 has unknown label '7'"),
    ('"5","title","desc"\n', "class must be 1-4"),
    ('"1","",""\n"2","t","d"\n', "row 1 has empty text"),
    ("a,b\n1,2\n", "has 2 columns and no 'text,label' header"),
])
def test_bad_files_fail_in_one_line(tmp_path, content, message):
    path = tmp_path / "bad.csv"
    path.write_text(content)
    with pytest.raises(PipelineError, match=re.escape(message)) as err:
        sample_splits(str(path), SampleSizes(4, 4, 4), seed=0)
    assert "\n" not in str(err.value)


def test_sizes_larger_than_data_fail(fixture_csv):
    with pytest.raises(PipelineError, match=r"exceeds the 160 rows"):
        sample_splits(str(fixture_csv), SampleSizes(1000, 500, 500), seed=0)


def test_missing_file_and_unreachable_hub(tmp_path, monkeypatch):
    with pytest.raises(PipelineError, match="data file not found"):
        sample_splits(str(tmp_path / "nope.csv"), SampleSizes(), seed=0)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "empty-hf-home"))
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    with pytest.raises(PipelineError, match=r"cannot load hub dataset 'fancyzhx/ag_news'.*pass -P data=<local csv>"):
        sample_splits("hf:fancyzhx/ag_news", SampleSizes(), seed=0)
