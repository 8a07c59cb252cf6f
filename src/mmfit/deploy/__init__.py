"""Deployment of a finished run: `Predictor` (predict / evaluate / explain from the run directory),
ONNX export and its onnxruntime runner, and the HTTP server with its web page. Deploy never imports
training: a served run needs nothing but its directory."""
