"""summary: the pipeline's headline numbers in one small metrics file (metrics/summary.json)."""
