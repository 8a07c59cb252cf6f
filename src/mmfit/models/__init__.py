"""Models: per-modality encoders -> fusion -> task heads (+ per-modality auxiliary heads), and what
changes a model: fine-tuning strategies and adapters, mixup of encoder outputs, surgery (pruned
layers, conformed shapes, sparsity masks) and int8 layers."""
