"""Coverage statistics: per-frame rows, per-scene ``coverage.json`` and the dataset ``coverage.parquet``."""

from wai.format.framestats import BASE_COLUMNS, depth_stats, empty_row, format_counts, label_ratios

__all__ = ["BASE_COLUMNS", "depth_stats", "empty_row", "format_counts", "label_ratios"]
