"""The runtime: what belongs to processes rather than to searches (ports, process groups
tied to their parent, the zygote that forks preloaded interpreters, exit handling) and the
command-line edge every command shares (one-line errors, exit codes, signals, start-up
noise). Knows nothing of trials; the commands and the cluster build on it."""
