"""Runs on disk: the one owner of every folder mmfit writes, and reading a run back for use.

    layout.py       what each folder (run-, fit-, tune-) and each of its files is called
    files.py        writing them atomically: a reader never sees half a file or half a folder
    store.py        the store: `Run` (a run directory: config, preprocessing, weights, metrics,
                    evaluations, derived runs), `Study` (a tune folder), `new_folder` (naming)
    checkpoints.py  training checkpoints (resume) and the Keeper that writes them as training goes
    loaded.py       `load_run` -> `LoadedRun` (config, fitted preprocessing, model), `load_model`

store.py, checkpoints.py, files.py and layout.py build no model and evaluate nothing
(tests/unit/test_architecture.py holds them to it); loaded.py does both, through models/ and
evaluation/.
"""
