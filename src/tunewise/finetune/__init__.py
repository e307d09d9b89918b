"""Fine-tuning: LoRA or full SFT on assistant turns (`train`), the ladder rung that uses it (`rung`),
and the evidence around it: learning curve (`curve`), forgetting check (`forgetting`), export
(`export`). torch, transformers and peft are imported inside functions."""
