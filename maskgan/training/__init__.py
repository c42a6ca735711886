"""Training: THE step and the experiments (objective), feeding it (feed), the Ray Train worker (worker), the driver
(train) and pretraining of the frozen parts (pretrain)."""
