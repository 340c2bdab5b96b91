"""Corpus runs, the side that traces (torch): `lmscope run PROMPTS --out runs/NAME/`.

`corpus` plans a run (what is done, what is left, run.json) and writes each result as it comes;
`local` traces in this process with the model loaded once, `ray_workers` over Ray actors (one
model each); `progress` is the count/rate/ETA line; `bench` measures a run against the sum of its
single traces. The folder format and the reader are `lmscope.runs` (torch-free).
"""
