"""Noise schedule, losses, x0 recovery and samplers: pure functions of tensors."""
