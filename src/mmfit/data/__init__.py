"""Data: manifest -> validated rows -> preprocessed, cached tensors -> Batch."""
