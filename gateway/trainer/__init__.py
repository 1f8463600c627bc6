"""The trainer: worker processes that take fine-tuning jobs from the queue and train PEFT LoRAs."""
