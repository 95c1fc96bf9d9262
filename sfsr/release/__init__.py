"""From a training run to a model others start from: `publish` (float16 weights and a card that
says how the model was made) and `evaluate_synth` (the held-out synthetic-face measurements a
card records). These tools stand above sfsr.generate (they drive the Generator); nothing below
imports them."""
