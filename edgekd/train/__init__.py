"""The training loop shared by every method and by the DDPM teacher trainer."""
