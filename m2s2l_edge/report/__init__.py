"""What a run shows a person: the PNG plots of training, evaluation and the efficiency table."""
