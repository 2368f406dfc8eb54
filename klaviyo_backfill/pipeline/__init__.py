"""The stages every command shares, assembled once (stages.py): a job's exports -> orders ->
events -> request bodies, settled in file order, prepared on every core where it pays."""
