"""Training: config, task (model + loss), losses, optimizer / schedule, checkpoints, the run
folder, signals and the loop (``avfusion.train.run.run_training`` is the entry point)."""
