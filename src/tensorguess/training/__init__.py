"""The train command: its settings (options, presets), the steps pipeline.py chains (head,
fine_tune, augment, quantize) and the model files it writes (model_writer)."""
