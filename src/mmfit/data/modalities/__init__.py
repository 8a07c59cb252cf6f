"""One module per modality: how a cell becomes tensors (decode, preprocess) and back to inputs."""
