"""Cluster: keras-tuner's chief/worker engine on this machine (or several).

`launcher` starts and supervises the chief and the workers under one parent run;
`roles` is what each of those processes runs. Sits above `pipeline.search`.
"""
