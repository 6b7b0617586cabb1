"""tmsjax benchmarks: each module answers one speed question against a baseline measured in the
same run."""
