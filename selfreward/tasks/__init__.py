"""The built-in tasks: equation (the default), sequence, humaneval. Tasks only: M0 is built in `selfreward.m0`."""
