"""Engine layer: exact integer inference (config, tables, kernels, model, compiler, tokenizer)."""
