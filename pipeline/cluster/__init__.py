"""Cluster: keras-tuner's chief/worker engine on this machine (or several).

`launcher` starts and supervises the chief and the workers under one parent run;
`roles` is what each of those processes runs. Sits above `pipeline.search`.
"""

# The CPU a worker runs on: set by the launcher, read first thing by the worker's process
# (`pipeline.cli.pin_to_cpu_from_env`).
CPU_ENV = "PIPELINE_WORKER_CPU"
