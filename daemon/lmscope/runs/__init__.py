"""Corpus runs, the torch-free side: the run folder (`folder`), its prompt list (`sources`),
the rows one trace gives (`rows`), the Parquet tables (`parquet`), the reader (`table`:
`load_run`, `RunTable`) and the summary (`summary`).

What traces the prompts (and needs torch) is `lmscope.runner`, a layer up; the folder's layout
and resume rule are in `runs.folder`. Nothing here imports torch, so the editor and
`lmscope run-summary` read a run without it.
"""
