"""Which model is best and whether it may take the alias: the comparison with intervals and paired tests, the gate
rule and its error spending, promotion, and the report with its figures. May import the leaf modules,
agnews.runs and agnews.data; scorers are handed in by the steps, so nothing here imports training or serving."""
