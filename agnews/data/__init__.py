"""The rows: the task (labels, text columns, cleaning), AG News specifics, reading any labelled source, the
stratified sample, the hand-off of splits between runs, and which rows a model has seen. May import the leaf
modules and agnews.runs."""
