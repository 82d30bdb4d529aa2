"""Training one network: the loop, checkpoints and weights files, several processes under torchrun."""
