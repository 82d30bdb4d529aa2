"""The search space as data: genomes (architecture strings and JSON), spaces and their presets, the operators that
sample, mutate, cross and repair genomes, and their exact cost. No torch."""
