"""Right on any data: labels matched by name before position (prepare_data and predict, one rule), predict reads the
model's own columns, `-P labels` reorders a dataset's ClassLabel names and never renames them, and what cannot be
read right (two columns of one name, a text that is not a string) is refused in one line. In-process and fast."""
from __future__ import annotations

import json

import pandas as pd
import pytest

from agnews.data import task
from agnews.data.reading import DataOptions
from agnews.data.sampling import SampleSizes, sample_splits
from agnews.data.task import Task
from agnews.errors import PipelineError
from agnews.serving import predict


def _refused(call, *args, **kwargs) -> str:
    with pytest.raises(PipelineError) as err:
        call(*args, **kwargs)
    assert "\n" not in str(err.value)
    return str(err.value)


STARS = Task(("1", "2", "3", "4", "5"), ("review",), "stars")


def test_numeric_class_names_are_names_never_positions(tmp_path):
    """Star ratings 1-5: a labelled predict row of "1" is class "1" (id 0), not id 1 ("2"): every row was shifted."""
    path = tmp_path / "new.csv"
    pd.DataFrame({"review": ["fine", "awful", "superb", "meh"], "stars": ["4", "1", "5", "3.0"]}).to_csv(path,
                                                                                                      index=False)
    batch = predict.read_input(str(path), STARS)
    assert [STARS.labels[i] for i in batch.labels] == ["4", "1", "5", "3"]
    pd.DataFrame({"review": ["x"], "stars": ["0"]}).to_csv(path, index=False)  # no class "0", and no positions
    message = _refused(predict.read_input, str(path), STARS)
    assert "row 1 has unknown label '0'" in message and "0-4" not in message
    ids = task.label_ids(pd.Series(["Sports", "sci_tech", "0", "world"]), task.AG_NEWS.labels)
    assert ids.tolist()[:2] == [1, 3] and pd.isna(ids[2])  # a column of names: a number is not read as a position
    assert task.label_ids(pd.Series(["3", "0"]), task.AG_NEWS.labels).tolist() == [3, 0]  # ids where names aren't


def test_prepare_data_reads_numeric_names_by_name(tmp_path):
    rows = [{"review": f"{w} {i}", "stars": s} for i in range(12) for w, s in (("good", "5"), ("bad", "1"))]
    path = tmp_path / "r.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    options = DataOptions(("review",), "stars", labels=("5", "1"))
    sample = sample_splits(str(path), SampleSizes(8, 4, 4, 4), 0, options)
    frame = sample.splits["train"]
    assert sample.task.labels == ("5", "1")
    assert (frame["label"] == frame["text"].str.startswith("bad").astype(int)).all()  # "1" is class "1", id 1


def test_predict_reads_the_models_columns_not_a_stray_text_column(tmp_path):
    topics = Task(("deportes", "política"), ("headline", "body"), "topic")
    path = tmp_path / "new.csv"
    pd.DataFrame({"headline": ["Gol"], "body": ["en el minuto 90"], "text": ["unrelated notes"],
                  "label": ["política"]}).to_csv(path, index=False)
    batch = predict.read_input(str(path), topics)
    assert batch.texts == ["Gol en el minuto 90"]  # the model's own columns, not `text`
    assert batch.labels is None  # `label` is not the model's label column (`topic`): not read as its labels
    pd.DataFrame({"text": ["Gol en el minuto 90"], "topic": ["deportes"]}).to_csv(path, index=False)
    batch = predict.read_input(str(path), topics)  # no model columns: `text` then
    assert batch.texts == ["Gol en el minuto 90"] and batch.labels.tolist() == [0]


def test_labels_reorder_a_class_label_dataset_by_name(tmp_path):
    """-P labels on a dataset with ClassLabel names: the order given wins, each class keeps its name (it used to be
    renamed by position: World articles called Business); another set of names is one line naming the difference."""
    import datasets

    features = datasets.Features({"text": datasets.Value("string"),
                                  "label": datasets.ClassLabel(names=["negative", "positive"])})
    folder = tmp_path / "saved"
    datasets.DatasetDict({s: datasets.Dataset.from_dict(
        {"text": [f"{w} {s} {i}" for i in range(20) for w in ("bad", "good")], "label": [0, 1] * 20},
        features=features) for s in ("train", "test")}).save_to_disk(str(folder))
    sample = sample_splits(str(folder), SampleSizes(8, 4, 4, 4), 0, DataOptions(labels=("positive", "negative")))
    frame = sample.splits["train"]
    assert sample.task.labels == ("positive", "negative")
    assert (frame["label"] == frame["text"].str.startswith("bad").astype(int)).all()  # "bad": negative = id 1
    message = _refused(sample_splits, str(folder), SampleSizes(8, 4, 4, 4), 0, DataOptions(labels=("neg", "pos")))
    assert message.startswith("-P labels=neg,pos is not the set of class names dataset") and \
        "not in the dataset: neg, pos; missing: negative, positive" in message


@pytest.mark.parametrize("content, says", [
    ("text,text,label\na,b,World\n", "has 2 columns named 'text'"),
    ("Text,text,label\na,b,World\n", "has 2 columns named 'text' (names are matched ignoring case"),
])
def test_two_columns_of_one_name_are_refused(tmp_path, content, says):
    path = tmp_path / "two.csv"
    path.write_text(content)
    assert says in _refused(predict.read_input, str(path))


def test_duplicate_keys_and_texts_that_are_not_strings_are_refused(tmp_path):
    path = tmp_path / "d.jsonl"
    rows = [{"text": f"good {i}", "label": "a"} for i in range(10)] + [{"text": f"bad {i}", "label": "b"}
                                                                       for i in range(10)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows) + '{"text": "x", "text": "y", "label": "a"}\n')
    assert "line 21 has key 'text' twice" in _refused(sample_splits, str(path), SampleSizes(4, 4, 4, 4), 0)
    rows[3] = {"text": {"title": "an object"}, "label": "a"}
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    message = _refused(sample_splits, str(path), SampleSizes(4, 4, 4, 4), 0)
    assert "row 4 has a dict in text column 'text'" in message and "not a string" in message
    parquet = tmp_path / "n.parquet"
    pd.DataFrame({"text": [1, 2], "label": ["World", "Sports"]}).to_parquet(parquet)
    assert "row 1 has a int64 in text column 'text'" in _refused(predict.read_input, str(parquet))
