"""Scoring style transfer: benchmark image sets, metrics, the scorer, the evaluation run and its report."""
