"""agnews-mlops: fine-tune small BERT-family models on AG News, tracked and registered in MLflow."""
