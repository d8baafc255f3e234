"""Training a classifier: model presets and loading, fine-tuning with the transformers Trainer, distillation,
the linear probe, and what a training step leaves on its run (metrics, curves, the logged model). May import the
leaf modules, agnews.runs and agnews.data."""
