"""A trained classifier at work: one interface over fp32/bf16, int8 ONNX and probe models, their serving cost, the
int8 export, the pyfuncs logged from code, batch predict and the online server. May import the leaf modules,
agnews.runs and agnews.data (not training: a served model needs no trainer)."""
