"""Models: per-modality encoders -> fusion -> task heads (+ per-modality auxiliary heads)."""
