"""The trainer past one machine: sharded collisionless tables on torch.distributed (see README there)."""
