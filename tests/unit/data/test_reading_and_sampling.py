import hashlib
import logging
import re

import pandas as pd
import pytest

from agnews.data import reading, sampling
from agnews.data.ag_news import LABELS
from agnews.data.reading import clean_text, hub_error_message
from agnews.data.sampling import SPLITS, SampleSizes, class_counts, row_id, sample_splits, with_row_ids
from agnews.errors import PipelineError
from tests.helpers import FIXTURE_ROWS, REAL_TEST_CSV

FORMATS = "expected 'text,label' columns or the AG News format (class,title,description without header)"
CLASS_NAMES = "(World, Sports, Business, Sci/Tech)"
NO_GATE = SampleSizes(4, 4, 4, 0)


def _refused(data_arg: str, sizes: SampleSizes = NO_GATE) -> str:
    with pytest.raises(PipelineError) as err:
        sample_splits(data_arg, sizes, seed=0)
    message = str(err.value)
    assert "\n" not in message
    return message


def _text_label_csv(path, rows: list[tuple[str, int]]):
    pd.DataFrame(rows, columns=["text", "label"]).to_csv(path, index=False)
    return path


def _texts(sample) -> list[set[str]]:
    return [set(frame["text"]) for frame in sample.splits.values()]


def _assert_disjoint(sample) -> None:
    texts = pd.concat([frame["text"] for frame in sample.splits.values()])
    assert texts.is_unique


# --- cleaning and ids ----------------------------------------------------------------------------

def ag_clean(text: str) -> str:
    """What an AG News text gets: its escapes undone (agnews.data.ag_news), then the generic cleaning."""
    return reading.clean_texts(pd.Series([text]), "ag_news").iloc[0]


def test_generic_cleaning_keeps_other_data_as_written():
    assert clean_text("  it #39;s a\\path &amp; Ελλάδα 東京\tcafé\x01 ") == "it #39;s a\\path &amp; Ελλάδα 東京 café"
    assert reading.clean_texts(pd.Series(["a #39; b", None])).tolist() == ["a #39; b", ""]


def test_clean_text_undoes_corpus_escapes():
    raw = "Wall St. Bears Claw Back Into the Black (Reuters) Reuters - Short-sellers, Wall Street #39;s dwindling\\band"
    assert ag_clean(raw) == ("Wall St. Bears Claw Back Into the Black (Reuters) Reuters - Short-sellers, "
                               "Wall Street's dwindling band")
    assert ag_clean("Oil at US #36;46 a barrel") == "Oil at US$46 a barrel"
    assert ag_clean("AT&amp;T says quot;hello quot; &lt;b&gt;") == 'AT&T says "hello " <b>'


def test_clean_text_decodes_cp1252_remnants_and_drops_control_characters():
    assert ag_clean("Sony#146;s #147;Walkman#148; sales #150; up #151; again #133;") == \
        "Sony\u2019s \u201cWalkman\u201d sales \u2013 up \u2014 again\u2026"
    # corpus spacing: the space stands for the lost "&"; before opening quotes and dashes it is kept once
    assert ag_clean("Sony #146;s  #147;Walkman #148; is up  #151; a lot") == \
        "Sony\u2019s \u201cWalkman\u201d is up \u2014 a lot"
    assert ag_clean("a store:  #147; #145;Hi") == "a store: \u201c \u2018Hi"
    assert ag_clean("euro #128;5 and #8212; dash") == "euro\u20ac5 and \u2014 dash"  # other numbers: code points
    assert ag_clean("a#129;b c#0;d e\x01f\x92g\th\x85i") == "ab cd efg h i"  # undefined/C0/C1 gone, spacing kept


def test_real_file_texts_have_no_c1_characters():
    raw = pd.read_csv(REAL_TEST_CSV, header=None, dtype=str)
    assert (raw[1] + raw[2]).str.contains(r"#1[45]\d;").sum() == 34  # the rows this guards
    everything = sample_splits(str(REAL_TEST_CSV), SampleSizes(6100, 500, 500, 500), seed=0)  # all 7,600 rows
    texts = pd.concat([frame["text"] for frame in everything.splits.values()])
    assert len(texts) == 7600 and not texts.str.contains("[\x00-\x1f\x7f-\x9f]").any()
    assert texts.str.contains("\u2014").sum() >= 30  # the #151; em dashes survived as characters


def test_row_ids_are_stable_16_hex_sha1_prefixes(fixture_csv):
    assert row_id("Oil at US$46") == hashlib.sha1("Oil at US$46".encode()).hexdigest()[:16]
    assert re.fullmatch(r"[0-9a-f]{16}", row_id("caf\u00e9 \u2014 ok"))
    one = sample_splits(str(fixture_csv), SampleSizes(80, 40, 40, 0), seed=1)
    other = sample_splits(str(fixture_csv), SampleSizes(60, 20, 40, 40), seed=2)
    ids = {text: rid for s in (one, other) for f in s.splits.values() for text, rid in zip(f["text"], f["row_id"])}
    assert all(ids[text] == row_id(text) for text in ids)  # same text, same id, whatever the split or seed
    assert all(list(f.columns) == ["row_id", "text", "label"] for f in one.splits.values())


def test_with_row_ids_adds_or_recomputes_the_column():
    old = pd.DataFrame({"text": ["a b", "c"], "label": [0, 3]})
    assert list(with_row_ids(old).columns) == ["row_id", "text", "label"]
    assert list(with_row_ids(old)["row_id"]) == [row_id("a b"), row_id("c")]
    stale = with_row_ids(old).assign(row_id=["x", "y"])
    assert with_row_ids(stale).equals(with_row_ids(old)) and list(old.columns) == ["text", "label"]


# --- sampling ------------------------------------------------------------------------------------

def test_local_agnews_csv_gives_disjoint_stratified_seeded_splits(fixture_csv):
    sizes = SampleSizes(train=80, validation=40, test=40, gate=0)
    sample = sample_splits(str(fixture_csv), sizes, seed=7)
    splits = sample.splits
    assert list(splits) == list(SPLITS)
    assert {k: len(v) for k, v in splits.items()} == {"train": 80, "validation": 40, "test": 40, "gate": 0}
    assert (sample.rows_read, sample.duplicates_removed, sample.conflicts_removed) == (FIXTURE_ROWS, 0, 0)
    for name in ("train", "validation", "test"):
        assert set(splits[name]["label"]) == {0, 1, 2, 3}
        assert not splits[name]["text"].str.contains(r"\\|#39;", regex=True).any()
    assert class_counts(splits["train"]) == dict.fromkeys(LABELS, 20)  # stratified: exactly balanced
    assert list(splits["gate"].columns) == ["row_id", "text", "label"]  # gate=0: empty, same columns
    again = sample_splits(str(fixture_csv), sizes, seed=7).splits
    other = sample_splits(str(fixture_csv), sizes, seed=8).splits
    assert all(again[k].equals(splits[k]) for k in splits)
    assert not other["train"].equals(splits["train"])
    _assert_disjoint(sample)


def test_gate_split_is_disjoint_stratified_seeded_and_sized(fixture_csv):
    sizes = SampleSizes(train=60, validation=20, test=40, gate=40)
    sample = sample_splits(str(fixture_csv), sizes, seed=3)
    gate = sample.splits["gate"]
    assert len(gate) == 40 and class_counts(gate) == dict.fromkeys(LABELS, 10)
    _assert_disjoint(sample)
    assert sample_splits(str(fixture_csv), sizes, seed=3).splits["gate"].equals(gate)
    assert not sample_splits(str(fixture_csv), sizes, seed=4).splits["gate"].equals(gate)
    no_gate = sample_splits(str(fixture_csv), SampleSizes(80, 40, 40, 0), seed=3)
    assert no_gate.splits["test"].equals(sample.splits["test"])  # test is drawn first: a gate leaves it alone


def test_real_csv_splits_are_disjoint_rows():
    sample = sample_splits(str(REAL_TEST_CSV), SampleSizes(1000, 500, 500), seed=42)
    keys = _texts(sample)
    assert [len(k) for k in keys] == [1000, 500, 500, 500]  # real headlines are unique
    _assert_disjoint(sample)
    assert (sample.rows_read, sample.duplicates_removed, sample.conflicts_removed) == (7600, 0, 0)
    assert class_counts(sample.splits["validation"]) == dict.fromkeys(LABELS, 125)
    assert class_counts(sample.splits["gate"]) == dict.fromkeys(LABELS, 125)


def test_text_label_parquet_and_csv(tmp_path):
    frame = pd.DataFrame({"text": [f"row {i} text" for i in range(40)], "label": [i % 4 for i in range(40)]})
    frame.to_parquet(tmp_path / "d.parquet")
    frame.to_csv(tmp_path / "d.csv", index=False)
    for path in (tmp_path / "d.parquet", tmp_path / "d.csv"):
        splits = sample_splits(str(path), SampleSizes(20, 8, 8, 4), seed=1).splits
        rows = pd.concat(splits.values())
        assert len(rows) == 40 and rows["text"].is_unique  # disjoint
        assert (rows["label"] == rows["text"].map(lambda t: int(t.split()[1]) % 4)).all()  # labels kept with text


def test_duplicates_and_conflicting_labels_are_removed_and_counted(tmp_path):
    rows = [(f"headline {i} story", i % 4) for i in range(40)]
    rows += [("headline 0\\story", 0), ("headline  1 story ", 1), ("headline 2 story", 2)]  # 3 duplicates
    rows += [("contested text", 1), ("contested\\text", 2)]  # one text, two labels
    path = _text_label_csv(tmp_path / "dups.csv", rows)
    sample = sample_splits(str(path), SampleSizes(16, 8, 8, 8), seed=0)
    assert (sample.rows_read, sample.duplicates_removed, sample.conflicts_removed) == (45, 3, 2)
    _assert_disjoint(sample)
    texts = set().union(*_texts(sample))
    assert len(texts) == 40 and "contested text" not in texts
    assert _refused(str(path), SampleSizes(20, 8, 8, 8)) == (
        "train_size + val_size + test_size + gate_size (44 rows) exceeds the 40 rows left after removing "
        f"3 duplicate texts and 2 rows with conflicting labels from {path}; lower the sizes or use a larger dataset")


def test_disjointness_is_checked_before_returning(tmp_path, monkeypatch):
    rows = [(f"headline {i}", i % 4) for i in range(16)] * 2
    path = _text_label_csv(tmp_path / "twice.csv", rows)
    monkeypatch.setattr(sampling, "_deduplicate", lambda frame: (frame, 0, 0))  # simulate a de-duplication bug
    message = _refused(str(path), SampleSizes(8, 8, 8, 8))
    assert re.fullmatch(r"internal error: \d+ text\(s\) are in more than one split \(row_id [0-9a-f]{16}\); "
                        r"the sample is not disjoint, report this bug in agnews\.data", message)


def test_extra_unnamed_columns_are_ignored_with_a_warning(tmp_path, caplog):
    body = "".join(f"row {i},{i % 4},\n" for i in range(16))
    path = tmp_path / "trailing.csv"
    path.write_text("text,label,\n" + body)
    with caplog.at_level(logging.WARNING, logger="agnews.data"):
        splits = sample_splits(str(path), NO_GATE, seed=0).splits
    assert all(list(f.columns) == ["row_id", "text", "label"] for f in splits.values())
    assert "ignoring extra column(s) ['Unnamed: 2']" in caplog.text


# --- refusals ------------------------------------------------------------------------------------

ROWS_OK = "".join(f"row {i},{i % 4}\n" for i in range(16))
BAD_FILES = {
    "empty": (b"", "{p} is empty (0 bytes); " + FORMATS),
    "blank_lines": (b"\n\n", "{p} has only blank lines; " + FORMATS),
    "header_only": (b"text,label\n", "{p} has no data rows; add rows or pass another file"),
    "latin1": (b"text,label\ncaf\xe9,1\n", "{p} is not UTF-8 (line 2, byte 14: UnicodeDecodeError: 'utf-8' codec "
               "can't decode byte 0xe9 in position 14: invalid continuation byte); re-save it as UTF-8"),
    "semicolon_header": (b"text;label\nhello;1\n", "{p} looks semicolon-separated; save it comma-separated "
                         "('text,label' columns or the AG News format class,title,description without header)"),
    "semicolon_rows": (b'3;"Title, x";desc\n', "{p} looks semicolon-separated; save it comma-separated "
                       "('text,label' columns or the AG News format class,title,description without header)"),
    "missing_column": (b"text,category\nhello,1\n", "{p} lacks column(s) ['label'] (it has text, category); pass "
                       "-P text_columns=<col,col> and -P label_column=<col>, or rename them 'text' and 'label'"),
    "two_columns_no_header": (b"a,b\n1,2\n", "{p} has 2 columns and no header naming label, text; " + FORMATS),
    "ragged": (b"text,label\na,1\nb,2,3,4\n", "{p} is not a readable CSV (ParserError: Error tokenizing data. "
               "C error: Expected 2 fields in line 3, saw 4); " + FORMATS),
    "agnews_class_0": (b'"0","t","d"\n', "{p} row 1 has unknown label '0'; class must be 1-4 in the AG News "
                       "format " + CLASS_NAMES),
    "agnews_class_5": (b'"1","t","d"\n"5","t","d"\n', "{p} row 2 has unknown label '5'; class must be 1-4 in the "
                       "AG News format " + CLASS_NAMES),
    # numbers outside AG News' 0-3 are a task of their own, named by value: here a single class
    "label_minus_1": (b"text,label\nhello,-1\nworld,-1.0\n", "{p} has a single class ('-1'); a classifier needs at "
                      "least 2: add rows of other classes or pass another file"),
    "label_1.5": (b"text,label\nhello,1.5\n", "{p} has a single class ('1.5'); a classifier needs at least 2: add "
                  "rows of other classes or pass another file"),
    "label_x": (b"text,label\nhello,x\n", "{p} has a single class ('x'); a classifier needs at least 2: add rows of "
                "other classes or pass another file"),
    "label_x_among_numbers": (b"text,label\nhello,1\nworld,x\n", "{p} row 2 has label 'x' but row 1 has the number "
                              "'1'; use class names throughout, or numbers with -P labels=<names in id order>"),
    "blank_label": (b"text,label\nhello,1\nworld,\n", "{p} row 2 has no label; fill it or drop the row"),
    "empty_text": (b"text,label\nhello,1\n,2\n", "{p} row 2 has empty text; fill it or drop the row"),
    "blank_text": (b"text,label\nhello,1\n   ,2\n", "{p} row 2 has empty text; fill it or drop the row"),
    "agnews_empty_text": (b'"1","",""\n"2","t","d"\n', "{p} row 1 has empty text; fill it or drop the row"),
    "escapes_only_text": (b"text,label\n#0;\\,1\nb,0\nc,2\nd,3\n", "{p} row 1 has empty text; fill it or drop the row"),
    "class_with_one_row": (("text,label\n" + "".join(f"row {i},{i % 3}\n" for i in range(39)) + "lone,3\n").encode(),
                           "cannot draw the test split (test_size=4) stratified by label from the 40 rows left "
                           "(World 13, Sports 13, Business 13, Sci/Tech 1): class(es) Sci/Tech have a single row, "
                           "too few to stratify; add rows of Sci/Tech, or drop the class"),
    "class_missing": ("".join(f'"{1 + i % 3}","row {i}","d"\n' for i in range(30)).encode(),
                      "{p} has no rows of class(es) Sci/Tech (label set: World, Sports, Business, Sci/Tech); pass "
                      "-P labels=<only the classes the data has, in id order>"),
}


@pytest.mark.parametrize("case", list(BAD_FILES))
def test_bad_files_fail_in_one_line(tmp_path, case):
    content, message = BAD_FILES[case]
    path = tmp_path / "bad.csv"
    path.write_bytes(content)
    assert _refused(str(path)) == message.format(p=path)


def test_bad_parquet_files_fail_in_one_line(tmp_path):
    (tmp_path / "junk.parquet").write_bytes(b"not parquet")
    assert _refused(str(tmp_path / "junk.parquet")).startswith(
        f"{tmp_path / 'junk.parquet'} is not a readable Parquet file (ArrowInvalid: ")
    pd.DataFrame({"text": ["a", None], "label": [1, 2]}).to_parquet(tmp_path / "nan.parquet")
    assert _refused(str(tmp_path / "nan.parquet")) == \
        f"{tmp_path / 'nan.parquet'} row 2 has empty text; fill it or drop the row"
    pd.DataFrame({"text": ["a", "b"], "label": [4, 4]}).to_parquet(tmp_path / "label.parquet")
    assert _refused(str(tmp_path / "label.parquet")) == \
        f"{tmp_path / 'label.parquet'} has a single class ('4'); a classifier needs at least 2: add rows of other " \
        "classes or pass another file"


def test_missing_file_and_folder(tmp_path):
    assert _refused(str(tmp_path / "nope.csv")) == \
        f"data file not found: {tmp_path / 'nope.csv'}; pass -P data=<csv, tsv, parquet or jsonl path> or " \
        "hf:fancyzhx/ag_news"
    assert _refused(str(tmp_path)) == \
        f"data path {tmp_path} is a folder but not a dataset saved with save_to_disk (no dataset_dict.json or " \
        "state.json); pass -P data=<csv, tsv, parquet or jsonl file>, such a folder, or hf:fancyzhx/ag_news"


@pytest.mark.parametrize("sizes, message", [  # at construction: no task has fewer than 2 classes
    ((-1, 4, 4, 0), "-P train_size=-1 must be 0 (every row the other splits leave) or at least 2 (one row per "
                    "class)"),
    ((4, 0, 4, 0), "-P val_size=0 must be at least 2 (one row per class)"),
    ((4, 4, 2.5, 0), "-P test_size=2.5 is not a whole number; pass a whole number of rows"),
    ((4, 4, 4, -1), "-P gate_size=-1 must be 0 (no gate split) or at least 2 (one row per class)"),
    ((4, 4, 4, 1), "-P gate_size=1 must be 0 (no gate split) or at least 2 (one row per class)"),
    ((4, 4, 4, 0.5), "-P gate_size=0.5 is not a whole number; pass a whole number of rows"),
    (("4",), "-P train_size=4 is not a whole number; pass a whole number of rows"),
])
def test_bad_sizes_fail_in_one_line(sizes, message):
    with pytest.raises(PipelineError) as err:
        SampleSizes(*sizes)
    assert str(err.value) == message


@pytest.mark.parametrize("sizes, message", [  # once the task is known: a row per class in every split
    ((3, 4, 4, 0), "-P train_size=3 must be 0 (every row the other splits leave) or at least 4 (one row per class)"),
    ((4, 4, 4, 2), "-P gate_size=2 must be 0 (no gate split) or at least 4 (one row per class)"),
])
def test_sizes_below_the_class_count_fail_once_the_labels_are_known(fixture_csv, sizes, message):
    assert _refused(str(fixture_csv), SampleSizes(*sizes)) == message


def test_train_size_zero_trains_on_every_row_the_other_splits_leave(fixture_csv):
    full = sample_splits(str(fixture_csv), SampleSizes(0, 40, 40, 40), seed=0)
    drawn = sample_splits(str(fixture_csv), SampleSizes(40, 40, 40, 40), seed=0)
    assert full.unlabeled.empty and not drawn.unlabeled.empty
    assert set(full.splits["train"]["text"]) == set(drawn.splits["train"]["text"]) | set(drawn.unlabeled["text"])
    for split in ("validation", "test", "gate"):  # the other samples are drawn as before
        assert full.splits[split]["row_id"].tolist() == drawn.splits[split]["row_id"].tolist()
    counted = sum(len(frame) for frame in full.splits.values()) + full.duplicates_removed + full.conflicts_removed
    assert counted == FIXTURE_ROWS
    _assert_disjoint(full)


def test_train_size_zero_needs_rows_left(fixture_csv):
    assert _refused(str(fixture_csv), SampleSizes(0, 4, FIXTURE_ROWS - 8, 4)) == (  # the others take every row
        "cannot draw the train split (train_size=0) stratified by label from the 0 rows left (World 0, Sports 0, "
        "Business 0, Sci/Tech 0): only 0 rows are left after the other splits, fewer than the 4 classes; lower "
        "val_size, test_size or gate_size, or add rows")


def test_whole_float_sizes_and_gate_zero_are_fine():
    assert SampleSizes(8.0, 4, 4.0, 0) == SampleSizes(8, 4, 4, 0)
    assert isinstance(SampleSizes(8.0).train, int)  # scikit-learn would read 8.0 as a fraction


def test_sizes_larger_than_data_fail(fixture_csv):
    assert _refused(str(fixture_csv), SampleSizes(1000, 500, 500)) == (
        f"train_size + val_size + test_size + gate_size (2500 rows) exceeds the {FIXTURE_ROWS} rows of "
        f"{fixture_csv}; lower the sizes or use a larger dataset")


def test_sizes_leaving_fewer_rows_than_classes_fail(fixture_csv):
    left = FIXTURE_ROWS - 40  # after test and validation
    assert _refused(str(fixture_csv), SampleSizes(left - 2, 20, 20, 0)) == (
        f"cannot draw the train split (train_size={left - 2}) stratified by label from the {left} rows left "
        f"(World {left // 4}, Sports {left // 4}, Business {left // 4}, Sci/Tech {left // 4}): it would leave 2 "
        f"rows, fewer than the 4 classes stratified sampling needs; pass -P train_size={left} (all rows) or at "
        f"most {left - 4}")
    assert len(sample_splits(str(fixture_csv), SampleSizes(left, 20, 20, 0), seed=0).splits["train"]) == left


# --- hub -----------------------------------------------------------------------------------------

class DatasetNotFoundError(Exception):
    pass


def test_hub_error_message_names_the_cause_and_offline_only_when_offline(monkeypatch):
    for var in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"):
        monkeypatch.delenv(var, raising=False)
    missing = DatasetNotFoundError("Dataset 'x/y' doesn't exist on the Hub or cannot be accessed.\nmore detail")
    assert hub_error_message("x/y", missing) == (
        "cannot load hub dataset 'x/y' (DatasetNotFoundError: Dataset 'x/y' doesn't exist on the Hub or cannot be "
        "accessed.); check the id, or offline pass -P data=<local csv>")
    unreachable = ConnectionError("Couldn't reach 'x/y' on the Hub (LocalEntryNotFoundError)")
    offline = ("cannot load hub dataset 'x/y' (ConnectionError: Couldn't reach 'x/y' on the Hub "
               "(LocalEntryNotFoundError)); the hub is unreachable (offline): pass -P data=<local csv>, "
               "e.g. the AG News test.csv")
    assert hub_error_message("x/y", unreachable) == offline
    try:  # a connection error deeper in the chain counts too
        try:
            raise TimeoutError("timed out")
        except TimeoutError as inner:
            raise RuntimeError("x" * 300) from inner
    except RuntimeError as wrapped:
        message = hub_error_message("x/y", wrapped)
    assert message.startswith("cannot load hub dataset 'x/y' (RuntimeError: xxx") and "(offline)" in message
    assert len(message) < 350
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    assert "the hub is unreachable (offline)" in hub_error_message("x/y", missing)


def test_unreachable_hub_fails_in_one_line(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "empty-hf-home"))
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    message = _refused("hf:fancyzhx/ag_news", SampleSizes())
    assert re.fullmatch(r"cannot load hub dataset 'fancyzhx/ag_news' \(\w+: [^)]+\)+; the hub is unreachable "
                        r"\(offline\): pass -P data=<local csv>, e.g\. the AG News test\.csv", message)
    assert _refused("hf:") == "data 'hf:' names no dataset; pass -P data=hf:fancyzhx/ag_news or a local csv"


def _fake_hub(monkeypatch, **splits: list[tuple[str, int]]) -> None:
    import datasets

    built = datasets.DatasetDict({name: datasets.Dataset.from_pandas(pd.DataFrame(rows, columns=["text", "label"]))
                                  for name, rows in splits.items()})
    monkeypatch.setattr(datasets, "load_dataset", lambda dataset_id, config=None: built)


def test_hub_test_comes_from_its_test_split_without_duplicates_across_splits(monkeypatch):
    train = [(f"train {i}", i % 4) for i in range(40)] + [("shared", 0), ("contested", 1)]
    test = [(f"test {i}", i % 4) for i in range(20)] + [("shared", 0), ("contested", 2)]
    _fake_hub(monkeypatch, train=train, test=test)
    sample = sample_splits("hf:fake/news", SampleSizes(24, 8, 21, 8), seed=0)
    assert (sample.rows_read, sample.duplicates_removed, sample.conflicts_removed) == (64, 1, 2)
    splits = sample.splits
    assert set(splits["test"]["text"]) == {f"test {i}" for i in range(20)} | {"shared"}  # a text in both: test
    assert all(splits[k]["text"].str.startswith("train").all() for k in ("train", "validation", "gate"))
    _assert_disjoint(sample)
    assert _refused("hf:fake/news", SampleSizes(28, 8, 8, 8)) == (
        "train_size + val_size + gate_size (44 rows) exceeds the 40 rows left after removing 1 duplicate text and "
        "2 rows with conflicting labels from hf:fake/news[train]; lower the sizes or use a larger dataset")


def test_hub_without_a_test_split_fails_in_one_line(monkeypatch):
    _fake_hub(monkeypatch, train=[("a", 0)])
    assert _refused("hf:fake/news") == ("dataset 'fake/news' lacks split(s) ['test'] (it has ['train']); pass "
                                        "-P train_split=<name> and -P test_split=<name> from those, or "
                                        "-P data=<local file>")
