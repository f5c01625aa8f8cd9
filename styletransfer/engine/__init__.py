"""What runs a configured job: Hydra instantiation, resolvers and the run-directory callback (``instantiate``,
``hydra_callbacks``), and the Lightning callbacks and logging every training run has (``interrupt``, ``finite``,
``progress``, ``logging_steps``, ``loggers``, ``wandb_mode``). ``runtime`` below it holds no Lightning or Hydra."""
