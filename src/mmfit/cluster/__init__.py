"""Beyond one machine on Ray (the extra `mmfit[ray]`): the same steps as the local path, their work
spread over a Ray cluster's workers (`engine.py`: connecting, a manifest as a Ray Dataset;
`predict.py`: batch prediction)."""
