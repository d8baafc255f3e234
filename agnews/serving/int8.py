"""The int8 variant: a fine-tuned classifier exported to ONNX and quantized dynamically (onnxruntime), with its
tokenizer and settings, for the `model_int8` pyfunc."""
from __future__ import annotations

import contextlib
import io
import json
import logging
import tempfile
import time
from pathlib import Path

from agnews import vocab
from agnews.serving import classifiers

log = logging.getLogger(__name__)


# --- int8 ---------------------------------------------------------------------------------------------------

def export_int8(classifier: classifiers.TorchClassifier, folder: Path) -> float:
    """ONNX (torch's dynamo exporter) with int8 weights (ONNX Runtime dynamic quantization), plus its tokenizer.

    Why ONNX: torch.ao dynamic quantization is deprecated in the pinned torch and its modules cannot be saved with
    save_pretrained; the ONNX file is ~4x smaller than the fp32 weights and needs no torch to serve. The legacy
    TorchScript exporter bakes the attention-mask branch of one sequence length into the graph (logits off by 0.02
    on other lengths), so the dynamo exporter is used."""
    import onnx
    import torch
    from onnxruntime.quantization import QuantType, quantize_dynamic

    start = time.perf_counter()
    folder.mkdir(parents=True, exist_ok=True)
    model = classifier.model.float().cpu().eval()
    example = classifier.tokenizer(["Stocks rallied.", "A longer headline about the central bank holding its rates"],
                                   padding=True, return_tensors="pt")
    batch, length = torch.export.Dim("batch"), torch.export.Dim("sequence")
    with tempfile.TemporaryDirectory(prefix="agnews-onnx-") as tmp, contextlib.redirect_stdout(io.StringIO()) as out:
        program = torch.onnx.export(model, (), kwargs=dict(example), input_names=list(example),
                                    output_names=["logits"], dynamic_shapes={k: {0: batch, 1: length} for k in example},
                                    dynamo=True, verbose=False)
        proto = program.model_proto
        del proto.graph.value_info[:]  # the exporter's shape annotations trip the quantizer's shape inference
        onnx.save(proto, Path(tmp) / "fp32.onnx")
        logging.disable(logging.WARNING)  # the quantizer logs every tensor and a pre-processing hint on the root logger
        try:
            quantize_dynamic(Path(tmp) / "fp32.onnx", folder / "model.onnx", weight_type=QuantType.QInt8)
        finally:
            logging.disable(logging.NOTSET)
    log.debug("exporter said: %s", out.getvalue())
    classifier.tokenizer.save_pretrained(folder)
    settings = {"labels": list(classifier.labels), "max_length": classifier.max_length}  # the task's, in logit order
    (folder / vocab.MODEL_SETTINGS_FILE).write_text(json.dumps(settings))
    return time.perf_counter() - start  # seconds
