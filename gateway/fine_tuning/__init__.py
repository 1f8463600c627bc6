"""OpenAI's fine-tuning jobs API: a tenant's data set becomes a LoRA trained by the trainer and deployed."""
