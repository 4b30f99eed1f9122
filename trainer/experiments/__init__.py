"""The paper's claims as commands: collisionless vs hashed tables, and serving AUC by sync interval.

Both experiments drive the trainer's own model and tables (``trainer.loop.Trainer``) on MovieLens
ratings; see ``config.py`` for what they measure and the README section "The paper's claims, rerun".
"""
