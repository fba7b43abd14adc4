"""Single-cell label transfer: scVI latent space + XGBoost classifier."""
