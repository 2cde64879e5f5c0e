"""Training for input-adaptive CNNs: backbones, dynamic families and their recipes."""
