"""Watching a served model: the health check of each batch against its reference, where references live on runs,
the window rule that raises alarms, and the monitor report with its figures. May import the leaf modules,
agnews.runs, agnews.data and agnews.serving."""
