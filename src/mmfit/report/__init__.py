"""Reporting: console tables of results, the self-contained HTML report with its plots and model card,
and the augmentation preview."""
