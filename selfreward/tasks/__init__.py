"""Built-in tasks and the seed-model bootstrap."""
