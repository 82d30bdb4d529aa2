"""Latency measured on the target: one network (`measure`), a per-block lookup table of a space (`table`,
`blocks`), and the predictor built on it (`predict`)."""
