"""The bulk work of guessDir and train on a Ray cluster: the connection, and the workers."""
