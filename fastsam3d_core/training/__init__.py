"""Training: Med-SA adapters from the user's labels, and FastSAM3D's layer-wise distillation."""
