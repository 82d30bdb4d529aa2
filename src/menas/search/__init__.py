"""The search: strategies (no torch), the engine, executors, one trial, the run's store (no torch), ranking (no
torch) and weight inheritance between trials."""
