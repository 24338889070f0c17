"""From a model's predictions to an anomaly score: per-frame terms (``terms``), the per-video score (``video``) and
the score weight λ a model carries (``model``). docs/DESIGN.md §6."""
