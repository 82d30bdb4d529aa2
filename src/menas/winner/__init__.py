"""What happens to the chosen network: retrain, transfer, evaluate, export and load."""
