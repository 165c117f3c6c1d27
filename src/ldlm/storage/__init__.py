"""Files in and out: atomic writes and safetensors-only weight loading (``io``), pretrained models by short name,
path or hub id (``resources``), saved models on the Hugging Face Hub (``hub``) and their model cards
(``model_card``)."""
