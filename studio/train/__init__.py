"""The Train panel: SMART fine-tuning jobs on the policy host (engine.host.jobs), live plots,
checkpoints, and a blind A/B comparison (blindab) that starts a personal preference data set."""
